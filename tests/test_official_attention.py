"""The official attention classes, recognised by class name and parameter layout (issue 14, item 5).

The stand-ins in ``tests/official_fixtures.py`` carry the official class names, parameter names
and arithmetic (written from the definitions, not copied). For each class:

- ``frontends.official.recognise`` returns the neurocomp.nn equivalent, which computes the same as the
  stand-in (to 1e-6; MA-SNN's ``[B, T, ...]`` classes given the transposed input);
- small models holding each class (2x8x8 inputs, T = 5), made busy, compile through
  ``neurocomp.api.compile`` (from ``torch.save(model)`` with the fixture file as code path, or from
  ``save_checkpoint``): the stored model computes what the user's model computes, the float reference
  equals torch spike for spike on every layer, and Lava equals the fixed-point reference on every
  layer and step, in static and dynamic attention modes;
- a class whose name matches and whose layout does not, and the official variants neurocomp cannot
  lower, are one-line UnsupportedLayer errors naming the layer and the class.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import layer as ab_layer, neuron as ab_neuron

import official_fixtures as of
from busy_nets import bernoulli, lava_mismatches, make_busy
from nc_testutils import randomize_bn
from neurocomp import api
from neurocomp.errors import BadInput, UnsupportedLayer, UnsupportedLayers
from neurocomp.frontends.checkpoint import load_checkpoint, save_checkpoint
from neurocomp.frontends.official import recognise
from neurocomp.frontends.torch import run_torch_model
from neurocomp.frontends.usercode import as_sequential
from neurocomp.ir import LIF, MALIF
from neurocomp.ir.serialize import load_graph
from neurocomp.nn import CLA, PFA, TA, TCJA, TLA, MALIFNode
from neurocomp.nn import TCSA as NC_TCSA
from neurocomp.sim import run_float

HERE = os.path.dirname(os.path.abspath(__file__))
SHAPE = (2, 8, 8)
T = 5
PA = {"alpha": 0.3, "beta": 0.0, "Vreset": 0.0, "Vthres": 0.3}


def _randomize(model, seed=0, gain=2.5):
    """Random weights and BatchNorms; an MA-SNN cell's parameters and PFA's never-trained ``weight``
    (lambda, uniform in every trained model) are left as built."""
    gen = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if type(mod).__name__ in ("IFCell", "ConvIFCell"):
            continue
        for pname, p in mod.named_parameters(recurse=False):
            if not (type(mod).__name__ == "TCSAModule" and pname == "weight"):
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.data.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * gain / max(1, fan_in) ** 0.5)
    randomize_bn(model, gen)
    return model.eval()


def _bt(module, x):
    """A ``[B, T, ...]`` module run on a time-major ``x``, its output time-major again."""
    with torch.no_grad():
        return module(x.transpose(0, 1)).transpose(0, 1)


def _one_line(excinfo, *words):
    text = str(excinfo.value)
    assert "\n" not in text and "Traceback" not in text
    for w in words:
        assert w in text, (w, text)


# ---- each class alone ------------------------------------------------------------------------------
def _x(shape=(T, 3, 8, 6, 6), seed=0, signed=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen)
    return x * 4 - 2 if signed else (x < 0.3).float()


TIME_MAJOR = {      # name: (make the stand-in, the neurocomp class it becomes, signed input)
    "TCJA": (lambda: of.TCJA(2, 3, T, 8), TCJA, False),
    "TLA": (lambda: of.TLA(2, 3, T, 8), TLA, False),
    "CLA": (lambda: of.CLA(4, 3, T, 8), CLA, False),
    "TCSAModule": (lambda: of.TCSAModule(6, 6, T, 8, rank=3), PFA, False),
    "fmnist.TCSAModule": (lambda: of.fmnist.TCSAModule(6, 6, T, 8, rank=3), PFA, True),
    "MultiDimensionalAttention": (lambda: of.MultiDimensionalAttention(T, 8, 2, 4, kernel_size=7), NC_TCSA, True),
    "TemporalWiseAttention": (lambda: of.TemporalWiseAttention(T, 2), TA, True),
    "MultiStepTemporalWiseAttention": (lambda: of.MultiStepTemporalWiseAttention(T, 2, dimension=4), TA, True),
}


@pytest.mark.parametrize("name", sorted(TIME_MAJOR))
def test_time_major_class_maps_onto_neurocomp_exactly(name):
    make, cls, signed = TIME_MAJOR[name]
    user = _randomize(make(), seed=1)
    eq = recognise(user, "blk")
    assert type(eq) is cls
    x = _x(signed=signed)
    with torch.no_grad():
        want, got = user(x), eq(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert float(want.abs().sum()) > 0
    if "TemporalWise" in name:                      # no ReLU: negative currents pass
        assert eq.config["relu"] is False and bool((got < 0).any())
    if name.startswith("fmnist"):                   # relu(A + x): A in (0, R) lifts currents, zero below -A
        assert eq.config["additive"] and "weight" not in dict(eq.named_parameters())
        assert bool((got == 0).any()) and bool(((got > 0) & (x < 0)).any())


def test_temporal_wise_attention_on_sequences_becomes_ta_fc():
    user = _randomize(of.MultiStepTemporalWiseAttention(T, 2, dimension=2), seed=2)
    eq = recognise(user)
    assert type(eq) is TA and eq.config["fc"] and not eq.config["relu"]
    x = _x((T, 3, 20), signed=True)
    with torch.no_grad():
        torch.testing.assert_close(eq(x), user(x), atol=1e-6, rtol=0)


def test_tcja_for_tet_takes_batch_major_input():
    user = _randomize(of.TCJA_for_TET(3, 2, T, 8), seed=3)
    eq = recognise(user)
    assert type(eq) is TCJA and eq.config == {"kernel_size_t": 3, "kernel_size_c": 2, "T": T, "channel": 8}
    x = _x()
    torch.testing.assert_close(eq(x), _bt(user, x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", sorted(of.MA))
def test_ma_snn_class_maps_onto_neurocomp_in_time_major_layout(name):
    user = _randomize(of.MA[name](T, 8, t_ratio=2, c_ratio=4), seed=4)
    eq = recognise(user)
    assert type(eq).__name__ == name and type(eq).__module__.startswith("neurocomp.nn")
    if "T" in name:
        assert eq.config["T"] == T and T // eq.config["t_ratio"] == 2
    if "C" in name:
        assert eq.config["channels"] == 8 and 8 // eq.config["c_ratio"] == 2
    x = _x(signed=True)
    got, want = eq(x), _bt(user, x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert bool((got == 0).any()) and bool((got > 0).any())          # the ReLU is kept


def test_ma_snn_ta_on_a_linear_layer():
    user = _randomize(of.TA(T, 16, t_ratio=2, fc=True), seed=5)
    eq = recognise(user)
    assert eq.config["fc"]
    x = _x((T, 3, 16), signed=True)
    torch.testing.assert_close(eq(x), _bt(user, x), atol=1e-6, rtol=0)


def _conv_att_lif(att="TCSA", cin=2, cout=8, **kw):
    args = dict(spikeActFun=of.spike_fn, useBatchNorm=True, T=T, pa_dict=PA, track_running_stats=True, t_ratio=2,
                c_ratio=2)
    args.update(kw)
    return of.ConvAttLIF(cin, cout, 3, attention=att, **args)


def _att_lif(cin, cout, att="TA", **kw):
    args = dict(useBatchNorm=True, T=T, pa_dict=PA, track_running_stats=True, t_ratio=2)
    args.update(kw)
    return of.AttLIF(cin, cout, of.spike_fn, attention=att, **args)


@pytest.mark.parametrize("kw", [dict(att="TCSA"), dict(att="SA", pooling_kernel_size=2), dict(att="no"),
                                dict(att="CA", useBatchNorm=False),
                                dict(att="TA", pa_train_self=True, pa_dict={**PA, "Vthres": 0.5, "alpha": 0.4})],
                         ids=["TCSA", "SA-pool", "no-attention", "CA-noBN", "learned-uniform-cell"])
def test_conv_att_lif_is_conv_bn_pool_attention_cell(kw):
    user = _randomize(_conv_att_lif(**kw), seed=6)
    eq = recognise(user, "convAttLIF0")
    assert isinstance(eq, nn.Sequential) and type(eq[-1]) is MALIFNode
    assert type(eq[0]) is ab_layer.SeqToANNContainer and eq[0][0] is user.conv2d     # the user's own layers
    cell = eq[-1]
    want_vth = 0.5 if kw.get("pa_train_self") else 0.3
    assert cell.v_threshold == pytest.approx(want_vth) and cell.alpha == pytest.approx(0.4 if kw.get("pa_train_self")
                                                                                        else 0.3)
    x = _x((T, 3, 2, 8, 8), seed=7)
    y = run_torch_model(eq, x)
    assert torch.equal(y, _bt(user, x))
    assert 0 < float(y.mean()) < 1


def _learned_per_channel(module, seed):
    """An MA-SNN wrapper whose cell learned its Vthres, alpha and beta per channel (pa_train_self=True)."""
    gen = torch.Generator().manual_seed(seed)
    cell = _cell_of(module)
    cell.Vthres.data.copy_(torch.rand(cell.Vthres.shape, generator=gen) * 0.4 + 0.2)
    cell.alpha.data.copy_(torch.rand(cell.alpha.shape, generator=gen) * 0.5 + 0.2)
    cell.beta.data.copy_(torch.rand(cell.beta.shape, generator=gen) * 0.1 - 0.03)   # some negative
    return module


@pytest.mark.parametrize("make,x_shape", [(lambda: _conv_att_lif("TCSA", pa_train_self=True), (T, 3, 2, 8, 8)),
                                          (lambda: _att_lif(24, 10, "TA", pa_train_self=True), (T, 3, 24))],
                         ids=["ConvAttLIF", "AttLIF"])
def test_cell_with_learned_per_channel_parameters_maps_onto_malif(make, x_shape):
    user = _learned_per_channel(_randomize(make(), seed=12), seed=13)
    eq = recognise(user)
    cell, official = eq[-1], _cell_of(user)
    assert type(cell) is MALIFNode
    assert cell.config["v_threshold"] == official.Vthres.detach().flatten().tolist()
    assert cell.config["alpha"] == official.alpha.detach().flatten().tolist()
    assert cell.config["beta"] == official.beta.detach().flatten().tolist()
    assert len(set(cell.config["v_threshold"])) == official.hiddenSize      # they do differ
    assert len(set(cell.config["beta"])) == official.hiddenSize
    x = _x(x_shape, seed=14, signed=len(x_shape) == 3)
    y = run_torch_model(eq, x)
    assert torch.equal(y, _bt(user, x))
    assert 0 < float(y.mean()) < 1


def test_att_lif_is_flatten_linear_bn_ta_cell():
    user = _randomize(_att_lif(24, 10), seed=8)
    eq = recognise(user)
    assert [type(m).__name__ for m in eq] == ["SeqToANNContainer", "TA", "MALIFNode"]
    assert eq.attention.config["fc"]
    x = _x((T, 3, 24), seed=9, signed=True)
    y = run_torch_model(eq, x)
    assert torch.equal(y, _bt(user, x)) and float(y.sum()) > 0
    x4 = _x((T, 3, 2, 3, 4), seed=9)                       # AttLIF flattens what it gets
    assert torch.equal(run_torch_model(eq, x4), _bt(user, x4))


# ---- refusals --------------------------------------------------------------------------------------
class TCSA(nn.Module):
    """A user's own class that happens to be called TCSA (another layout)."""

    def __init__(self):
        super().__init__()
        self.mlp = nn.Linear(4, 4)


