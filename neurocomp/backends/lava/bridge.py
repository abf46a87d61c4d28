"""Lava in its own environment: a Lava recording made by a second Python when this one has no Lava.

:func:`lava_recording` is where a Lava run is asked for: in this process when Lava imports here
(:func:`env.lava_here`), else through :func:`record_lava_bridged`, which runs the same
:func:`~neurocomp.backends.lava.shard.record_lava_sharded` in the Lava environment's Python
(:func:`env.lava_python`) and returns its recording, read here as a recording made here is: the child
sends back ``state()`` (paths, shapes, timing), the spikes stay in its memory-mapped ``.npy`` files.

What passes through files, in one temporary folder (removed when the recording is closed, or at once
when the run fails or is interrupted): the graph (the artifact's ``fixed/`` folder when the caller has
it, else written there by ``ir.serialize``; the child checks its digest), the inputs as one ``.npy`` and
the request; the recording is the child's own temporary folder, owned here once the child sends it
(removed by the recording's ``close``), removed by the child itself when its run fails or is stopped. The child runs the very source of this neurocomp: its ``PYTHONPATH``
is a folder holding only a link to this package, and it reports its version and package path, which
must be this one's. Progress comes back as lines on a pipe, so the bar keeps moving here.

Stopping: the child runs in its own process group and dies with this process (``PR_SET_PDEATHSIG``,
:func:`neurocomp.signals.worker`), as do the Lava workers it forks. On Ctrl-C, SIGTERM, SIGHUP,
``timeout`` or an error here, the child is sent SIGTERM (it stops its Lava runtime), then its whole
group is killed after ``shards.GRACE_S``; nothing of it outlives the call.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

from neurocomp import errors, signals
from neurocomp._version import __version__
from neurocomp.backends.lava import env, footprint
from neurocomp.errors import LavaEnvironmentError, LavaRunError, NeurocompError, RunTimeout
from neurocomp.shards import GRACE_S, POLL_S

STARTUP_S = 120.0        # the child's start (imports, emit) beyond a --timeout before it is stopped from here
_PACKAGE = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # .../neurocomp


def lava_recording(graph, x_seq, workers: int = 1, ray: str | None = None, tag: str = "fixed_pt",
                   timeout: float | None = None, progress=False, chunk_samples: int = 16, record=None,
                   graph_dir: str | None = None):
    """Lava's recording of ``x_seq`` ``[T, N, ...]``: :func:`record_lava_sharded` in this process when
    Lava runs here, else the same run in the Lava environment. ``graph_dir``: a folder holding ``graph``
    as ``ir.serialize`` writes it (an artifact's ``fixed/``), so it is not written again.

    First the run's memory is estimated (:func:`footprint.check_lava`: every Lava process, channel and
    array of every shard): a run that does not fit the budget stops here in one line, before any Lava
    process starts or any file is written."""
    here = env.lava_here()
    shape = getattr(x_seq, "shape", None) or np.shape(x_seq)
    footprint.check_lava(graph, int(shape[1]) if len(shape) > 1 else 1, workers=workers, ray=ray, tag=tag,
                         record=record, here=here)
    if here:
        from neurocomp.backends.lava.shard import record_lava_sharded
        return record_lava_sharded(graph, x_seq, workers=workers, ray=ray, tag=tag, timeout=timeout,
                                   progress=progress, chunk_samples=chunk_samples, record=record)
    return record_lava_bridged(graph, x_seq, workers=workers, ray=ray, tag=tag, timeout=timeout, progress=progress,
                               chunk_samples=chunk_samples, record=record, graph_dir=graph_dir)


class BridgedRecording:
    """A recording the Lava environment made: read like the one it wraps; closing it also removes the
    bridge's folder."""

    def __init__(self, rec, folder, python):
        self._rec, self._folder, self.python = rec, folder, python

    def __getattr__(self, name):
        return getattr(self._rec, name)

    def close(self) -> None:
        try:
            self._rec.close()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _inputs_array(x_seq) -> np.ndarray:
    x = x_seq.detach().cpu().numpy() if hasattr(x_seq, "detach") else np.asarray(x_seq)
    if x.dtype != np.uint8 and x.size and np.all((x == 0) | (x == 1)):
        x = x.astype(np.uint8)           # binary spikes: a quarter of the bytes, the same values
    return np.ascontiguousarray(x)


def _shim(folder) -> str:
    """A folder whose only entry links to this neurocomp package: the child's whole PYTHONPATH."""
    path = os.path.join(folder, "path")
    os.makedirs(path)
    os.symlink(_PACKAGE, os.path.join(path, "neurocomp"))
    return path


