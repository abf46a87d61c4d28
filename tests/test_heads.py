"""Output heads as the papers build them (issue 14, item 4), end to end.

Three heads besides a plain spiking output layer:

- a **non-spiking readout** (``neurocomp.nn.Readout`` after the last Linear, as PFA's and MA-SNN's heads
  read ``fc(x)`` on ``[T, B, N]`` and take its mean over T): the class is the argmax of the summed current;
- a **voting layer** (SpikingJelly's ``VotingLayer``: the mean of groups of output neurons) after a spiking
  output layer (the TCJA way: groups of output LIF neurons) or after a Linear read out.

Each model is made busy, saved with ``save_checkpoint`` and compiled through ``neurocomp.api.compile``, then:

- float reference == torch: spikes exactly on every spiking layer; the head's values equal up to float32
  rounding (``assert_close`` with torch's float32 tolerances: they are computed by the same torch ops, so
  in practice they are identical) and the predicted classes equal;
- Lava ``fixed_pt`` == fixed-point reference on every layer and step, the head's integer values included;
- the fixed-point head is the integrator it claims to be: its per-step value is ``64 a + bias`` computed
  here from the quantized weights and the reference's own spikes, and it never fires or saturates;
- the NIR export reads back; netx refuses the head in one line naming it.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer, neuron

from busy_nets import bernoulli, make_busy
from nc_testutils import randomize_bn
from neurocomp import api
from neurocomp import fixedpoint as fx
from neurocomp.backends.lava import run_lava
from neurocomp.backends.netx import write_netx
from neurocomp.errors import UnsupportedLayer
from neurocomp.frontends.checkpoint import load_checkpoint, save_checkpoint
from neurocomp.frontends.nir import read_nir_file
from neurocomp.frontends.torch import module_to_graph, run_torch_model
from neurocomp.ir import Linear, Readout, Voting
from neurocomp.ir.serialize import load_graph
from neurocomp.nn import TCJA, Readout as ReadoutModule
from neurocomp.results import predict
from neurocomp.sim import run_fixed, run_float

T = 5
IMG = (2, 8, 8)
FLAT = (64,)


def lif():
    return neuron.LIFNode(tau=2.0, step_mode="m")


def spiking_vote_net():
    """The TCJA paper's head: 30 output LIF neurons voting in groups of 10 for 3 classes."""
    return nn.Sequential(layer.Conv2d(2, 4, 3, padding=1), layer.BatchNorm2d(4), lif(), layer.MaxPool2d(2),
                         layer.Flatten(), layer.Linear(64, 30), lif(), layer.VotingLayer(10))


def readout_net():
    """PFA / MA-SNN style: the last Linear's current (batch-normalised, the BN folded) read out over time."""
    return nn.Sequential(layer.Linear(64, 32), lif(), layer.SeqToANNContainer(nn.Linear(32, 10), nn.BatchNorm1d(10)),
                         ReadoutModule())


def linear_vote_net():
    """A plain nn.Linear applied to [T, B, N] as the last layer, its outputs voting in groups of 4."""
    return nn.Sequential(layer.Linear(64, 24), lif(), nn.Linear(24, 12), layer.VotingLayer(4))


def linear_readout_vote_net():
    """A Linear read out, then voting (the readout is the identity per step: the vote moves before it)."""
    return nn.Sequential(layer.Linear(64, 24), lif(), nn.Linear(24, 12), ReadoutModule(), layer.VotingLayer(4))


def tcja_readout_net():
    """An attention backbone (TCJA on the conv spikes) ending in a Linear read out."""
    return nn.Sequential(layer.Conv2d(2, 4, 3, padding=1), layer.BatchNorm2d(4), lif(),
                         TCJA(kernel_size_t=2, kernel_size_c=3, T=T, channel=4), layer.MaxPool2d(2),
                         layer.Flatten(), layer.Linear(64, 16), lif(), nn.Linear(16, 5), ReadoutModule())


NETS = {"spiking_vote": (spiking_vote_net, IMG), "readout": (readout_net, FLAT),
        "linear_vote": (linear_vote_net, FLAT), "linear_readout_vote": (linear_readout_vote_net, FLAT)}


def _build(factory, shape, seed):
    torch.manual_seed(seed)
    model = factory()
    functional.set_step_mode(model, "m")
    randomize_bn(model, torch.Generator().manual_seed(seed))
    model.eval()
    make_busy(model, bernoulli(T, 32, shape, p=0.3, seed=seed), rate=(0.15, 0.35), seed=seed, iters=16)
    return model


def _compile(model, shape, tmp_path, **kw):
    ckpt = save_checkpoint(model, str(tmp_path / "model.pt"), input_shape=shape, timesteps=T, encoding="bernoulli")
    out = api.compile(ckpt, str(tmp_path / "art"), **kw)
    return out, load_graph(os.path.join(out, "float")), load_graph(os.path.join(out, "fixed"))


