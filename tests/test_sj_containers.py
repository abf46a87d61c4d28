"""SpikingJelly's two APIs and the official repositories' container idioms, end to end (issue 14,
item 3, and the T-mismatch error of item 6).

The models are written as the official TCJA code writes them (SpikingJelly's ``clock_driven`` API):
``SeqToANNContainer(Conv2d, BatchNorm2d)``, ``MultiStepLIFNode(tau=2., detach_reset=True)``, a TCJA
module, ``SeqToANNContainer(MaxPool2d)``, ``nn.Flatten(2)``, ``MultiStepDropout``,
``SeqToANNContainer(Linear)``; and a variant with ``MultiStepParametricLIFNode`` (learned tau),
``MultiStepContainer``, ``MultiStepIFNode``, activation_based containers and ``ParametricLIFNode``,
its neurons carrying ``backend='cupy'`` as a model trained on a GPU does. Each is made busy, compiled
through ``neurocomp.api.compile`` (from ``save_checkpoint`` and from ``torch.save(model)``), and:

- the artifact's safe checkpoint rebuilds an activation_based model with the same state dict that
  computes the same spikes as the user's clock_driven model, on every layer;
- float reference == torch spike for spike on every layer (dynamic mode: the original model; static
  mode: the artifact's static model), and Lava == fixed-point reference on every layer and step.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
from spikingjelly.activation_based import layer as ab_layer, neuron as ab_neuron

import busy_nets
from busy_nets import bernoulli, lava_mismatches, make_busy
from nc_testutils import randomize_bn
from neurocomp import api
from neurocomp.errors import BadCheckpoint, BadInput, NeurocompError, UnsupportedLayer
from neurocomp.frontends.checkpoint import build, describe, load_checkpoint, save_checkpoint
from neurocomp.frontends.modules import EQUIVALENT, MODULES, cd_layer, cd_neuron, plif_tau
from neurocomp.frontends.torch import module_to_graph, run_torch_model
from neurocomp.ir import Flatten, LIF
from neurocomp.ir.serialize import load_graph
from neurocomp.nn import TCJA
from neurocomp.sim import run_float

pytestmark = pytest.mark.clock_driven     # the official TCJA code's API (cd_layer, cd_neuron are None in 2.x)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPE = (2, 8, 8)


def _randomize(model, seed, gain=2.5):
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if not name.endswith(".w"):                  # a PLIF's w is its learned tau, set by the caller
            p.data.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * gain / max(1, p.shape[-1] ** 0.5))
    randomize_bn(model, gen)
    return model.eval()


def tcja_net(T, seed=0):
    """The TCJA paper's block as its official code writes it (clock_driven API)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        cd_layer.SeqToANNContainer(nn.Conv2d(2, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)),
        cd_neuron.MultiStepLIFNode(tau=2., detach_reset=True, backend="torch"),
        TCJA(kernel_size_t=2, kernel_size_c=3, T=T, channel=8),
        cd_layer.SeqToANNContainer(nn.MaxPool2d(2, 2)),
        nn.Flatten(2),
        cd_layer.MultiStepDropout(0.5),
        cd_layer.SeqToANNContainer(nn.Linear(8 * 4 * 4, 32), nn.BatchNorm1d(32)),
        cd_neuron.MultiStepLIFNode(tau=2., detach_reset=True, backend="torch"),
        cd_layer.SeqToANNContainer(nn.Linear(32, 10)),
        cd_neuron.MultiStepLIFNode(tau=2., detach_reset=True, backend="torch"))
    return _randomize(model, seed)


