"""Run independent pieces of one job (shards: contiguous sample ranges) on several workers, and give
their results back in shard order, so that merging them by sample index gives what one worker gives.

Two engines, one contract:

- **local processes** (``workers=N``): each shard runs in a process forked from this one, at most ``N``
  at a time. A worker ends its own Lava runtime on SIGTERM (:func:`neurocomp.signals.worker`), ignores
  the terminal's Ctrl-C (this process decides), and dies with this process even on SIGKILL; so do the
  processes it forks.
- **Ray** (``ray=ADDRESS``: ``local`` starts a private head on 127.0.0.1 and shuts it down afterwards,
  ``auto`` or ``HOST:PORT`` joins a running cluster, whose nodes need neurocomp installed): each shard
  is one Ray task of one CPU; a Ray session already initialised in this process is used as it is.

Whichever the engine: a shard that fails (an error, a worker that died) is run again once; if it
fails again, every other shard is stopped and :class:`neurocomp.errors.ShardFailed` names it with its
sample range. Ctrl-C, SIGTERM, SIGHUP and ``timeout`` (seconds for the whole job) stop every worker
before the exception leaves :func:`run_shards`; nothing is left running.

A shard function is called as ``fn(*args, progress=callback)``: ``callback(done)`` (or ``None``) takes
how many of the shard's units are done; under Ray only whole shards are counted.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback

from neurocomp import signals
from neurocomp.errors import BadInput, NeurocompError, RunTimeout, ShardFailed

GRACE_S = 10.0          # a worker told to stop (SIGTERM) has this long to stop its runtime, then SIGKILL
POLL_S = 0.2


def split(n: int, parts: int) -> list[range]:
    """``range(n)`` cut into ``min(parts, n)`` contiguous ranges whose sizes differ by at most one."""
    parts = max(1, min(int(parts), int(n)))
    q, r = divmod(int(n), parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + q + (1 if i < r else 0)
        out.append(range(start, stop))
        start = stop
    return out


def describe_range(r: range, what: str = "samples") -> str:
    return f"{what} {r.start}-{r.stop - 1}" if len(r) > 1 else f"{what[:-1] if what.endswith('s') else what} {r.start}"


def check_workers(workers, ray) -> int:
    """``--workers`` as an int >= 1 (a one-line error otherwise)."""
    try:
        w = int(workers)
    except (TypeError, ValueError):
        w = 0
    if w < 1 or isinstance(workers, bool):
        raise BadInput(f"--workers {workers!r}", where="--workers", hint="give a whole number of workers, 1 or more")
    if ray is not None and (not isinstance(ray, str) or not ray.strip()):
        raise BadInput(f"--ray {ray!r}", where="--ray", hint="give local, auto or the cluster's HOST:PORT")
    return w


def shard_count(workers: int, ray: str | None, samples: int) -> int:
    """How many shards: ``workers``; on Ray with ``workers`` 1, one per CPU the cluster has."""
    if ray is not None and workers == 1:
        with ray_session(ray) as r:
            workers = max(1, int(r.cluster_resources().get("CPU", 1)))
    return max(1, min(workers, samples))


def run_shards(fn, shard_args: list[tuple], ranges: list[range], workers: int = 1, ray: str | None = None,
               timeout: float | None = None, what: str = "shard", on_progress=None, units=None) -> list:
    """Run ``fn(*shard_args[i])`` for every shard ``i`` and return the results in shard order.

    ``ranges[i]``: the samples shard ``i`` covers (named when it fails). ``units[i]``: what the shard
    counts towards ``on_progress(total_done)`` (default: its number of samples). ``fn`` and its
    arguments must be picklable by reference for Ray (a module-level function)."""
    workers = check_workers(workers, ray)
    units = [len(r) for r in ranges] if units is None else list(units)
    if ray is not None:
        return _run_ray(fn, shard_args, ranges, workers, ray, timeout, what, on_progress, units)
    return _run_local(fn, shard_args, ranges, workers, timeout, what, on_progress, units)


def _failed(what, i, ranges, message) -> ShardFailed:
    return ShardFailed(f"{what} {i + 1}/{len(ranges)} ({describe_range(ranges[i])}) failed twice: {message}",
                       hint="the other shards were stopped; --workers 1 runs it in this process "
                            "(with --debug for the traceback)")


def _timed_out(what, timeout, done, total) -> RunTimeout:
    return RunTimeout(f"{what}s exceeded {timeout:g} s with {done}/{total} shards done", where=what,
                      hint="raise --timeout or simulate fewer samples")


def _first_line(e: BaseException) -> str:
    if isinstance(e, NeurocompError):          # what went wrong and where; the hint is the shard's own
        return f"{e.where}: {e.message}" if e.where else str(e.message)
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


# ---- local processes ------------------------------------------------------------------------------
def _child(fn, args, conn, parent) -> None:
    """A forked worker: run the shard, send ``("ok", result)`` or ``("error", line)``."""
    if "torch" in sys.modules:        # OpenMP's thread pool does not survive a fork: one thread per worker
        sys.modules["torch"].set_num_threads(1)
    code = 1
    try:
        with signals.worker(parent):
            def progress(done):
                conn.send(("progress", int(done)))
            result = fn(*args, progress=progress)
            signals.check()
            conn.send(("ok", result))
            code = 0
    except KeyboardInterrupt:
        code = 128 + signal.SIGTERM
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which retries or names the shard
        try:
            conn.send(("error", _first_line(e), traceback.format_exc()))
        except (OSError, ValueError):
            pass
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)          # no atexit handlers or finalizers of the parent's objects in the child


class _Running:
    def __init__(self, i, proc, conn):
        self.i, self.proc, self.conn = i, proc, conn
        self.result = None
        self.error = None
        self.finished = False


def _stop_local(running) -> None:
    """SIGTERM every worker (it stops its Lava runtime), SIGKILL those still there after the grace."""
    with signals.deferred():
        for r in running:
            if r.proc.is_alive():
                with contextlib.suppress(OSError):
                    os.kill(r.proc.pid, signal.SIGTERM)
        end = time.monotonic() + GRACE_S
        for r in running:
            r.proc.join(max(0.0, end - time.monotonic()))
        for r in running:
            if r.proc.is_alive():
                r.proc.kill()
                r.proc.join(5.0)
            with contextlib.suppress(OSError):
                r.conn.close()


def _run_local(fn, shard_args, ranges, workers, timeout, what, on_progress, units):
    import multiprocessing as mp
    from multiprocessing.connection import wait
    ctx = mp.get_context("fork")
    signals.start_resource_tracker()       # one tracker for every worker's shared memory, started before the forks
    n = len(shard_args)
    queue = list(range(n))
    attempts = [0] * n
    results, done_units, tracebacks = [None] * n, [0] * n, [None] * n
    finished = 0
    running: list[_Running] = []
    start = time.monotonic()
    try:
        while finished < n:
            while queue and len(running) < workers:
                i = queue.pop(0)
                attempts[i] += 1
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_child, args=(fn, shard_args[i], send, os.getpid()),
                                   name=f"neurocomp-{what}-{i}", daemon=False)   # it starts Lava's own processes
                proc.start()
                send.close()
                running.append(_Running(i, proc, recv))
            ready = wait([r.conn for r in running] + [r.proc.sentinel for r in running], timeout=POLL_S)
            for r in list(running):
                while not r.finished and r.conn in ready and r.conn.poll():
                    try:
                        msg = r.conn.recv()
                    except (EOFError, OSError):
                        break
                    if msg[0] == "progress":
                        done_units[r.i] = min(msg[1], units[r.i])
                    elif msg[0] == "ok":
                        r.result, r.finished = msg[1], True
                    else:
                        r.error, r.finished = msg[1], True
                        tracebacks[r.i] = msg[2]
                if r.finished or not r.proc.is_alive():
                    if not r.finished:            # died without a word: read what it sent last
                        with contextlib.suppress(EOFError, OSError):
                            while r.conn.poll():
                                msg = r.conn.recv()
                                if msg[0] == "ok":
                                    r.result, r.finished = msg[1], True
                                elif msg[0] == "error":
                                    r.error, r.finished = msg[1], True
                    r.proc.join(GRACE_S)
                    running.remove(r)
                    r.conn.close()
                    if r.finished and r.error is None:
                        results[r.i] = r.result
                        done_units[r.i] = units[r.i]
                        finished += 1
                    else:
                        message = r.error or f"its worker process ended with status {r.proc.exitcode}"
                        if attempts[r.i] >= 2:
                            err = _failed(what, r.i, ranges, message)
                            err.worker_traceback = tracebacks[r.i]     # the worker's own, for a debugger
                            raise err
                        done_units[r.i] = 0
                        queue.insert(0, r.i)             # retried once, first in line
            if on_progress is not None:
                on_progress(sum(done_units))
            signals.check()
            if timeout is not None and time.monotonic() - start > timeout:
                raise _timed_out(what, timeout, finished, n)
        return results
    finally:
        _stop_local(running)


# ---- Ray --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def ray_session(address: str):
    """Ray initialised for the block: an existing session as it is, else ``ray.init(address)``
    (``local``: a private head on 127.0.0.1), shut down when the block ends."""
    try:
        import ray
    except ImportError:
        raise BadInput("Ray is not installed", where="--ray",
                       hint="pip install 'neurocomp[ray]', or use --workers N (processes on this host)") from None
    if ray.is_initialized():
        yield ray
        return
    kw = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR", "configure_logging": True}
    if address == "local":
        kw["_node_ip_address"] = "127.0.0.1"
    try:
        ray.init(address=address, **kw)
    except (ConnectionError, RuntimeError, ValueError) as e:
        with contextlib.suppress(Exception):
            ray.shutdown()
        raise BadInput(f"cannot reach the Ray cluster ({_first_line(e)})", where=f"--ray {address}",
                       hint="give local (a private head), auto (a running `ray start`) or the head's HOST:PORT"
                       ) from None
    try:
        yield ray
    finally:
        with signals.deferred():
            ray.shutdown()


def _ray_shard(fn, args):
    """A shard inside a Ray worker: SIGTERM stops its runtime, its forks die with it."""
    with signals.worker():
        return fn(*args, progress=None)


def _run_ray(fn, shard_args, ranges, workers, address, timeout, what, on_progress, units):
    with ray_session(address) as ray:
        task = ray.remote(num_cpus=1, max_retries=0)(_ray_shard)
        n = len(shard_args)
        refs, attempts, results = {}, [0] * n, [None] * n
        finished, start = 0, time.monotonic()

        def submit(i):
            attempts[i] += 1
            refs[task.remote(fn, shard_args[i])] = i

        try:
            for i in range(n):
                submit(i)
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    i = refs.pop(ref)
                    try:
                        results[i] = ray.get(ref)
                        finished += 1
                    except Exception as e:  # noqa: BLE001 - a task error or a dead worker
                        cause = getattr(e, "cause", None) or e
                        if attempts[i] >= 2:
                            raise _failed(what, i, ranges, _first_line(cause)) from None
                        submit(i)
                if on_progress is not None:
                    on_progress(sum(units[i] for i in range(n) if i not in refs.values() and attempts[i]))
                signals.check()
                if timeout is not None and time.monotonic() - start > timeout:
                    raise _timed_out(what, timeout, finished, n)
            return results
        finally:
            with signals.deferred():
                for ref in refs:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=True)
