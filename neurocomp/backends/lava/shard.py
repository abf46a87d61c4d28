"""One Lava run split over several independent Lava runtimes, merged back by sample index.

:func:`record_lava_sharded` cuts the samples into contiguous ranges (``neurocomp.shards.split``), runs
each range through its own runtime (:func:`neurocomp.backends.lava.run.record_lava`) on a worker
(``neurocomp.shards``: processes forked on this host, or Ray tasks), and returns a
:class:`ShardedRecording`, which reads any slice of samples as one recording would. Each sample is
reset at its own window in Lava, so where it lies in a runtime's stream does not change its spikes:
the merged recording is the one recording of a single runtime, read by sample index.

Local workers leave their recording files on this host and send back where they are; a Ray task may
run on another machine, so it sends its files' bytes back (a shard's recording is held in memory once:
more shards, smaller pieces). Every shard's files live under one temporary folder, removed when the
recording is closed or the run fails.
"""
from __future__ import annotations

import os
import resource
import shutil
import tempfile
import time

import numpy as np
import torch

from neurocomp.backends.lava.run import LavaRecording, record_lava
from neurocomp.shards import check_workers, ray_session, run_shards, shard_count, split


def _cpu_s() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _run_shard(graph, x, tag, chunk_samples, record, tmp_dir, progress=None) -> dict:
    """One shard in its worker: its own Lava runtime on samples ``x`` ``[T, n, ...]``; the recording's
    state, with the CPU seconds the worker and its Lava processes used."""
    cpu0, t0 = _cpu_s(), time.monotonic()
    rec = record_lava(graph, x, tag=tag, progress=progress, chunk_samples=chunk_samples, record=record,
                      tmp_dir=tmp_dir)
    state = rec.state()
    state["stats"].update(cpu_s=_cpu_s() - cpu0, worker_wall_s=time.monotonic() - t0, pid=os.getpid())
    return state


def _run_shard_inline(graph, x, tag, chunk_samples, record, progress=None) -> dict:
    """A shard on a Ray worker, possibly on another machine: the recording's files come back as bytes."""
    state = _run_shard(graph, x, tag, chunk_samples, record, None, progress=progress)
    try:
        data = {}
        for name, _, path, _, _ in state["layers"]:
            if path is not None:
                with open(path, "rb") as fh:
                    data[name] = fh.read()
        state["data"] = data
        return state
    finally:
        shutil.rmtree(state["record_dir"], ignore_errors=True)


def _land(state: dict, folder: str) -> dict:
    """Write a Ray shard's recording bytes into ``folder`` (on this host); its state with those paths."""
    os.makedirs(folder)
    data = state.pop("data")
    layers = []
    for k, (name, proc, path, lshape, tshape) in enumerate(state["layers"]):
        if path is not None:
            path = os.path.join(folder, f"{k}.npy")      # never a name from the graph
            with open(path, "wb") as fh:
                fh.write(data.pop(name))
        layers.append((name, proc, path, lshape, tshape))
    return dict(state, layers=layers, record_dir=folder)


