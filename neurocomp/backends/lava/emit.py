"""Emit a quantized IR graph as a Lava process network: one emitter per IR node class.

The graph is walked in order (a chain checked by ``ir.rules.check_lowerable``); ``EMITTERS`` maps each
node class to the function that emits it. A synapse (Linear, Dense, Conv2d, SumPool2d) becomes a
stock Lava ``Dense``/``Conv`` fed by what the walk carries; the neuron after it becomes a stock
``LIFReset`` or one of neurocomp's processes (``gainlif``, ``dynamic``, ``cuba``) fed by that synapse,
its spikes recorded (``recorder``). Attention on spikes is a gate process in front of the next synapse
(``dynamic``, ``payload``); MA-SNN's dynamic attention is emitted with the neuron after it. A node
class without an entry is refused with a one-line ``UnsupportedLayer`` before anything is built.
Every neuron layer resets its state when its own window starts (``reset_offset = (1 + delay) mod T``,
the delays of ``ir.timing``), so samples run back to back never leak into each other.

A graph with branches is walked by :func:`_emit_dag` with the same emitters, by linearity: a synapse
reading several spike *pieces* (an Add of spikes: SEW-ResNet; a Concat: its weights split along the
input channels) is emitted once per piece, a neuron fed by several synapse groups (an Add of currents)
gets every group's ``a_out`` connected into its ``a_in`` (Lava sums them), and a piece that arrives
earlier than the longest path (``ir.timing``'s ``added_delay``) goes through a ``DelayDense``.
"""
from __future__ import annotations

import os

import numpy as np

from neurocomp import fixedpoint as fx, memory
from neurocomp.backends.lava.lifreset import lif_reset_args
from neurocomp.backends.lava.layout import (check_conv_params, conv_weight_to_lava, flatten_permutation,
                                            lava_shape, lava_xy, regroup_conv_weight)
from neurocomp.backends.lava.runtime import ensure_lava_runtime
from neurocomp.errors import BadInput, UnsupportedLayer
from neurocomp.ir import (Add, Concat, Conv2d, CubaLIF, Dense, Flatten, GradedSpikes, Input, LIF, Linear, MAAttention, MALIF,
                          Readout, SpikeAttention, SumPool2d, Threshold, Voting)
from neurocomp.ir.rules import check_lowerable
from neurocomp.ir.timing import time_alignment


class _Emitted:
    """The processes of one emitted network (kept together so they can be run and stopped)."""

    def __init__(self):
        self.source = None
        self.layers = []     # (neuron name, lif process, recording path or None, lava shape, torch shape)
        self.procs = []
        self.graded = {}     # layers recorded as values, not spikes -> whether they are read as v[t] - v[t-1]


def _neuron_after(graph, k: int, node) -> str:
    """The neuron a dynamic attention's current reaches: the next node of a chain, else through Adds."""
    if graph.is_chain():
        return graph.nodes[k + 1].name
    name = node.name
    while not graph[name].is_neuron:
        (name,) = graph.consumers(name)
    return name