def _cell_of(m):
    return next(iter(m.network.children()))


REFUSED = {
    "name-only": (lambda: TCSA(), ["TCSA", "not the layout of MA-SNN's TCSA", "lacks ca.sharedMLP.0.weight", "mlp.weight"]),
    "tcja-bias": (lambda: _with(of.TCJA(2, 2, T, 8), lambda m: setattr(m, "conv", nn.Conv1d(T, T, 2, padding="same"))),
                  ["TCJA", "conv.bias"]),
    "tcja-tuple": (lambda: of.BrokenTCJA(), ["TCJA", "tuple", "trailing comma"]),
    "ma-kernel": (lambda: _with(of.SA(T, 8), lambda m: setattr(m.sa, "conv", nn.Conv2d(2, 1, 5, padding=2, bias=False))),
                  ["SA", "sa.conv.weight", "[1, 2, 5, 5]"]),
    "pfa-fsvae": (lambda: of.fsvae.TCSAModule(6, 6, T, 8, rank=2), ["TCSAModule", "FSVAE", "[N, C, H, W, T]"]),
    "cell-mem": (lambda: _conv_att_lif(mode_select="mem"), ["mode_select='mem'"]),
    "only-last": (lambda: _att_lif(8, 4, onlyLast=True), ["AttLIF", "onlyLast=True"]),
    "bn-batch-stats": (lambda: _conv_att_lif(track_running_stats=False), ["running statistics",
                                                                          "track_running_stats=True"]),
    "spike-fn": (lambda: _conv_att_lif(spikeActFun=torch.sigmoid), ["spikeActFun", "u - Vthres >= 0"]),
    "attlif-tcsa": (lambda: _with(_att_lif(8, 4, att="no"), lambda m: setattr(m, "attention_flag", "TCSA")),
                    ["attention='TCSA'", "'TA' or 'no'"]),
}