def plif_net(seed=1):
    """ParametricLIF (learned tau), MultiStepContainer, MultiStepIF, activation_based containers."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        ab_layer.SeqToANNContainer(nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6)),
        cd_neuron.MultiStepParametricLIFNode(init_tau=2.0, detach_reset=True),
        cd_layer.MultiStepContainer(nn.AvgPool2d(2)),
        cd_layer.SeqToANNContainer(nn.Conv2d(6, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)),
        cd_neuron.MultiStepIFNode(v_threshold=1.0, detach_reset=True),
        nn.Flatten(2),
        ab_layer.SeqToANNContainer(nn.Linear(6 * 4 * 4, 24), nn.BatchNorm1d(24)),
        ab_neuron.ParametricLIFNode(init_tau=2.0, step_mode="m"),
        cd_layer.SeqToANNContainer(nn.Linear(24, 5)),
        cd_neuron.MultiStepLIFNode(tau=3., decay_input=False, v_threshold=0.8, backend="torch"))
    _randomize(model, seed)
    with torch.no_grad():                         # learned time constants (tau = 1 / sigmoid(w))
        model[1].w.fill_(-0.9)
        model[7].w.fill_(-1.7)
    for m in model.modules():                     # trained with the cupy kernels, as the official code is
        if "_backend" in vars(m):                 # activation_based: as unpickled (its setter wants cupy)
            m._backend = "cupy"
        elif hasattr(m, "backend"):
            m.backend = "cupy"
    return model


def make_busy_clock_driven(model, x, monkeypatch, seed=0):
    """``busy_nets.make_busy`` on the activation_based model the checkpoint stores (same state dict
    names), its tuned weights then copied back into the user's model."""
    twin = build(describe(model))
    twin.load_state_dict(model.state_dict(), strict=True)
    twin.eval()
    monkeypatch.setattr(busy_nets, "NEURONS", busy_nets.NEURONS + (ab_neuron.ParametricLIFNode,))
    make_busy(twin, x, rate=(0.15, 0.35), seed=seed, iters=16)
    model.load_state_dict(twin.state_dict(), strict=True)
    return model


def _only_activation_based(model):
    """The clock_driven modules of ``model`` (none in a model rebuilt from a checkpoint)."""
    return [f"{type(m).__module__}.{type(m).__name__}" for m in model.modules()
            if type(m).__module__.startswith("spikingjelly.clock_driven")]


def assert_same_spikes(a, b, names, x):
    """Two torch models give the same output and the same spikes on every named layer."""
    ya, sa = run_torch_model(a, x, record=names)
    yb, sb = run_torch_model(b, x, record=names)
    assert torch.equal(ya, yb)
    assert set(sa) == set(sb) == set(names)
    for name in names:
        assert torch.equal(sa[name], sb[name]), name


def assert_float_equals_torch(graph, model, x):
    """Float reference == torch on every spiking layer; something fires."""
    r = run_float(graph, x)
    y, spikes = run_torch_model(model, x, record=list(r.spikes))
    assert torch.equal(r.output, y)
    assert set(spikes) == set(r.spikes)
    for name, s in r.spikes.items():
        assert torch.equal(s.bool(), spikes[name]), name
    assert sum(int(s.sum()) for s in r.spikes.values()) > 0
    return r


def assert_lava_exact(fixed_graph, x):
    ref, mism = lava_mismatches(fixed_graph, x)
    bad = {k: v for k, v in mism.items() if v[0]}
    assert not bad, f"Lava != reference (layer: mismatches, reference-only, Lava-only): {bad}"
    assert sum(int(s.sum()) for s in ref.spikes.values()) > 0


# ---- the tables ------------------------------------------------------------------------------------
def test_clock_driven_classes_are_stored_as_activation_based_equivalents():
    clock = {n for n, (cls, _, _) in MODULES.items() if cls.__module__.startswith("spikingjelly.clock_driven")}
    assert clock == set(EQUIVALENT)
    for name, stored in EQUIVALENT.items():
        assert MODULES[stored][0].__module__.startswith("spikingjelly.activation_based"), name
        built = MODULES[name][2]({"p": 0.5} if "Dropout" in name else {})
        assert type(built) is MODULES[stored][0] and built.step_mode == "m"


# ---- the TCJA paper's net, clock_driven, static and dynamic ------------------------------------------
@pytest.fixture(scope="module")
def tcja_busy():
    T = 6
    model = tcja_net(T)
    xc = bernoulli(T, 24, SHAPE, p=0.3, seed=5)
    mp = pytest.MonkeyPatch()
    try:
        make_busy_clock_driven(model, xc, mp)
    finally:
        mp.undo()
    return model, T, xc