class _Walk:
    """What the emitters share while the graph is walked: the port the next node reads and what it carries."""

    def __init__(self, graph, pairs, timing, fixed, record, record_dir, total_steps, net):
        self.graph, self.timing, self.T, self.fixed = graph, timing, timing["timesteps"], fixed
        self.record, self.record_dir, self.total_steps, self.net = record, record_dir, total_steps, net
        self.pairs = {syn.name: neu for syn, neu in pairs}     # synapse name -> its neuron
        nodes = list(graph.nodes)
        self.attention_of = {_neuron_after(graph, k, n): n for k, n in enumerate(nodes) if isinstance(n, MAAttention)}
        self.port = net.source.s_out
        self.shape = tuple(graph.input_node.out_shape)   # torch shape of what `port` carries
        self.flat_from = None                             # torch 3-D shape if `port` is a flattened (W,H,C)
        self.graded = False                               # `port` carries graded payloads
        self.port_delay = 0                               # delay of what `port` carries
        self.out_ports = {}                               # neuron name -> its spike OutPort
        self.synapse = None                               # the synapse process waiting for its neuron

    def load(self, piece) -> None:
        """Make ``piece`` (a branch's spikes, see ``_emit_dag``) what the next emitter reads."""
        self.port, self.shape, self.flat_from, self.graded, self.port_delay = piece[:5]

    def piece(self, src, c0, c1):
        return (self.port, self.shape, self.flat_from, self.graded, self.port_delay, src, c0, c1)

    def feed_synapse(self, syn) -> None:
        self.port.connect(syn.s_in)
        self.synapse = syn

    def feed_neuron(self, neu, lif, targets, delay: int, plain_targets=None, more_targets=None) -> None:
        """Connect the waiting synapse to ``targets``, record ``lif``'s spikes, and carry them on. A neuron
        that gains only some synapse groups (``gain_groups``) takes the others on ``plain_targets``."""
        from neurocomp.backends.lava.recorder import emit_recorder
        syns, out_shape = self.synapse, lava_shape(neu.out_shape)
        syns = syns if isinstance(syns, list) else [syns]
        gained = set(getattr(neu, "gain_groups", ()) or ())
        for syn in syns:               # several synapse groups: Lava sums every connection into a_in
            a_port = syn.a_out.reshape(out_shape) if syn.a_out.shape != out_shape else syn.a_out
            if more_targets and syn.name in more_targets:    # a further gained group: through its gate
                a_port.connect(more_targets[syn.name])
                continue
            plain = bool(gained) and syn.name not in gained
            if plain and plain_targets is None:
                raise UnsupportedLayer(f"'{neu.name}' gains only some synapse groups but its process has no "
                                       "plain input", where=f"layer '{neu.name}'", hint="report this")
            a_port.connect(plain_targets if plain else targets)
        syn = syns[0]
        graded = None
        if neu.graded_output:
            graded = np.int32 if self.fixed else np.float64
            self.net.graded[neu.name] = isinstance(neu, Readout)
        if self.record is None or neu.name in self.record:
            path = os.path.join(self.record_dir, f"{len(self.net.layers)}.npy")
            self.net.procs += syns + [lif, emit_recorder(lif.s_out, path, out_shape, self.total_steps, graded)]
        else:
            path = None
            self.net.procs += syns + [lif]
        self.net.layers.append((neu.name, lif, path, out_shape, tuple(neu.out_shape)))
        self.port, self.shape, self.flat_from = lif.s_out, tuple(neu.out_shape), None
        self.out_ports[neu.name] = lif.s_out
        self.graded, self.port_delay, self.synapse = False, delay, None


def _fixed_only(w: _Walk) -> None:
    if not w.fixed:
        raise BadInput("dynamic attention runs only under fixed_pt", where="tag", hint="use fixed_pt")


# ---- nodes that carry spikes on (no process, or a gate in front of the next synapse) ----------
def _input(node, w: _Walk) -> None:
    """The source (a RingBuffer of the inputs) is built before the walk."""


def _ma_attention(node, w: _Walk) -> None:
    """Emitted with the neuron after it (its gains feed that neuron): see ``_loihi_neuron``."""


def _flatten(node, w: _Walk) -> None:
    if len(w.shape) == 3:
        w.port = w.port.flatten()
        w.flat_from = w.shape
    w.shape = tuple(node.out_shape)


def _spike_attention(node, w: _Walk) -> None:
    from neurocomp.backends.lava.dynamic import emit_spike_attention_gate
    _fixed_only(w)
    if node.source is None:
        src_port, src_shape, src_delay = w.port, w.shape, w.port_delay
    else:
        src_port, src_shape = w.out_ports[node.source], tuple(w.graph[node.source].out_shape)
        src_delay = w.timing["layer_delay"][node.source]
    gate = emit_spike_attention_gate(node, w.port, w.shape, w.port_delay, src_port, src_shape, src_delay, w.T)
    w.net.procs.append(gate)
    w.port, w.graded = gate.s_out, True


def _graded_spikes(node, w: _Walk) -> None:
    """The producer's graded payloads (static PFA maps)."""
    from neurocomp.backends.lava.payload import emit_payload_gate
    gate = emit_payload_gate(node, w.port, w.shape, w.fixed)
    w.net.procs.append(gate)
    w.port, w.graded = gate.s_out, True


# ---- synapses -------------------------------------------------------------------------------
def _quantize_record(w: _Walk, neu) -> dict:
    return next(r for p in w.graph.meta["passes"] if p["pass"] == "quantize" for r in p["layers"]
                if r["layer"] == neu.name)


def _float_gain(neu) -> float:
    return 1.0 / neu.tau if (getattr(neu, "tau", None) is not None and neu.decay_input) else 1.0


def _weight(node, w: _Walk) -> np.ndarray:
    """The integer weights (fixed_pt), or the float weights in Lava's float units (floating_pt)."""
    if w.fixed:
        return node.qweight
    neu = w.pairs[node.name]
    scale = np.asarray(_quantize_record(w, neu)["scale"], np.float64)   # per output channel for per-channel MA-SNN thresholds
    if scale.ndim:
        scale = scale.reshape((-1,) + (1,) * (node.weight.ndim - 1))
    return node.weight.astype(np.float64) * _float_gain(neu) * scale


