"""The Lava runtime's lifecycle: import Lava's multiprocessing layer safely, stop a runtime within a
grace period, and kill its workers (with their shared memory) when it does not stop.
"""
from __future__ import annotations

import time

from neurocomp.errors import BadInput


def ensure_lava_runtime() -> None:
    """Import Lava's multiprocessing layer, which calls ``set_start_method('fork')`` at import and
    fails if the host program already fixed the start method (tests, notebooks, libraries)."""
    import importlib
    import multiprocessing as mp
    name = "lava.magma.runtime.message_infrastructure.multiprocessing"
    try:
        importlib.import_module(name)
        return
    except RuntimeError:
        if mp.get_start_method(allow_none=True) not in (None, "fork"):
            raise BadInput(f"multiprocessing start method is {mp.get_start_method()!r}; Lava needs 'fork'",
                           where="lava", hint="do not set another start method before running Lava")
    original = mp.set_start_method
    mp.set_start_method = lambda *args, **kwargs: None     # already 'fork': skip Lava's second call
    try:
        importlib.import_module(name)
    finally:
        mp.set_start_method = original


def stop_runtime(proc, grace: float = 5.0) -> bool:
    """Stop ``proc``'s Lava runtime and make sure none of its worker processes survives.

    Lava's ``stop()`` waits, without a time limit, for every worker to answer; a worker that died
    (an exception in a process model, a Ctrl-C that reached the whole process group) never does.
    So ``stop()`` runs in a helper thread for at most ``grace`` seconds; then the workers are
    terminated (killed if need be) and the shared memory released. Returns True on a clean stop.
    """
    import threading
    runtime = getattr(proc, "runtime", None)
    if runtime is None:
        return True
    stopped = threading.Event()

    def _stop():
        try:
            proc.stop()
        except Exception:  # noqa: BLE001 - a runtime that failed to start may raise on stop
            pass
        finally:
            stopped.set()

    threading.Thread(target=_stop, name="neurocomp-lava-stop", daemon=True).start()
    try:
        if stopped.wait(grace):
            return True
    except BaseException:         # a second Ctrl-C / SIGTERM while waiting: stop waiting, end the workers now
        kill_runtime(runtime)
        raise
    kill_runtime(runtime)
    return False


def kill_runtime(runtime) -> None:
    """Kill every worker process of a Lava runtime and release its shared memory;
    signals arriving meanwhile wait until it is done (see neurocomp.signals)."""
    from neurocomp import signals
    with signals.deferred():
        _kill_runtime(runtime)


def _kill_runtime(runtime) -> None:
    import multiprocessing as mp
    infra = getattr(runtime, "_messaging_infrastructure", None)
    actors = list(getattr(infra, "actors", None) or [])

    def alive(a):
        try:
            return a.is_alive()
        except ValueError:          # already joined and closed
            return False

    for a in actors:
        if alive(a):
            a.kill()        # SIGKILL: under the CLI, forked workers ignore SIGTERM (neurocomp.signals)
    end = time.monotonic() + 5.0
    for a in actors:
        if alive(a):
            mp.Process.join(a, max(0.0, end - time.monotonic()))
        if alive(a):
            a.kill()
            mp.Process.join(a, 2.0)
    for closer in (lambda: infra.smm.shutdown(), lambda: runtime._watchdog_manager.stop()):
        try:
            closer()
        except Exception:  # noqa: BLE001 - best effort: the workers are gone already
            pass