def assert_float_equals_torch(float_graph, model, x):
    """Spikes exact on every spiking layer; the head's values equal up to float32 rounding; same classes."""
    r = run_float(float_graph, x)
    y, rec = run_torch_model(model, x, record=list(r.spikes))
    head = float_graph.output_node
    assert isinstance(head, Readout)
    assert set(rec) == set(r.spikes), (set(r.spikes) - set(rec))
    for name, s in r.spikes.items():
        if name == head.name:
            torch.testing.assert_close(s, rec[name])                 # float32 rounding at most
        else:
            assert torch.equal(s.bool(), rec[name]), name
    torch.testing.assert_close(r.output, y)
    assert torch.equal(r.predictions(), y.mean(0).argmax(-1))        # the papers' mean over T
    assert float(r.output.abs().sum()) > 0
    spiking = [n for n in float_graph.neurons() if not n.graded_output]
    assert all(int(r.spikes[n.name].sum()) > 0 for n in spiking)
    return r


def assert_lava_exact(fixed_graph, x):
    """Lava fixed_pt == the fixed-point reference on every layer and step, the head's values included."""
    ref, lava = run_fixed(fixed_graph, x), run_lava(fixed_graph, x)
    assert set(ref.spikes) == set(lava.spikes)
    bad = {}
    for name, a in ref.spikes.items():
        b = lava.spikes[name]
        if fixed_graph[name].graded_output:
            assert a.dtype == b.dtype == torch.int64
            n = int((a != b).sum())
        else:
            n = int((a.bool() != b.bool()).sum())
        if n:
            bad[name] = n
    assert not bad, f"Lava != reference (layer: mismatching entries): {bad}"
    assert torch.equal(ref.output, lava.output) and torch.equal(ref.predictions(), lava.predictions())
    return ref


def assert_integrator(fixed_graph, ref):
    """The head's value per step is 64 * (synaptic input) + bias, from the quantized weights and the
    reference's own spikes of the layer before (no wrap, no saturation, never fired)."""
    head = fixed_graph.output_node
    nodes = list(fixed_graph.nodes)
    syn = nodes[-2]
    src = nodes[-3]
    spikes = ref.spikes[src.name].to(torch.int64) if src.is_neuron else None
    assert spikes is not None, "the head's synapse reads a neuron layer"
    if isinstance(syn, Voting):
        a = spikes.reshape(spikes.shape[:2] + (-1, syn.voting_size)).sum(-1) * int(syn.qweight)
    else:
        assert isinstance(syn, Linear)
        a = spikes @ torch.as_tensor(np.asarray(syn.qweight, np.int64)).T
    p = head.fixed
    assert (p.du, p.dv, p.vth) == (fx.DECAY_MAX, 0, fx.VTH_MAX)
    bias = torch.as_tensor(np.asarray(p.bias_mant, np.int64) * (2 ** np.asarray(p.bias_exp, np.int64)))
    assert torch.equal(ref.spikes[head.name], a * 64 + bias)
    assert ref.stats[head.name] == {"voltage_saturations": 0, "current_wraps": 0, "fired": 0}
    assert int(ref.spikes[head.name].abs().sum()) > 0


@pytest.mark.lava
@pytest.mark.parametrize("name", list(NETS))
def test_head_compiles_exactly(name, tmp_path):
    factory, shape = NETS[name]
    model = _build(factory, shape, seed=len(name))
    out, fgraph, qgraph = _compile(model, shape, tmp_path)
    x = bernoulli(T, 6, shape, p=0.3, seed=7)
    kinds = [n.kind for n in fgraph]
    assert kinds[-1] == "readout" and (("voting" in kinds) == ("vote" in name))
    r = assert_float_equals_torch(fgraph, model, x)
    stored = load_checkpoint(os.path.join(out, "model.pt")).model        # the safe checkpoint rebuilds it
    y = run_torch_model(stored, x)
    assert torch.equal(y, run_torch_model(model, x))
    if name.startswith("linear") and "vote" in name:                      # the vote folded into the Linear
        assert [n.kind for n in qgraph][-2:] == ["linear", "readout"]
        assert tuple(qgraph.nodes[-2].out_shape) == (3,)
    ref = assert_lava_exact(qgraph, x)
    assert_integrator(qgraph, ref)
    # the fixed point is the float head quantized: same class on most samples of this busy net
    agree = float((ref.predictions() == r.predictions()).float().mean())
    assert agree >= 0.5, agree
    # NIR: the artifact's model.nir reads back as the float graph (the head included)
    back = read_nir_file(os.path.join(out, "model.nir"))
    assert back.digest() == fgraph.digest()
    assert torch.equal(run_float(back, x).output, r.output)
    if name == "readout":          # ... and compiles through the NIR door to the same fixed-point network
        again = load_graph(os.path.join(api.compile(os.path.join(out, "model.nir"), str(tmp_path / "nir")), "fixed"))
        assert torch.equal(run_fixed(again, x).output, ref.output)
    # netx cannot express a readout: one line naming the head (exact=False lets the off-grid biases of the
    # layers before it through, so that the head is what is refused)
    for exact in (True, False):
        with pytest.raises(UnsupportedLayer) as e:
            write_netx(qgraph, str(tmp_path / "net.h5"), exact=exact)
        text = str(e.value)
        assert "\n" not in text and text.startswith("layer '"), text
        assert not os.path.exists(tmp_path / "net.h5")
    head = qgraph.output_node.name
    assert f"layer '{head}'" in text and ("readout" in text or "voting" in text), text


