"""Signals and streaming (issue 11, classes 8, 10, 11).

- SIGTERM and SIGHUP end ``compile`` and ``simulate --backend lava`` like Ctrl-C: exit 128 + signal,
  one line on stderr, no partial (hidden) artifact, no temporary folder, and no process left: every
  descendant of the command (Lava workers, multiprocessing managers and resource tracker) is gone
  a few seconds after it exits.
- A Ctrl-C is never swallowed: one raised inside a finalizer (Python drops such exceptions) as the
  write phase starts still gives exit 130 and no artifact; a Ctrl-C during start-up gives no traceback.
- ``simulate`` streams its cross-check: it holds the spikes of one batch at a time, its peak memory
  does not grow with the number of samples, and the streamed results equal those computed at once.

Processes are read from /proc (psutil is not a dependency).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import weakref

import numpy as np
import pytest
import torch

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


def _alive(pid) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def _descendants(root) -> set[int]:
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


def _still_alive(pids, timeout) -> set[int]:
    end = time.monotonic() + timeout
    left = {p for p in pids if _alive(p)}
    while left and time.monotonic() < end:
        time.sleep(0.2)
        left = {p for p in left if _alive(p)}
    return left


def _kill_all(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _default_sigint():
    # a shell without job control starts background commands with SIGINT ignored, and Python keeps an
    # ignored SIGINT ignored: give the child the dispositions a terminal user's command has
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_DFL)


def _env(tmpdir, **extra):
    # the child's temporary folders (Lava's recordings) go to a folder the test inspects
    return dict(os.environ, PYTHONWARNINGS="ignore", TMPDIR=str(tmpdir), **extra)


def _lines(stderr):
    return [ln for ln in stderr.splitlines() if ln.strip() and not ln.startswith(NOISE)]


def _python(code, *args, tmpdir, new_session=False, **env):
    """``python -c code args`` from the repository root, stdout/stderr captured."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT, env=_env(tmpdir, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=new_session, preexec_fn=_default_sigint)


def _communicate(p, seen=(), timeout=120):
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_all(set(seen) | _descendants(p.pid) | {p.pid})
        p.communicate()
        pytest.fail(f"the command did not exit within {timeout} s")


def _assert_ended_clean(p, seen, tmp, status, line):
    """After a signal: ``p`` exits with ``status`` and the one stderr ``line``, no process it started is alive
    5 s later, and its temporary folder ``tmp`` is empty."""
    _, err = _communicate(p, seen, timeout=90)
    assert p.returncode == status, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    assert _lines(err) == [line], err[-3000:]
    left = _still_alive(seen, timeout=5.0)
    _kill_all(left)
    assert not left, f"still alive 5 s after the command ended: {[(q, _cmdline(q)[:90]) for q in sorted(left)]}"
    assert os.listdir(tmp) == [], f"temporary files left: {os.listdir(tmp)}"


# a CLI run whose write phase can be made slow or interrupted from inside, through neurocomp.api's
# write_nir (the first thing compile's fill() does, inside the temporary artifact folder)
_CLI_WITH_HOOK = """
import os, signal, sys, time
import neurocomp.api as api
_real = api.write_nir
def write_nir(*a, **k):
    mode = os.environ["NC_TEST_HOOK"]
    if mode == "slow":
        print("write phase", file=sys.stderr, flush=True)
        time.sleep(30)
    elif mode == "sigint-in-finalizer":
        class Dropped:
            def __del__(self):
                # the signal arrives while a finalizer runs: Python prints "Exception ignored"
                # and drops the KeyboardInterrupt raised here
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):
                    pass
        Dropped()
    return _real(*a, **k)
api.write_nir = write_nir
from neurocomp.cli import main
sys.exit(main(sys.argv[1:]))
"""