@pytest.mark.lava
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_tcja_paper_net_compiles_exactly(tcja_busy, tmp_path, mode):
    model, T, xc = tcja_busy
    ckpt = save_checkpoint(model, str(tmp_path / "tcja.pt"), input_shape=SHAPE, timesteps=T, encoding="bernoulli")
    np.save(tmp_path / "calib.npy", np.swapaxes(xc.numpy(), 0, 1))
    out = api.compile(ckpt, str(tmp_path / "art"), attention=mode, calib=str(tmp_path / "calib.npy"))
    x = bernoulli(T, 4, SHAPE, p=0.3, seed=9)

    stored = load_checkpoint(os.path.join(out, "model.pt"))
    assert _only_activation_based(stored.model) == []            # no clock_driven class
    assert type(stored.model[0]) is ab_layer.SeqToANNContainer
    assert stored.model.state_dict().keys() == model.state_dict().keys()
    neurons = [p for p, m in model.named_modules() if isinstance(m, cd_neuron.MultiStepLIFNode)]
    assert_same_spikes(model, stored.model, neurons + ["3.0"], x)

    float_graph = load_graph(os.path.join(out, "float"))
    assert {"0.0", "0.1", "1", "3.0", "4", "6.0", "6.1", "7", "8.0", "9"} <= {n.name for n in float_graph}
    assert isinstance(float_graph["4"], Flatten)
    if mode == "dynamic":
        assert any(n.kind == "spike_attention" for n in float_graph)
        assert_float_equals_torch(float_graph, model, x)                  # the user's own model
    else:
        static = load_checkpoint(os.path.join(out, "static_model.pt")).model
        assert_float_equals_torch(float_graph, static, x)
    assert_lava_exact(load_graph(os.path.join(out, "fixed")), x)


# ---- ParametricLIF / MultiStepIF / MultiStepContainer, cupy flag, from torch.save(model) -----------
@pytest.mark.lava
def test_plif_variant_from_a_pickle_compiles_exactly(tmp_path, monkeypatch):
    T = 5
    model = plif_net()
    make_busy_clock_driven(model, bernoulli(T, 24, SHAPE, p=0.3, seed=6), monkeypatch, seed=1)
    torch.save(model, tmp_path / "model.pt")
    out = api.compile(str(tmp_path / "model.pt"), str(tmp_path / "art"), trust_pickle=True, input_shape=SHAPE,
                      timesteps=T, encoding="bernoulli")
    x = bernoulli(T, 4, SHAPE, p=0.3, seed=11)

    stored = load_checkpoint(os.path.join(out, "model.pt"))
    assert _only_activation_based(stored.model) == []
    assert all(getattr(m, "backend", "torch") == "torch" for m in stored.model.modules())
    neurons = ["1", "4", "7", "9"]
    assert_same_spikes(model, stored.model, neurons, x)
    assert all(m.backend == "cupy" for m in model.modules() if hasattr(m, "backend"))   # left as it was

    float_graph = load_graph(os.path.join(out, "float"))
    for name, module in (("1", model[1]), ("7", model[7])):              # tau frozen: 1 / sigmoid(w)
        node = float_graph[name]
        assert isinstance(node, LIF) and node.tau == pytest.approx(plif_tau(module), rel=1e-6)
        assert node.tau == pytest.approx(1.0 / float(torch.sigmoid(module.w)), rel=1e-6)
    assert float_graph["4"].tau is None                                # the IF neuron
    r = assert_float_equals_torch(float_graph, model, x)
    assert all(int(r.spikes[n].sum()) > 0 for n in ("1", "4", "7")), {n: int(s.sum()) for n, s in r.spikes.items()}
    assert_lava_exact(load_graph(os.path.join(out, "fixed")), x)


# ---- reading rules ----------------------------------------------------------------------------------
def test_activation_based_container_round_trips_through_a_safe_checkpoint(tmp_path):
    """make_net(1) holds an activation_based SeqToANNContainer(BatchNorm1d): save_checkpoint used to refuse it."""
    from nc_testutils import make_net, spike_input
    model, shape = make_net(1, 0)
    path = save_checkpoint(model, str(tmp_path / "m.pt"), input_shape=shape, timesteps=5)
    back = load_checkpoint(path)
    assert _only_activation_based(back.model) == []
    assert back.model.state_dict().keys() == model.state_dict().keys()
    names = [p for p, m in model.named_modules() if isinstance(m, ab_neuron.BaseNode)]
    assert_same_spikes(model, back.model, names, spike_input(5, 6, shape, seed=3))
    assert module_to_graph(back.model, shape, 5).digest() == module_to_graph(model, shape, 5).digest()


