"""Write a quantized IR graph as a lava-dl netx HDF5 file (``lava.lib.dl.netx.hdf5.Network``, 0.6).

Layout (what slayer's ``export_hdf5`` writes and netx 0.6 reads): ``layer/<i>/type`` (S10),
``shape`` (C, H, W) or (N,), synapse datasets, and ``neuron/{type='CUBA', iDecay, vDecay, vThMant,
refDelay, gradedSpike}``. netx maps CUBA to Lava's LIF with ``du = iDecay - 1``, ``dv = vDecay``,
``vth = vThMant``, ``bias_mant = bias`` and ``bias_exp = 6``; dense weights go through
``optimize_weight_bits`` (value-preserving for neurocomp's int8 weights) and conv weights are used
as raw integers, so neurocomp's quantized integers are stored unchanged: the file computes exactly
what ``run_fixed`` computes, with netx's own one-step delay per layer (the same as neurocomp's Lava
emission). Run it with ``Network(path, reset_interval=T, reset_offset=1)`` to get neurocomp's reset
phases (netx resets layer i at ``reset_offset + 1 + i``).

What netx 0.6 cannot load is lowered or refused here: a sum pool in front of neurons becomes a
depthwise (groups = C) convolution of its integer window weight; a sum pool in front of a synapse was
already fused into it (``passes.fuse_sumpool``). Refused with a one-line error: reset by
subtraction, recurrent weights, non-spiking readouts (CUBA LI layers, and the readout and voting heads), a current bias on a neuron with current memory,
a bias that is not a multiple of 64 (netx fixes ``bias_exp = 6``), and the SpikingJelly-only nodes.
``exact=False`` (the bench's timing comparison, not an exactness one) writes what exact mode refuses
the nearest way instead: biases rounded to that grid (clipped to the mantissa range, one value per
channel) and threshold neurons (a max pool's OR) as CUBA neurons with their fixed-point parameters.
Every IR node class has a writer in ``WRITERS`` or its reason in ``REFUSED``; per neuron class,
``NEURON_CHECKS`` says what netx's CUBA neuron cannot do for it.
"""
from __future__ import annotations

import numpy as np

from neurocomp import fixedpoint as fx
from neurocomp.errors import UnsupportedLayer
from neurocomp.backends.lava.layout import regroup_conv_weight, source_data, to_torch_layout
from neurocomp.ir import (Add, Concat, Conv2d, CubaLIF, Dense, Flatten, GradedSpikes, Input, LIF, Linear, MAAttention, MALIF,
                          Readout, SpikeAttention, SumPool2d, Threshold, Voting)
from neurocomp.ir.rules import check_lowerable

HINT = "compile with --target lava (neurocomp's own Lava emission runs it)"


def _bias(neu, syn, exact: bool = True):
    """Per-neuron bias in netx units (bias_mant with bias_exp 6), or None. ``exact=False``: rounded to
    the grid of 64 and clipped to the mantissa range instead of refused; one value per channel."""
    p = neu.fixed
    where = f"layer '{neu.name}'"
    vb = fx.effective_bias(np.asarray(p.bias_mant, np.int64), np.asarray(p.bias_exp, np.int64))
    vb = np.broadcast_to(vb, neu.out_shape).astype(np.int64)
    qi = getattr(neu, "qi_bias", None)
    if qi is not None and np.any(qi):
        if p.du != fx.DECAY_MAX:
            raise UnsupportedLayer("a current bias on a neuron with current memory has no netx form", where=where,
                                   hint=HINT)
        vb = vb + np.broadcast_to(np.asarray(qi, np.int64), neu.out_shape)   # u = a*64 + ib, v += u
    if not np.any(vb):
        return None
    if not exact:
        b = np.clip(np.round(vb / 64.0), fx.BIAS_MANT_MIN, fx.BIAS_MANT_MAX).astype(np.int64)
        return b.reshape(b.shape[0], -1)[:, 0] if isinstance(syn, (Conv2d, SumPool2d)) else b.reshape(-1)
    if np.any(vb % 64):
        raise UnsupportedLayer("a bias that is not a multiple of 64 Lava units (netx fixes bias_exp = 6)",
                               where=where, hint=HINT)
    b = vb // 64
    if isinstance(syn, (Conv2d, SumPool2d)):
        per_c = b.reshape(b.shape[0], -1)
        if not np.all(per_c == per_c[:, :1]):
            raise UnsupportedLayer("a bias that differs within a channel", where=where, hint=HINT)
        return per_c[:, 0]
    return b.reshape(-1)


class _Layers:
    """Where the writers are: the file's ``layer`` group, the next layer index, the open layer group
    (a synapse's, which its neuron completes), and the torch shape flowing in."""

    def __init__(self, group, pairs, exact, shape):
        self.group, self.pairs, self.exact, self.shape = group, pairs, exact, tuple(shape)
        self.index, self.h, self.synapse = 0, None, None

    def open(self, type_name):
        self.h = self.group.create_group(str(self.index))
        self.index += 1
        _type(self.h, type_name)
        return self.h