def _with(module, change):
    change(module)
    return module


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_matching_name_with_another_layout_or_an_unlowerable_variant_is_one_line(case):
    make, words = REFUSED[case]
    with pytest.raises(UnsupportedLayer) as e:
        recognise(make(), "net.3")
    _one_line(e, "layer 'net.3'", *words)


def test_refusal_names_the_path_in_the_users_model(tmp_path):
    model = nn.Sequential(ab_layer.SeqToANNContainer(nn.Conv2d(2, 8, 3, padding=1)), ab_neuron.LIFNode(step_mode="m"),
                          nn.Sequential(nn.Identity(), of.fsvae.TCSAModule(8, 8, T, 8, rank=2)))
    with pytest.raises(UnsupportedLayer) as e:
        save_checkpoint(model, str(tmp_path / "m.pt"), input_shape=SHAPE, timesteps=T)
    _one_line(e, "layer '2.1'", "TCSAModule")


def test_other_classes_are_not_official():
    assert recognise(nn.ReLU()) is None
    assert recognise(of.TimeAttention(T, 2)) is None          # a part, not a module the papers place


# ---- end to end ------------------------------------------------------------------------------------
def _lif():
    return ab_neuron.LIFNode(tau=2.0, detach_reset=True, step_mode="m")


def _per_step(*m):
    return ab_layer.SeqToANNContainer(*m)


