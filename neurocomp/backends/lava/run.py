"""Run a dataset through an emitted Lava network on the CPU simulator, and read its spikes back.

All samples go back to back through one runtime, ``T`` steps each, plus ``depth`` steps at the end
(``layout.source_data``; the delays are the graph's ``ir.timing.time_alignment``). Spikes of every
layer are recorded to disk (``recorder``) and read back per slice of samples, re-aligned in time:
``record_lava`` returns the recording, so a caller can compare batch by batch; ``run_lava`` reads it
whole. The runtime is always stopped: on success, on error, on Ctrl-C, SIGTERM, SIGHUP (under the
CLI, see neurocomp.signals) and on ``timeout``.
"""
from __future__ import annotations

import shutil
import tempfile
import time

import numpy as np
import torch

from neurocomp.backends.lava.emit import emit
from neurocomp.backends.lava.layout import source_data, to_torch_layout
from neurocomp.backends.lava.runtime import stop_runtime
from neurocomp.errors import BadInput, LavaRunError, RunTimeout
from neurocomp.ir.timing import time_alignment
from neurocomp.results import SimResult


def run_lava(graph, x_seq, tag: str = "fixed_pt", timeout: float | None = None, progress: bool = False,
             chunk_samples: int = 16, record=None) -> SimResult:
    """Run samples ``x_seq`` ``[T, B, *input_shape]`` (binary) through Lava; time-aligned spikes of
    every neuron layer, or of the layers named in ``record`` (the output layer is always recorded)."""
    with record_lava(graph, x_seq, tag=tag, timeout=timeout, progress=progress, chunk_samples=chunk_samples,
                     record=record) as rec:
        spikes = rec.spikes(slice(0, rec.samples))
    return SimResult(spikes=spikes, output=spikes[rec.output_name], stats=dict(rec.stats))


