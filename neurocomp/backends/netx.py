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
subtraction, recurrent weights, non-spiking readouts, a current bias on a neuron with current memory,
a bias that is not a multiple of 64 (netx fixes ``bias_exp = 6``), and the SpikingJelly-only nodes.
``exact=False`` (the bench's timing comparison, not an exactness one) writes what exact mode refuses
the nearest way instead: biases rounded to that grid (clipped to the mantissa range, one value per
channel) and threshold neurons (a max pool's OR) as CUBA neurons with their fixed-point parameters.
"""
from __future__ import annotations

import numpy as np

from neurocomp import fixedpoint as fx
from neurocomp.errors import UnsupportedLayer
from neurocomp.ir import Conv2d, CubaLIF, Flatten, Input, LIF, Linear, SumPool2d, Threshold
from neurocomp.passes.quantize import check_lowerable
from neurocomp.backends.lava import regroup_conv_weight

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


def check_netx(graph, exact: bool = True) -> list:
    """Raise a one-line error for what netx 0.6 cannot run; returns the (synapse, neuron) pairs.
    ``exact=False`` lets threshold neurons and off-grid biases through (see the module docstring)."""
    pairs = check_lowerable(graph)
    for syn, neu in pairs:
        where = f"layer '{neu.name}'"
        if isinstance(neu, CubaLIF):
            if neu.reset == "subtract":
                raise UnsupportedLayer("reset by subtraction: netx's CUBA neuron resets to 0", where=where, hint=HINT)
            if neu.rec_qweight is not None:
                raise UnsupportedLayer("a recurrent layer is not written to netx", where=where, hint=HINT)
            if not neu.spiking:
                raise UnsupportedLayer("a non-spiking readout is not written to netx", where=where, hint=HINT)
        elif isinstance(neu, LIF):
            if getattr(neu.fixed, "gain_scheduled", False):
                raise UnsupportedLayer("a gain-scheduled neuron has no netx form", where=where, hint=HINT)
        elif exact or not isinstance(neu, Threshold):
            raise UnsupportedLayer(f"'{neu.kind}' neurons have no netx form", where=where, hint=HINT)
        _bias(neu, syn, exact)
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
        layers = f.create_group("layer")
        i = 0
        shape = tuple(graph.input_node.out_shape)
        h = layers.create_group(str(i))
        _type(h, "input")
        h.create_dataset("shape", data=np.array(shape))
        i += 1
        for node in graph:
            if isinstance(node, Input):
                continue
            if isinstance(node, Flatten):
                if len(shape) == 3:
                    h = layers.create_group(str(i))
                    _type(h, "flatten")
                    h.create_dataset("shape", data=np.array([int(np.prod(shape)), 1, 1]))
                    i += 1
                shape = tuple(node.out_shape)
                continue
            if not node.is_synapse:
                continue
            neu = pairs[node.name]
            h = layers.create_group(str(i))
            b = _bias(neu, node, exact)
            if isinstance(node, Linear):
                _type(h, "dense")
                h.create_dataset("shape", data=np.array(neu.out_shape))
                h.create_dataset("inFeatures", data=int(node.in_shape[0]))
                h.create_dataset("outFeatures", data=int(node.out_shape[0]))
                h.create_dataset("weight", data=np.asarray(node.qweight, np.int64))
            else:
                if isinstance(node, SumPool2d):
                    C = shape[0]
                    kh, kw = node.kernel
                    w = np.full((C, 1, kh, kw), int(node.qweight), np.int64)
                    stride, pad, dil, groups = node.stride, node.padding, (1, 1), C
                else:
                    w = np.asarray(node.qweight, np.int64)
                    stride, pad, dil, groups = node.stride, node.padding, node.dilation, node.groups
                w, groups = regroup_conv_weight(w, groups)    # netx builds Lava's Conv: int8 groups
                _type(h, "conv")
                h.create_dataset("shape", data=np.array(neu.out_shape))
                h.create_dataset("inChannels", data=int(shape[0]))
                h.create_dataset("outChannels", data=int(neu.out_shape[0]))
                h.create_dataset("kernelSize", data=np.array(w.shape[2:]))
                h.create_dataset("stride", data=np.array(stride))
                h.create_dataset("padding", data=np.array(pad))
                h.create_dataset("dilation", data=np.array(dil))
                h.create_dataset("groups", data=int(groups))
                h.create_dataset("weight", data=w)
            if b is not None:
                h.create_dataset("bias", data=b)
            _neuron(h, neu)
            i += 1
            shape = tuple(neu.out_shape)


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
    from neurocomp.backends.lava_recorder import SpikeRecorder, create_file

    x = torch.as_tensor(x_seq).cpu().numpy()
    T, B = x.shape[:2]
    net = netx.hdf5.Network(net_config=path, reset_interval=T, reset_offset=1)
    depth = len(net.layers)
    frames = np.swapaxes(x, 0, 1).reshape((B * T,) + x.shape[2:])
    frames = np.concatenate([frames, np.zeros((depth,) + x.shape[2:], frames.dtype)], axis=0)
    data = np.transpose(frames, tuple(range(frames.ndim - 1, 0, -1)) + (0,)).astype(np.int64)
    src = Source(data=data)
    src.s_out.connect(net.inp)
    total = B * T + depth
    rec_dir = tempfile.mkdtemp(prefix="neurocomp-netx-")
    out_shape = net.out.shape
    rpath = os.path.join(rec_dir, "out.npy")
    create_file(rpath, out_shape, total)
    rec = SpikeRecorder(shape=out_shape, path=rpath, steps=total)
    net.out.connect(rec.a_in)
    try:
        net.run(condition=RunSteps(num_steps=total), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    finally:
        net.stop()
    raw = np.load(rpath)                                       # (total, *lava_shape)
    shutil.rmtree(rec_dir, ignore_errors=True)
    idx = np.arange(B)[:, None] * T + np.arange(T)[None, :] + depth   # [B, T]
    sel = raw[idx]                                             # [B, T, *lava_shape]
    sel = np.swapaxes(sel, 0, 1)
    if sel.ndim == 5:
        sel = np.transpose(sel, (0, 1, 4, 3, 2))
    return torch.as_tensor(sel != 0), net
