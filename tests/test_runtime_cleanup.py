"""Clean failure at run time: a Lava run that errors, is interrupted (SIGINT) or exceeds --timeout
stops its runtime, and no Lava worker process outlives it.

Processes are read from /proc (psutil is not a dependency): we note every descendant of the run
while it is running and check, after it ended, that none of them is still alive.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODEL = os.path.join(ROOT, "models", "digits_plain", "model.pt")
NOISE = ("No CUDA runtime is found",)

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")


# ---- /proc helpers ----------------------------------------------------------------------------
def _stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            data = fh.read()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1])          # state, ppid


def alive(pid) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def descendants(root) -> set[int]:
    parent = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                parent[int(name)] = st[1]
    out, frontier = set(), {root}
    while frontier:
        kids = {p for p, pp in parent.items() if pp in frontier and p not in out}
        out |= kids
        frontier = kids
    return out


def _cmdline(pid) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def workers(pids) -> set[int]:
    """Leave out Python's multiprocessing resource tracker: one per interpreter, it ends with it."""
    return {p for p in pids if "resource_tracker" not in _cmdline(p)}


def wait_gone(pids, timeout=20.0) -> set[int]:
    end = time.monotonic() + timeout
    left = {p for p in pids if alive(p)}
    while left and time.monotonic() < end:
        time.sleep(0.2)
        left = {p for p in left if alive(p)}
    return left


def _env():
    return dict(os.environ, PYTHONWARNINGS="ignore")


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("rt") / "art")
    from neurocomp.api import compile as nc_compile
    return nc_compile(MODEL, out)


def _default_sigint():
    # a shell without job control starts background commands with SIGINT ignored, and Python keeps an
    # ignored SIGINT ignored: give the child the disposition a terminal user's command has
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _spawn_simulate(artifact, *extra, new_session=False):
    return subprocess.Popen([sys.executable, "-m", "neurocomp", "simulate", artifact, "--backend", "lava", "-q",
                             *extra], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=new_session, preexec_fn=_default_sigint)


def _wait_for_workers(proc, n=3, timeout=90.0) -> set[int]:
    """Wait until the run has started Lava's worker processes; return every descendant seen."""
    seen, end = set(), time.monotonic() + timeout
    stable_since, last = None, None
    while time.monotonic() < end and proc.poll() is None:
        now = descendants(proc.pid)
        seen |= now
        if len(now) >= n and now == last:
            if time.monotonic() - stable_since > 2.0:    # every worker forked: the run is under way
                return seen
        else:
            stable_since, last = time.monotonic(), now
        time.sleep(0.1)
    return seen


def _lines(stderr):
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(NOISE)]


# ---- in-process: the error path of run_lava ----------------------------------------------------
@pytest.mark.lava
def test_lava_error_stops_runtime_in_process(artifact, monkeypatch):
    """A process model that fails inside Lava (its recording file vanished) surfaces as an error and
    leaves no worker process of this interpreter behind."""
    import torch
    from neurocomp.artifact import Artifact
    from neurocomp.backends import lava as lava_backend
    from neurocomp.backends.lava import recorder as lava_recorder

    g = Artifact(artifact).fixed_graph
    x = torch.zeros((8, 2, 1, 8, 8))
    x[:, :, :, ::2, ::2] = 1
    before = descendants(os.getpid())
    real_create = lava_recorder.create_file
    monkeypatch.setattr(lava_recorder, "create_file", lambda path, shape, steps, *dtype: None)   # nothing to record into
    from neurocomp.errors import LavaRunError
    with pytest.raises(LavaRunError, match="Lava run failed") as info:
        lava_backend.run_lava(g, x)
    assert "\n" not in info.value.one_line()
    monkeypatch.setattr(lava_recorder, "create_file", real_create)
    left = wait_gone(workers(descendants(os.getpid()) - before))
    assert not left, f"Lava workers still alive after a failed run: {sorted(left)}"
    # and the machinery still works afterwards (nothing half-stopped is left around)
    r = lava_backend.run_lava(g, x)
    assert r.output.shape[:2] == (8, 2)


@pytest.mark.lava
def test_timeout_stops_runtime_in_process(artifact):
    import torch
    from neurocomp.artifact import Artifact
    from neurocomp.backends.lava import run_lava
    from neurocomp.errors import RunTimeout
    g = Artifact(artifact).fixed_graph
    x = (torch.rand((8, 64, 1, 8, 8), generator=torch.Generator().manual_seed(0)) < 0.3).float()
    before = descendants(os.getpid())
    with pytest.raises(RunTimeout, match="exceeded"):
        run_lava(g, x, timeout=0.0, chunk_samples=1)
    assert not wait_gone(workers(descendants(os.getpid()) - before))


# ---- the real CLI: --timeout and SIGINT ---------------------------------------------------------
@pytest.mark.lava
def test_cli_timeout_stops_runtime(artifact):
    p = _spawn_simulate(artifact, "--samples", "360", "--timeout", "2")
    seen = _wait_for_workers(p)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 2, err
    lines = _lines(err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--timeout" in lines[0], err
    assert "Traceback" not in err
    assert seen, "the run never started a Lava worker (nothing was tested)"
    left = wait_gone(workers(seen))
    assert not left, f"Lava workers survived the timeout: {sorted(left)}"


@pytest.mark.lava
@pytest.mark.parametrize("group", [False, True], ids=["sigint-to-parent", "sigint-to-process-group"])
def test_cli_sigint_stops_runtime(artifact, group):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) or SIGINT to the parent
    alone: the command exits with 130 and every Lava worker it started is gone."""
    p = _spawn_simulate(artifact, "--samples", "360", new_session=group)
    seen = _wait_for_workers(p)
    assert p.poll() is None, "the run ended before it could be interrupted"
    assert seen
    if group:
        os.killpg(p.pid, signal.SIGINT)
    else:
        p.send_signal(signal.SIGINT)
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        for pid in seen | {p.pid}:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        p.communicate()
        pytest.fail("simulate did not exit within 60 s of SIGINT")
    assert p.returncode == 130, err[-2000:]
    assert "interrupted" in err
    left = wait_gone(workers(seen))
    assert not left, f"Lava workers survived SIGINT: {sorted(left)}"
