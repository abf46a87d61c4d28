"""Foreign NIR graphs (issue 6): import, float/fixed/Lava agreement, netx export, error handling.

Data: ../shared/interop/nir-paper (graphs and outputs other frameworks and a Loihi 2 chip produced).
"""
from __future__ import annotations

import glob
import os
import warnings

import nir
import numpy as np
import pytest
import torch

from neurocomp.errors import BadGraph, NeurocompError, UnsupportedLayer
from neurocomp.frontends.nir import read_nir_file
from neurocomp.passes.pipeline import lower_nir
from neurocomp.sim import run_fixed, run_float

ROOT = os.environ.get("NEUROCOMP_NIR_PAPER", os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                          "interop", "nir-paper"))
if not os.path.isdir(ROOT):
    ROOT = "/work/shared/interop/nir-paper"
pytestmark = pytest.mark.skipif(not os.path.isdir(ROOT), reason="nir-paper data not available")

LIF = os.path.join(ROOT, "01_lif")
CNN = os.path.join(ROOT, "02_cnn", "cnn_sinabs.nir")
RNN = os.path.join(ROOT, "03_rnn")


def _csv(name):
    return np.loadtxt(os.path.join(LIF, name), delimiter=",")


# ---- 01: single LIF neuron against the exact solution, Lava CPU and Loihi 2 --------------------------
@pytest.fixture(scope="module")
def lif_norse():
    g = read_nir_file(os.path.join(LIF, "lif_norse.nir"), dt=1e-4, timesteps=1000)
    return g, lower_nir(g)


def test_lif_float_reference_spikes_at_exact_solution_steps(lif_norse):
    g, _ = lif_norse
    exact = _csv("lif_exact.csv")
    x = torch.tensor(exact[:, 0], dtype=torch.float32)[:, None, None]
    out = run_float(g, x).output[:, 0, 0].numpy()
    assert np.nonzero(exact[:, 2])[0].size >= 3
    assert np.array_equal(np.nonzero(out)[0], np.nonzero(exact[:, 2])[0])


@pytest.mark.lava
def test_lif_lava_spikes_and_voltage_match_lava_cpu_and_loihi2(lif_norse, tmp_path):
    """Raw Lava steps (one Dense delay included) against the recorded Lava CPU and Loihi 2 traces."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.monitor.process import Monitor
    from neurocomp.backends.lava import emit

    _, q = lif_norse
    cpu, chip = _csv("lif_lava_cpu_fixed.csv"), _csv("lif_lava_loihi_fixed.csv")
    assert np.array_equal(cpu[:, 0], chip[:, 0])
    steps = cpu.shape[0]
    data = cpu[:, 0].astype(np.int64)[None, :]
    net = emit(q, data, steps, str(tmp_path))
    name, proc, path = net.layers[0][:3]
    mon = Monitor()
    mon.probe(proc.v, steps)
    try:
        proc.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        v = mon.get_data()[name]["v"][:, 0].astype(np.float64)
    finally:
        proc.stop()
    spikes = np.load(path)[:, 0].astype(bool)
    for ref in (cpu, chip):
        assert np.array_equal(np.nonzero(spikes)[0], np.nonzero(ref[:, 2])[0])
    # voltage: neurocomp's Lava units are 64*s per unit of v (s = vth/theta); the paper's are 2**14
    rec = q.meta["passes"][-1]["layers"][0]
    ours = v / (64.0 * rec["scale"])
    for ref in (cpu, chip):
        theirs = ref[:, 1] / 2.0 ** 14
        # the chip reports v = 128 (not 0) on the 4 spike steps; everywhere else both traces agree
        keep = ~ref[:, 2].astype(bool)
        err = np.abs(ours - theirs)[keep]
        assert err.max() < 0.0035, err.max()           # measured 0.0029 (their weight is 10/256, ours 127/3170)
        assert np.corrcoef(ours, theirs)[0, 1] > 0.99
    # and our own fixed-point reference gives the same voltage bit for bit (one step earlier: time-aligned)
    from neurocomp.sim.cuba import run_fixed_cuba
    a = torch.tensor(cpu[:, 0], dtype=torch.int64)[:, None, None] * int(q.nodes[1].qweight.ravel()[0])
    _, v_ref = run_fixed_cuba(q.nodes[2], a, record_v=True)
    v_ref = v_ref[:, 0, 0].numpy()
    v_ref = np.where(np.load(path)[1:, 0].astype(bool), 0, v_ref[:-1])   # Lava shows v after the reset
    assert np.array_equal(v[1:], v_ref)


# ---- 02: Sinabs CNN ------------------------------------------------------------------------------------
def _nirtorch_float(path, x, dt):
    """An independent float execution of the NIR graph: nirtorch's interpreter, with the NIR IF spec
    written out here (and an Affine/Flatten map, working around nirtorch's Affine-bias bug)."""
    import nirtorch

    class IF(torch.nn.Module):
        def __init__(self, node):
            super().__init__()
            self.r = torch.as_tensor(node.r, dtype=torch.float32)
            self.th = torch.as_tensor(node.v_threshold, dtype=torch.float32)
            self.vr = torch.as_tensor(node.v_reset, dtype=torch.float32)

        def forward(self, x, state=None):
            v = (torch.zeros_like(x) if state is None else state) + dt * self.r * x
            z = (v > self.th).float()
            return z, torch.where(z > 0, self.vr, v)

    class Affine(torch.nn.Module):
        def __init__(self, node):
            super().__init__()
            self.w, self.b = torch.as_tensor(node.weight), torch.as_tensor(node.bias)

        def forward(self, x):
            return x @ self.w.T + self.b

    m = nirtorch.nir_to_torch(nir.read(path), {nir.IF: IF, nir.Affine: Affine,
                                               nir.Flatten: lambda n: torch.nn.Flatten(1)})
    state, outs = None, []
    with torch.no_grad():
        for t in range(x.shape[0]):
            o, state = m(x[t], state)
            outs.append(o)
    return torch.stack(outs)


@pytest.fixture(scope="module")
def cnn():
    T = 8
    g = read_nir_file(CNN, dt=1.0, timesteps=T)
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand((T, 3, 2, 34, 34), generator=gen) < 0.15).float()
    return g, lower_nir(g), x


