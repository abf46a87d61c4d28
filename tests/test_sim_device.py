"""The reference simulator's device (issue 16 item 4): ``--device cpu|cuda|auto``.

What can be proven without a GPU: the device is resolved in one place and CUDA is refused in one line
where torch has none; every constant a run makes is placed on the run's device (a torch function mode
sees every tensor factory call); the explicit CPU gives the default's results; the float dtype of a
synaptic sum is the one in which every partial sum is an exact integer, refusing a layer whose sums could
reach 2**53. The CUDA run itself is checked by ``bench/device_check.py`` on a GPU machine (every zoo
model and the DVS128-shaped net, CPU == CUDA spike for spike); the suite never needs a GPU."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional
from torch.overrides import TorchFunctionMode

from neurocomp import devices
from neurocomp.cli import main
from neurocomp.errors import BadInput, UnsupportedLayer
from neurocomp.frontends.torch import module_to_graph
from neurocomp.ir import Graph, Input, Linear
from neurocomp.nn import build
from neurocomp.passes.pipeline import lower
from neurocomp.sim import run_fixed, run_float
from neurocomp.sim.fixed_ops import FIXED_OPS, exact_float
from neurocomp.sim.walk import Run
from busy_nets import make_busy
from nc_testutils import spike_input

T = 4
FACTORIES = {torch.zeros, torch.ones, torch.full, torch.empty, torch.tensor, torch.as_tensor, torch.arange,
             torch.eye, torch.rand, torch.randn, torch.randint, torch.linspace}


def _tiny(kind):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    m = build(kind, in_channels=2, num_classes=3, input_hw=8, channels=(4, 4), T=T,
              **({"kernel_size_t": 2, "kernel_size_c": 2} if kind == "tcja" else
                 {"t_ratio": 1, "c_ratio": 2} if kind == "ma" else {"rank": 2}))
    for p in m.parameters():
        if p.requires_grad:
            p.data.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * 2.5 / max(1, p.shape[-1] ** 0.5))
    functional.set_step_mode(m, "m")
    return m.eval()


@pytest.fixture(scope="module")
def graphs():
    """Float and quantized graphs of busy nets whose walks reach every arithmetic with constants: convs,
    sum pools, Linear/Dense, LIF and gain-scheduled neurons, TCJA/PFA payloads, MA's dynamic gains, readout,
    voting."""
    out = {}
    for kind in ("tcja", "ma", "pfa"):
        m = _tiny(kind)
        make_busy(m, spike_input(T, 8, (2, 8, 8), p=0.3, seed=0), iters=8)
        g = module_to_graph(m, (2, 8, 8), T, "bernoulli", attention_mode="dynamic")
        out[kind] = (g, lower(g, attention="dynamic"))
    return out


class _Placement(TorchFunctionMode):
    """Records every tensor factory call that names no device and is not given a tensor (its result
    would land on the CPU whatever the run's device)."""

    def __init__(self):
        super().__init__()
        self.unplaced, self.seen = [], 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.seen += func in FACTORIES
        if func in FACTORIES and kwargs.get("device") is None and not (args and isinstance(args[0], torch.Tensor)):
            self.unplaced.append(func.__name__)
        return func(*args, **kwargs)


def test_every_constant_of_a_run_is_placed_on_the_run_device_and_explicit_cpu_is_the_default(graphs):
    x = spike_input(T, 3, (2, 8, 8), p=0.3, seed=1)
    for kind, (g, q) in graphs.items():
        ref_f, ref_q = run_float(g, x), run_fixed(q, x)
        assert sum(int(s.to(torch.int64).abs().sum()) for s in ref_q.spikes.values()) > 0, kind
        with _Placement() as audit:
            got_f = run_float(g, x, device="cpu")
            got_q = run_fixed(q, x, device=torch.device("cpu"))
        assert audit.unplaced == [] and audit.seen > 20, f"{kind}: {audit.unplaced} of {audit.seen}"
        for a, b in ((ref_f, got_f), (ref_q, got_q)):
            assert torch.equal(a.output, b.output) and list(a.spikes) == list(b.spikes)
            assert all(torch.equal(a.spikes[k], b.spikes[k]) for k in a.spikes)
            assert all(v.device.type == "cpu" for v in b.spikes.values())
        assert got_q.stats == ref_q.stats


def test_the_audit_sees_an_unplaced_constant():
    """The audit is not vacuous: a constant made without a device is caught."""
    with _Placement() as audit:
        torch.as_tensor(np.zeros(3))
        torch.zeros(2, device="cpu")
        torch.zeros_like(torch.ones(2, device="cpu"))
    assert audit.unplaced == ["as_tensor"]


def test_cuda_without_cuda_is_one_line_with_the_cpu_hint(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve("auto") == torch.device("cpu") and devices.resolve(None) == torch.device("cpu")
    assert devices.resolve("cpu") == torch.device("cpu")
    with pytest.raises(BadInput) as e:
        devices.resolve("cuda")
    assert "--device cpu" in e.value.hint and "CUDA" in str(e.value)
    with pytest.raises(BadInput) as e:
        run_fixed(Graph.chain([Input("in", (2,), (2,))]), torch.ones(2, 1, 2), device="cuda")
    with pytest.raises(BadInput, match="unknown device"):
        devices.resolve("tpu")


@pytest.mark.parametrize("command", [["simulate", "no-such-artifact", "--backend", "reference"],
                                     ["report", "no-such-artifact"], ["compile", "no-such-model.pt"]])
def test_cli_device_cuda_without_cuda_exits_2_with_one_line(command, monkeypatch, capsys):
    """Refused before any file is read, in every command that has the flag."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(command + ["--device", "cuda"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --device cuda:") and "--device cpu" in lines[0], lines


def _node(qweight, name="fc"):
    return SimpleNamespace(qweight=np.asarray(qweight), name=name)


def test_the_sum_dtype_is_exact_and_a_layer_beyond_2_53_is_refused():
    spikes = torch.ones(2, 2, dtype=torch.bool)
    assert exact_float(_node([[2 ** 23, 2 ** 23 - 1]]), spikes) == torch.float32      # sums < 2**24
    assert exact_float(_node([[2 ** 23, 2 ** 23]]), spikes) == torch.float64          # could reach 2**24
    assert exact_float(_node([[2 ** 52, 2 ** 52 - 1]]), spikes) == torch.float64
    with pytest.raises(UnsupportedLayer) as e:
        exact_float(_node([[2 ** 52, 2 ** 52]], "big"), spikes)
    assert e.value.where == "layer 'big'" and "2**53" in str(e.value) and "\n" not in e.value.one_line()
    graded = torch.tensor([[3, -5]])                                                  # payloads: |x| up to 5
    assert exact_float(_node([[2 ** 21, 2 ** 21]]), graded) == torch.float64          # 5 * 2**22 >= 2**24


def test_a_sum_float32_would_round_comes_out_exact():
    """At 2**24 + 1 float32 rounds (to 2**24); the walk picks float64 and gets the integer."""
    assert torch.tensor(2.0 ** 24, dtype=torch.float32) + 1 == 2 ** 24           # what float32 would do
    w = np.array([[2 ** 24, 1]], np.int64)
    g = Graph.chain([Input("in", (2,), (2,)), Linear("fc", (2,), (1,), weight=w.astype(np.float32), qweight=w)])
    out = Run(g, FIXED_OPS, "fixed-point").run(torch.ones(1, 1, 2, dtype=torch.bool))
    assert out.dtype == torch.int64 and int(out.flatten()[0]) == 2 ** 24 + 1