class LavaRecording:
    """The spikes a finished Lava run recorded on disk (one ``.npy`` per layer, ``(steps, *lava_shape)``
    uint8), read back and time-aligned per slice of samples, so a caller can compare batch by batch
    with memory bounded by the batch. ``close()`` (or leaving the ``with`` block) removes the files."""

    def __init__(self, layers, record_dir, timing, samples, stats, graded=None):
        self.record_dir = record_dir
        # what the recording is, without Lava processes: state() / from_state() (another process)
        self._layers = [(name, None, path, lshape, tshape) for name, _, path, lshape, tshape in layers]
        # layers recorded as values, not spikes -> True: a readout's voltage, read as v[t] - v[t-1]
        self.graded = dict(graded or {})
        self.timing = timing
        self.samples = samples
        self.stats = stats
        self.output_name = layers[-1][0]
        self._files, self._layout = {}, {}
        try:
            for name, _, path, lshape, tshape in layers:
                if path is None:
                    continue
                fh = open(path, "rb")
                self._files[name] = fh
                major, _minor = np.lib.format.read_magic(fh)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else \
                    np.lib.format.read_array_header_2_0
                shape, _fortran, dtype = read_header(fh)
                self._layout[name] = (fh.tell(), tuple(shape[1:]), np.dtype(dtype))
        except BaseException:
            self.close()
            raise

    @property
    def layers(self):
        return list(self._files)

    def spikes(self, sl: slice) -> dict:
        """``{layer: bool tensor [T, n, *torch_shape]}`` for samples ``sl`` of the run; a readout's entry
        is its value per step, ``v[t] - v[t-1]`` within each sample's window (int64; float64 under
        ``floating_pt``), as the reference simulator returns it."""
        T = self.timing["timesteps"]
        start, stop, _ = sl.indices(self.samples)
        n = max(0, stop - start)
        out = {}
        for name, fh in self._files.items():
            offset, lshape, dtype = self._layout[name]
            d = self.timing["layer_delay"][name]
            step_bytes = int(np.prod(lshape, dtype=np.int64)) * dtype.itemsize
            # sample b's step t sits at step b*T + t + d: samples [start, stop) are one contiguous block
            fh.seek(offset + (start * T + d) * step_bytes)
            buf = fh.read(n * T * step_bytes)
            if len(buf) != n * T * step_bytes:
                raise LavaRunError(f"the recording of layer '{name}' is incomplete", where=fh.name,
                                   hint="rerun the simulation")
            sel = np.frombuffer(buf, dtype).reshape((n, T) + lshape).swapaxes(0, 1)   # (T, n, *lava_shape)
            sel = to_torch_layout(sel, lead=2)
            if name in self.graded:
                v = sel.astype(np.float64 if dtype.kind == "f" else np.int64)
                if self.graded[name]:    # v recorded every step; v is 0 before each window (reset)
                    v = np.diff(v, axis=0, prepend=np.zeros_like(v[:1]))
                out[name] = torch.as_tensor(v)
            else:
                out[name] = torch.as_tensor(sel != 0)
        return out

    def state(self) -> dict:
        """The recording as plain data (paths, shapes, timing): what a worker process sends back, to be
        reopened with :meth:`from_state` by a process on this host. The files stay; this object closes
        its handles and no longer owns them."""
        out = {"layers": self._layers, "record_dir": self.record_dir, "timing": self.timing,
               "samples": self.samples, "stats": dict(self.stats), "graded": self.graded}
        for fh in self._files.values():
            fh.close()
        self._files = {}
        self.record_dir = None
        return out

    @classmethod
    def from_state(cls, state: dict) -> "LavaRecording":
        return cls(state["layers"], state["record_dir"], state["timing"], state["samples"], state["stats"],
                   graded=state["graded"])

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}
        if self.record_dir is not None:
            shutil.rmtree(self.record_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def record_lava(graph, x_seq, tag: str = "fixed_pt", timeout: float | None = None, progress=False,
                chunk_samples: int = 16, record=None, tmp_dir: str | None = None) -> LavaRecording:
    """Run ``x_seq`` through Lava like :func:`run_lava` and return the recording (read it per batch).

    ``progress``: ``True`` shows a bar; a callable is called with the number of samples done after each
    chunk. ``tmp_dir``: the folder the recording's own temporary folder is made in."""
    from lava.magma.core.run_conditions import RunSteps
    from neurocomp import signals
    from neurocomp.backends.lava.models import run_config

    if tag not in ("fixed_pt", "floating_pt"):
        raise BadInput(f"unknown Lava tag {tag!r}", where="tag", hint="use fixed_pt or floating_pt")
    x = torch.as_tensor(x_seq).cpu().numpy()
    timing = time_alignment(graph)
    T, depth = timing["timesteps"], timing["depth"]
    if x.shape[0] != T or tuple(x.shape[2:]) != tuple(graph.input_node.out_shape):
        raise BadInput(f"inputs have shape {x.shape}, expected [{T}, B, *{tuple(graph.input_node.out_shape)}]",
                       where="inputs")
    if not np.all((x == 0) | (x == 1)):
        raise BadInput("Lava inputs must be binary spikes (0/1)", where="inputs")
    B = x.shape[1]
    total = B * T + depth
    data = source_data(x, depth).astype(np.int64 if tag == "fixed_pt" else np.float64)   # (*lava_shape, total)
    signals.start_resource_tracker()
    record_dir = tempfile.mkdtemp(prefix="neurocomp-lava-", dir=tmp_dir)
    failed = True
    anchor = None
    bar = None
    try:
        if record is not None:
            record = set(record) | {graph.output_node.name}
        net = emit(graph, data, total, record_dir, tag, record=record, timing=timing)
        del data
        anchor = net.layers[-1][1]
        cfg = run_config(anchor, tag)
        start = time.monotonic()
        if progress and not callable(progress):
            from tqdm import tqdm
            bar = tqdm(total=B, desc=f"Lava {tag}", unit="sample")
        done = 0
        while done < total:
            step = min(chunk_samples * T, total - done)
            try:
                anchor.run(condition=RunSteps(num_steps=step), run_cfg=cfg)
            except RuntimeError as e:   # a process model raised inside Lava (its traceback was printed)
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
                raise LavaRunError(f"the Lava run failed after {done}/{total} steps ({first})", where="lava",
                                   hint="rerun with --debug for the traceback; the runtime was stopped") from e
            done += step
            signals.check()            # an interrupt swallowed inside Lava's machinery still stops the run
            if bar is not None:
                bar.update(min(B, done // T) - bar.n)
            elif callable(progress):
                progress(min(B, done // T))
            if timeout is not None and time.monotonic() - start > timeout:
                raise RunTimeout(f"Lava run exceeded {timeout:g} s after {done}/{total} steps", where="lava",
                                 hint="raise --timeout or simulate fewer samples")
        failed = False
    finally:
        try:
            if bar is not None:
                bar.close()
            if anchor is not None:
                stop_runtime(anchor, grace=5.0 if failed else 60.0)
        except BaseException:
            failed = True
            raise
        finally:
            if failed:
                shutil.rmtree(record_dir, ignore_errors=True)
    try:
        signals.check()
        return LavaRecording(net.layers, record_dir, timing, B,
                             {"wall_s": time.monotonic() - start, "steps": total}, graded=net.graded)
    except BaseException:
        shutil.rmtree(record_dir, ignore_errors=True)
        raise