def test_flatten_on_time_major_tensors():
    lif = lambda: cd_neuron.MultiStepLIFNode(tau=2.)  # noqa: E731
    head = [cd_layer.SeqToANNContainer(nn.Conv2d(2, 3, 3, padding=1)), lif()]
    tail = [cd_layer.SeqToANNContainer(nn.Linear(3 * 8 * 8, 4)), lif()]
    for flat in (nn.Flatten(2), cd_layer.SeqToANNContainer(nn.Flatten(1)), ab_layer.Flatten(step_mode="m")):
        m = nn.Sequential(*head, flat, *tail).eval()
        g = module_to_graph(m, SHAPE, 4)
        f = [n for n in g if isinstance(n, Flatten)]
        assert len(f) == 1 and tuple(f[0].out_shape) == (3 * 8 * 8,)
        x = bernoulli(4, 3, SHAPE, p=0.5, seed=2)
        assert torch.equal(run_float(g, x).output, run_torch_model(m, x))
    with pytest.raises(NeurocompError) as e:                          # flattens the channels only
        module_to_graph(nn.Sequential(*head, nn.Flatten(3), *tail), SHAPE, 4)
    assert "nn.Flatten(start_dim=2)" in str(e.value) and "\n" not in str(e.value)


def test_single_step_clock_driven_neuron_is_refused_naming_its_multi_step_version():
    m = nn.Sequential(cd_layer.SeqToANNContainer(nn.Conv2d(2, 3, 3, padding=1)), cd_neuron.LIFNode(tau=2.))
    with pytest.raises(UnsupportedLayer) as e:
        module_to_graph(m, SHAPE, 4)
    assert "layer '1'" in str(e.value) and "MultiStepLIFNode" in str(e.value)


# ---- a T mismatch between an attention module and the model's T -------------------------------------
def _small_tcja(T):
    return nn.Sequential(
        cd_layer.SeqToANNContainer(nn.Conv2d(2, 4, 3, padding=1)), cd_neuron.MultiStepLIFNode(tau=2.),
        TCJA(2, 3, T=T, channel=4), cd_layer.SeqToANNContainer(nn.MaxPool2d(2)), nn.Flatten(2),
        cd_layer.SeqToANNContainer(nn.Linear(4 * 4 * 4, 3)), cd_neuron.MultiStepLIFNode(tau=2.)).eval()


def _one_line(e, *words):
    text = str(e.value)
    assert "\n" not in text and "Traceback" not in text
    for w in words:
        assert w in text, (w, text)


def test_t_mismatch_is_one_line_with_the_next_step(tmp_path):
    model = _small_tcja(4)
    with pytest.raises(BadInput) as e:                               # save_checkpoint
        save_checkpoint(model, str(tmp_path / "m.pt"), input_shape=SHAPE, timesteps=6)
    _one_line(e, "layer '2'", "TCJA", "T=4", "timesteps=6", "pass timesteps=4")

    save_checkpoint(model, str(tmp_path / "m.pt"), input_shape=SHAPE, timesteps=4)
    doc = torch.load(tmp_path / "m.pt", weights_only=True)
    doc["timesteps"] = 6                                             # a checkpoint that contradicts itself
    torch.save(doc, tmp_path / "bad.pt")
    with pytest.raises(BadCheckpoint) as e:
        load_checkpoint(str(tmp_path / "bad.pt"))
    _one_line(e, "layer '2'", "T=4", "timesteps=6", "save_checkpoint(..., timesteps=4)")

    torch.save(model, tmp_path / "pickled.pt")                       # a pickle with --timesteps
    with pytest.raises(BadInput) as e:
        load_checkpoint(str(tmp_path / "pickled.pt"), trust_pickle=True, input_shape=SHAPE, timesteps=6,
                        encoding="bernoulli")
    _one_line(e, "--timesteps", "layer '2'", "T=4", "pass --timesteps 4")
    m = load_checkpoint(str(tmp_path / "pickled.pt"), trust_pickle=True, input_shape=SHAPE, timesteps=4,
                        encoding="bernoulli")
    assert m.timesteps == 4                                          # the hint's next step works

    with pytest.raises(UnsupportedLayer) as e:                       # tracing at another T
        module_to_graph(model, SHAPE, 6, attention_mode="dynamic")
    _one_line(e, "layer '2'", "T=4", "timesteps=4")


def test_t_mismatch_through_the_cli_is_one_error_line(tmp_path):
    torch.save(_small_tcja(4), tmp_path / "model.pt")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-m", "neurocomp", "compile", "model.pt", "-o", "out", "--trust-pickle",
                        "--input-shape", "2,8,8", "--timesteps", "6", "--encoding", "bernoulli"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and "pass --timesteps 4" in errors[0] and "layer '2'" in errors[0], p.stderr