# ---- compile: SIGTERM / SIGHUP in the write phase -------------------------------------------------
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_signal_during_compile_write_leaves_nothing(tmp_path, sig):
    work = tmp_path / "out"
    work.mkdir()
    out = work / "art"
    p = _python(_CLI_WITH_HOOK, "compile", MODEL, "-o", str(out), "-q", tmpdir=tmp_path, NC_TEST_HOOK="slow")
    # wait until the command sits in its write phase, with its hidden temporary artifact created
    end = time.monotonic() + 120
    while time.monotonic() < end and p.poll() is None and not any(n.startswith(".art.tmp-") for n in os.listdir(work)):
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()[1][-2000:]
    assert any(n.startswith(".art.tmp-") for n in os.listdir(work)), "the write phase never started"
    p.send_signal(sig)
    _, err = _communicate(p)
    assert p.returncode == 128 + sig, err[-2000:]
    assert "Traceback" not in err
    assert _lines(err)[-1] == f"terminated ({signal.Signals(sig).name})", err
    assert os.listdir(work) == [], f"left behind: {os.listdir(work)}"


# ---- a Ctrl-C that Python would swallow -----------------------------------------------------------
def test_ctrl_c_raised_in_a_finalizer_at_write_is_not_lost(tmp_path):
    """Python drops an exception raised inside __del__ or a weakref callback; a Ctrl-C landing there
    as the write phase starts used to be lost (artifact written, exit 0)."""
    work = tmp_path / "out"
    work.mkdir()
    p = _python(_CLI_WITH_HOOK, "compile", MODEL, "-o", str(work / "art"), "-q", tmpdir=tmp_path,
                NC_TEST_HOOK="sigint-in-finalizer")
    _, err = _communicate(p)
    assert "Exception ignored" in err, "the interrupt was not raised inside the finalizer: nothing was tested"
    assert p.returncode == 130, err[-2000:]
    assert _lines(err)[-1] == "interrupted", err
    assert os.listdir(work) == [], f"an interrupted compile wrote: {os.listdir(work)}"


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    """SIGINT while the command imports torch and SpikingJelly (before any work)."""
    code = """
    import os, signal, runpy
    import neurocomp._quiet as q
    _real = q.import_spikingjelly
    def import_spikingjelly():
        os.kill(os.getpid(), signal.SIGINT)
        _real()
    q.import_spikingjelly = import_spikingjelly
    runpy.run_module("neurocomp", run_name="__main__")
    """
    p = _python(code, "inspect", MODEL, tmpdir=tmp_path)
    out, err = _communicate(p)
    assert p.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    assert _lines(err) == ["interrupted"], err
    assert out == ""


@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_ctrl_c_early_in_a_real_start_gives_no_traceback(tmp_path, delay):
    p = subprocess.Popen([sys.executable, "-m", "neurocomp", "inspect", MODEL], cwd=ROOT, env=_env(tmp_path),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint)
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = _communicate(p)
    if "Traceback" in err:
        # Python's own start-up (runpy looking for the module) can still be running on a loaded machine: a
        # KeyboardInterrupt there is Python's, printed before any neurocomp code ran. One from neurocomp is not.
        frames = re.findall(r'File "([^"]+)"', err)
        assert err.rstrip().endswith("KeyboardInterrupt") and frames, err[-3000:]
        assert not any(os.sep + "neurocomp" + os.sep in f for f in frames), err[-3000:]
        return
    # 130 once Python runs; killed by the signal itself only if it came before Python's own start-up
    assert p.returncode in (130, -signal.SIGINT, 0), err
    if p.returncode == 130:
        assert _lines(err) == ["interrupted"], err


# ---- simulate --backend lava: SIGTERM / SIGHUP end every process ----------------------------------
@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sig") / "art")
    from neurocomp.api import compile as nc_compile
    return nc_compile(MODEL, out)


def _wait_for_workers(proc, n=3, timeout=120.0) -> set[int]:
    """Wait until the run has started Lava's worker processes; return every descendant seen."""
    seen, end = set(), time.monotonic() + timeout
    stable_since, last = None, None
    while time.monotonic() < end and proc.poll() is None:
        now = _descendants(proc.pid)
        seen |= now
        if len(now) >= n and now == last:
            if time.monotonic() - stable_since > 2.0:    # every worker forked: the run is under way
                return seen
        else:
            stable_since, last = time.monotonic(), now
        time.sleep(0.1)
    return seen


