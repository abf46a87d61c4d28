"""What a Lava run allocates, estimated from the IR before any Lava process starts.

Lava's ``Loihi2SimCfg`` runs every process of the emitted network (``emit``) in an OS process of its
own, forked from the one that starts the runtime, and passes each step's values through shared-memory
channels. What one runtime adds to the memory of the process tree (proportional set size of anonymous
and shared memory; page cache left out) is, per runtime of ``samples`` samples:

- **processes**: the source, one per synapse (per spike piece in a graph), one per neuron layer and one
  recorder per recorded layer, the attention gates and extras (MA-SNN's delay lines and attention, a
  further gained group's gate), plus Lava's runtime service, its shared-memory manager and the resource
  tracker; each costs :data:`PROCESS_BYTES` (the pages a forked interpreter dirties: reference counts,
  the garbage collector's passes, Lava's builders: 4-9 MiB a process on small nets in
  ``bench/lava_memory.py``, about 27 MiB in ``bench/scale.py``'s DVS128 run; the upper end, rounded up);
- **channels**: each connection's ring buffer holds :data:`CHANNEL_SLOTS` messages of its port's shape
  (int32 under ``fixed_pt``, float64 under ``floating_pt``), and a slot's pages are touched once it is
  written: ``min(64, steps run)`` slots per channel; an output read by several processes has a channel
  to each (its recorder included);
- **arrays**: per neuron the model's state and one step's temporaries (:data:`NEURON_BYTES`), a gain
  or attention table per step of the window (``T x neurons``, the process's Var and the model's copy),
  a synapse's weights (Lava's ``Dense`` holds the whole matrix and copies the active columns each
  step; a delayed synapse is a dense ``DelayDense``) and a convolution's working set (its input padded and
  unfolded into windows, in float64: ``models.conv_exact``);
- **inputs**: the source's data, ``(B x T + depth)`` steps of the input in int64 / float64, held by the
  emitted process, the source's model and the caller;
- **the recording**: each recorded layer's spikes over every step run, memory-mapped files in the
  temporary folder: counted only when that folder is in memory (tmpfs); on disk they are page cache.

``lava_bytes`` returns the estimate (:class:`LavaFootprint`: per layer, what the run adds and the
largest layer), for local workers the sum over shards running at once (each its own runtime, forked from
this process); ``check_lava`` refuses a run whose additions do not fit the memory budget (the caller's
own memory is already in use: MemAvailable leaves it out) in one line, before any Lava process starts;
``bridge.lava_recording``, where every Lava run starts, calls it. ``bench/lava_memory.py`` measures the
estimate against real runs.
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field

from neurocomp import memory
from neurocomp.errors import OutOfBudget
from neurocomp.ir.timing import time_alignment
from neurocomp.shards import split

PROCESS_BYTES = 32 << 20     # one forked Lava process (measured: bench/lava_memory.py)
INTERPRETER_BYTES = 192 << 20   # a fresh Python that imported neurocomp and torch, its graph loaded (measured)
RUNTIME_PROCESSES = 3        # Lava's runtime service, its shared-memory manager, the resource tracker
CHANNEL_SLOTS = 64           # Lava's pypy_channel_size
NEURON_BYTES = 160           # per neuron: state (v, u, biases) and one step's int64 temporaries
TABLE_BYTES = 16             # per entry of a (T, neurons) table: the Var's int64 init and the model's copy
_TMPFS = (0x01021994, 0x858458f6)   # tmpfs, ramfs


@dataclass
class LavaFootprint:
    """The estimate of one Lava run: ``layers`` ``{layer: bytes}`` (what each layer's processes,
    channels and recording add), ``fixed`` (processes' baseline and the inputs), ``processes`` (OS
    processes), ``added`` (all of it), ``own`` (this process when asked, for the tree's total)."""
    layers: dict = field(default_factory=dict)
    fixed: int = 0
    processes: int = 0
    own: int = 0
    channels: int = 0        # of which shared memory (the channels' ring buffers)

    @property
    def added(self) -> int:
        return int(self.fixed + sum(self.layers.values()))

    @property
    def tree(self) -> int:
        return self.added + self.own

    @property
    def largest(self):
        return max(self.layers, key=self.layers.get) if self.layers else None


def _in_memory(folder: str) -> bool:
    """Whether ``folder`` lies on tmpfs / ramfs (its files are memory), by ``statfs``."""
    try:
        import ctypes
        import ctypes.util
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        buf = ctypes.create_string_buffer(256)
        if libc.statfs(os.fsencode(folder), buf) != 0:
            return False
        return int.from_bytes(buf.raw[:ctypes.sizeof(ctypes.c_long)], sys.byteorder) in _TMPFS   # f_type
    except (OSError, AttributeError, ValueError):
        return False


_GATES = ("spike_attention", "graded_spikes")     # processes in front of the next synapse


def _readers(graph):
    """What ``emit``'s walk connects: ``{spike producer: processes reading its output}`` (the source, a
    neuron, a gate) and ``{synapse: the spike producers it reads}``, one synapse process each (an Add or
    Concat of spikes reaches a synapse as several pieces; an Add of currents carries no spikes)."""
    carries, readers, syn_pieces = {}, {}, {}

    def read(p):
        readers[p] = readers.get(p, 0) + 1

    for n in graph.nodes:
        carried = [p for s in graph.inputs.get(n.name, ()) for p in carries.get(s, [])]
        if n.kind == "input" or n.is_neuron:
            carries[n.name] = [n.name]
        elif n.kind in _GATES:
            for p in carried:
                read(p)
            if n.kind == "spike_attention":       # its source's spikes: another layer's, or its input again
                for p in ([n.source] if getattr(n, "source", None) is not None else carried):
                    read(p)
            carries[n.name] = [n.name]
        elif n.is_synapse:
            for p in carried:
                read(p)
            syn_pieces[n.name] = carried
            carries[n.name] = []
        else:                                     # Add, Concat, Flatten, MAAttention: spikes pass through
            carries[n.name] = carried
    return readers, syn_pieces


def _conv_bytes(n, size: int, n_in: int) -> int:
    """A conv's (or sum pool's) weights (the Var and the model's copy) and one step's working set
    (``models.conv_exact``): the padded input and its windows in float64 (every input channel at every
    output position, per tap), the float64 sums and their int32 copy."""
    taps = int(memory.product(n.kernel if n.kind == "sumpool2d" else n.qweight.shape[2:]))
    weights = int(n.in_shape[0]) * taps if n.kind == "sumpool2d" else int(n.qweight.size)
    positions = size // max(1, int(n.out_shape[0]))
    return 12 * weights + 8 * positions * int(n.in_shape[0]) * taps + 8 * n_in + 12 * size


def runtime_bytes(graph, samples: int, tag: str = "fixed_pt", record=None, tmp_dir: str | None = None) -> LavaFootprint:
    """What one Lava runtime of ``samples`` samples adds (see the module doc)."""
    timing = time_alignment(graph)
    T, depth = int(timing["timesteps"]), int(timing["depth"])
    steps = max(1, int(samples)) * T + depth
    slots = min(CHANNEL_SLOTS, steps)
    word = 4 if tag == "fixed_pt" else 8
    if record is not None:
        record = set(record) | {graph.output_node.name}
    on_tmpfs = _in_memory(tmp_dir or tempfile.gettempdir())
    readers, pieces = _readers(graph)
    added = timing.get("added_delay", {})
    fp = LavaFootprint()
    procs = 1 + RUNTIME_PROCESSES
    n_in = memory.product(graph.input_node.out_shape)
    fp.fixed = 3 * steps * n_in * 8 + readers.get(graph.input_node.name, 1) * slots * n_in * word
    fp.channels = readers.get(graph.input_node.name, 1) * slots * n_in * word
    layers = fp.layers
    for n in graph.nodes:
        size = memory.product(n.out_shape)
        b, chan, before = 0, 0, procs
        if n.is_synapse:
            ps = pieces.get(n.name) or [None]
            procs += len(ps)
            n_i = memory.product(n.in_shape)
            for p in ps:
                delayed = p is not None and added.get(f"{p}->{n.name}", 0)
                if delayed or n.kind in ("linear", "dense", "voting"):
                    b += 3 * 8 * size * n_i               # the matrix: the Var, the model's copy, a step's columns
                else:                                     # conv / sum pool: weights, windows in float64
                    b += _conv_bytes(n, size, n_i)
                chan += 1                                 # a_out -> the neuron (sized as the neuron)
        elif n.is_neuron:
            procs += 1
            state = NEURON_BYTES * size
            p = getattr(n, "fixed", None)
            if p is not None and getattr(p, "dynamic_gain", False):       # delay line(s), attention, gained LIF
                procs += 3
                state += 3 * NEURON_BYTES * size + 2 * TABLE_BYTES * T * size
                chan += 4
            elif p is not None and getattr(p, "gain_scheduled", False):   # GainLIF: gain and offset tables
                state += 2 * TABLE_BYTES * T * size
                groups = len(getattr(p, "more_gain_mant", None) or ())
                procs += groups
                state += groups * (NEURON_BYTES * size + TABLE_BYTES * T * size)
                chan += 2 * groups
            elif n.kind == "cuba_lif":
                procs += 1
                state += NEURON_BYTES * size
                chan += 1
            recorded = record is None or n.name in record
            procs += bool(recorded)
            b += state
            chan += readers.get(n.name, 0) + recorded
            if recorded and on_tmpfs:
                b += steps * size * (word if n.graded_output else 1)   # uint8 spikes, or the values
        elif n.kind in _GATES:
            procs += 1
            b += 2 * NEURON_BYTES * size + TABLE_BYTES * T * size
            chan += readers.get(n.name, 0)
        else:
            continue
        b += chan * slots * size * word + (procs - before) * PROCESS_BYTES
        fp.channels += chan * slots * size * word
        key = _neuron_fed(graph, n.name) if n.is_synapse else n.name    # a synapse counts with its neuron
        layers[key] = layers.get(key, 0) + int(b)
    fp.processes = procs
    fp.fixed += (1 + RUNTIME_PROCESSES) * PROCESS_BYTES
    return fp


def _neuron_fed(graph, name: str) -> str:
    """The neuron a synapse's current reaches (through Adds of currents); the synapse itself if none."""
    todo, seen = list(graph.consumers(name)), set()
    while todo:
        c = todo.pop(0)
        if c in seen:
            continue
        seen.add(c)
        if graph[c].is_neuron:
            return c
        todo += list(graph.consumers(c))
    return name


def own_bytes() -> int:
    """This process's memory now (PSS of anonymous and shared memory; the peak RSS where there is no
    ``smaps_rollup``)."""
    try:
        with open("/proc/self/smaps_rollup") as fh:
            f = {k.rstrip(":"): int(v) for k, v, *_ in (ln.split() for ln in fh) if k.startswith("Pss_")}
        return (f.get("Pss_Anon", 0) + f.get("Pss_Shmem", 0)) * 1024
    except (OSError, ValueError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def lava_bytes(graph, samples: int, workers: int = 1, ray: str | None = None, tag: str = "fixed_pt",
               record=None, here: bool = True, tmp_dir: str | None = None) -> LavaFootprint:
    """The estimate of a Lava run of ``samples`` samples: one runtime, or ``workers`` local shards (each
    a runtime in a worker forked from this process, all at once: the layers' figures are summed), or,
    under Ray, the largest shard's runtime in a fresh worker interpreter (what one node needs for a
    task; Ray's own processes are not counted). ``here``: the runtime starts in this process (its
    memory is the tree's base, ``own``), else in the Lava environment's fresh interpreter (the bridge)."""
    n, workers = max(1, int(samples)), max(1, int(workers))
    shards = split(n, workers) if (ray is not None or workers > 1) else [range(n)]
    if ray is not None:
        shards = shards[:1]       # the largest (split puts the larger shards first)
    parts = [runtime_bytes(graph, len(r), tag, record, tmp_dir) for r in shards]
    out = LavaFootprint(fixed=sum(p.fixed for p in parts), processes=sum(p.processes for p in parts),
                        channels=sum(p.channels for p in parts))
    for p in parts:
        for k, v in p.layers.items():
            out.layers[k] = out.layers.get(k, 0) + v
    if len(parts) > 1:                                # each shard's worker, forked from this process
        out.fixed += len(parts) * PROCESS_BYTES
        out.processes += len(parts)
    if ray is not None or not here:                   # a fresh interpreter starts the runtime
        out.fixed += INTERPRETER_BYTES
        out.processes += 1
    out.own = own_bytes() if here else 0
    return out


def check_lava(graph, samples: int, workers: int = 1, ray: str | None = None, tag: str = "fixed_pt",
               record=None, here: bool = True) -> LavaFootprint:
    """Refuse a Lava run whose estimate (what it adds, :func:`lava_bytes`) exceeds the memory budget
    (MemAvailable, ``NEUROCOMP_MAX_MEMORY`` or ``--max-memory``) in one :class:`OutOfBudget` line naming
    the largest layer, the estimate and the next step that works (fewer local workers, fewer samples, a
    larger budget); nothing is started or written here. Returns the estimate."""
    n, workers = max(1, int(samples)), max(1, int(workers))
    est = lambda s, w: lava_bytes(graph, s, workers=w, ray=ray, tag=tag, record=record, here=here)
    fp = est(n, workers)
    limit, source = memory.budget()
    if fp.added <= limit:
        return fp
    big = fp.largest
    layer = f"layer '{big}' ({memory.human(fp.layers[big])}) and the rest" if big is not None else "it"
    fit_w = next((w for w in range(min(workers, n) - 1, 0, -1) if est(n, w).added <= limit), 0) \
        if ray is None else 0
    if fit_w:
        hint = f"use --workers {fit_w}: each worker runs a Lava runtime of its own, all at once"
    else:
        lo, hi = 0, n - 1                              # the most samples one runtime fits (monotonic in samples)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if est(mid, 1).added <= limit else (lo, mid - 1)
        hint = (f"run at most {lo} sample{'s' if lo != 1 else ''} through Lava at a time: simulate --samples "
                f"{lo} or report --lava-samples {lo}{' with --workers 1' if workers > 1 else ''}" if lo else
                f"raise --max-memory or {memory.ENV} (e.g. {memory.ENV}={-(-fp.added // (1 << 30))}G) if the "
                "machine has the memory, or use a smaller input or fewer timesteps")
    raise OutOfBudget(f"the Lava run of {n} sample{'s' if n != 1 else ''} ({fp.processes} processes): {layer} "
                      f"needs ~{memory.human(fp.added)}, budget {memory.human(limit)} ({source})",
                      where="lava", hint=hint)