def _write_input(node, L: _Layers) -> None:
    h = L.open("input")
    h.create_dataset("shape", data=np.array(L.shape))


def _write_flatten(node, L: _Layers) -> None:
    if len(L.shape) == 3:
        h = L.open("flatten")
        h.create_dataset("shape", data=np.array([int(np.prod(L.shape)), 1, 1]))
    L.shape = tuple(node.out_shape)


def _write_linear(node, L: _Layers) -> None:
    neu = L.pairs[node.name]
    h = L.open("dense")
    h.create_dataset("shape", data=np.array(neu.out_shape))
    h.create_dataset("inFeatures", data=int(node.in_shape[0]))
    h.create_dataset("outFeatures", data=int(node.out_shape[0]))
    h.create_dataset("weight", data=np.asarray(node.qweight, np.int64))
    L.synapse = node


def _write_conv_layer(node, L: _Layers, w, stride, pad, dil, groups) -> None:
    neu = L.pairs[node.name]
    w, groups = regroup_conv_weight(w, groups)    # netx builds Lava's Conv: int8 groups
    h = L.open("conv")
    h.create_dataset("shape", data=np.array(neu.out_shape))
    h.create_dataset("inChannels", data=int(L.shape[0]))
    h.create_dataset("outChannels", data=int(neu.out_shape[0]))
    h.create_dataset("kernelSize", data=np.array(w.shape[2:]))
    h.create_dataset("stride", data=np.array(stride))
    h.create_dataset("padding", data=np.array(pad))
    h.create_dataset("dilation", data=np.array(dil))
    h.create_dataset("groups", data=int(groups))
    h.create_dataset("weight", data=w)
    L.synapse = node


def _write_conv(node, L: _Layers) -> None:
    _write_conv_layer(node, L, np.asarray(node.qweight, np.int64), node.stride, node.padding, node.dilation,
                      node.groups)


def _write_sumpool(node, L: _Layers) -> None:
    """A sum pool in front of neurons: a depthwise (groups = C) convolution of its window weight."""
    C = L.shape[0]
    kh, kw = node.kernel
    _write_conv_layer(node, L, np.full((C, 1, kh, kw), int(node.qweight), np.int64), node.stride, node.padding,
                      (1, 1), C)


def _write_neuron(neu, L: _Layers) -> None:
    """The neuron completes its synapse's layer: bias, then netx's CUBA neuron."""
    b = _bias(neu, L.synapse, L.exact)
    if b is not None:
        L.h.create_dataset("bias", data=b)
    _neuron(L.h, neu)
    L.shape, L.synapse = tuple(neu.out_shape), None


# IR node class -> its netx writer. A new node kind is one entry here (or in REFUSED).
WRITERS = {
    Input: _write_input,
    Flatten: _write_flatten,
    Linear: _write_linear,
    Conv2d: _write_conv,
    SumPool2d: _write_sumpool,
    LIF: _write_neuron,
    CubaLIF: _write_neuron,
    Threshold: _write_neuron,
}

# IR node classes netx 0.6 has no form for, with the reason given in the one-line refusal.
REFUSED = {
    MALIF: "'malif' neurons have no netx form",
    MAAttention: "dynamic attention (MA-SNN) has no netx form",
    SpikeAttention: "dynamic spike attention (TCJA/PFA) has no netx form",
    GradedSpikes: "graded spike payloads have no netx form",
    Dense: "an unrolled convolution (Dense) has no netx form",
    Voting: "a voting head (netx layers end in spiking CUBA neurons) has no netx form",
    Readout: "a non-spiking readout head (netx layers send spikes, not their voltage) has no netx form",
    Add: "a skip connection (add) has no netx form",
    Concat: "a concatenation has no netx form",
}


def _check_chain(graph) -> None:
    """netx describes a sequence of layers: the first edge that leaves the chain is refused by name."""
    if graph.is_chain():
        return
    prev = None
    for n in graph:
        srcs = tuple(graph.inputs.get(n.name, ()))
        if prev is not None and srcs != (prev,):
            src = next((s for s in srcs if s != prev), srcs[0] if srcs else prev)
            raise UnsupportedLayer(f"netx describes chains of layers; edge '{src}' -> '{n.name}' branches",
                                   where=f"layer '{n.name}'",
                                   hint="run the graph in Lava through neurocomp (neurocomp simulate --backend lava)")
        prev = n.name


def _check_cuba(neu, exact: bool) -> None:
    where = f"layer '{neu.name}'"
    if neu.reset == "subtract":
        raise UnsupportedLayer("reset by subtraction: netx's CUBA neuron resets to 0", where=where, hint=HINT)
    if neu.rec_qweight is not None:
        raise UnsupportedLayer("a recurrent layer is not written to netx", where=where, hint=HINT)
    if not neu.spiking:
        raise UnsupportedLayer("a non-spiking readout is not written to netx", where=where, hint=HINT)