@pytest.mark.lava
@pytest.mark.parametrize("sig,group", [(signal.SIGTERM, False), (signal.SIGHUP, True), (signal.SIGTERM, True)],
                         ids=["SIGTERM-to-parent", "SIGHUP-to-process-group", "SIGTERM-to-process-group"])
def test_signal_during_lava_simulate_ends_every_process(artifact, tmp_path, sig, group):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "neurocomp", "simulate", artifact, "--backend", "lava", "-q",
                          "--samples", "360", "--json", str(tmp_path / "r.json")], cwd=ROOT, env=_env(tmp),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=group,
                         preexec_fn=_default_sigint)
    seen = _wait_for_workers(p)
    assert p.poll() is None, "the run ended before it could be signalled"
    assert len(seen) >= 3, f"the run never started its Lava workers: {seen}"
    assert any("resource_tracker" in _cmdline(q) for q in seen), "multiprocessing's resource tracker not seen"
    assert os.listdir(tmp), "the run has no recording folder (nothing to clean was tested)"
    if group:
        os.killpg(p.pid, sig)
    else:
        p.send_signal(sig)
    _assert_ended_clean(p, seen, tmp, 128 + sig, f"terminated ({signal.Signals(sig).name})")
    assert not (tmp_path / "r.json").exists()


# ---- streaming cross-check -------------------------------------------------------------------------
def _track_spikes(monkeypatch, module, name):
    """Wrap ``module.name`` (run_fixed or LavaRecording.spikes): for each call, how many spike tensors
    that earlier calls returned are still alive when it is called."""
    real = getattr(module, name)
    refs, alive_at_call = [], []

    def wrapper(*a, **k):
        alive_at_call.append(sum(1 for r in refs if r() is not None))
        res = real(*a, **k)
        spikes = res.spikes if hasattr(res, "spikes") else res
        refs.extend(weakref.ref(v) for v in spikes.values())
        return res

    monkeypatch.setattr(module, name, wrapper)
    return alive_at_call


def test_simulate_reference_holds_one_batch_of_spikes(artifact, monkeypatch):
    import neurocomp.api as api
    import neurocomp.crosscheck as engine
    alive = _track_spikes(monkeypatch, engine, "run_fixed")
    r = api.simulate(artifact, backend="reference", samples=96, batch=16, progress=False)
    assert r["samples"] == 96 and len(alive) == 6
    # the old code kept every batch: 5 batches of 5 layers alive at the sixth call
    assert max(alive) == 0, alive


def _corrupt(name, sl, spikes, layers):
    """Flip chosen spikes of the Lava recording by absolute sample index: layer 1 in samples 9, 10
    and 20, layer 3 in sample 0 (with batch 8: samples of three different batches)."""
    flips = {layers[1]: (9, 10, 20), layers[3]: (0,)}
    for j in flips.get(name, ()):
        if sl.start <= j < sl.stop:
            v = spikes.clone()
            idx = (3, j - sl.start) + (0,) * (v.dim() - 2)
            v[idx] = ~v[idx]
            spikes = v
    return spikes


