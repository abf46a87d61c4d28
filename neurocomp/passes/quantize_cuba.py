"""Quantize a CubaLIF layer and its synapse group(s) to Loihi fixed point (Lava units).

Per-neuron gains fold into the weights: with ``g = w_in * r`` and ``i' = r * i`` the layer is
``i' = alpha*i' + g*(W x + b + W_rec s) + r*i_bias``, ``v = beta*v + i' + v_bias``. In Lava units
``v_fx = 64 * s * v`` and ``u_fx = 64 * s * i'`` with integer weights ``round(s * g * W)``. NIR
fires on ``v > theta``, Lava on ``v_fx > 64 * vth``: ``s = vth / theta`` maps the strict comparison
exactly. ``vth`` is the largest that keeps every (feed-forward and recurrent) weight within
``weight_bits``. Decays: ``du = round(4096 (1 - alpha)) - 1`` (4095: no current memory),
``dv = round(4096 (1 - beta))`` (0..4096). Synapse bias and current bias go to a per-neuron
current bias (``qi_bias``, u units); ``v_bias`` to the voltage bias (mantissa/exponent).
A non-spiking readout gets ``s = wmax / max|g W|`` and no threshold. A layer fed by several synapse
groups (an Add of their currents) has one scale chosen from every group's weights; the biases add up.
"""
from __future__ import annotations

import numpy as np

from neurocomp import fixedpoint as fx
from neurocomp.errors import QuantizationError, UnsupportedLayer
from neurocomp.ir import Conv2d, Linear, LoihiNeuron, SumPool2d


def _gain(neu) -> np.ndarray:
    g = np.ones(neu.out_shape, np.float64)
    if neu.w_in is not None:
        g = g * np.asarray(neu.w_in, np.float64)
    if neu.r is not None:
        g = g * np.asarray(neu.r, np.float64)
    return g


def _per_channel(g, where):
    """(C, H, W) per-neuron gain -> (C,) when uniform over space (conv weights are shared)."""
    gc = g.reshape(g.shape[0], -1)
    if not np.all(gc == gc[:, :1]):
        raise UnsupportedLayer("per-neuron w_in/r that differ within a channel", where=where,
                               hint="a convolution shares weights across space")
    return gc[:, 0]


def _effective(syn, neu, g, where):
    """A synapse group's weights and bias with the neuron's per-neuron gain folded in."""
    if isinstance(syn, Linear):
        w_eff = syn.weight.astype(np.float64) * g.reshape(-1)[:, None]
        b_eff = None if syn.bias is None else syn.bias.astype(np.float64) * g.reshape(-1)
    elif isinstance(syn, Conv2d):
        gc = _per_channel(g, where)
        w_eff = syn.weight.astype(np.float64) * gc[:, None, None, None]
        b_eff = None if syn.bias is None else np.broadcast_to(
            (syn.bias.astype(np.float64) * gc)[:, None, None], neu.out_shape) * 1.0
    elif isinstance(syn, SumPool2d):
        gc = _per_channel(g, where)
        if not np.all(gc == gc[0]):
            raise UnsupportedLayer("sum pooling into neurons with different gains per channel", where=where)
        w_eff, b_eff = np.array(gc[0]), None
    else:
        raise UnsupportedLayer(f"'{syn.kind}' in front of a CUBA layer", where=where)
    return w_eff, b_eff


def quantize_cuba(syns, neu, weight_bits: int):
    """``syns``: the layer's synapse groups (one, or several summed by an Add: two NIR edges into one
    neuron), all quantized at the layer's ONE scale. Returns ``(qweights per group, rec_qweight, qi_bias,
    fixed, record)``."""
    where = f"layer '{neu.name}'"
    g = _gain(neu)
    wmax = fx.weight_max(weight_bits)
    effs = [_effective(syn, neu, g, where) for syn in syns]
    syn = syns[0]
    rec_eff = None
    if neu.rec_weight is not None:
        rec_eff = np.asarray(neu.rec_weight, np.float64) * g.reshape(-1)[:, None]
    i_bias = np.zeros(neu.out_shape, np.float64)
    if neu.i_bias is not None:
        i_bias = i_bias + np.asarray(neu.i_bias, np.float64) * (np.asarray(neu.r, np.float64) if neu.r is not None else 1.0)
    for _, b_eff in effs:
        if b_eff is not None:
            i_bias = i_bias + np.asarray(b_eff).reshape(neu.out_shape)
    m = max((float(np.max(np.abs(w))) for w, _ in effs if np.size(w)), default=0.0)
    if rec_eff is not None and rec_eff.size:
        m = max(m, float(np.max(np.abs(rec_eff))))
    if neu.spiking:
        if neu.reset == "zero" and neu.v_reset != 0.0:
            raise UnsupportedLayer(f"reset to v_reset={neu.v_reset:g} (not 0)", where=where,
                                   hint="Loihi resets to 0; re-export with v_reset = 0")
        theta = float(neu.v_threshold)
        if not theta > 0:
            raise QuantizationError(f"threshold {theta:g} is not positive", where=where,
                                    hint="Loihi thresholds are positive")
    vth, s = fx.cuba_scale(m, theta if neu.spiking else None, wmax, neu.spiking)
    qs, n_clipped = [], 0
    for w_eff, _ in effs:
        q, raw = fx.round_weights(w_eff, s, wmax)
        qs.append(q.astype(np.int64))
        n_clipped += int(np.sum(raw != q))
    rq = None
    if rec_eff is not None:
        rq, rraw = fx.round_weights(rec_eff, s, wmax)
        rq = rq.astype(np.int64)
        n_clipped += int(np.sum(rraw != rq))
    qi = np.round(fx.voltage_units(i_bias, s)).astype(np.int64)
    vb = np.zeros(neu.out_shape) if neu.v_bias is None else fx.voltage_units(np.asarray(neu.v_bias, np.float64), s)
    mant, exp, b_clipped = fx.bias_mant_exp(np.asarray(vb, np.float64).reshape(neu.out_shape))
    mant, exp = mant.astype(np.int64), exp.astype(np.int64)
    du = fx.cuba_du(neu.alpha)
    dv = fx.cuba_dv(neu.beta)
    fixed = LoihiNeuron(du=du, dv=dv, vth=int(vth), bias_mant=mant, bias_exp=exp)
    record = {"layer": neu.name, "synapse": syn.name, "scale": s, "vth": int(vth),
              "theta": float(neu.v_threshold), "weight_bits": weight_bits, "weights_clipped": n_clipped,
              "weights_total": int(sum(np.size(q) for q in qs) + (0 if rq is None else rq.size)),
              "bias_clipped": b_clipped,
              "du": du, "dv": dv, "decay_error": abs((fx.DECAY_UNITY - du - 1) / fx.DECAY_UNITY - neu.alpha)
              + abs((fx.DECAY_UNITY - dv) / fx.DECAY_UNITY - neu.beta),
              "current_bias_max": int(np.max(np.abs(qi))) if qi.size else 0,
              "max_input": max((int(np.max(np.abs(q))) for q in qs if q.size), default=0), "current_may_wrap": False,
              "reset": neu.reset, "spiking": bool(neu.spiking), "recurrent": rq is not None,
              "threshold_rule": "> mapped exactly (v_fx > 64*vth with 64*s*theta = 64*vth)"}
    if len(syns) > 1:
        record["groups"] = [o.name for o in syns]
        record["scale_rule"] = "one scale for the layer, chosen from every group's weights"
    return qs, rq, qi, fixed, record
