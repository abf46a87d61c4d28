"""Reference arithmetic of :class:`~neurocomp.ir.CubaLIF` layers (float and Loihi fixed point).

Float: float32, op for op as documented on the node (``i = alpha*i + w_in*x + i_bias``;
``v = beta*v + r*i + v_bias``; fire on ``v > v_threshold``; reset to ``v_reset`` or by subtraction).
A recurrent layer adds ``rec_weight @ s(t-1)`` to its input. A non-spiking layer returns ``v``.

Fixed: :func:`neurocomp.fixedpoint.cuba_step` on the quantized parameters; a non-spiking layer
returns its integer ``v`` (Lava units, ``64 * scale`` per float unit).
"""
from __future__ import annotations

import numpy as np
import torch

from neurocomp import fixedpoint as fx


def _param(a, like, default):
    if a is None:
        return None if default is None else torch.full_like(like, float(default))
    return torch.as_tensor(np.asarray(a), dtype=like.dtype, device=like.device)


def run_float_cuba(node, x_seq: torch.Tensor, record_v: bool = False):
    """``x_seq`` [T, B, *shape] float32 synaptic input -> spikes (or v for readouts) [T, B, *shape]."""
    x_seq = x_seq.to(torch.float32)
    T = x_seq.shape[0]
    like = x_seq[0, 0]
    w_in, r = _param(node.w_in, like, None), _param(node.r, like, None)
    ib, vb = _param(node.i_bias, like, None), _param(node.v_bias, like, None)
    dev = x_seq.device
    alpha = torch.tensor(node.alpha, dtype=torch.float32, device=dev)
    beta = torch.tensor(node.beta, dtype=torch.float32, device=dev)
    th = torch.tensor(node.v_threshold, dtype=torch.float32, device=dev)
    vr = torch.tensor(node.v_reset, dtype=torch.float32, device=dev)
    rec = None if node.rec_weight is None else torch.as_tensor(np.asarray(node.rec_weight), dtype=torch.float32,
                                                               device=dev)
    i = torch.zeros_like(x_seq[0])
    v = torch.zeros_like(x_seq[0])
    s = torch.zeros_like(x_seq[0])
    out = torch.zeros_like(x_seq)
    vs = torch.zeros_like(x_seq) if record_v else None
    for t in range(T):
        x = x_seq[t]
        if rec is not None:
            x = x + s @ rec.T
        i = alpha * i + (x if w_in is None else w_in * x)
        if ib is not None:
            i = i + ib
        v = beta * v + (i if r is None else r * i)
        if vb is not None:
            v = v + vb
        if record_v:
            vs[t] = v
        if node.spiking:
            s = (v > th).to(torch.float32)
            if node.reset == "subtract":
                v = v - s * th
            else:
                v = torch.where(s > 0, vr, v)
            out[t] = s
        else:
            out[t] = v
    return (out, vs) if record_v else out


def run_fixed_cuba(node, a_seq: torch.Tensor, stats: dict | None = None, record_v: bool = False):
    """``a_seq`` [T, B, *shape] int64 synaptic input (weight units) -> bool spikes (int v for readouts)."""
    p = node.fixed
    like = a_seq[0]
    dev = a_seq.device
    vbias = torch.as_tensor(fx.effective_bias(np.asarray(p.bias_mant, np.int64), np.asarray(p.bias_exp, np.int64)),
                            dtype=torch.int64, device=dev)
    ibias = (torch.zeros_like(like) if node.qi_bias is None
             else torch.as_tensor(np.asarray(node.qi_bias, np.int64), dtype=torch.int64, device=dev).expand_as(like))
    # the recurrent sum in float64: spikes times 8-bit weights, far below 2**53 (exact in any order)
    rec = None if node.rec_qweight is None else torch.as_tensor(np.asarray(node.rec_qweight), dtype=torch.float64,
                                                                device=dev)
    u = torch.zeros_like(like)
    v = torch.zeros_like(like)
    s = torch.zeros(like.shape, dtype=torch.bool, device=dev)
    out = torch.zeros(a_seq.shape, dtype=torch.bool if node.spiking else torch.int64, device=dev)
    vs = torch.zeros(a_seq.shape, dtype=torch.int64, device=dev) if record_v else None
    subtract = node.reset == "subtract"
    clipped = wrapped = 0
    for t in range(a_seq.shape[0]):
        a = a_seq[t]
        if rec is not None:
            a = a + torch.round(s.to(torch.float64) @ rec.T).to(torch.int64)
        u_raw = fx.trunc_decay(u, fx.DECAY_UNITY - (p.du + 1)) + a * (1 << fx.ACT_SHIFT) + ibias
        wrapped += int(((u_raw > fx.MAX_STATE) | (u_raw <= -fx.MAX_STATE)).sum())
        v_raw = fx.trunc_decay(v, fx.DECAY_UNITY - p.dv) + fx.wrap_state(u_raw) + vbias
        clipped += int(((v_raw > fx.MAX_STATE - 1) | (v_raw < -(fx.MAX_STATE - 1))).sum())
        u, v_new, s = fx.cuba_step(u, v, a, p.du, p.dv, vbias, ibias, int(p.vth), subtract, node.spiking, torch.clamp)
        if record_v:
            vs[t] = fx.clip_voltage(v_raw, torch.clamp)   # before reset
        v = v_new
        out[t] = s if node.spiking else v
    if stats is not None:
        stats[node.name] = {"voltage_saturations": clipped, "current_wraps": wrapped}
    return (out, vs) if record_v else out