@pytest.mark.lava
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_attention_backbone_with_a_readout_head(mode, tmp_path):
    model = _build(tcja_readout_net, IMG, seed=3)
    calib = bernoulli(T, 24, IMG, p=0.3, seed=5)
    np.save(tmp_path / "calib.npy", np.swapaxes(calib.numpy(), 0, 1))
    out, fgraph, qgraph = _compile(model, IMG, tmp_path, attention=mode, calib=str(tmp_path / "calib.npy"))
    x = bernoulli(T, 4, IMG, p=0.3, seed=9)
    if mode == "dynamic":
        assert any(n.kind == "spike_attention" for n in fgraph)
        assert_float_equals_torch(fgraph, model, x)
    else:
        assert_float_equals_torch(fgraph, load_checkpoint(os.path.join(out, "static_model.pt")).model, x)
    ref = assert_lava_exact(qgraph, x)
    assert_integrator(qgraph, ref)


def test_readout_scale_is_the_largest_that_stays_below_the_firing_boundary():
    limit = fx.VTH_MAX << fx.VTH_SHIFT
    gen = np.random.default_rng(0)

    def reach(w, b, steps, s):        # the worst window: every input spiking at every step
        q = np.clip(np.round(np.abs(w) * s), 0, 128)
        return steps * np.max(64 * q.sum(1) + 64 * s * np.abs(b))

    w, b = gen.normal(size=(10, 32)), gen.normal(size=10) * 0.1
    s = fx.readout_scale(w, b, 5, 127)
    assert s == pytest.approx(127 / np.abs(w).max())            # small: the weight bits decide
    assert reach(w, b, 5, s) <= limit
    w, b = gen.normal(size=(10, 2048)), gen.normal(size=10)
    s = fx.readout_scale(w, b, 20, 127)                          # large fan-in, long window: the voltage decides
    assert s < 127 / np.abs(w).max()
    assert reach(w, b, 20, s) <= limit < reach(w, b, 20, s * 1.01)


@pytest.mark.lava
def test_the_reference_models_what_lava_does_beyond_the_integrators_range(tmp_path):
    """Forced out of its range (a negative window past -2**23 saturates; a small threshold fires and resets),
    the readout's reference still equals Lava step for step: it is Lava's arithmetic, not an idealised sum."""
    from neurocomp.ir import Graph
    from neurocomp.passes.pipeline import lower
    steps = 10
    m = nn.Sequential(layer.Linear(64, 3), ReadoutModule()).eval()
    q = lower(module_to_graph(m, FLAT, steps))
    syn, head = q.nodes[-2], q.nodes[-1]
    w = np.full((3, 64), -128, np.int64)
    w[1] = 100                                                  # neuron 1: positive input, fires at a small vth
    w[2, 32:] = 0
    p = dataclasses.replace(head.fixed, vth=2000, bias_mant=np.array([-4096, 0, -4096]),
                            bias_exp=np.array([7, 0, 7]))
    g = Graph.chain([*q.nodes[:-2], syn.replace(qweight=w), head.replace(fixed=p)], q.meta)
    x = torch.ones((steps, 2) + FLAT)
    ref = assert_lava_exact(g, x)
    st = ref.stats[head.name]
    assert st["voltage_saturations"] > 0 and st["fired"] > 0, st
    v_end = ref.output.sum(0)                                    # the final voltage of each window
    assert int(v_end[0, 0]) == -(fx.MAX_STATE - 1)               # saturated, as Lava's LIF clips