def net_tcja_tla():
    return nn.Sequential(
        _per_step(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8)), _lif(), of.TCJA(2, 3, T, 8),
        _per_step(nn.MaxPool2d(2)),
        _per_step(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)), _lif(), of.TLA(2, 2, T, 8),
        _per_step(nn.MaxPool2d(2)), nn.Flatten(2), _per_step(nn.Linear(8 * 2 * 2, 6)), _lif())


def net_pfa_cla():
    return nn.Sequential(
        _per_step(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8)), _lif(), _per_step(nn.AvgPool2d(2)),
        of.TCSAModule(4, 4, T, 8, rank=2),
        _per_step(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)), _lif(), of.CLA(2, 1, T, 8),
        _per_step(nn.MaxPool2d(2)), nn.Flatten(2), _per_step(nn.Linear(8 * 2 * 2, 6)), _lif())


def net_ma_a():        # [B, T, ...] layout, as MA-SNN's Att_SNN builds it
    return nn.Sequential(_conv_att_lif("TCSA"), _conv_att_lif("TSA", 8, 8, pooling_kernel_size=2), nn.Flatten(2),
                         _att_lif(8 * 4 * 4, 16, "TA"), _att_lif(16, 4, "no"))


def net_ma_b():
    return nn.Sequential(_conv_att_lif("TCA"), _conv_att_lif("CSA", 8, 8, pooling_kernel_size=2),
                         _conv_att_lif("CA", 8, 8), _conv_att_lif("SA", 8, 8), _conv_att_lif("TA", 8, 8),
                         nn.Flatten(2), _att_lif(8 * 4 * 4, 4, "no"))


def net_spikingjelly():
    return nn.Sequential(
        _per_step(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8)), of.MultiDimensionalAttention(T, 8, 2, 2), _lif(),
        _per_step(nn.Conv2d(8, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8)), of.TemporalWiseAttention(T, 2), _lif(),
        nn.Flatten(2), _per_step(nn.Linear(8 * 4 * 4, 16), nn.BatchNorm1d(16)),
        of.MultiStepTemporalWiseAttention(T, 2, dimension=2), _lif(), _per_step(nn.Linear(16, 4)), _lif())


def net_pfa_additive():      # PFA's FMNIST model: Conv-BN -> TCSAModule (relu(A + x)) -> LIF
    return nn.Sequential(
        _per_step(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8)), of.fmnist.TCSAModule(8, 8, T, 8, rank=2), _lif(),
        _per_step(nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)),
        of.fmnist.TCSAModule(4, 4, T, 8, rank=3), _lif(), _per_step(nn.MaxPool2d(2)), nn.Flatten(2),
        _per_step(nn.Linear(8 * 2 * 2, 6)), _lif())


