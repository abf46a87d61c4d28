"""The remaining residual kinds, as users write them, through neurocomp's front door (issue 15):

- SEW-ResNet's AND (``a * b``) and IAND (``(1. - a) * b``, and SpikingJelly's own ``sew_function(x, y,
  'IAND')`` = ``x * (1 - y)``) as neuron logic: identity synapses (+1, -1 when negated) into a memoryless
  threshold neuron, one step later, the shorter branch delayed to meet the longer;
- average-pool shortcuts (AvgPool2d then 1x1 conv + BN; AvgPool2d alone into an add of currents and
  into an add of spikes) and an add of currents from branches of unequal depth;
- ``neurocomp inspect`` and ``neurocomp report`` on a residual artifact.

Each model compiles, its artifact's model.pt rebuilds with no user code, the float reference equals
the user's torch model spike for spike, and Lava equals the fixed-point reference on every layer and
step (``test_residual_models.check_artifact``). One compiled artifact per model, shared by the tests.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import residual_models as rm
from busy_nets import bernoulli
from neurocomp import api
from neurocomp.errors import NeurocompError, UnsupportedLayer
from neurocomp.frontends.checkpoint import save_checkpoint
from neurocomp.frontends.torch import run_torch_model
from neurocomp.ir import Conv2d, Threshold
from neurocomp.ir.serialize import load_graph
from neurocomp.sim import run_float
from test_residual_models import T, busy, check_artifact

DIGITS = (1, 8, 8)


@pytest.fixture(scope="module")
def logic(tmp_path_factory):
    """SEWLogicNet (an AND block, then sew_function's IAND around a block two convs deep) on the digits
    shape, compiled once (dataset digits, so the report can run on it)."""
    torch.manual_seed(0)
    model = busy(rm.SEWLogicNet(cin=1), seed=1, shape=DIGITS)
    d = tmp_path_factory.mktemp("logic")
    ckpt = save_checkpoint(model, str(d / "model.pt"), input_shape=DIGITS, timesteps=T, encoding="bernoulli",
                           dataset="digits")
    return model, api.compile(ckpt, str(d / "art"), attention="static")


@pytest.mark.lava
def test_sew_and_iand_are_exact_neuron_logic(logic):
    model, out = logic
    check_artifact(model, out, ["Add", "Add"], shape=DIGITS)
    g = load_graph(os.path.join(out, "float"))
    gates = {n.meta["logic"]: n for n in g if isinstance(n, Threshold) and n.meta.get("logic")}
    assert set(gates) == {"AND", "IAND"}
    # what the user's forward computes, from the torch model's own spikes
    x = bernoulli(T, 4, DIGITS, p=0.3, seed=9)
    _, s = run_torch_model(model, x, record=["stem.1", "block1.conv.1", "block2.conv.3"])
    want_and = s["block1.conv.1"] * s["stem.1"]
    want_iand = want_and * (1 - s["block2.conv.3"].float())          # sew_function(x, out, 'IAND')
    r = run_float(g, x)
    assert torch.equal(r.spikes[gates["AND"].name].bool(), want_and.bool())
    assert torch.equal(r.spikes[gates["IAND"].name].bool(), want_iand.bool())
    for want, inp in ((want_and, s["stem.1"]), (want_iand, want_and)):   # neither gate passes its input through
        assert want.sum() > 0 and not torch.equal(want.bool(), inp.bool())
    fixed = load_graph(os.path.join(out, "fixed"))
    for name in (gates["AND"].name, gates["IAND"].name):
        syns = [fixed[s] for s in fixed.inputs[fixed.inputs[name][0]]]
        assert sorted(int(np.unique(s.qweight)[0]) for s in syns) == ([1, 1] if name == gates["AND"].name else [-1, 1])
        assert fixed[name].fixed.du == fixed[name].fixed.dv == 4095      # nothing carried over a step


@pytest.mark.lava
def test_pooled_shortcuts_and_unequal_depth_compile_exactly(tmp_path):
    torch.manual_seed(0)
    model = busy(rm.DeepShortNet(), seed=1)
    ckpt = save_checkpoint(model, str(tmp_path / "model.pt"), input_shape=(2, 8, 8), timesteps=T, encoding="bernoulli")
    out = api.compile(ckpt, str(tmp_path / "art"), attention="static")
    check_artifact(model, out, ["Add"] * 4)
    fixed = load_graph(os.path.join(out, "fixed"))
    pooled = fixed["pooled.pool"]              # the pool alone, into the add of currents: its own synapse group
    assert isinstance(pooled, Conv2d) and pooled.groups == 4 and pooled.weight.shape == (4, 1, 2, 2)
    assert len(np.unique(pooled.qweight)) == 1 and pooled.bias is None     # a box of equal taps
    into_sew = [n for n in fixed if n.meta.get("folded_avgpool") == "sew.pool"]
    assert len(into_sew) == 1 and into_sew[0].bias is None                 # the head conv, once per addend
    man = json.load(open(os.path.join(out, "manifest.json")))
    assert man["alignment"]["added_delay"].get("stem.1->short.0") == 2     # three convs against one


def _section(text, word):
    return {l.split()[1]: l for l in text.splitlines() if l.startswith(word + " ")}


def test_inspect_shows_forks_joins_and_edge_delays(logic):
    from neurocomp.inspect import inspect_path
    _, out = logic
    text = inspect_path(out)
    fixed = load_graph(os.path.join(out, "fixed"))
    forks, joins = _section(text, "fork"), _section(text, "join")
    assert set(forks) == {n.name for n in fixed if len(fixed.consumers(n.name)) > 1}
    assert set(joins) == {n.name for n in fixed if len(fixed.inputs[n.name]) > 1}
    for name, line in forks.items():
        assert line.split("-> ")[1].split(", ") == list(fixed.consumers(name))
    # by hand: the stem is one synapse deep, the AND's branch two: the stem's edge waits one step; the
    # IAND's shortcut (the AND, at 3) waits two steps for the block's two convs (at 5)
    and_join, iand_join = (next(v for k, v in joins.items() if fixed[fixed.consumers(k)[0]].meta["logic"] == g)
                           for g in ("AND", "IAND"))
    assert "(block1.conv.1@2)" in and_join and "(stem.1@1 +1)" in and_join
    assert "@3 +2)" in iand_join and "(block2.conv.3@5)" in iand_join
    assert "depth 8 steps, 2 edge(s) delayed by 3 step(s)" in text
    gate = {fixed[fixed.consumers(k)[0]].meta["logic"]: fixed.consumers(k)[0] for k in joins}
    rows = {l.split()[0]: l for l in text.splitlines() if l.split()}
    assert "AND(block1.conv.1, stem.1)" in rows[gate["AND"]]
    assert f"IAND({gate['AND']}, 1 - block2.conv.3)" in rows[gate["IAND"]]
    assert "<- stem.1" in text                                          # a row that does not read the row above


@pytest.mark.lava
def test_report_on_a_residual_artifact(logic):
    from neurocomp.measure import report          # what `neurocomp report` runs, with a two-point sweep
    from neurocomp.report.sections import layer_labels
    _, out = logic
    report(out, samples=4, lava_samples=1, progress=False, bits=(4, 8))
    doc = json.load(open(os.path.join(out, "report.json")))
    fixed = load_graph(os.path.join(out, "fixed"))
    neurons = [n.name for n in fixed.neurons()]
    rates = doc["sections"]["activity"]["data"]["rates"]
    assert set(rates["fixed"]) == set(rates["lava"]) == set(neurons)       # every neuron of the DAG, gates too
    assert doc["sections"]["crosscheck"]["data"]["pairs"]["fixed->lava"]["exact_fraction"] == 1.0
    assert {"activity.png", "agreement_heatmap.png", "clipping.png", "cores.png"} <= set(
        os.listdir(os.path.join(out, "report_plots")))
    labels = layer_labels(fixed)
    assert {v.split(" [")[1] for v in labels.values() if "AND" in v} == {"AND, fork]", "IAND]"}
    assert labels["stem.1"] == "stem.1 [fork]"


class _Prod(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.sn, self.sn2 = kind, rm.lif(), rm.lif()
        self.a, self.b, self.c = rm.conv_bn(2, 2), rm.conv_bn(2, 2), rm.conv_bn(2, 2)

    def forward(self, x):
        s = self.sn(self.a(x))
        if self.kind == "currents":
            return self.sn2(self.b(s) * self.c(x))
        if self.kind == "const":
            return s * 0.5
        if self.kind == "two_minus":
            return (2. - s) * x
        return self.sn2(self.b(1. - s))                  # a negation read by a conv


@pytest.mark.parametrize("kind,words", [
    ("currents", "not binary spikes"), ("const", "scales a layer's output by 0.5"), ("two_minus", "subtracts"),
    ("not_into_conv", "outside a product")])
def test_products_that_are_not_logic_of_spikes_are_one_line_errors(kind, words, tmp_path):
    with pytest.raises(NeurocompError) as e:
        ckpt = save_checkpoint(_Prod(kind).eval(), str(tmp_path / "m.pt"), input_shape=(2, 8, 8), timesteps=T)
        api.compile(ckpt, str(tmp_path / "art"))
    msg = e.value.one_line()
    assert words in msg and "\n" not in msg and isinstance(e.value, UnsupportedLayer)
    assert not os.path.exists(tmp_path / "art")


def _user_spikes(model, x, names):
    """The user's model run as its forward is written (no step-mode change), each named neuron's output
    recorded time-major (stacked over the calls of a loop over time)."""
    from spikingjelly.activation_based import functional
    got = {n: [] for n in names}
    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(lambda m, a, o, n=n: got[n].append(o.detach())) for n in names]
    functional.reset_net(model)
    with torch.no_grad():
        y = model(x)
    functional.reset_net(model)
    for h in hooks:
        h.remove()
    return y, {n: (torch.stack(v) if len(v) > 1 else v[0]).bool() for n, v in got.items()}


def _busy_direct(model, x):
    """Every BatchNorm normalises what it reads in the user's own forward (over all its calls) and shifts
    it towards the threshold; the Linear's outputs are scaled to fire too."""
    gen = torch.Generator().manual_seed(3)
    model.eval()
    for m in [m for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Linear))]:
        seen = []
        h = m.register_forward_pre_hook(lambda mod, a: seen.append(a[0].detach()))
        _user_spikes(model, x, [])
        h.remove()
        y = torch.cat([s.reshape((-1,) + tuple(s.shape[-3:])) if s.dim() >= 4 else s.reshape(-1, s.shape[-1])
                       for s in seen])
        with torch.no_grad():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(y.mean((0, 2, 3)))
                m.running_var.copy_(y.var((0, 2, 3), unbiased=False) + 1e-3)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) * 0.6 + 0.6)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) * 0.5 + 0.5)
            else:
                out = torch.nn.functional.linear(y, m.weight)
                m.weight.mul_(1.0 / (float(out.std()) + 1e-3))
                m.bias.fill_(0.8)
    return model