def record_lava_bridged(graph, x_seq, workers: int = 1, ray: str | None = None, tag: str = "fixed_pt",
                        timeout: float | None = None, progress=False, chunk_samples: int = 16, record=None,
                        graph_dir: str | None = None) -> BridgedRecording:
    """:func:`record_lava_sharded` run by the Lava environment's Python; see the module's doc."""
    python = env.lava_python()
    folder = tempfile.mkdtemp(prefix="neurocomp-bridge-")
    bar = None
    proc = None
    ok = False
    try:
        x = _inputs_array(x_seq)
        n = int(x.shape[1]) if x.ndim > 1 else 0
        inputs = os.path.join(folder, "inputs.npy")
        np.save(inputs, x, allow_pickle=False)
        del x
        if graph_dir is None:
            from neurocomp.ir.serialize import save_graph
            graph_dir = os.path.join(folder, "graph")
            save_graph(graph, graph_dir)
        request = {"version": __version__, "package": _PACKAGE, "graph_dir": os.path.abspath(graph_dir),
                   "digest": graph.digest(), "inputs": inputs, "tag": tag, "workers": workers, "ray": ray,
                   "timeout": timeout, "chunk_samples": chunk_samples,
                   "record": None if record is None else sorted(record)}
        req_path = os.path.join(folder, "request.json")
        with open(req_path, "w") as fh:
            json.dump(request, fh)
        child_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", env.ENV_BRIDGE)}
        child_env.update(PYTHONPATH=_shim(folder), **{env.ENV_BRIDGE: "0"})
        if progress and not callable(progress):
            from tqdm import tqdm
            bar = tqdm(total=n, desc=f"Lava {tag} (Lava environment)", unit="sample")

        def on_progress(done):
            if bar is not None:
                bar.update(min(done, n) - bar.n)
            elif callable(progress):
                progress(done)

        rfd, wfd = os.pipe()
        err_path = os.path.join(folder, "stderr")
        try:
            with open(err_path, "wb") as err:     # shown here when the child ends (its warnings, a broken start)
                proc = subprocess.Popen([python, "-m", "neurocomp.backends.lava.bridge", req_path, str(wfd),
                                         str(os.getpid())], cwd=folder, env=child_env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=err, pass_fds=(wfd,),
                                        start_new_session=True)
        except OSError as e:
            os.close(rfd)
            raise LavaEnvironmentError(f"cannot start {python} ({e.strerror or e})", where=env.ENV_PYTHON,
                                       hint=env.MAKE_HINT) from None
        finally:
            os.close(wfd)
        state = _talk(proc, rfd, python, timeout, on_progress, err_path)
        from neurocomp.backends.lava.shard import recording_from_state
        rec = BridgedRecording(recording_from_state(state), folder, python)
        for done_with in (inputs, os.path.join(folder, "graph"), os.path.join(folder, "path")):
            if os.path.isdir(done_with) and not os.path.islink(done_with):
                shutil.rmtree(done_with, ignore_errors=True)
            elif os.path.lexists(done_with):
                os.unlink(done_with)
        ok = True
        return rec
    finally:
        try:
            if bar is not None:
                bar.close()
            if proc is not None:
                _stop(proc)
        finally:
            if not ok:
                shutil.rmtree(folder, ignore_errors=True)


def _last_line(path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - 4096))
            lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _relay(path) -> None:
    """What the child wrote on stderr (warnings, a process model's traceback), written to ours."""
    with contextlib.suppress(OSError):
        with open(path, "rb") as fh:
            data = fh.read(1 << 20)
        if data.strip():
            sys.stderr.write(data.decode(errors="replace"))
            sys.stderr.flush()


def _talk(proc, rfd, python, timeout, on_progress, err_path) -> dict:
    """Read the child's messages until it sends its result or its error (raised here), or ends."""
    deadline = None if timeout is None else time.monotonic() + timeout + STARTUP_S
    buf, result, failure, hello = b"", None, None, None
    try:
        while True:
            ready, _, _ = select.select([rfd], [], [], POLL_S)
            chunk = os.read(rfd, 1 << 16) if ready else None
            if chunk:
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    msg = json.loads(line)
                    if "hello" in msg:
                        hello = msg["hello"]
                        _check_hello(hello, python)
                    elif "progress" in msg:
                        on_progress(int(msg["progress"]))
                    elif "ok" in msg:
                        result = msg["ok"]
                    elif "error" in msg:
                        failure = msg["error"]
            signals.check()
            if chunk == b"" or (chunk is None and proc.poll() is not None and not select.select([rfd], [], [], 0)[0]):
                break                       # the pipe closed: the child (and every process it forked) is done
            if deadline is not None and time.monotonic() > deadline:
                raise RunTimeout(f"the Lava environment's run exceeded {timeout:g} s", where="lava",
                                 hint="raise --timeout or simulate fewer samples")
    finally:
        os.close(rfd)
    if hello is None:
        code = proc.wait()
        why = _last_line(err_path)
        raise LavaEnvironmentError(f"{python} ended with status {code} before starting neurocomp"
                                   + (f" ({why})" if why else ""), where=env.ENV_PYTHON, hint=env.MAKE_HINT)
    _relay(err_path)
    if failure is not None:
        raise _rebuild(failure, python)
    if result is None:
        code = proc.wait()
        raise LavaRunError(f"the Lava environment's process ended with status {code} without a result",
                           where=f"lava ({python})", hint="rerun; if it repeats, run the same command with "
                                                          f"{env.ENV_BRIDGE}=0 in a Python with Lava")
    return result


