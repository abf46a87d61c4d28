"""Emit a quantized IR graph as a Lava process network and run it on the CPU simulator.

Layout: Lava tensors are ``(W, H, C)`` (torch's ``(C, H, W)`` reversed) and 1-D vectors stay
as they are. Conv kernels become ``(C_out, kW, kH, C_in)`` with both spatial axes flipped (Lava
convolves, torch cross-correlates). A Dense after a flattened ``(W, H, C)`` layer gets its
columns permuted to torch's flatten order. Sum pooling (MaxPool over spikes) is a depthwise
Conv of ones into an OR neuron. Lava 0.10's Conv models keep ``groups`` (and kernel, stride,
padding, dilation) in int8: a conv with more than 127 groups is emitted with fewer groups and
block-diagonal weights (``regroup_conv_weight``; 128 groups would wrap to -128 and output zeros).

Running a dataset: all samples go back to back through one runtime, ``T`` steps each, plus
``depth`` steps at the end. Every neuron layer is a ``LIFReset`` that zeroes its state when its
own window starts (``reset_offset = (1 + delay) mod T``), so samples never leak into each other.
Spikes of every layer are recorded to disk (backends/lava_recorder.py) and read back per slice of
samples, re-aligned in time (passes.timing): ``record_lava`` returns the recording, so a caller can
compare batch by batch; ``run_lava`` reads it whole. The runtime is always stopped: on success, on
error, on Ctrl-C, SIGTERM, SIGHUP (under the CLI, see neurocomp.signals) and on ``timeout``.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time

import numpy as np
import torch

from neurocomp import fixedpoint as fx
from neurocomp.errors import BadInput, LavaRunError, RunTimeout, UnsupportedLayer
from neurocomp.ir import Conv2d, Dense as DenseNode, CubaLIF, Flatten, Input, Linear, SumPool2d
from neurocomp.passes.quantize import check_lowerable
from neurocomp.passes.timing import time_alignment
from neurocomp.sim.reference import SimResult


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


def lava_shape(shape) -> tuple:
    return tuple(reversed(tuple(shape))) if len(shape) == 3 else tuple(shape)


def to_lava_layout(a: np.ndarray) -> np.ndarray:
    """Per-neuron array in torch layout (C, H, W) -> Lava layout (W, H, C)."""
    return np.transpose(a, (2, 1, 0)) if a.ndim == 3 else a


def conv_weight_to_lava(w: np.ndarray) -> np.ndarray:
    """torch (C_out, C_in, kH, kW) cross-correlation -> Lava (C_out, kW, kH, C_in) convolution."""
    return np.ascontiguousarray(np.transpose(w[:, :, ::-1, ::-1], (0, 3, 2, 1)))


LAVA_CONV_PARAM_MAX = 127   # Lava 0.10's Conv models hold groups, kernel, stride, padding, dilation as int8


def regroup_conv_weight(w: np.ndarray, groups: int, limit: int = LAVA_CONV_PARAM_MAX):
    """A grouped conv weight (torch layout ``(C_out, C_in/groups, kH, kW)``) as the same convolution
    with at most ``limit`` groups; returns ``(weight, groups')``.

    Lava 0.10's ``PyConvModelFixed``/``Float`` store ``groups`` as ``np.int8``, so 128 groups become
    -128 and the conv outputs zeros (200 wraps to -56, 256 to 0). ``groups'`` is the largest divisor
    of ``groups`` within ``limit``; each new group merges ``groups / groups'`` old groups with a
    block-diagonal weight (zeros between them), which computes the identical integer sums."""
    groups = int(groups)
    if groups <= limit:
        return w, groups
    g2 = max(d for d in range(1, limit + 1) if groups % d == 0)
    m = groups // g2                        # old groups per new group
    co, ci = w.shape[0], w.shape[1]         # ci: input channels per old group
    co_g = co // groups
    out = np.zeros((co, ci * m) + tuple(w.shape[2:]), dtype=w.dtype)
    for o in range(co):
        j = (o // co_g) % m                 # position of o's old group inside its new group
        out[o, j * ci:(j + 1) * ci] = w[o]
    return out, g2


def check_conv_params(node, kernel, stride, padding, dilation) -> None:
    """Refuse conv geometry Lava's int8 Conv parameters would wrap (one-line error)."""
    for field, vals in (("kernel", kernel), ("stride", stride), ("padding", padding), ("dilation", dilation)):
        if max(int(v) for v in vals) > LAVA_CONV_PARAM_MAX:
            raise UnsupportedLayer(f"{field} {tuple(int(v) for v in vals)} exceeds Lava's int8 Conv parameter "
                                   f"range (<= {LAVA_CONV_PARAM_MAX})", where=f"layer '{node.name}'",
                                   hint=f"use a {field} of at most {LAVA_CONV_PARAM_MAX}")


def flatten_permutation(shape) -> np.ndarray:
    """For each position of Lava's flattened (W, H, C) vector, the torch (C, H, W) flat index."""
    C, H, W = shape
    return np.arange(C * H * W).reshape(C, H, W).transpose(2, 1, 0).ravel()


class _Emitted:
    """The processes of one emitted network (kept together so they can be run and stopped)."""

    def __init__(self):
        self.source = None
        self.layers = []     # (neuron name, lif process, sink process, lava shape, torch shape)
        self.procs = []


def emit(graph, inputs_lava: np.ndarray, total_steps: int, record_dir: str, tag: str = "fixed_pt",
         record=None) -> _Emitted:
    """Build the process network. ``inputs_lava``: source data ``(*lava_input_shape, steps)``;
    every neuron layer's spikes (or only those named in ``record``) are recorded into
    ``record_dir/<layer>.npy``."""
    ensure_lava_runtime()
    from lava.proc.conv.process import Conv
    from lava.proc.dense.process import Dense
    from neurocomp.backends.lava_recorder import SpikeRecorder, create_file
    from lava.proc.io.source import RingBuffer as Source
    from lava.proc.lif.process import LIFReset
    from lava.utils.weightutils import SignMode

    timing = time_alignment(graph)
    T = timing["timesteps"]
    net = _Emitted()
    net.source = Source(data=inputs_lava)
    port = net.source.s_out
    shape = tuple(graph.input_node.out_shape)       # torch shape of what `port` carries
    flat_from = None                                 # torch 3-D shape if `port` is a flattened (W,H,C)
    fixed = tag == "fixed_pt"
    pairs = {syn.name: neu for syn, neu in check_lowerable(graph)}
    nodes = list(graph.nodes)
    attention_of = {nodes[k + 1].name: n for k, n in enumerate(nodes) if n.kind == "ma_attention"}
    out_ports = {}            # neuron name -> its spike OutPort (dynamic attention may read them)
    graded = False            # the next synapse receives graded payloads
    port_delay = 0            # delay of what `port` carries
    for node in graph:
        if isinstance(node, Input):
            continue
        if node.kind == "spike_attention":
            from neurocomp.backends.lava_dynamic import SpikeAttentionGate
            if not fixed:
                raise BadInput("dynamic attention runs only under fixed_pt", where="tag", hint="use fixed_pt")
            src_port = port if node.source is None else out_ports[node.source]
            src_delay = port_delay if node.source is None else timing["layer_delay"][node.source]
            from neurocomp.fixedpoint.attention import spike_program
            src_torch = tuple(shape) if node.source is None else tuple(graph[node.source].out_shape)
            gate = SpikeAttentionGate(fwd_shape=lava_shape(shape), src_shape=tuple(src_port.shape),
                                      program=spike_program(node.meta["module"], node.state(), src_torch,
                                                            tuple(node.pool)),
                                      window=T, fwd_offset=port_delay, src_offset=src_delay)
            port.connect(gate.s_fwd)
            src_port.connect(gate.s_src)
            net.procs.append(gate)
            port, graded = gate.s_out, True
            continue
        if node.kind == "graded_spikes":     # the producer's graded payloads (static PFA maps)
            from neurocomp.backends.lava_payload import PayloadGate
            pay = to_lava_layout(np.asarray(node.qscale, np.int64))
            gate = PayloadGate(shape=lava_shape(shape), payload=pay if fixed else pay.astype(np.float64),
                               name=f"{node.name}.payload")
            port.connect(gate.s_in)
            net.procs.append(gate)
            port, graded = gate.s_out, True
            continue
        if isinstance(node, Flatten):
            if len(shape) == 3:
                port = port.flatten()
                flat_from = shape
            shape = tuple(node.out_shape)
            continue
        if not node.is_synapse:
            continue
        neu = pairs[node.name]
        rec = None if fixed else next(r for p in graph.meta["passes"] if p["pass"] == "quantize"
                                      for r in p["layers"] if r["layer"] == neu.name)
        if isinstance(node, (Linear, DenseNode)):
            w = node.qweight if fixed else node.weight.astype(np.float64) * _float_gain(neu) * rec["scale"]
            if flat_from is not None:
                w = w[:, flatten_permutation(flat_from)]
            if isinstance(node, DenseNode):
                if len(shape) == 3:      # (W, H, C) spikes in, flattened in Lava's order
                    port = port.flatten()
                    w = w[:, flatten_permutation(shape)]
                if len(neu.out_shape) == 3:   # rows in Lava's (W, H, C) order
                    w = w[flatten_permutation(tuple(neu.out_shape)), :]
            if fixed:
                w2, wexp = fx.dense_lava_weights(w.astype(np.int64))
                syn = Dense(weights=w2, weight_exp=wexp, num_weight_bits=8, sign_mode=SignMode.MIXED,
                            num_message_bits=8 if graded else 0, name=node.name)
            else:
                syn = Dense(weights=w, name=node.name)
        else:
            if isinstance(node, SumPool2d):
                C = shape[0]
                kh, kw = node.kernel
                wt = np.full((C, 1, kh, kw), float(node.qweight))
                groups, stride, padding, dilation = C, node.stride, node.padding, (1, 1)
            else:
                wt = node.qweight if fixed else node.weight.astype(np.float64) * _float_gain(neu) * rec["scale"]
                groups, stride, padding, dilation = node.groups, node.stride, node.padding, node.dilation
            wt, groups = regroup_conv_weight(np.asarray(wt), groups)
            check_conv_params(node, wt.shape[2:], stride, padding, dilation)
            w = conv_weight_to_lava(wt)
            syn = Conv(weight=w.astype(np.int64) if fixed else w, input_shape=lava_shape(shape),
                       padding=tuple(reversed(padding)), stride=tuple(reversed(stride)),
                       dilation=tuple(reversed(dilation)), groups=groups, name=node.name,
                       num_message_bits=8 if graded else 0)
        port.connect(syn.s_in)
        out_shape = lava_shape(neu.out_shape)
        p = neu.fixed
        delay = timing["layer_delay"][neu.name]
        if isinstance(neu, CubaLIF):
            from neurocomp.backends.lava_cuba import emit_cuba
            lif, extra = emit_cuba(neu, out_shape, T, delay, fixed)
            net.procs += extra
        elif p.dynamic_gain:
            if not fixed:
                raise BadInput("dynamic attention runs only under fixed_pt", where="tag", hint="use fixed_pt")
            lif, a_targets, extra = _emit_dynamic(neu, attention_of[neu.name], out_shape, T, delay)
            net.procs += extra
        elif p.gain_scheduled:
            lif = _emit_gain_lif(neu, out_shape, T, delay, fixed)
        elif fixed:
            lif = LIFReset(shape=out_shape, du=p.du, dv=p.dv, vth=p.vth,
                           bias_mant=to_lava_layout(np.asarray(p.bias_mant)).astype(np.int64),
                           bias_exp=to_lava_layout(np.asarray(p.bias_exp)).astype(np.int64),
                           reset_interval=T, reset_offset=(1 + delay) % T, name=neu.name)
        else:
            bias = fx.effective_bias(np.asarray(p.bias_mant, np.float64), np.asarray(p.bias_exp, np.int64)) / 64.0
            lif = LIFReset(shape=out_shape, du=1.0, dv=p.dv / fx.DECAY_UNITY, vth=p.vth + 1.0 / 64,
                           bias_mant=to_lava_layout(bias), bias_exp=0,
                           reset_interval=T, reset_offset=(1 + delay) % T, name=neu.name)
        a_port = syn.a_out.reshape(out_shape) if syn.a_out.shape != out_shape else syn.a_out
        a_port.connect(a_targets if p is not None and p.dynamic_gain else lif.a_in)
        if record is None or neu.name in record:
            path = os.path.join(record_dir, f"{len(net.layers)}.npy")
            create_file(path, out_shape, total_steps)
            sink = SpikeRecorder(shape=out_shape, path=path, steps=total_steps)
            lif.s_out.connect(sink.a_in)
            net.procs += [syn, lif, sink]
        else:
            path = None
            net.procs += [syn, lif]
        net.layers.append((neu.name, lif, path, out_shape, tuple(neu.out_shape)))
        port, shape, flat_from = lif.s_out, tuple(neu.out_shape), None
        out_ports[neu.name] = lif.s_out
        graded, port_delay = False, delay
    return net


def _emit_dynamic(neu, att, out_shape, T, delay):
    """Delay line + attention process + gain-fed LIF for a layer whose MA attention stays dynamic."""
    from neurocomp.backends.lava_dynamic import DelayLine, GainLIFDynamic, MAAttentionProcess
    from neurocomp.fixedpoint.attention import ma_program
    p = neu.fixed
    bias = to_lava_layout(fx.effective_bias(np.asarray(p.bias_mant, np.int64), np.asarray(p.bias_exp, np.int64)))
    line = DelayLine(shape=out_shape, delay=T)
    # the program is built once here; the process model runs it at the end of every window
    proc = MAAttentionProcess(shape=out_shape, program=ma_program(att.state(), att.parts, float(att.x_scale)),
                              lava_layout=len(out_shape) == 3, bias=bias, window=T, window_offset=delay - T)
    lif = GainLIFDynamic(shape=out_shape, gain_shift=int(p.gain_shift), bias=bias, dv=p.dv, vth=p.vth,
                         v_reset=p.v_reset, rectify=p.rectify, gain_on_bias=p.gain_on_bias, window=T,
                         window_offset=delay, name=neu.name)
    line.a_out.connect(lif.a_in)
    proc.g_out.connect(lif.g_in)
    return lif, [line.a_in, proc.a_in], [line, proc]


def _emit_gain_lif(neu, out_shape, T, delay, fixed):
    """A GainLIF process for a neuron carrying folded attention (or MA-SNN's reset-to-threshold)."""
    from neurocomp.backends.lava_gainlif import GainLIF
    p = neu.fixed
    bias = to_lava_layout(fx.effective_bias(np.asarray(p.bias_mant, np.int64), np.asarray(p.bias_exp, np.int64)))
    if p.gain_mant is None:
        gain = np.ones((T,) + tuple(out_shape), np.int64)
        shift = 0
    else:
        gain = np.stack([to_lava_layout(np.asarray(g)) for g in p.gain_mant]).astype(np.int64)
        shift = int(p.gain_shift)
    if fixed:
        return GainLIF(shape=out_shape, gain=gain, gain_shift=shift, bias=bias, dv=p.dv, vth=p.vth,
                       v_reset=p.v_reset, rectify=p.rectify, gain_on_bias=p.gain_on_bias, window=T,
                       window_offset=delay, name=neu.name)
    return GainLIF(shape=out_shape, gain=gain.astype(np.float64), gain_shift=shift, bias=bias / 64.0,
                   dv=p.dv / fx.DECAY_UNITY, vth=p.vth + 1.0 / 64, v_reset=p.v_reset / 64.0, rectify=p.rectify,
                   gain_on_bias=p.gain_on_bias, window=T, window_offset=delay, name=neu.name)


def _float_gain(neu) -> float:
    return 1.0 / neu.tau if (getattr(neu, "tau", None) is not None and neu.decay_input) else 1.0


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

    def __init__(self, layers, record_dir, timing, samples, stats):
        self.record_dir = record_dir
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
        """``{layer: bool tensor [T, n, *torch_shape]}`` for samples ``sl`` of the run."""
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
            if len(lshape) == 3:
                sel = np.transpose(sel, (0, 1, 4, 3, 2))     # (W, H, C) -> (C, H, W)
            out[name] = torch.as_tensor(sel != 0)
        return out

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
        self._files = {}
        shutil.rmtree(self.record_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def record_lava(graph, x_seq, tag: str = "fixed_pt", timeout: float | None = None, progress: bool = False,
                chunk_samples: int = 16, record=None) -> LavaRecording:
    """Run ``x_seq`` through Lava like :func:`run_lava` and return the recording (read it per batch)."""
    from lava.magma.core.run_conditions import RunSteps
    from neurocomp import signals

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
    # source data: (*lava_shape, B*T [+ depth zero steps])
    frames = x.reshape((T * 0 + T, B) + x.shape[2:]).transpose((1, 0) + tuple(range(2, x.ndim)))  # [B, T, ...]
    frames = frames.reshape((B * T,) + x.shape[2:])
    frames = np.concatenate([frames, np.zeros((depth,) + x.shape[2:], frames.dtype)], axis=0)
    if frames.ndim == 4:   # (steps, C, H, W) -> (W, H, C, steps)
        data = np.transpose(frames, (3, 2, 1, 0))
    else:                  # (steps, N) -> (N, steps)
        data = np.transpose(frames, (1, 0))
    data = data.astype(np.int64 if tag == "fixed_pt" else np.float64)
    del frames
    signals.start_resource_tracker()
    record_dir = tempfile.mkdtemp(prefix="neurocomp-lava-")
    failed = True
    anchor = None
    bar = None
    try:
        if record is not None:
            record = set(record) | {graph.output_node.name}
        net = emit(graph, data, total, record_dir, tag, record=record)
        del data
        from neurocomp.backends.lava_models import run_config
        anchor = net.layers[-1][1]
        cfg = run_config(anchor, tag)
        start = time.monotonic()
        if progress:
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
                             {"wall_s": time.monotonic() - start, "steps": total})
    except BaseException:
        shutil.rmtree(record_dir, ignore_errors=True)
        raise