def test_cnn_float_reference_equals_nirtorch(cnn):
    g, _, x = cnn
    ref = _nirtorch_float(CNN, x, dt=1.0)
    out = run_float(g, x).output
    assert ref.sum() > 0
    assert torch.equal(out, ref)


@pytest.mark.lava
def test_cnn_lava_equals_fixed_reference(cnn):
    from neurocomp.backends.lava import run_lava
    _, q, x = cnn
    xs = x[:, :2]
    rq, rl = run_fixed(q, xs), run_lava(q, xs)
    assert set(rq.spikes) == set(rl.spikes) and len(rq.spikes) == 5
    for k in rq.spikes:
        assert torch.equal(rq.spikes[k], rl.spikes[k]), k
    assert int(rq.spikes["1"].sum()) > 100


@pytest.mark.lava
def test_cnn_netx_roundtrip_equals_fixed_reference(cnn, tmp_path):
    """Written as netx HDF5, loaded by stock lava-dl netx 0.6, run back to back: same output spikes."""
    from neurocomp.backends.netx import run_netx, write_netx
    import h5py
    _, q, x = cnn
    path = str(tmp_path / "cnn.net")
    write_netx(q, path)
    with h5py.File(path) as f:
        types = [f[f"layer/{i}/type"][0].decode() for i in range(len(f["layer"]))]
    assert "pool" not in types and types.count("conv") == 3 and types.count("dense") == 2
    xs = x[:, :2]
    out, net = run_netx(path, xs, x.shape[0])
    ref = run_fixed(q, xs).output
    assert len(net.layers) == 5
    assert ref.sum() > 0
    assert torch.equal(out, ref)


@pytest.mark.lava
def test_netx_sum_pool_into_neurons_is_a_depthwise_conv(tmp_path):
    """A SumPool2d in front of a neuron (not fusable) is written as a groups=C conv netx can load."""
    from neurocomp.backends.netx import run_netx, write_netx
    from neurocomp.ir import Graph, Input, Conv2d, CubaLIF, SumPool2d
    from neurocomp.passes import quantize
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.6, (3, 2, 3, 3)).astype(np.float32)
    nodes = [Input(name="in", in_shape=(2, 8, 8), out_shape=(2, 8, 8)),
             Conv2d(name="c", in_shape=(2, 8, 8), out_shape=(3, 8, 8), weight=w, padding=(1, 1)),
             CubaLIF(name="n1", in_shape=(3, 8, 8), out_shape=(3, 8, 8), beta=0.9, v_threshold=1.0),
             SumPool2d(name="p", in_shape=(3, 8, 8), out_shape=(3, 4, 4), kernel=(2, 2), stride=(2, 2)),
             CubaLIF(name="n2", in_shape=(3, 4, 4), out_shape=(3, 4, 4), v_threshold=1.5)]
    g = quantize(Graph.chain(nodes, {"timesteps": 6}))
    path = str(tmp_path / "p.net")
    write_netx(g, path)
    x = (torch.rand((6, 2, 2, 8, 8), generator=torch.Generator().manual_seed(1)) < 0.4).float()
    out, _ = run_netx(path, x, 6)
    ref = run_fixed(g, x).output
    assert ref.sum() > 0 and torch.equal(out, ref)


