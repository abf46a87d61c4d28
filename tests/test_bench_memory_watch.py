"""The benchmarks' memory watch (``bench/exact_at_size._tree_rss_gib``, which ``bench/scale.py`` uses to stop a
phase above its limit) counts each process's proportional share of anonymous and shared memory, once.

On the 128x128 PFA rows of the scale bench it read 16.3 and 38.5 GiB on a 23.5 GiB machine and stopped Lava
runs that held about 4-6 GiB: the Lava workers exit together at the end of a run, a worker's ``smaps_rollup``
cannot be read once it is exiting, and the watch then counted the RSS read a moment before, which holds every
shared page (Lava's channel buffers) in full, in each of 30 processes.
"""
from __future__ import annotations

import builtins
import mmap
import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import exact_at_size as watch  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux smaps_rollup")


def test_a_process_exiting_during_the_scan_counts_zero_not_its_rss(monkeypatch):
    real_open = builtins.open

    def exiting(path, *args, **kwargs):
        if str(path).endswith("/smaps_rollup"):
            raise ProcessLookupError(3, "No such process")      # what the kernel answers for an exiting process
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", exiting)
    assert watch._pss(os.getpid(), 10 << 30) == 0


def test_shared_memory_of_a_forked_tree_is_counted_once():
    """A 256 MiB shared buffer written by a parent and mapped by its forked child (as Lava's channels are)
    adds about 256 MiB to the tree, not 512 MiB (the sum of the two RSS)."""
    size = 256 << 20
    before = watch._tree_rss_gib(os.getpid())
    buf = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
    buf.write(b"\1" * size)                                         # every page resident
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                                    # the child touches the mapping, then waits
        os.close(r)
        _ = sum(buf[i] for i in range(0, size, 4096))
        os.write(w, b"x")
        time.sleep(30)
        os._exit(0)
    try:
        os.close(w)
        assert os.read(r, 1) == b"x"
        grown = (watch._tree_rss_gib(os.getpid()) - before) * 2**30
        assert 0.75 * size < grown < 1.4 * size, grown / 2**20
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        buf.close()