def _check_lif(neu, exact: bool) -> None:
    if getattr(neu.fixed, "gain_scheduled", False):
        raise UnsupportedLayer("a gain-scheduled neuron has no netx form", where=f"layer '{neu.name}'", hint=HINT)


def _check_threshold(neu, exact: bool) -> None:
    """A max pool's OR: written as a CUBA neuron with its fixed-point parameters only when not exact."""
    if exact:
        _refuse(neu, f"'{neu.kind}' neurons have no netx form")


# Neuron class -> what netx's CUBA neuron cannot do for it (a neuron class without an entry is refused).
NEURON_CHECKS = {CubaLIF: _check_cuba, LIF: _check_lif, Threshold: _check_threshold}


def _refuse(node, reason):
    raise UnsupportedLayer(reason, where=f"layer '{node.name}'", hint=HINT)


def writer_for(node):
    """The netx writer of ``node``'s class, or a one-line ``UnsupportedLayer`` naming the layer."""
    if type(node) in REFUSED:
        _refuse(node, REFUSED[type(node)])
    fn = WRITERS.get(type(node))
    if fn is None:
        _refuse(node, f"'{node.kind}' has no netx writer")
    return fn


def check_netx(graph, exact: bool = True) -> list:
    """Raise a one-line error for what netx 0.6 cannot run; returns the (synapse, neuron) pairs.
    ``exact=False`` lets threshold neurons and off-grid biases through (see the module docstring)."""
    _check_chain(graph)
    pairs = check_lowerable(graph)
    for syn, neu in pairs:
        check = NEURON_CHECKS.get(type(neu))
        if check is None:
            _refuse(neu, REFUSED.get(type(neu), f"'{neu.kind}' neurons have no netx form"))
        check(neu, exact)
        _bias(neu, syn, exact)
    for node in graph:
        writer_for(node)
    return pairs


def _neuron(h, neu):
    p = neu.fixed
    h.create_dataset("neuron/type", (1,), "S10", [b"CUBA"])
    h.create_dataset("neuron/iDecay", data=np.int64(p.du + 1))
    h.create_dataset("neuron/vDecay", data=np.int64(p.dv))
    h.create_dataset("neuron/vThMant", data=np.int64(p.vth))
    h.create_dataset("neuron/refDelay", data=np.int64(1))
    h.create_dataset("neuron/gradedSpike", data=False)


def _type(h, name):
    h.create_dataset("type", (1,), "S10", [name.encode("ascii")])


def write_netx(graph, path: str, exact: bool = True) -> None:
    """Write ``graph`` (quantized) as a netx HDF5 file at ``path``. ``exact`` (default) refuses what netx
    cannot compute exactly; ``exact=False`` writes it the nearest way (a timing comparison)."""
    import h5py
    pairs = {syn.name: neu for syn, neu in check_netx(graph, exact)}
    with h5py.File(path, "w") as f:
        f.create_dataset("simulation/Ts", data=1.0)
        f.create_dataset("simulation/tSample", data=int(graph.meta.get("timesteps", 0)))
        layers = _Layers(f.create_group("layer"), pairs, exact, graph.input_node.out_shape)
        for node in graph:
            WRITERS[type(node)](node, layers)


def run_netx(path: str, x_seq, timesteps: int):
    """Load ``path`` with stock netx and run binary inputs ``x_seq`` [T, B, *shape] back to back.

    Returns the output layer's spikes time-aligned like ``run_fixed`` ([T, B, *out_shape], bool)."""
    import tempfile
    import os
    import shutil
    import torch
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer as Source
    from neurocomp.backends.lava.recorder import emit_recorder

    x = torch.as_tensor(x_seq).cpu().numpy()
    T, B = x.shape[:2]
    net = netx.hdf5.Network(net_config=path, reset_interval=T, reset_offset=1)
    depth = len(net.layers)
    src = Source(data=source_data(x, depth).astype(np.int64))
    src.s_out.connect(net.inp)
    total = B * T + depth
    rec_dir = tempfile.mkdtemp(prefix="neurocomp-netx-")
    out_shape = net.out.shape
    rpath = os.path.join(rec_dir, "out.npy")
    emit_recorder(net.out, rpath, out_shape, total)
    try:
        net.run(condition=RunSteps(num_steps=total), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    finally:
        net.stop()
    raw = np.load(rpath)                                       # (total, *lava_shape)
    shutil.rmtree(rec_dir, ignore_errors=True)
    idx = np.arange(B)[:, None] * T + np.arange(T)[None, :] + depth   # [B, T]
    sel = raw[idx]                                             # [B, T, *lava_shape]
    sel = to_torch_layout(np.swapaxes(sel, 0, 1), lead=2)   # [T, B, *torch_shape]
    return torch.as_tensor(sel != 0), net