class ShardedRecording:
    """The recordings of consecutive sample ranges, read as one (``spikes(slice)`` across shards)."""

    def __init__(self, parts, tmp_root, stats):
        self.parts = list(parts)                    # [(range, LavaRecording)] in sample order
        self.tmp_root = tmp_root
        self.samples = sum(len(r) for r, _ in self.parts)
        self.output_name = self.parts[0][1].output_name
        self.graded = self.parts[0][1].graded
        self.timing = self.parts[0][1].timing
        self.stats = stats

    @property
    def layers(self):
        return self.parts[0][1].layers

    def spikes(self, sl: slice) -> dict:
        start, stop, _ = sl.indices(self.samples)
        pieces = []
        for r, rec in self.parts:
            a, b = max(start, r.start), min(stop, r.stop)
            if a < b:
                pieces.append(rec.spikes(slice(a - r.start, b - r.start)))
        if not pieces:
            return self.parts[0][1].spikes(slice(0, 0))
        if len(pieces) == 1:
            return pieces[0]
        return {k: torch.cat([p[k] for p in pieces], dim=1) for k in pieces[0]}

    def state(self) -> dict:
        """As :meth:`LavaRecording.state`: plain data another process on this host reopens with
        :func:`recording_from_state`; this object no longer owns the files."""
        out = {"sharded": True, "tmp_root": self.tmp_root, "stats": self.stats,
               "parts": [[r.start, r.stop, rec.state()] for r, rec in self.parts]}
        self.parts, self.tmp_root = [], None
        return out

    @classmethod
    def from_state(cls, state: dict) -> "ShardedRecording":
        parts = []
        try:
            for start, stop, st in state["parts"]:
                parts.append((range(start, stop), LavaRecording.from_state(st)))
        except BaseException:
            for _, rec in parts:
                rec.close()
            raise
        return cls(parts, state["tmp_root"], state["stats"])

    def close(self) -> None:
        for _, rec in self.parts:
            rec.close()
        self.parts = []
        if self.tmp_root is not None:
            shutil.rmtree(self.tmp_root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def recording_from_state(state: dict):
    """A recording (one runtime's or a sharded run's) from the ``state()`` another process sent."""
    return (ShardedRecording if state.get("sharded") else LavaRecording).from_state(state)


def record_lava_sharded(graph, x_seq, workers: int = 1, ray: str | None = None, tag: str = "fixed_pt",
                        timeout: float | None = None, progress: bool = False, chunk_samples: int = 16,
                        record=None):
    """Like :func:`record_lava`, with the samples split over ``workers`` Lava runtimes (local processes,
    or Ray tasks on the cluster at ``ray``); one runtime in this process when there is one shard.
    ``progress``: ``True`` shows a bar; a callable is called with the number of samples done."""
    workers = check_workers(workers, ray)
    x = torch.as_tensor(x_seq)
    N = int(x.shape[1])
    if ray is None and min(workers, N) <= 1:
        return record_lava(graph, x, tag=tag, timeout=timeout, progress=progress, chunk_samples=chunk_samples,
                           record=record)
    from neurocomp.backends.lava.runtime import ensure_lava_runtime
    ensure_lava_runtime()             # Lava's multiprocessing imported once, here, before any fork
    if ray is not None:
        with ray_session(ray):        # one session for counting the CPUs and running the shards
            return _sharded(graph, x, shard_count(workers, ray, N), ray, tag, timeout, progress, chunk_samples,
                            record)
    return _sharded(graph, x, shard_count(workers, None, N), None, tag, timeout, progress, chunk_samples, record)


def _sharded(graph, x, shards, ray, tag, timeout, progress, chunk_samples, record):
    N = int(x.shape[1])
    ranges = split(N, shards)
    tmp_root = tempfile.mkdtemp(prefix="neurocomp-shards-")
    bar = None
    parts = []
    try:
        xs = [np.ascontiguousarray(x[:, r.start:r.stop].cpu().numpy()) for r in ranges]
        if ray is None:
            args = [(graph, xi, tag, chunk_samples, record, tmp_root) for xi in xs]
            fn = _run_shard
        else:
            args = [(graph, xi, tag, chunk_samples, record) for xi in xs]
            fn = _run_shard_inline
        if progress and not callable(progress):
            from tqdm import tqdm
            bar = tqdm(total=N, desc=f"Lava {tag}, {len(ranges)} shards"
                                     + (f" on Ray ({ray})" if ray else " (local processes)"), unit="sample")

        def on_progress(done):
            if bar is not None and done != bar.n:
                bar.update(done - bar.n)
            elif callable(progress):
                progress(done)

        t0 = time.monotonic()
        states = run_shards(fn, args, ranges, workers=len(ranges), ray=ray, timeout=timeout, what="Lava shard",
                            on_progress=on_progress)
        wall = time.monotonic() - t0
        for k, (r, st) in enumerate(zip(ranges, states)):
            if ray is not None:
                st = _land(st, os.path.join(tmp_root, f"shard{k}"))
            parts.append((r, LavaRecording.from_state(st)))
        stats = {"wall_s": wall, "steps": sum(rec.stats["steps"] for _, rec in parts),
                 "engine": "ray" if ray else "processes", "workers": len(ranges),
                 "shards": [{"samples": [r.start, r.stop], "wall_s": rec.stats.get("worker_wall_s"),
                             "cpu_s": rec.stats.get("cpu_s")} for r, rec in parts]}
        return ShardedRecording(parts, tmp_root, stats)
    except BaseException:
        for _, rec in parts:
            rec.close()
        shutil.rmtree(tmp_root, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