def test_netx_refuses_what_it_cannot_load(tmp_path):
    from neurocomp.api import compile as compile_
    with pytest.raises(UnsupportedLayer, match="recurrent"):
        compile_(os.path.join(RNN, "braille_noDelay_bias_zero.nir"), str(tmp_path / "a"), target="netx",
                    dt=1e-4)
    with pytest.raises(UnsupportedLayer, match="subtraction"):
        compile_(os.path.join(LIF, "lif_norse.nir"), str(tmp_path / "b"), target="netx", dt=1e-4,
                    reset="subtract")
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_netx_inexact_writer_rounds_what_exact_refuses(tmp_path):
    """``exact=False`` (the bench's timing comparison) writes the zoo's plain model, whose biases are
    off netx's grid and whose max pools are threshold neurons; the default refuses it, in one line."""
    import h5py
    from neurocomp.api import compile as nc_compile
    from neurocomp.artifact import Artifact
    from neurocomp.backends.netx import write_netx
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    g = Artifact(nc_compile(os.path.join(root, "models", "digits_plain", "model.pt"), str(tmp_path / "a"))).fixed_graph
    with pytest.raises(UnsupportedLayer):
        write_netx(g, str(tmp_path / "exact.h5"))
    write_netx(g, str(tmp_path / "net.h5"), exact=False)
    with h5py.File(tmp_path / "net.h5") as f:
        kinds = [f["layer"][k]["type"][0] for k in sorted(f["layer"], key=int)]
        assert len(kinds) == 1 + len(g.neurons()) + sum(1 for n in g if n.kind == "flatten")
        assert any("bias" in f["layer"][k] for k in f["layer"])


# ---- 03: Braille recurrent CubaLIF networks --------------------------------------------------------
@pytest.mark.parametrize("variant,reset,floor", [
    ("noDelay_bias_zero", "zero", 1.0),             # measured: 100 % (38 x 256 hidden spikes identical)
    ("noDelay_noBias_subtract", "subtract", 0.995),  # measured: 99.55 % (120 vs snnTorch's 118 spikes)
])
def test_braille_float_reference_vs_snntorch(variant, reset, floor):
    g = read_nir_file(os.path.join(RNN, f"braille_{variant}.nir"), dt=1e-4, reset=reset, timesteps=256)
    assert g.nodes[2].rec_weight is not None        # the recurrent Affine became the layer's own weight
    x = torch.tensor(np.load(os.path.join(RNN, "derived", "braille_ds_test_sample0_input.npy")),
                     dtype=torch.float32)[:, None]
    hidden = run_float(g, x).spikes[g.nodes[2].name][:, 0].numpy()
    snn = np.load(os.path.join(RNN, f"snntorch_activity_{variant}.npy"))
    assert snn.shape == hidden.shape and snn.sum() > 50
    agree = float((snn == hidden).mean())
    assert agree >= floor, agree
    if floor < 1.0:
        assert agree < 1.0   # the subtract variant does differ (snnTorch subtracts on the step after)


@pytest.mark.lava
@pytest.mark.parametrize("variant,reset", [("noDelay_bias_zero", "zero"), ("noDelay_noBias_subtract", "subtract")])
def test_braille_compiles_and_lava_equals_fixed_reference(variant, reset, tmp_path):
    from neurocomp.api import compile as compile_, simulate
    out = compile_(os.path.join(RNN, f"braille_{variant}.nir"), str(tmp_path / "b"), dt=1e-4, reset=reset,
                      timesteps=256)
    x = np.load(os.path.join(RNN, "derived", "braille_ds_test_sample0_input.npy"))[None]
    r = simulate(out, backend="lava", inputs=x, progress=False)
    assert r["exact_match_fraction"] == 1.0
    assert all(p["spikes_compared"] > 0 for p in r["per_layer"])


def test_missing_dt_is_a_clear_error():
    with pytest.raises(BadGraph, match="--dt"):
        read_nir_file(os.path.join(LIF, "lif_norse.nir"))


def test_old_graph_read_without_type_check_warns():
    from neurocomp.frontends.nir_foreign import NIRWarning
    with pytest.warns(NIRWarning, match="type_check=False"):
        g = read_nir_file(os.path.join(LIF, "lif_rockpool.nir"), dt=1e-4)
    assert [n.kind for n in g] == ["input", "linear", "cuba_lif"]


