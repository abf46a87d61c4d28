"""The Lava run's memory is estimated before any Lava process starts (issue 16, item 3): a run that does
not fit the budget stops in one line naming the layer, the estimate and the next step that works, with
nothing started or written; the estimate is not below the measured peak of a real run's process tree."""
from __future__ import annotations

import json
import os
import sys
import tempfile
import threading

import pytest

from neurocomp import memory
from neurocomp.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "models", "digits_plain", "model.pt")
N = 2

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from neurocomp.api import compile as nc_compile
    return nc_compile(MODEL, str(tmp_path_factory.mktemp("lavamem") / "art"), calib_samples=8)


@pytest.fixture(autouse=True)
def _budget_reset():
    yield
    memory.set_budget(None)


def _estimate(artifact, workers):
    from neurocomp.artifact import Artifact
    from neurocomp.backends.lava import env, footprint
    return footprint.lava_bytes(Artifact(artifact).fixed_graph, N, workers=workers, here=env.lava_here())


def _between(artifact) -> int:
    """A budget one Lava worker fits and two do not."""
    one, two = _estimate(artifact, 1).added, _estimate(artifact, 2).added
    assert one < two
    return (one + two) // 2


def _children() -> set:
    me, out = str(os.getpid()), set()
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as fh:
                if d.isdigit() and fh.read().rsplit(")", 1)[1].split()[1] == me:
                    out.add(int(d))
        except (OSError, IndexError):
            pass
    return out


def test_an_oversized_lava_run_stops_in_one_line_before_any_lava_process(artifact, capsys, tmp_path, monkeypatch):
    from neurocomp.backends.lava import bridge, shard
    started = []
    monkeypatch.setattr(shard, "record_lava_sharded", lambda *a, **k: started.append("here"))
    monkeypatch.setattr(bridge, "record_lava_bridged", lambda *a, **k: started.append("bridged"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    budget = _between(artifact)
    before = _children()
    out = tmp_path / "r.json"
    rc = main(["simulate", artifact, "--samples", str(N), "--workers", "2", "-q", "--json", str(out),
               "--max-memory", str(budget)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("error: lava: the Lava run of 2 samples") and "layer '" in err, err
    assert "needs ~" in err and f"budget {memory.human(budget)} (--max-memory)" in err, err
    assert "--workers 1" in err, err                 # the next step, which the next test shows fits
    left = [f for f in os.listdir(tmp) if f.startswith("neurocomp-")]     # torch may cache its own files there
    assert started == [] and not out.exists() and left == [], left
    assert _children() - before == set()


def _tree_pss(root: int) -> int:
    """Anonymous and shared PSS of ``root`` and its descendants (page cache left out): the benchmarks' watch."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
    import exact_at_size as watch
    return int(watch._tree_rss_gib(root) * 2**30)


@pytest.mark.lava
def test_the_hint_fits_and_the_estimate_is_not_below_the_measured_peak(artifact, tmp_path):
    import torch
    from neurocomp.artifact import Artifact
    from neurocomp.backends.lava import footprint
    from neurocomp.backends.lava.bridge import lava_recording
    memory.set_budget(_between(artifact))
    g = Artifact(artifact).fixed_graph
    T = int(g.meta["timesteps"])
    x = (torch.rand((T, N) + tuple(g.input_node.out_shape), generator=torch.Generator().manual_seed(0)) < 0.3).float()
    est = _estimate(artifact, 1)
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], _tree_pss(os.getpid()))
            stop.wait(0.02)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    try:
        with lava_recording(g, x, workers=1) as rec:     # --workers 1 under the budget two workers exceed
            assert rec.samples == N
            files = [os.path.join(rec.record_dir, f) for f in os.listdir(rec.record_dir)]
            recorded = sum(os.path.getsize(f) for f in files)
    finally:
        stop.set()
        w.join()
    assert peak[0] > est.own                          # the watch saw the Lava processes
    assert est.tree >= peak[0], (memory.human(est.tree), memory.human(peak[0]))
    # the recording, counted when the temporary folder is memory (tmpfs), is the files' size (less headers)
    on_disk, in_memory = (footprint.runtime_bytes(g, N, tmp_dir=d).added for d in (str(tmp_path), "/dev/shm"))
    if footprint._in_memory("/dev/shm") and not footprint._in_memory(str(tmp_path)):
        assert recorded - 128 * len(files) <= in_memory - on_disk <= recorded
