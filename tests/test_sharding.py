"""Sharded cross-checks (issue 16, item 5): ``simulate --workers N`` / ``--ray ADDRESS``.

- A Lava run split over independent runtimes (forked processes, or tasks on a local Ray head on
  127.0.0.1) reads back, sample for sample and layer for layer, what one runtime records, across
  shard boundaries; ``simulate``'s figures (accuracies, exact-match fraction, per-layer counts, first
  diverging layer) are the single run's; the bit-width sweep's counts are the unsharded sweep's.
- A shard that fails is run again once; one that fails twice is one error line naming its sample range,
  and the other workers are stopped.
- ``--timeout`` and Ctrl-C to the whole process group stop every worker and leave no process and no
  temporary folder behind.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from test_signals import (ROOT, _assert_ended_clean, _cmdline, _default_sigint, _descendants, _env, _still_alive,
                          _wait_for_workers)

MODEL = os.path.join(ROOT, "models", "digits_plain", "model.pt")
N = 5                    # two shards of 3 and 2 samples: batches of 2 cross the boundary
FIGURES = ("accuracy", "same_class", "exact_match_fraction", "per_layer", "first_diverging_layer", "quantization",
           "float_reference_equals_torch_fraction")

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from neurocomp.api import compile as nc_compile
    return nc_compile(MODEL, str(tmp_path_factory.mktemp("shard") / "art"))


@pytest.fixture(scope="module")
def single(artifact):
    """One Lava runtime: the figures every sharded run must reproduce."""
    from neurocomp.api import simulate
    return simulate(artifact, samples=N, progress=False, batch=2)


def _inputs(artifact, n=N):
    from neurocomp.artifact import Artifact
    from neurocomp.data.registry import load_inputs
    art = Artifact(artifact)
    m = art.manifest
    x, y = load_inputs(m["dataset"], "test", m["timesteps"], m["encoding"], n=n)
    return art, torch.as_tensor(x), torch.as_tensor(y)


def _leftover(tmp):
    return [f for f in os.listdir(tmp) if f.startswith("neurocomp-")]


def test_split_covers_every_sample_once():
    from neurocomp.shards import split
    for n, k in [(5, 2), (7, 3), (2, 8), (1, 1)]:
        parts = split(n, k)
        assert [i for r in parts for i in r] == list(range(n))
        assert len(parts) == min(n, k) and max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.lava
def test_local_shards_read_back_as_one_recording(artifact, tmp_path, monkeypatch):
    """Every layer's spikes of the merged recording equal one runtime's, on slices across the boundary."""
    import tempfile
    from neurocomp.backends.lava import record_lava, record_lava_sharded
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    art, x, _ = _inputs(artifact)
    g = art.fixed_graph
    with record_lava(g, x) as one, record_lava_sharded(g, x, workers=2) as two:
        assert two.stats["engine"] == "processes" and [s["samples"] for s in two.stats["shards"]] == [[0, 3], [3, 5]]
        assert len({rec.stats["pid"] for _, rec in two.parts} | {os.getpid()}) == 3       # two other processes
        for sl in (slice(0, N), slice(2, 4), slice(4, 5)):
            a, b = one.spikes(sl), two.spikes(sl)
            assert a.keys() == b.keys() and len(a) == len(g.neurons())
            for name in a:
                assert a[name].shape == b[name].shape and torch.equal(a[name], b[name]), (name, sl)
    assert _leftover(tmp_path) == []


@pytest.mark.lava
def test_simulate_on_local_ray_head_equals_one_runtime(artifact, single):
    pytest.importorskip("ray", reason="ray is in the test extra: pip install -e '.[test]'")
    from neurocomp.api import simulate
    r = simulate(artifact, samples=N, progress=False, batch=2, workers=2, ray="local")
    assert r["lava_workers"]["engine"] == "ray" and r["lava_workers"]["workers"] == 2
    for k in FIGURES:
        assert r[k] == single[k], k
    import ray
    assert not ray.is_initialized()          # the private head it started is shut down


def test_bit_sweep_sharded_equals_unsharded(artifact):
    from neurocomp.measure import bit_sweep
    art, x, y = _inputs(artifact, 16)
    one = bit_sweep(art, x, y, bits=(3, 8), progress=False)
    two = bit_sweep(art, x, y, bits=(3, 8), progress=False, workers=2)
    assert one == two and [r["correct"] for r in one["rows"]] != [None, None]


def test_failed_shard_is_retried_once(tmp_path):
    from neurocomp.shards import run_shards, split
    marks = tmp_path / "attempts"
    marks.mkdir()

    def flaky(k, progress=None):                  # shard 1 fails on its first attempt only
        tries = len(list(marks.glob(f"{k}-*")))
        (marks / f"{k}-{tries}").touch()
        if k == 1 and tries == 0:
            raise RuntimeError("first attempt fails")
        return k * 10

    ranges = split(6, 3)
    assert run_shards(flaky, [(k,) for k in range(3)], ranges, workers=3) == [0, 10, 20]
    assert sorted(p.name for p in marks.iterdir()) == ["0-0", "1-0", "1-1", "2-0"]


@pytest.mark.lava
def test_shard_failing_twice_is_named_and_stops_the_others(artifact, tmp_path, monkeypatch):
    import tempfile
    from neurocomp.api import simulate
    from neurocomp.backends.lava import shard
    from neurocomp.errors import LavaRunError, ShardFailed
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real = shard._run_shard

    def second_shard_breaks(graph, x, *a, progress=None):
        if x.shape[1] == 2:                        # samples 3-4
            raise LavaRunError("a process model failed", where="lava")
        return real(graph, x, *a, progress=progress)

    monkeypatch.setattr(shard, "_run_shard", second_shard_breaks)
    before = _descendants(os.getpid())
    with pytest.raises(ShardFailed) as info:
        simulate(artifact, samples=N, progress=False, workers=2)
    line = info.value.one_line()
    assert "\n" not in line and "2/2 (samples 3-4) failed twice" in line and "a process model failed" in line
    left = _still_alive({p for p in _descendants(os.getpid()) - before if "resource_tracker" not in _cmdline(p)}, 10)
    assert not left, f"workers survived the failed shard: {sorted(left)}"
    assert _leftover(tmp_path) == []


def test_timeout_stops_every_worker(tmp_path):
    """``--timeout`` counts for the whole job: when it passes, every running worker is ended."""
    import time
    from neurocomp.errors import RunTimeout
    from neurocomp.shards import run_shards, split

    def slow(k, progress=None):
        (tmp_path / f"{os.getpid()}").touch()
        time.sleep(60)

    t0 = time.monotonic()
    with pytest.raises(RunTimeout, match="exceeded 2 s with 0/2 shards done"):
        run_shards(slow, [(0,), (1,)], split(2, 2), workers=2, timeout=2.0, what="Lava shard")
    assert time.monotonic() - t0 < 15
    pids = {int(f.name) for f in tmp_path.iterdir()}
    assert len(pids) == 2 and not _still_alive(pids, 5), "a worker survived the timeout"


@pytest.mark.lava
def test_ctrl_c_to_the_group_stops_every_worker(artifact, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "neurocomp", "simulate", artifact, "--backend", "lava", "-q",
                          "--samples", "360", "--workers", "2"], cwd=ROOT, env=_env(tmp), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_default_sigint)
    seen = _wait_for_workers(p, n=6)
    assert p.poll() is None, "the run ended before it could be interrupted"
    shards = [q for q in seen if _stat_ppid(q) == p.pid and "resource_tracker" not in _cmdline(q)]
    assert len(shards) >= 2, f"two shard workers expected among {[(q, _cmdline(q)[:60]) for q in sorted(seen)]}"
    assert _leftover(tmp), "no shard folder: nothing to clean was tested"
    os.killpg(p.pid, signal.SIGINT)
    _assert_ended_clean(p, seen, tmp, 130, "interrupted")


def _stat_ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return None
    return int(data[data.rindex(")") + 2:].split()[1])