def test_nir_writer_and_reader_mirror_the_head_nodes():
    from neurocomp.backends.nir import node_to_nir
    from neurocomp.frontends import nir as nir_reader
    import nir
    for node, cls in ((Voting(name="v", in_shape=(12,), out_shape=(3,), voting_size=4), nir.Linear),
                      (Readout(name="r", in_shape=(3,), out_shape=(3,)), nir.I)):
        written = node_to_nir(node)
        assert isinstance(written, cls)
        back = nir_reader._convert(node.name, written, tuple(node.in_shape), dict(written.metadata))
        assert len(back) == 1 and type(back[0]) is type(node) and back[0].out_shape == node.out_shape
    w = node_to_nir(Voting(name="v", in_shape=(12,), out_shape=(3,), voting_size=4)).weight
    assert np.allclose(w @ np.arange(12.0), np.arange(12.0).reshape(3, 4).mean(1))   # what a foreign consumer runs


def test_predictions_are_the_argmax_of_the_summed_value():
    """A graded head's output is its per-step value: the class is the argmax of the sum (== of the mean)."""
    out = torch.tensor([[[1.0, 0.0, -2.0]], [[0.5, 2.0, 0.0]], [[-1.0, 0.5, 0.0]]])   # [T=3, B=1, 3]
    assert int(predict(out)[0]) == 1                                   # sums 0.5, 2.5, -2
    assert int(predict(out.to(torch.int64) * 3)[0]) == 1               # integer values too: sums 0, 6, -6


def test_heads_that_cannot_be_lowered_are_one_line_errors():
    # a readout after something that is not a Linear's current
    m = nn.Sequential(layer.Flatten(), ReadoutModule())
    with pytest.raises(UnsupportedLayer) as e:
        module_to_graph(m, FLAT, T)
    assert "\n" not in str(e.value) and "layer '1'" in str(e.value) and "Readout" in str(e.value)
    # a vote whose groups do not divide its input
    m = nn.Sequential(layer.Linear(64, 10), lif(), layer.VotingLayer(4))
    with pytest.raises(UnsupportedLayer) as e:
        module_to_graph(m, FLAT, T)
    assert "layer '2'" in str(e.value) and "voting_size=4" in str(e.value)
    # a Linear at the end without a readout names the readout as the way out
    m = nn.Sequential(layer.Linear(64, 10), lif(), layer.Linear(10, 3))
    with pytest.raises(UnsupportedLayer) as e:
        module_to_graph(m, FLAT, T)
    assert "neurocomp.nn.Readout()" in str(e.value)
    # something after the head
    from neurocomp.passes.pipeline import lower
    m = nn.Sequential(layer.Linear(64, 10), lif(), layer.Linear(10, 6), layer.VotingLayer(2), layer.Linear(3, 3),
                      lif())
    with pytest.raises(UnsupportedLayer) as e:
        lower(module_to_graph(m, FLAT, T))
    assert "\n" not in str(e.value) and "readout" in str(e.value)


def test_a_readout_after_spikes_is_the_spiking_head():
    """Readout after a spiking layer reads spike counts: nothing to add (the spiking head)."""
    m = nn.Sequential(layer.Linear(64, 10), lif(), ReadoutModule())
    g = module_to_graph(m, FLAT, T)
    assert g.output_node.kind == "lif"


# ---- the CLI on a readout model ---------------------------------------------------------------------
def _cli(capsys, *argv):
    """One ``neurocomp`` command in this interpreter (this test is about the commands on a readout
    model, not the process: the real launches are tests/test_front_door.py's and test_trace.py's)."""
    from neurocomp.cli import main
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.lava
def test_cli_compile_simulate_report_on_a_readout_model(tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(layer.Flatten(), layer.Linear(64, 24), lif(), nn.Linear(24, 40), layer.VotingLayer(4))
    model.eval()
    make_busy(model, bernoulli(4, 32, (1, 8, 8), p=0.3), rate=(0.15, 0.35), iters=12)
    save_checkpoint(model, str(tmp_path / "model.pt"), input_shape=(1, 8, 8), timesteps=4, encoding="bernoulli",
                    dataset="digits")
    monkeypatch.chdir(tmp_path)
    rc, _, err = _cli(capsys, "compile", "model.pt", "-o", "art", "-q")
    assert rc == 0, err
    rc, _, err = _cli(capsys, "simulate", "art", "--backend", "lava", "--samples", "3", "--json", "sim.json", "-q")
    assert rc == 0, err
    sim = json.load(open(tmp_path / "sim.json"))
    assert sim["exact_match_fraction"] == 1.0
    head = [l for l in sim["per_layer"] if l["name"] == "4_readout"]
    assert head and head[0]["mismatches"] == 0
    assert sim["float_reference_equals_torch_fraction"] == 1.0
    rc, _, err = _cli(capsys, "report", "art", "--samples", "8", "--lava-samples", "1", "-q")
    assert rc == 0, err
    rep = json.load(open(tmp_path / "art" / "report.json"))
    text = json.dumps(rep)
    assert "4_readout" in text
    rc, out, err = _cli(capsys, "inspect", "art")
    assert rc == 0 and "readout" in out, err