@pytest.mark.lava
@pytest.mark.parametrize("cls,layout", [(rm.LoopSEWNet, "TB"), (rm.BTResNet, "BT")], ids=["loop_over_time", "BT_layout"])
def test_branching_forwards_that_loop_over_time_or_take_BT_compile_exactly(cls, layout, tmp_path):
    from busy_nets import lava_mismatches
    torch.manual_seed(0)
    model = cls()
    turn = (lambda v: v) if layout == "TB" else (lambda v: v.transpose(0, 1).contiguous())
    _busy_direct(model, turn(bernoulli(T, 8, (2, 8, 8), p=0.3, seed=1)))
    ckpt = save_checkpoint(model, str(tmp_path / "model.pt"), input_shape=(2, 8, 8), timesteps=T, encoding="bernoulli")
    out = api.compile(ckpt, str(tmp_path / "art"), attention="static")
    x = bernoulli(T, 2, (2, 8, 8), p=0.3, seed=5)                       # time-major, as the artifact runs
    neurons = [p for p, m in model.named_modules() if type(m).__name__ == "LIFNode"]
    _, want = _user_spikes(model, turn(x), neurons)
    r = run_float(load_graph(os.path.join(out, "float")), x)
    for n in neurons:                                                    # the user's own forward, spike for spike
        assert torch.equal(r.spikes[n].bool(), want[n]), n
        assert want[n].sum() > 0, n
    _, mism = lava_mismatches(load_graph(os.path.join(out, "fixed")), x)
    assert not {k: v for k, v in mism.items() if v[0]}