@pytest.mark.lava
def test_simulate_lava_streamed_equals_all_at_once(artifact, monkeypatch):
    """Per-batch comparison (batch 8, 24 samples) against the same recording read and compared at once;
    mismatches injected in three batches are all counted, in the right layers."""
    import neurocomp.api as api
    import neurocomp.crosscheck as engine
    from neurocomp.artifact import Artifact
    from neurocomp.backends import lava as lava_backend
    from neurocomp.data.registry import load_inputs
    from neurocomp.sim import predict, run_fixed

    layers = [n.name for n in Artifact(artifact).fixed_graph.neurons()]
    real_spikes = lava_backend.LavaRecording.spikes
    real_close = lava_backend.LavaRecording.close
    slices, whole = [], {}

    def spikes(self, sl):
        slices.append((sl.start, sl.stop))
        return {k: _corrupt(k, sl, v, layers) for k, v in real_spikes(self, sl).items()}

    def close(self):
        if self._files and not whole:      # read the whole recording once, unstreamed, before it goes
            whole.update(real_spikes(self, slice(0, self.samples)))
        real_close(self)

    monkeypatch.setattr(lava_backend.LavaRecording, "spikes", spikes)
    monkeypatch.setattr(lava_backend.LavaRecording, "close", close)
    alive = _track_spikes(monkeypatch, engine, "run_fixed")
    r = api.simulate(artifact, backend="lava", samples=24, batch=8, progress=False)
    assert slices == [(0, 8), (8, 16), (16, 24)]
    assert max(alive) == 0

    # the same comparison, every sample at once (the unstreamed computation)
    man = Artifact(artifact).manifest
    xs, labels = load_inputs(man["dataset"], "test", man["timesteps"], man["encoding"], n=24)
    ref = run_fixed(Artifact(artifact).fixed_graph, torch.as_tensor(xs))
    lava_all = {k: _corrupt(k, slice(0, 24), v, layers) for k, v in whole.items()}
    lava_pred, labels = predict(lava_all[layers[-1]]), torch.as_tensor(labels)
    pair = engine._PairAcc(layers, man["timesteps"])
    pair.add(ref.spikes, lava_all, ref.predictions(), lava_pred)
    once = pair.result()
    assert [(row["name"], row["mismatches"], row["samples_differing"]) for row in r["per_layer"]] == \
        [(n, once["mismatches"][n], once["samples_differing"][n]) for n in layers]
    assert r["exact_match_fraction"] == once["exact_fraction"]
    assert r["accuracy"]["lava"] == float((lava_pred == labels).float().mean())
    assert r["accuracy"]["fixed_reference"] == float((ref.predictions() == labels).float().mean())
    assert r["same_class"]["lava_vs_fixed_reference"] == float((lava_pred == ref.predictions()).float().mean())

    # and what was injected, counted independently of the engine
    mism = {row["name"]: row["mismatches"] for row in r["per_layer"]}
    assert mism == {n: {layers[1]: 3, layers[3]: 1}.get(n, 0) for n in layers}
    assert r["first_diverging_layer"] == layers[1]
    assert r["exact_match_fraction"] == (24 - 4) / 24
    assert r["samples"] == 24
    assert [row["spikes_compared"] for row in r["per_layer"]] == \
        [24 * man["timesteps"] * int(np.prod(n.out_shape)) for n in Artifact(artifact).fixed_graph.neurons()]


def test_simulate_reference_memory_does_not_grow_with_samples(artifact, tmp_path):
    """Peak RSS of a 320-sample reference run over a 32-sample one (same batch size): the old code held
    every layer's spikes of every sample (+24 MB here, measured); streamed, it is the inputs' ~1 MB."""
    code = """
    import resource, sys
    import numpy as np
    import neurocomp.api as api
    art = sys.argv[1]
    rng = np.random.default_rng(0)
    small = (rng.random((32, 8, 1, 8, 8)) < 0.2).astype(np.uint8)
    big = (rng.random((320, 8, 1, 8, 8)) < 0.2).astype(np.uint8)
    for _ in range(2):
        api.simulate(art, backend="reference", inputs=small, batch=32, progress=False)
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r = api.simulate(art, backend="reference", inputs=big, batch=32, progress=False)
    r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(r["samples"], (r1 - r0) * 1024)
    """
    p = _python(code, artifact, tmpdir=tmp_path)
    out, err = _communicate(p, timeout=300)
    assert p.returncode == 0, err[-3000:]
    samples, growth = map(int, out.split()[-2:])
    assert samples == 320
    from neurocomp.artifact import Artifact
    spikes_bytes = 320 * 8 * sum(int(np.prod(n.out_shape)) for n in Artifact(artifact).fixed_graph.neurons())
    # holding them all (1 byte per spike) would exceed this; streamed, only the inputs (~0.6 MB) are held
    assert growth < spikes_bytes, f"peak memory grew by {growth} bytes (all spikes: {spikes_bytes})"