def net_ma_per_channel():   # cells that learned Vthres and alpha per channel (pa_train_self=True)
    return nn.Sequential(_learned_per_channel(_conv_att_lif("TCSA", pa_train_self=True), 2),
                         _learned_per_channel(_conv_att_lif("no", 8, 8, pooling_kernel_size=2, pa_train_self=True), 3),
                         nn.Flatten(2), _learned_per_channel(_att_lif(8 * 4 * 4, 4, "TA", pa_train_self=True), 4))


NETS = {"tcja_tla": (net_tcja_tla, False, "pickle"), "pfa_cla": (net_pfa_cla, False, "checkpoint"),
        "ma_per_channel": (net_ma_per_channel, True, "checkpoint"),
        "pfa_additive": (net_pfa_additive, False, "pickle"),
        "ma_a": (net_ma_a, True, "pickle"), "ma_b": (net_ma_b, True, "checkpoint"),
        "spikingjelly": (net_spikingjelly, False, "pickle")}


@pytest.fixture(scope="module")
def busy():
    """Each net made busy (through its recognised equivalent, which shares the user's synapses and
    BatchNorms), and saved the way NETS says."""
    cache = {}

    def get(name, tmp_root):
        if name not in cache:
            make, batch_major, route = NETS[name]
            user = _randomize(make(), seed=11)
            for m in user.modules():     # MA's maps grow with the current, so make_busy's bisection converges
                if isinstance(m, (of.TimeAttention, of.ChannelAttention, of.SpatialAttention)):
                    for p in m.parameters():
                        p.data.abs_()
            xc = bernoulli(T, 24, SHAPE, p=0.3, seed=5)
            make_busy(as_sequential(user), xc, rate=(0.15, 0.35), seed=1, iters=16)
            d = tmp_root / name
            d.mkdir()
            np.save(d / "calib.npy", np.swapaxes(xc.numpy(), 0, 1))
            path = str(d / "model.pt")
            if route == "pickle":
                torch.save(user, path)
            else:
                save_checkpoint(user, path, input_shape=SHAPE, timesteps=T, encoding="bernoulli")
            cache[name] = (user, batch_major, route, d)
        return cache[name]
    return get


def _compile_kw(route):
    return dict(trust_pickle=True, input_shape=SHAPE, timesteps=T, encoding="bernoulli", code_path=[HERE]) \
        if route == "pickle" else {}