def _dense_process(node, w: _Walk, weights) -> None:
    from lava.proc.dense.process import Dense as LavaDense
    from lava.utils.weightutils import SignMode
    if w.fixed:
        w2, wexp = fx.dense_lava_weights(weights.astype(np.int64))
        syn = LavaDense(weights=w2, weight_exp=wexp, num_weight_bits=8, sign_mode=SignMode.MIXED,
                        num_message_bits=8 if w.graded else 0, name=node.name)
    else:
        syn = LavaDense(weights=weights, name=node.name)
    w.feed_synapse(syn)


def _linear(node, w: _Walk) -> None:
    weights = _weight(node, w)
    if w.flat_from is not None:           # columns in Lava's flattened (W, H, C) order
        weights = weights[:, flatten_permutation(w.flat_from)]
    _dense_process(node, w, weights)


def _dense(node, w: _Walk) -> None:
    """An IR Dense (any shape in and out, torch flatten order) as a Lava Dense on flattened vectors."""
    weights = _weight(node, w)
    if w.flat_from is not None:
        weights = weights[:, flatten_permutation(w.flat_from)]
    if len(w.shape) == 3:                 # (W, H, C) spikes in, flattened in Lava's order
        w.port = w.port.flatten()
        weights = weights[:, flatten_permutation(w.shape)]
    out = tuple(w.pairs[node.name].out_shape)
    if len(out) == 3:                     # rows in Lava's (W, H, C) order
        weights = weights[flatten_permutation(out), :]
    _dense_process(node, w, weights)


def _conv_process(node, w: _Walk, weights, groups, stride, padding, dilation) -> None:
    from lava.proc.conv.process import Conv
    weights, groups = regroup_conv_weight(np.asarray(weights), groups)
    check_conv_params(node, weights.shape[2:], stride, padding, dilation)
    k = conv_weight_to_lava(weights)
    syn = Conv(weight=k.astype(np.int64) if w.fixed else k, input_shape=lava_shape(w.shape),
               padding=lava_xy(padding), stride=lava_xy(stride), dilation=lava_xy(dilation), groups=groups,
               name=node.name, num_message_bits=8 if w.graded else 0)
    w.feed_synapse(syn)


def _conv(node, w: _Walk) -> None:
    _conv_process(node, w, _weight(node, w), node.groups, node.stride, node.padding, node.dilation)


def _sumpool(node, w: _Walk) -> None:
    """Sum pooling (MaxPool over spikes, with a Threshold after it) as a depthwise conv of its window weight."""
    C = w.shape[0]
    kh, kw = node.kernel
    weights = np.full((C, 1, kh, kw), float(node.qweight))
    _conv_process(node, w, weights, C, node.stride, node.padding, (1, 1))


def _voting(node, w: _Walk) -> None:
    """A vote over spikes: a Dense of the vote's integer weight from each group member to its group."""
    k, n_out = int(node.voting_size), int(node.out_shape[0])
    value = float(node.qweight) if w.fixed else _quantize_record(w, w.pairs[node.name])["scale"] / k
    weights = np.kron(np.eye(n_out), np.full((1, k), value))
    if w.flat_from is not None:           # columns in Lava's flattened (W, H, C) order
        weights = weights[:, flatten_permutation(w.flat_from)]
    _dense_process(node, w, weights)


# ---- neurons --------------------------------------------------------------------------------
def _lif_reset(neu, out_shape, T, delay, fixed):
    """Lava's stock LIFReset for a plain Loihi compartment."""
    from lava.proc.lif.process import LIFReset
    return LIFReset(**lif_reset_args(neu, out_shape, T, delay, fixed))


def _loihi_neuron(neu, w: _Walk) -> None:
    """LIF, MALIF, Threshold: a Loihi compartment (``LoihiNeuron`` parameters); gain-scheduled ones run
    as GainLIF, those with dynamic MA attention as the attention processes plus a gain-fed LIF."""
    p, out_shape = neu.fixed, lava_shape(neu.out_shape)
    delay = w.timing["layer_delay"][neu.name]
    if p.dynamic_gain:
        from neurocomp.backends.lava.dynamic import emit_ma_attention
        _fixed_only(w)
        lif, targets, extra, plain = emit_ma_attention(neu, w.attention_of[neu.name], out_shape, w.T, delay)
        w.net.procs += extra
        w.feed_neuron(neu, lif, targets, delay, plain)
        return
    elif p.gain_scheduled:
        from neurocomp.backends.lava.gainlif import emit_gain_lif, emit_group_gains
        lif = emit_gain_lif(neu, out_shape, w.T, delay, w.fixed)
        more, gates = emit_group_gains(neu, lif, out_shape, w.T, delay, w.fixed)
        w.net.procs += gates
        w.feed_neuron(neu, lif, lif.a_in, delay, lif.plain_in, more)
        return
    else:
        lif = _lif_reset(neu, out_shape, w.T, delay, w.fixed)
        targets = lif.a_in
    w.feed_neuron(neu, lif, targets, delay, getattr(lif, "plain_in", None))