def _check_hello(hello, python) -> None:
    if hello.get("version") != __version__ or os.path.realpath(hello.get("package", "")) != os.path.realpath(_PACKAGE):
        raise LavaEnvironmentError(f"the Lava environment runs neurocomp {hello.get('version')} from "
                                   f"{hello.get('package')}, this is neurocomp {__version__} from {_PACKAGE}",
                                   where=f"lava ({python})",
                                   hint="uninstall neurocomp from the Lava environment (it runs this neurocomp's "
                                        "source) or make a new one with `neurocomp lava-env`")


def _rebuild(failure: dict, python) -> NeurocompError:
    """The child's neurocomp error as the same class here (an unknown one as a LavaRunError)."""
    cls = getattr(errors, str(failure.get("class")), None)
    if not (isinstance(cls, type) and issubclass(cls, NeurocompError)):
        cls = LavaRunError
        failure = dict(failure, message=f"in the Lava environment: {failure.get('message')}",
                       where=failure.get("where") or f"lava ({python})",
                       hint=failure.get("hint") or "rerun; the traceback is in the error's worker_traceback")
    err = cls.__new__(cls)
    NeurocompError.__init__(err, failure.get("message"), where=failure.get("where"), hint=failure.get("hint"))
    if cls is errors.UnsupportedLayers:
        err.problems = []
    err.worker_traceback = failure.get("traceback")
    return err


def _group_alive(pgid) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _stop(proc) -> None:
    """End the child and everything in its process group: SIGTERM (it stops its Lava runtime), then
    SIGKILL for whatever is left after the grace period; signals meanwhile wait (neurocomp.signals)."""
    with signals.deferred():
        pgid = proc.pid                     # start_new_session: the child leads its own group
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        end = time.monotonic() + (5.0 if proc.poll() is not None else 0.0)
        while _group_alive(pgid) and time.monotonic() < end:   # its resource tracker cleans up, then leaves
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)
        proc.wait()


# ---- the child: this module run by the Lava environment's Python --------------------------------
def _child(req_path: str, fd: int, parent: int) -> int:
    out = os.fdopen(fd, "w", buffering=1)

    def send(obj):
        out.write(json.dumps(obj) + "\n")

    code = 1
    try:
        with signals.worker(parent):    # SIGTERM stops the run; the group's Ctrl-C is the parent's to answer
            send({"hello": {"version": __version__, "package": _PACKAGE, "python": sys.version.split()[0]}})
            try:
                import lava.magma.core  # noqa: F401
            except ImportError as e:
                raise LavaEnvironmentError(f"{sys.executable} cannot import Lava ({e})", where=env.ENV_PYTHON,
                                           hint=env.MAKE_HINT) from None
            from neurocomp.backends.lava.runtime import ensure_lava_runtime
            from neurocomp.backends.lava.shard import record_lava_sharded
            from neurocomp.ir.serialize import load_graph
            ensure_lava_runtime()
            with open(req_path) as fh:
                req = json.load(fh)
            graph = load_graph(req["graph_dir"])
            if graph.digest() != req["digest"]:
                raise LavaRunError("the graph the Lava environment read is not the one asked for",
                                   where=req["graph_dir"], hint="the artifact changed meanwhile: rerun")
            x = np.load(req["inputs"], allow_pickle=False)
            rec = record_lava_sharded(graph, x, workers=req["workers"], ray=req["ray"], tag=req["tag"],
                                      timeout=req["timeout"], progress=lambda done: send({"progress": int(done)}),
                                      chunk_samples=req["chunk_samples"], record=req["record"])
            signals.check()
            send({"ok": rec.state()})
            code = 0
    except KeyboardInterrupt:
        code = 128 + signal.SIGTERM
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it
        import traceback
        if isinstance(e, NeurocompError):
            failure = {"class": type(e).__name__, "message": e.message, "where": e.where, "hint": e.hint}
        else:
            text = str(e).strip()
            failure = {"class": type(e).__name__,
                       "message": f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__}
        failure["traceback"] = traceback.format_exc()
        with contextlib.suppress(OSError, ValueError):
            send({"error": failure})
    finally:
        with contextlib.suppress(OSError, ValueError):
            out.close()
    return code


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