def test_malformed_graphs_name_the_node_or_edge():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(BadGraph, match="NIR node 'linear'.*transposed"):
            read_nir_file(os.path.join(ROOT, "third_party", "kmheckel+spyx", "research", "paper", "spyx_shd.nir"),
                           dt=1e-4)
        with pytest.raises(BadGraph, match=r"edge \('lif1' -> 'fc2'\)"):
            read_nir_file(os.path.join(ROOT, "history", "3f7c85aa8790369078c75b0f0243a58c39675929", "paper",
                                        "03_rnn", "braille.nir"), dt=1e-4)


def test_every_nir_file_compiles_or_fails_in_one_line(tmp_path, capsys):
    from neurocomp.cli import main
    files = sorted(glob.glob(os.path.join(ROOT, "history", "**", "*.nir"), recursive=True)
                   + glob.glob(os.path.join(ROOT, "third_party", "**", "*.nir"), recursive=True))
    assert len(files) >= 25
    ok = []
    for i, f in enumerate(files):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rc = main(["compile", f, "-o", str(tmp_path / f"a{i}"), "--dt", "1e-4", "-q"])
        err = capsys.readouterr().err
        assert "Traceback" not in err, f
        if rc == 0:
            ok.append(f)
            assert os.path.isfile(tmp_path / f"a{i}" / "manifest.json")
        else:
            lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
            assert rc == 2 and len(lines) == 1 and f in lines[0], (f, err)
    assert len(ok) >= 12, ok   # measured: 13 of 29 compile


def test_neurocomp_nir_export_reads_with_type_check_and_in_nirtorch(tmp_path):
    """A compiled torch model's model.nir: nir.read with type checking, and nirtorch builds and runs it."""
    import nirtorch
    from neurocomp.api import compile as compile_
    model = os.path.join(os.path.dirname(__file__), "..", "models", "digits_plain", "model.pt")
    if not os.path.isfile(model):
        pytest.skip("zoo model missing")
    out = compile_(model, str(tmp_path / "d"))
    g = nir.read(os.path.join(out, "model.nir"))          # type_check=True is the default
    kinds = {type(n).__name__ for n in g.nodes.values()}
    assert {"Conv2d", "LIF"} <= kinds or {"Conv2d", "IF"} <= kinds

    class Neuron(torch.nn.Module):   # neurocomp's LIF written from the NIR fields (threshold_rule '>=')
        def __init__(self, node):
            super().__init__()
            self.node = node

        def forward(self, x, state=None):
            n = self.node
            v = torch.zeros_like(x) if state is None else state
            if isinstance(n, nir.LIF):
                k = torch.as_tensor(1e-3 / n.tau, dtype=torch.float32)
                v = v + k * (torch.as_tensor(n.v_leak) - v + torch.as_tensor(n.r) * x)
            else:
                v = v + x
            z = (v >= torch.as_tensor(n.v_threshold)).float()
            return z, torch.where(z > 0, torch.as_tensor(n.v_reset, dtype=torch.float32), v)

    class Threshold(torch.nn.Module):
        def __init__(self, node):
            super().__init__()
            self.th = torch.as_tensor(node.threshold, dtype=torch.float32)

        def forward(self, x):
            return (x > self.th).float()

    m = nirtorch.nir_to_torch(g, {nir.LIF: Neuron, nir.IF: Neuron, nir.Threshold: Threshold,
                                  nir.Flatten: lambda n: torch.nn.Flatten(1)})
    from neurocomp.artifact import Artifact
    art = Artifact(out)
    T = art.manifest["timesteps"]
    x = (torch.rand((T, 32) + tuple(art.manifest["input_shape"]), generator=torch.Generator().manual_seed(0)) < 0.3
         ).float()
    state, outs = None, []
    with torch.no_grad():
        for t in range(T):
            o, state = m(x[t], state)
            outs.append(o)
    y = torch.stack(outs)
    ref = run_float(art.float_graph, x).output
    assert y.shape == ref.shape
    agree = float((y == ref).float().mean())
    print("nirtorch vs float reference agreement", agree)
    # measured 0.9934 and 0.9957 in two runs (32 samples): neurocomp writes v + (x - v)/tau, this module
    # v + dt/tau_s*(...), and float32 rounding flips a few spikes at the threshold, differently from run to run
    # (with 4 samples it went as low as 0.9875); a wrong tau, threshold or reset gives far less
    assert agree > 0.98