def _cuba_neuron(neu, w: _Walk) -> None:
    from neurocomp.backends.lava.cuba import emit_cuba
    delay = w.timing["layer_delay"][neu.name]
    lif, extra = emit_cuba(neu, lava_shape(neu.out_shape), w.T, delay, w.fixed)
    w.net.procs += extra
    w.feed_neuron(neu, lif, lif.a_in, delay)


def _readout(neu, w: _Walk) -> None:
    """The head: Lava's LIFReset arithmetic, never firing, its voltage sent and recorded every step."""
    from neurocomp.backends.lava.readout import emit_readout
    delay = w.timing["layer_delay"][neu.name]
    lif = emit_readout(neu, lava_shape(neu.out_shape), w.T, delay, w.fixed)
    w.feed_neuron(neu, lif, lif.a_in, delay)


# ---- graphs with branches -------------------------------------------------------------------------
def _joined_in_walk(node, w: _Walk) -> None:
    """Add / Concat: no process; ``_emit_dag`` routes their pieces (linearity) into the synapses
    or neurons that read them."""


def _slice(node, c0: int, c1: int):
    """``node`` restricted to input channels ``c0:c1`` (a Concat's part; weights only, biases sit in the neuron)."""
    C = int(node.in_shape[0])
    if (c0, c1) == (0, C):
        return node
    rest = tuple(node.in_shape)[1:]
    if isinstance(node, Conv2d):
        cut = lambda a: None if a is None else np.ascontiguousarray(a[:, c0:c1])
    else:                                   # Linear (vectors) or Dense (torch-flattened (C, H, W) columns)
        k = int(np.prod(rest)) if rest else 1
        cut = lambda a: None if a is None else np.ascontiguousarray(a[:, c0 * k:c1 * k])
    return node.replace(weight=cut(node.weight), qweight=cut(node.qweight), in_shape=(c1 - c0,) + rest)


def _unrolled(node, weights, in_shape) -> np.ndarray:
    """The synapse as a matrix ``(prod(out), prod(in))`` in torch flatten order."""
    if not isinstance(node, Conv2d):
        return np.asarray(weights, np.float64)
    import torch
    import torch.nn.functional as F
    n = int(np.prod(in_shape))
    eye = torch.eye(n, dtype=torch.float64).reshape((n,) + tuple(in_shape))
    y = F.conv2d(eye, torch.as_tensor(np.asarray(weights, np.float64)), None, tuple(node.stride),
                 tuple(node.padding), tuple(node.dilation), int(node.groups))
    return y.reshape(n, -1).T.numpy()


def _delayed_synapse(node, w: _Walk, extra: int) -> None:
    """A synapse whose input arrives ``extra`` steps early: a DelayDense (bit-accurate; delay 0 is Dense's
    one step) of the unrolled weights, every synapse delayed ``extra`` steps."""
    from lava.proc.dense.process import DelayDense
    from lava.utils.weightutils import SignMode
    if isinstance(node, SumPool2d) or not isinstance(node, (Conv2d, Linear, Dense)):
        raise UnsupportedLayer(f"a delayed '{node.kind}' synapse", where=f"layer '{node.name}'",
                               hint="equalise the branch depths with a conv or linear layer")
    n_in, n_out = int(np.prod(node.in_shape)), int(np.prod(w.pairs[node.name].out_shape))
    memory.check((n_in * n_in if isinstance(node, Conv2d) else 0) * 8 + n_out * n_in * 24,   # eye, matrix, copies
                 what=f"the delayed synapse as a dense {n_out}x{n_in} matrix (Lava's DelayDense)",
                 where=f"layer '{node.name}'", hint="shorten the longer branch so no delay is needed, or use a "
                                                    "smaller input; or raise NEUROCOMP_MAX_MEMORY")
    weights = _unrolled(node, _weight(node, w), node.in_shape)
    if w.flat_from is not None:
        weights = weights[:, flatten_permutation(w.flat_from)]
    if len(w.shape) == 3:
        w.port = w.port.flatten()
        weights = weights[:, flatten_permutation(w.shape)]
    out = tuple(w.pairs[node.name].out_shape)
    if len(out) == 3:
        weights = weights[flatten_permutation(out), :]
    if w.fixed:
        w2, wexp = fx.dense_lava_weights(np.round(weights).astype(np.int64))
        syn = DelayDense(weights=w2, delays=int(extra), weight_exp=wexp, num_weight_bits=8, sign_mode=SignMode.MIXED,
                         num_message_bits=8 if w.graded else 0, name=node.name)
    else:
        syn = DelayDense(weights=weights, delays=int(extra), name=node.name)
    w.feed_synapse(syn)