@pytest.mark.lava
@pytest.mark.parametrize("mode", ["static", "dynamic"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_model_with_official_classes_compiles_exactly(busy, tmp_path_factory, name, mode):
    user, batch_major, route, d = busy(name, tmp_path_factory.getbasetemp())
    kw = _compile_kw(route)
    out = api.compile(str(d / "model.pt"), str(d / f"art_{mode}"), attention=mode, calib=str(d / "calib.npy"), **kw)
    x = bernoulli(T, 4, SHAPE, p=0.3, seed=9)

    stored = load_checkpoint(os.path.join(out, "model.pt")).model
    assert not any(type(m).__module__ == of.__name__ for m in stored.modules())      # only neurocomp's classes
    want = _bt(user, x) if batch_major else run_torch_model(user, x)
    assert torch.equal(run_torch_model(stored, x), want)                              # the user's model's spikes

    float_graph = load_graph(os.path.join(out, "float"))
    kinds = {n.kind for n in float_graph}
    assert ({"ma_attention", "spike_attention"} & kinds) if mode == "dynamic" else ("scale" in kinds)
    torch_model = stored if mode == "dynamic" else load_checkpoint(os.path.join(out, "static_model.pt")).model
    r = run_float(float_graph, x)
    y, spikes = run_torch_model(torch_model, x, record=list(r.spikes))
    assert torch.equal(r.output, y)
    assert set(spikes) == set(r.spikes)
    for layer, s in r.spikes.items():
        assert torch.equal(s.bool(), spikes[layer]), layer
        assert int(s.sum()) > 0, layer

    fixed = load_graph(os.path.join(out, "fixed"))
    if name == "spikingjelly":                 # TemporalWiseAttention has no ReLU, MultiDimensionalAttention has
        rect = {n.name: bool(n.fixed.rectify) for n in fixed if isinstance(n, (LIF, MALIF))}
        assert rect["2"] and not rect["5"] and not rect["9"], rect
    if name == "pfa_additive" and mode == "static":     # each map: a per-step offset into a rectifying GainLIF
        offs = {n.name: n.fixed for n in fixed if isinstance(n, LIF) and n.fixed.offset is not None}
        assert set(offs) == {"2", "5"}, offs
        assert all(p.rectify and p.gain_on_bias and p.gain_mant is None and int(abs(p.offset).max()) > 0
                   for p in offs.values())
    if name == "pfa_additive" and mode == "dynamic":    # per-sample offsets from the attention process
        atts = [n for n in fixed if n.kind == "ma_attention"]
        assert [n.name for n in atts] == ["1", "4"] and all(n.additive for n in atts)
    if name == "ma_per_channel":              # one leak per channel: a dv per neuron, differing by channel
        dvs = {n.name: n.fixed.dv for n in fixed if isinstance(n, MALIF)}
        assert [len(np.unique(dvs[k])) for k in ("0.cell", "1.cell", "3.cell")] == [8, 8, 4], dvs
        betas = {n.name: n.fixed.step_bias for n in fixed if isinstance(n, MALIF)}    # beta: a voltage per neuron
        assert [len(np.unique(betas[k])) for k in ("0.cell", "1.cell", "3.cell")] == [8, 8, 4], betas
        assert all(np.any(b < 0) and np.any(b > 0) for b in betas.values()), betas
        if mode == "dynamic":                 # the attention process reads currents of one scale per channel
            assert all(len(n.x_scale) == n.out_shape[0] for n in fixed if n.kind == "ma_attention")
    ref, mism = lava_mismatches(fixed, x)
    bad = {k: v for k, v in mism.items() if v[0]}
    assert not bad, f"Lava != reference (layer: mismatches, reference-only, Lava-only): {bad}"
    assert sum(int(s.sum()) for s in ref.spikes.values()) > 0


@pytest.mark.lava
def test_additive_pfa_in_portable_mode_folds_its_mean_into_the_bias(busy, tmp_path_factory):
    user, _, route, d = busy("pfa_additive", tmp_path_factory.getbasetemp())
    out = api.compile(str(d / "model.pt"), str(d / "art_portable"), attention="portable", calib=str(d / "calib.npy"),
                      **_compile_kw(route))
    fixed = load_graph(os.path.join(out, "fixed"))
    assert not any(n.fixed.gain_scheduled for n in fixed if isinstance(n, LIF))      # stock Lava LIF only
    ref, mism = lava_mismatches(fixed, bernoulli(T, 2, SHAPE, p=0.3, seed=3))
    assert not {k: v for k, v in mism.items() if v[0]}


def test_t_mismatch_of_an_official_module_is_one_line(tmp_path):
    model = nn.Sequential(_per_step(nn.Conv2d(2, 4, 3, padding=1)), _lif(), of.TCJA(2, 2, 4, 4),
                          _per_step(nn.MaxPool2d(2)), nn.Flatten(2), _per_step(nn.Linear(4 * 4 * 4, 3)), _lif()).eval()
    torch.save(model, tmp_path / "model.pt")
    with pytest.raises(BadInput) as e:
        api.compile(str(tmp_path / "model.pt"), str(tmp_path / "art"), trust_pickle=True, input_shape=SHAPE,
                    timesteps=6, encoding="bernoulli", code_path=[HERE])
    _one_line(e, "layer '2'", "TCJA", "T=4", "pass --timesteps 4")
    assert not (tmp_path / "art").exists()


# ---- the TCJA code's own VotingLayer (src/dvs128.py) -------------------------------------------------
class VotingLayer(nn.Module):
    """As the TCJA DVS128 code builds its vote: an AvgPool1d over groups of the last dim."""

    def __init__(self, k, stride=None):
        super().__init__()
        self.voting = nn.AvgPool1d(k, k if stride is None else stride)

    def forward(self, x):
        return self.voting(x.unsqueeze(1)).squeeze(1)


def test_tcja_voting_layer_maps_onto_spikingjelly_voting():
    from spikingjelly.activation_based import layer as ab_layer
    got = recognise(VotingLayer(5), "vote")
    assert type(got) is ab_layer.VotingLayer and got.voting_size == 5
    x = torch.rand(3, 20)
    assert torch.equal(got(x), VotingLayer(5)(x))


def test_a_voting_layer_with_overlapping_groups_is_one_line():
    with pytest.raises(UnsupportedLayer) as e:
        recognise(VotingLayer(4, stride=2), "head.vote")
    msg = e.value.one_line()
    assert "\n" not in msg and "head.vote" in msg and "stride 2" in msg and "VotingLayer(k)" in msg
