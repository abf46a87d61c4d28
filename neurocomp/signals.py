"""SIGINT, SIGTERM and SIGHUP end a neurocomp command the same way: through its cleanup paths.

While :func:`handled` is active (the CLI wraps every command in it):

- SIGTERM and SIGHUP raise :class:`Terminated` (a ``KeyboardInterrupt``, so every cleanup path that
  runs on Ctrl-C runs on them too: temporary folders removed, Lava runtimes stopped), and the
  command exits with ``128 + signal``; SIGINT raises ``KeyboardInterrupt`` (exit 130).
  A signal that the parent ignores (``nohup``, a background job's SIGINT) stays ignored.
- A signal is never lost: Python drops an exception raised inside a finalizer or a weakref callback
  ("Exception ignored in ..."), so the signal is also recorded, and :func:`check` re-raises it.
  Writers call :func:`check` before they commit (rename) an output, loops between chunks, and the
  CLI before it reports success.
- In :func:`deferred` sections (ending a Lava runtime's workers) signals are only recorded, so a
  second signal cannot cut the clean-up short; the next :func:`check` raises them.
- Processes forked meanwhile (Lava's workers, multiprocessing managers) ignore SIGINT, SIGTERM and
  SIGHUP (their parent stops them, or kills them), and on Linux are killed by the kernel when their
  parent dies, whatever it died of (even SIGKILL). :func:`start_resource_tracker` starts
  multiprocessing's resource tracker immune to SIGHUP (it ignores the other two itself).
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading

SIGNALS = tuple(getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n))


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived; ``signum`` says which."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"terminated by {signal.Signals(self.signum).name}")


_state = {"active": 0, "pending": None, "previous": {}, "deferring": 0, "parent": None, "prctl": None}


def exit_status(exc: BaseException) -> int:
    """128 + the signal number of an interrupt (130 for a plain ``KeyboardInterrupt``)."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


def describe(exc: BaseException) -> str:
    s = int(getattr(exc, "signum", signal.SIGINT))
    return "interrupted" if s == signal.SIGINT else f"terminated ({signal.Signals(s).name})"


def _exception(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated(signum)


def _handler(signum, frame):
    if _state["pending"] is None or signum != signal.SIGINT:
        _state["pending"] = signum
    if _state["deferring"]:
        return
    raise _exception(_state["pending"])      # SIGTERM/SIGHUP, once received, is what the exit reports


def pending() -> int | None:
    """The signal received and not yet answered by the command's exit, or None."""
    return _state["pending"]


def received() -> KeyboardInterrupt | None:
    """The interrupt received (as the exception the command ends with), or None."""
    s = _state["pending"]
    return None if s is None else _exception(s)


def check() -> None:
    """Raise the interrupt again if one arrived while its exception was swallowed."""
    s = _state["pending"]
    if s is not None and _state["active"] and not _state["deferring"]:
        raise _exception(s)


def finishing() -> None:
    """The command is reporting how it ended: further signals are recorded, not raised."""
    if _state["active"]:
        _state["deferring"] += 1


@contextlib.contextmanager
def deferred():
    """Record SIGINT/SIGTERM/SIGHUP without raising until the block ends (clean-up that must not be
    cut short); the next :func:`check` raises it."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1


def _after_fork_child() -> None:
    if not _state["active"]:
        return
    # a forked worker (Lava's) is stopped by its parent, which gets the signal too: a Ctrl-C, hang-up
    # or SIGTERM sent to the whole process group must not kill it behind the parent's back (the
    # parent's orderly stop would then wait on a dead worker, shared memory would be left to the
    # resource tracker) nor print its traceback; the parent ends it with SIGKILL if it must
    for s in _state["previous"]:
        try:
            signal.signal(s, signal.SIG_IGN)
        except (ValueError, OSError, TypeError):
            pass
    _state.update(active=0, pending=None, deferring=0, previous={})
    _die_with_parent()


def _die_with_parent() -> None:
    """Linux: the kernel kills this (forked) process when its parent dies, even by SIGKILL."""
    parent, prctl = _state["parent"], _state["prctl"]
    if prctl is None:
        return
    try:
        prctl(1, int(signal.SIGKILL), 0, 0, 0)     # PR_SET_PDEATHSIG
    except (OSError, AttributeError, TypeError):
        return
    if parent is not None and os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_child)


def _install() -> bool:
    if threading.current_thread() is not threading.main_thread():
        return False
    prev = {}
    for s in SIGNALS:
        cur = signal.getsignal(s)
        # respect what the parent chose to ignore (nohup, SIGINT of a background job)
        if cur is signal.SIG_IGN or cur is None:
            continue
        if s == signal.SIGINT and cur is not signal.default_int_handler:
            continue          # the host program has its own Ctrl-C handling
        if s != signal.SIGINT and cur is not signal.SIG_DFL:
            continue
        prev[s] = cur
    for s in prev:
        signal.signal(s, _handler)
    _state.update(previous=prev, pending=None, deferring=0, parent=os.getpid(), prctl=_find_prctl())
    return True


def _find_prctl():
    if not os.path.isdir("/proc/self"):       # Linux only
        return None
    try:
        import ctypes
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _uninstall() -> None:
    for s, prev in _state["previous"].items():
        signal.signal(s, prev)
    _state.update(previous={}, pending=None, deferring=0)


@contextlib.contextmanager
def handled():
    """Route SIGINT/SIGTERM/SIGHUP through the interrupt path for the duration of the block."""
    mine = not _state["active"] and _install()
    if mine:
        _state["active"] = 1
    try:
        yield
    finally:
        if mine:
            _state["active"] = 0
            _uninstall()


@contextlib.contextmanager
def worker(parent: int | None = None):
    """The body of a worker process (a shard, see :mod:`neurocomp.shards`): SIGTERM from the process
    that started it ends it through the same clean-up paths as a command (its Lava runtime stopped,
    its temporary files removed); SIGINT and SIGHUP are ignored (a terminal's Ctrl-C reaches the whole
    group: the parent decides and stops its workers); processes it forks meanwhile die with it. The
    signal dispositions it found are restored afterwards (a Ray worker keeps its own). ``parent``: the
    pid of the process that forked this one; on Linux this one is then killed when that one dies."""
    if threading.current_thread() is not threading.main_thread() or _state["active"]:
        yield                         # not a process of its own (a fork's state is reset: see _after_fork_child)
        return
    if parent is not None:
        _state.update(parent=int(parent), prctl=_find_prctl())
        _die_with_parent()
    saved = {s: signal.getsignal(s) for s in SIGNALS}
    try:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_DFL if s == signal.SIGTERM else signal.SIG_IGN)
        with handled():
            yield
    finally:
        for s, h in saved.items():
            if h is not None:
                signal.signal(s, h)


def start_resource_tracker() -> None:
    """Start multiprocessing's resource tracker (if not running) with SIGHUP blocked, so that a hang-up
    sent to the process group cannot kill it while shared memory is registered with it (it ignores
    SIGINT and SIGTERM itself). The block is lifted at once: a SIGHUP meanwhile is delivered, not lost."""
    from multiprocessing import resource_tracker
    hup = getattr(signal, "SIGHUP", None)
    if hup is None or not hasattr(signal, "pthread_sigmask"):
        resource_tracker.ensure_running()
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {hup})
    try:
        resource_tracker.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