def _emit_dag(graph, emitters, w: _Walk, timing) -> None:
    """The walk of a graph with branches: each node's value is a list of spike pieces
    ``(port, shape, flat_from, graded, delay, source, c0, c1)`` or of synapse processes."""
    added = timing.get("added_delay", {})
    state = {}
    for node, fn in emitters:
        srcs = graph.inputs.get(node.name, ())
        if isinstance(node, Input):
            state[node.name] = [w.piece(node.name, 0, int(node.out_shape[0]))]
        elif isinstance(node, Add):
            state[node.name] = [x for s in srcs for x in state[s]]
        elif isinstance(node, MAAttention):   # emitted with its neuron: the group's synapses pass through
            state[node.name] = list(state[srcs[0]])
        elif isinstance(node, Concat):
            parts, off = [], 0
            for s in srcs:
                parts += [p[:6] + (off + p[6], off + p[7]) for p in state[s]]
                off += int(graph[s].out_shape[0])
            state[node.name] = parts
        elif node.is_synapse:
            syns = []
            for p in state[srcs[0]]:
                w.load(p)
                part = _slice(node, p[6], p[7])
                extra = added.get(f"{p[5]}->{node.name}", 0)
                if extra:
                    _delayed_synapse(part, w, extra)
                else:
                    fn(part, w)
                syns.append(w.synapse)
                w.synapse = None
            state[node.name] = syns
        elif node.is_neuron:
            w.synapse = list(state[srcs[0]])
            fn(node, w)
            state[node.name] = [w.piece(node.name, 0, int(node.out_shape[0]))]
        else:                                 # Flatten (of one branch's spikes)
            (p,) = state[srcs[0]]
            w.load(p)
            fn(node, w)
            state[node.name] = [w.piece(p[5], 0, int(node.out_shape[0]))]


# The one table: IR node class -> its emitter. A new node kind is one entry here.
EMITTERS = {
    Add: _joined_in_walk,
    Concat: _joined_in_walk,
    Input: _input,
    Flatten: _flatten,
    SpikeAttention: _spike_attention,
    GradedSpikes: _graded_spikes,
    MAAttention: _ma_attention,
    Linear: _linear,
    Dense: _dense,
    Conv2d: _conv,
    SumPool2d: _sumpool,
    LIF: _loihi_neuron,
    MALIF: _loihi_neuron,
    Threshold: _loihi_neuron,
    CubaLIF: _cuba_neuron,
    Voting: _voting,
    Readout: _readout,
}


def emitter_for(node):
    """The emitter of ``node``'s class, or a one-line ``UnsupportedLayer`` naming the layer."""
    fn = EMITTERS.get(type(node))
    if fn is None:
        raise UnsupportedLayer(f"'{node.kind}' has no Lava emitter", where=f"layer '{node.name}'",
                               hint="compile with neurocomp.compile, which lowers the graph to Lava's layers")
    return fn


def emit(graph, inputs_lava: np.ndarray, total_steps: int, record_dir: str, tag: str = "fixed_pt",
         record=None, timing=None) -> _Emitted:
    """Build the process network. ``inputs_lava``: source data ``(*lava_input_shape, steps)``;
    every neuron layer's spikes (or only those named in ``record``) are recorded into
    ``record_dir/<layer>.npy``. ``timing``: the graph's ``ir.timing.time_alignment`` if known."""
    pairs = check_lowerable(graph)                                 # refuse before building anything
    emitters = [(node, emitter_for(node)) for node in graph]
    timing = time_alignment(graph) if timing is None else timing
    ensure_lava_runtime()
    from lava.proc.io.source import RingBuffer as Source
    net = _Emitted()
    net.source = Source(data=inputs_lava)
    walk = _Walk(graph, pairs, timing, tag == "fixed_pt", record, record_dir, total_steps, net)
    if not graph.is_chain():
        _emit_dag(graph, emitters, walk, timing)
        return net
    for node, fn in emitters:
        fn(node, walk)
    return net
