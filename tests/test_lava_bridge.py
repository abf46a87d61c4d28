"""Lava in its own environment (issue 17, item 2): ``neurocomp.backends.lava.bridge``.

The bridge is forced (``NEUROCOMP_LAVA_BRIDGE=1``) with ``NEUROCOMP_LAVA_PYTHON`` set to this very
Python (it has Lava), so the bridged run and the in-process run can be compared here:

- the recording a bridged run brings back is byte for byte the in-process recording, and ``simulate``'s
  result is the same (every figure; only the wall time differs, and where Lava ran);
- ``--timeout`` and a Ctrl-C to the command's process group stop the Lava environment's process and its
  Lava workers: no process and no temporary file is left;
- where no Lava environment exists, and where the environment runs another neurocomp, the error is one
  line naming the command that fixes it; ``neurocomp lava-env --dry-run`` prints its plan and makes nothing.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from neurocomp.artifact import Artifact

from test_signals import (ROOT, _assert_ended_clean, _cmdline, _default_sigint, _descendants, _env, _kill_all,
                          _still_alive, _wait_for_workers)

MODEL = os.path.join(ROOT, "models", "digits_plain", "model.pt")
N = 3

pytestmark = [pytest.mark.lava,      # compares with an in-process Lava run
              pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    from neurocomp.api import compile as nc_compile
    return nc_compile(MODEL, str(tmp_path_factory.mktemp("bridge") / "art"))


@pytest.fixture
def bridged(monkeypatch):
    """Lava runs in 'the Lava environment' (this Python, in a child process); temporary files, the child's
    too, in a folder of their own (with a short path: multiprocessing's sockets live there)."""
    import pathlib
    import shutil
    import tempfile
    tmp = tempfile.mkdtemp(prefix="nc-bridge-test-")
    monkeypatch.setenv("NEUROCOMP_LAVA_BRIDGE", "1")
    monkeypatch.setenv("NEUROCOMP_LAVA_PYTHON", sys.executable)
    monkeypatch.setenv("TMPDIR", tmp)
    monkeypatch.setattr(tempfile, "tempdir", tmp)
    yield pathlib.Path(tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def _inputs(artifact, n=N):
    from neurocomp.data.registry import load_inputs
    art = Artifact(artifact)
    x, _ = load_inputs(art.manifest["dataset"], "test", art.manifest["timesteps"], art.manifest["encoding"], n=n)
    return art, torch.as_tensor(x)


def _ppid(pid):
    with open(f"/proc/{pid}/stat") as fh:
        data = fh.read()
    return int(data[data.rindex(")") + 2:].split()[1])


def _file_bytes(rec) -> dict:
    inner = getattr(rec, "_rec", rec)
    out = {}
    for name, _, path, _, _ in inner._layers:
        if path is not None:
            with open(path, "rb") as fh:
                out[name] = fh.read()
    return out


def test_bridged_simulate_equals_in_process(artifact, bridged, monkeypatch):
    """The same figures, from recordings that are the same bytes (read as each run closes its recording)."""
    from neurocomp.api import simulate
    from neurocomp.backends.lava.bridge import BridgedRecording
    from neurocomp.backends.lava.run import LavaRecording
    closed = {}

    def snapshot(cls, key):
        real = cls.close

        def close(self):
            inner = getattr(self, "_rec", self)
            if inner._files and key not in closed:
                closed[key] = {"folder": getattr(self, "_folder", None), "files": _file_bytes(inner)}
            return real(self)
        monkeypatch.setattr(cls, "close", close)

    snapshot(BridgedRecording, "there")
    snapshot(LavaRecording, "here")
    there = simulate(artifact, samples=N, progress=False, batch=2)
    assert set(closed) == {"there", "here"}, "the bridged recording was not read here"   # its inner one too
    del closed["here"]
    monkeypatch.setenv("NEUROCOMP_LAVA_BRIDGE", "0")
    here = simulate(artifact, samples=N, progress=False, batch=2)
    a, b = closed["here"]["files"], closed["there"]["files"]
    assert len(a) == len(Artifact(artifact).fixed_graph.neurons()) and a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    assert os.path.dirname(closed["there"]["folder"]) == str(bridged)
    assert there.pop("lava_environment") == sys.executable and "lava_environment" not in here
    there.pop("lava_wall_s"), here.pop("lava_wall_s")
    assert there == here
    assert here["exact_match_fraction"] == 1.0 and sum(p["spikes_compared"] for p in here["per_layer"]) > 0
    assert os.listdir(bridged) == []


def test_a_sharded_recording_survives_its_state(tmp_path):
    """What a bridged ``--workers N`` run sends back: a ShardedRecording as plain JSON, reopened as the same
    spikes (recordings written here as Lava's recorder writes them: (steps, *lava_shape) per layer)."""
    import json
    import numpy as np
    from neurocomp.backends.lava.run import LavaRecording
    from neurocomp.backends.lava.shard import ShardedRecording, recording_from_state
    T, rng = 3, np.random.default_rng(0)
    timing = {"timesteps": T, "layer_delay": {"a": 1, "b": 2}}
    parts = []
    for k, n in enumerate((2, 1)):
        folder = tmp_path / f"shard{k}"
        folder.mkdir()
        layers = []
        for name, shape in (("a", (4,)), ("b", (2, 3, 1))):
            path = str(folder / f"{name}.npy")
            np.save(path, (rng.random((n * T + 2,) + shape) < 0.5).astype(np.uint8))
            layers.append((name, None, path, shape, shape[::-1]))
        parts.append((range(sum(len(r) for r, _ in parts), sum(len(r) for r, _ in parts) + n),
                      LavaRecording(layers, str(folder), timing, n, {"steps": n * T + 2})))
    rec = ShardedRecording(parts, str(tmp_path), {"workers": 2})
    want = rec.spikes(slice(0, 3))
    back = recording_from_state(json.loads(json.dumps(rec.state())))
    assert isinstance(back, ShardedRecording) and back.samples == 3 and back.stats == {"workers": 2}
    got = back.spikes(slice(0, 3))
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    assert sum(int(v.sum()) for v in got.values()) > 0
    rec.close()                           # no longer the owner: the files stay for the reopened recording
    assert (tmp_path / "shard0" / "a.npy").exists()
    back.close()
    assert not tmp_path.exists()


def test_timeout_stops_the_lava_environment(artifact, bridged):
    from neurocomp.backends.lava.bridge import lava_recording
    from neurocomp.errors import RunTimeout
    art, x = _inputs(artifact, 64)
    before = _descendants(os.getpid())
    with pytest.raises(RunTimeout, match="exceeded 0.5 s"):
        lava_recording(art.fixed_graph, x, timeout=0.5, chunk_samples=4)
    left = _still_alive(_descendants(os.getpid()) - before, 5)
    _kill_all(left)
    assert not left, f"left running: {[(p, _cmdline(p)[:80]) for p in left]}"
    assert os.listdir(bridged) == []


def test_ctrl_c_to_the_group_ends_the_lava_environment(artifact, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "neurocomp", "simulate", artifact, "--backend", "lava", "-q",
                          "--samples", "360", "--json", str(tmp_path / "r.json")], cwd=ROOT,
                         env=_env(tmp, NEUROCOMP_LAVA_BRIDGE="1", NEUROCOMP_LAVA_PYTHON=sys.executable),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         preexec_fn=_default_sigint)
    seen = _wait_for_workers(p, n=4)
    assert p.poll() is None, "the run ended before it could be interrupted"
    child = [q for q in seen if "neurocomp.backends.lava.bridge" in _cmdline(q) and _ppid(q) == p.pid]
    assert len(child) == 1 and os.getpgid(child[0]) == child[0], "the Lava environment's process, in its own group"
    assert len(_descendants(child[0])) >= 2, "its Lava workers never started"
    assert [n for n in os.listdir(tmp) if n.startswith("neurocomp-bridge-")], "no bridge folder: nothing to clean"
    os.killpg(p.pid, signal.SIGINT)
    _assert_ended_clean(p, seen, tmp, 130, "interrupted")
    assert not (tmp_path / "r.json").exists()


def test_no_lava_environment_is_one_line_naming_the_command(artifact, bridged, monkeypatch):
    from neurocomp.api import simulate
    from neurocomp.errors import LavaEnvironmentError
    monkeypatch.delenv("NEUROCOMP_LAVA_PYTHON")
    monkeypatch.setenv("XDG_CACHE_HOME", str(bridged / "cache"))
    with pytest.raises(LavaEnvironmentError) as info:
        simulate(artifact, samples=N, progress=False)
    line = info.value.one_line()
    assert "\n" not in line and "`neurocomp lava-env`" in line and "NEUROCOMP_LAVA_PYTHON" in line
    monkeypatch.setenv("NEUROCOMP_LAVA_PYTHON", str(bridged / "no-such-python"))
    with pytest.raises(LavaEnvironmentError, match="not an executable file"):
        simulate(artifact, samples=N, progress=False)
    assert os.listdir(bridged) == []


def test_another_neurocomp_in_the_lava_environment_is_refused(artifact, bridged, monkeypatch):
    """An environment whose neurocomp is another one (here a stand-in interpreter that says so)."""
    from neurocomp.backends.lava.bridge import lava_recording
    from neurocomp.errors import LavaEnvironmentError
    fake = bridged / "python"          # called as: python -m neurocomp.backends.lava.bridge REQUEST FD PARENT
    fake.write_text(f"#!{sys.executable}\n"
                    "import json, os, sys, time\n"
                    "hello = {'hello': {'version': '0.0.9', 'package': '/elsewhere/neurocomp'}}\n"
                    "os.write(int(sys.argv[4]), json.dumps(hello).encode() + b'\\n')\n"
                    "time.sleep(30)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("NEUROCOMP_LAVA_PYTHON", str(fake))
    art, x = _inputs(artifact, 1)
    with pytest.raises(LavaEnvironmentError) as info:
        lava_recording(art.fixed_graph, x)
    line = info.value.one_line()
    assert "\n" not in line and "runs neurocomp 0.0.9 from /elsewhere/neurocomp" in line
    assert "neurocomp lava-env" in line
    assert os.listdir(bridged) == ["python"]


def test_a_lava_environment_that_cannot_start_neurocomp_is_one_line(artifact, bridged, monkeypatch):
    """An interpreter that fails before neurocomp starts (here a stand-in): its last stderr line is named."""
    from neurocomp.backends.lava.bridge import lava_recording
    from neurocomp.errors import LavaEnvironmentError
    fake = bridged / "python"
    fake.write_text(f"#!{sys.executable}\n"
                    "import sys\n"
                    "print('Traceback (most recent call last):', file=sys.stderr)\n"
                    "print(\"ModuleNotFoundError: No module named 'numpy'\", file=sys.stderr)\n"
                    "sys.exit(1)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("NEUROCOMP_LAVA_PYTHON", str(fake))
    art, x = _inputs(artifact, 1)
    with pytest.raises(LavaEnvironmentError) as info:
        lava_recording(art.fixed_graph, x)
    line = info.value.one_line()
    assert "\n" not in line and "ended with status 1 before starting neurocomp" in line
    assert "No module named 'numpy'" in line and "neurocomp lava-env" in line
    assert os.listdir(bridged) == ["python"]


def test_lava_env_dry_run_prints_the_plan_and_makes_nothing(tmp_path):
    from neurocomp.backends.lava import env
    lines = []
    target = tmp_path / "lava-env"
    py = env.make(str(target), python=sys.executable, dry_run=True, out=lines.append)
    text = "\n".join(lines)
    assert py == str(target / "bin" / "python") and not target.exists()
    assert f"-m venv {target}" in text and "lava-nc==0.10.0" in text and "lava-dl==0.6.0" in text
    assert "torch==2.3.1" in text and "numpy>=1.24,<2" in text and "CUDA" in text
