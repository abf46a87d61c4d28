"""Memory bounded by design (issue 16, item 3): compile's calibration, the reference simulator and the
cross-check estimate what they will allocate before allocating, pick a batch that fits the budget, and
refuse a job that cannot fit in one line naming the layer and the estimate, before anything is written."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from neurocomp import memory
from neurocomp.api import compile as nc_compile
from neurocomp.artifact import Artifact
from neurocomp.cli import main
from neurocomp.crosscheck import batch_bytes, crosscheck
from neurocomp.frontends.attention import calibration_bytes
from neurocomp.frontends.checkpoint import load_checkpoint, save_checkpoint
from neurocomp.nn import backbones
from neurocomp.sim import fixed_ops
from neurocomp.sim.footprint import walk_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, SHAPE, N = 4, (2, 32, 32), 6


@pytest.fixture(autouse=True)
def _budget_reset():
    yield
    memory.set_budget(None)


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    d = tmp_path_factory.mktemp("membound")
    torch.manual_seed(3)
    model = backbones.build("tcja", T=T, in_channels=2, input_hw=32, channels=(4, 8), num_classes=4).eval()
    with torch.no_grad():                            # untrained weights are nearly silent: make every layer fire
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(6)
    ckpt = save_checkpoint(model, str(d / "net.pt"), input_shape=SHAPE, timesteps=T, encoding="bernoulli")
    x = (np.random.default_rng(0).random((N, T) + SHAPE) < 0.3).astype(np.uint8)
    np.save(d / "x.npy", x)
    path = nc_compile(ckpt, str(d / "art"), calib=str(d / "x.npy"))
    return {"dir": d, "ckpt": ckpt, "art": path, "x": str(d / "x.npy")}


def _per_sample(path):
    a = Artifact(path)
    models = {"torch": load_checkpoint(a.checkpoint).model, "static": load_checkpoint(
        os.path.join(a.path, "static_model.pt")).model}
    return sum(batch_bytes(a, models, a.float_graph, T, lava=False).values())


def test_simulate_refuses_an_oversized_batch_in_one_line_and_its_hint_works(art, capsys, tmp_path):
    one = _per_sample(art["art"])
    budget = str(int(2.5 * one))                     # two samples fit, four do not
    out = tmp_path / "r.json"
    rc = main(["simulate", art["art"], "--backend", "reference", "--inputs", art["x"], "-q", "--json", str(out),
               "--max-memory", budget, "--batch-size", "4"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and "layer '" in err and "needs ~" in err and "budget" in err, err
    assert "--batch-size 2" in err, err              # the one next step, which the next run takes
    assert not out.exists()
    assert main(["simulate", art["art"], "--backend", "reference", "--inputs", art["x"], "-q", "--json", str(out),
                 "--max-memory", budget, "--batch-size", "2"]) == 0
    assert json.loads(out.read_text())["samples"] == N


def test_compile_refuses_a_calibration_that_cannot_fit_before_writing(art, capsys):
    model = load_checkpoint(art["ckpt"]).model
    per, fixed = calibration_bytes(model, torch.zeros((T, 1) + SHAPE))
    budget = int(0.7 * (sum(per.values()) + fixed))           # one sample of calibration does not fit
    assert budget > 4 * memory.product(SHAPE) * T * 4        # the checkpoint's own checks pass
    out = art["dir"] / "too_big"
    rc = main(["compile", art["ckpt"], "--calib", art["x"], "-o", str(out), "-q", "--max-memory", str(budget)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "calibrat" in err and "layer '" in err and "needs ~" in err, err
    assert f"budget {memory.human(budget)}" in err, err
    assert not out.exists()


def test_the_batch_chosen_to_fit_gives_the_results_of_one_big_batch(art, monkeypatch):
    a = Artifact(art["art"])
    x = torch.as_tensor(np.swapaxes(np.load(art["x"]), 0, 1), dtype=torch.float32)
    big = crosscheck(a, x, batch=N, progress=False, activity=False)
    memory.set_budget(int(2.5 * _per_sample(art["art"])))
    models = {"torch": load_checkpoint(a.checkpoint).model,
              "static": load_checkpoint(os.path.join(a.path, "static_model.pt")).model}
    chosen = memory.plan_batch(batch_bytes(a, models, a.float_graph, T, lava=False), N)
    assert 1 <= chosen < N                           # the budget really forces small batches
    monkeypatch.setattr(fixed_ops, "CHUNK_BYTES", 4096)       # and synapses work frame by frame
    small = crosscheck(a, x, progress=False, activity=False)
    pb, ps = big.pop("predictions"), small.pop("predictions")
    assert all(torch.equal(pb[k], ps[k]) for k in pb) and pb.keys() == ps.keys()
    assert small == big                              # counts per layer and step, pairs, first diverging layer
    assert sum(big["stages"]["fixed"]["spike_counts"].values()) > 0


_MEASURE = """
import os, sys, torch
from neurocomp.ir.serialize import load_graph
from neurocomp.sim import run_fixed
from neurocomp.sim import fixed_ops
from neurocomp.sim.footprint import walk_bytes
g = load_graph(os.path.join(sys.argv[1], "fixed"))
x = (torch.rand((4, int(sys.argv[2])) + tuple(g.input_node.out_shape), generator=torch.Generator().manual_seed(1))
     < 0.3).float()
def status(key):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) * 1024 for l in fh if l.startswith(key))
with open("/proc/self/clear_refs", "w") as fh:      # the peak (VmHWM) starts again from the current size
    fh.write("5")
before = status("VmRSS:")
run_fixed(g, x)
print(status("VmHWM:") - before, sum(walk_bytes(g).values()) * x.shape[1])
"""


def test_the_estimate_is_within_a_factor_two_of_the_measured_peak(art):
    """The reference walk's estimate against the peak resident memory the run adds, in a fresh process."""
    r = subprocess.run([sys.executable, "-c", _MEASURE, art["art"], "96"], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT}, timeout=120)
    measured, estimate = map(int, r.stdout.split()[-2:])
    assert estimate > 32 << 20, estimate             # large enough to stand out of the allocator's noise
    assert estimate / 2 <= measured <= 2 * estimate, (measured, estimate)


def test_the_walk_estimate_grows_with_the_layers_it_holds(art):
    g = Artifact(art["art"]).fixed_graph
    fixed, flt = walk_bytes(g, "fixed"), walk_bytes(g, "float")
    neurons = [n for n in g.neurons() if not n.graded_output]
    assert all(fixed[n.name] >= memory.product(n.out_shape) * T for n in neurons)    # bool spikes, every step
    assert all(flt[n.name] >= 4 * memory.product(n.out_shape) * T for n in neurons)  # float32 values
