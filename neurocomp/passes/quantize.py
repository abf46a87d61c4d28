"""Quantize a lowered float graph to Loihi fixed point (Lava's units), layer by layer.

Each neuron layer has one synapse in front of it (in a graph with branches: one or more synapse groups,
quantized at the one scale of the layer). In Lava units (see ``neurocomp.fixedpoint``)
the neuron's voltage is ``v = 64 * s * H`` where H is the float membrane potential and ``s`` the
layer's weight scale: integer weights ``round(s * w_eff)`` (``w_eff = w / tau`` when the input
is decayed), bias ``64 * s * b_eff`` as mantissa/exponent, voltage decay ``dv = 4096 / tau``,
no current memory (``du = 4095``).

Threshold ties. SpikingJelly fires on ``H >= theta``, Lava on ``v > 64 * vth``. For integer v,
``v > 64 * vth`` is ``v >= 64 * vth + 1``, so choosing ``s = (vth + 1/64) / theta`` makes the float
threshold land exactly on Lava's firing boundary: the "≥" is mapped exactly, not shifted.

Scale. ``s`` is the largest that keeps every weight within ``weight_bits`` (so the weights use
the full range), refined among the top quarter of thresholds to the one with the smallest
weight-rounding error. Hard resets to ``v_reset != 0`` are shifted to 0 (``theta' = theta -
v_reset``). An MA-SNN cell with a threshold per channel divides each output channel's weights and
bias by its threshold (normalised threshold 1, one ``vth`` and one reset value for the layer, the
scale ``s / V_th[c]`` per channel); a leak per channel is a ``dv`` per neuron. The cell's ``beta`` (one,
or one per channel) is an integer voltage per neuron, ``64 s beta`` (per channel ``64 s beta_c / V_th[c]``,
like the bias), added after the decay at every step of a sample window but the first (``h_0 = 0``); its
rounding error is recorded as ``beta_error``. PFA's additive map is
a per-step offset ``64 * s * A[t]`` per neuron, added with the bias before the ReLU. What is clipped or may overflow is recorded per layer in ``graph.meta['passes']``.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from neurocomp import fixedpoint as fx
from neurocomp.errors import QuantizationError, UnsupportedLayer
from neurocomp.ir import (Conv2d, CubaLIF, Dense, GradedSpikes, MAAttention, SpikeAttention, LIF, Linear, LoihiNeuron,
                          MALIF, Readout, SumPool2d, Threshold, Voting)
from neurocomp.ir.rules import check_lowerable, neuron_groups
from neurocomp.passes._util import with_record
from neurocomp.passes.quantize_cuba import quantize_cuba


def _bias(bias_v):
    """Voltage bias (numpy) -> ``(mant int64, exp int64, clipped count)`` (:func:`fixedpoint.bias_mant_exp`)."""
    mant, exp, clipped = fx.bias_mant_exp(np.asarray(bias_v, np.float64))
    return mant.astype(np.int64), exp.astype(np.int64), clipped


def _gain_error(mant, shift: int, g) -> float:
    """The largest gain rounding error ``max |mant / 2**shift - g|``, in one temporary of the table's size."""
    d = np.true_divide(mant, 1 << shift)
    np.subtract(d, g, out=d)
    return float(np.max(np.abs(d, out=d)))


def _max_input(q: np.ndarray, syn) -> int:
    """Largest |synaptic input| one step can deliver to a neuron (all inputs spiking)."""
    if isinstance(syn, (Linear, Dense)):
        return int(np.max(np.sum(np.abs(q), axis=1))) if q.size else 0
    if isinstance(syn, Conv2d):
        return int(np.max(np.sum(np.abs(q).reshape(q.shape[0], -1), axis=1))) if q.size else 0
    return int(abs(int(q)) * syn.kernel[0] * syn.kernel[1])


def _quantize_gain(neu):
    """Input gain table -> (mantissa [T, *shape] int, shift): gain = mantissa / 2**shift, mantissa <= 4095."""
    g = getattr(neu, "input_gain", None)
    if g is None:
        return None, 0
    gmax = float(np.max(g))
    if not gmax > 0 or np.any(g < 0):
        raise QuantizationError("attention gains must be non-negative and not all zero", where=f"layer '{neu.name}'")
    mant, shift = fx.gain_mantissa(np.asarray(g, np.float64))
    return mant.astype(np.int64), shift


def _check_gain(neu):
    """:func:`_quantize_gain`'s checks without its mantissas: ``(None, 0)``."""
    g = getattr(neu, "input_gain", None)
    if g is not None and (not float(np.max(g)) > 0 or np.any(g < 0)):
        raise QuantizationError("attention gains must be non-negative and not all zero", where=f"layer '{neu.name}'")
    return None, 0


def _quantize_lif(syn, neu, weight_bits: int, gain_table: bool = True):
    qs, fixed, record = _quantize_lif_groups([syn], neu, weight_bits, gain_table=gain_table)
    return qs[0], fixed, record


def _per_row(theta_c, syn):
    """Per-channel thresholds as a factor on each output row of ``syn``'s weights (1 for one threshold)."""
    return 1.0 if theta_c is None else 1.0 / theta_c.reshape((-1,) + (1,) * (syn.weight.ndim - 1))


def _step_bias(neu, theta_c, s):
    """MA-SNN's ``beta`` as an integer voltage per neuron (``64 s beta``, per channel ``64 s beta_c / V_th[c]``
    like the bias), added after the decay at every step but a window's first; None when beta is 0.
    Returns ``(step_bias, beta_error)``: the largest rounding error, in the cell's float units."""
    if not np.any(np.asarray(neu.beta) != 0):
        return None, None
    chan = 1.0 if theta_c is None else neu.channel_values("v_threshold")
    exact = fx.voltage_units(neu.channel_values("beta") / chan, s)
    q = np.round(exact).astype(np.int64)
    if np.max(np.abs(q)) >= fx.MAX_STATE:
        raise QuantizationError(f"beta up to {np.max(np.abs(neu.channel_values('beta'))):g} exceeds the 24-bit voltage "
                                "range at this layer's scale", where=f"layer '{neu.name}'",
                                hint="|beta| must stay below the threshold's range (rescale beta and threshold)")
    return np.ascontiguousarray(q), float(np.max(np.abs(q - exact) * chan) / (64.0 * s))


def _quantize_lif_groups(syns, neu, weight_bits: int, gain_table: bool = True):
    """A LIF/MALIF fed by one or more synapse groups (an Add of currents): ONE scale ``s`` for the layer,
    chosen from every group's weights, so each group's integer current is in the neuron's units; the
    biases add up, as do the largest inputs. ``gain_table=False``: the gain table is checked but its mantissas
    are left to the caller (None), which replaces them (graded payloads: :func:`_payload_voltage_scale`)."""
    syn = syns[0]
    if isinstance(neu, MALIF):
        if not np.all(np.isfinite(np.asarray(neu.beta, np.float64))):
            raise QuantizationError(f"beta={neu.beta} is not finite", where=f"layer '{neu.name}'",
                                    hint="give beta a finite value")
        if not np.all((0 < np.asarray(neu.alpha)) & (np.asarray(neu.alpha) <= 1)):
            raise QuantizationError(f"alpha={neu.alpha}", where=f"layer '{neu.name}'", hint="0 < alpha <= 1")
        neu_reset = 0.0
    elif neu.v_reset is None:
        raise UnsupportedLayer("soft reset (v_reset=None) has no Loihi CUBA equivalent in Lava's LIF",
                               where=f"layer '{neu.name}'", hint="train with a hard reset (v_reset=0.0)")
    else:
        neu_reset = float(neu.v_reset)
    # MA-SNN cells with a threshold per channel (learned, pa_train_self=True): each output channel's
    # weights and bias are divided by its threshold, so every channel fires at the same normalised
    # threshold 1 (one vth, one reset-to-threshold value); the layer's scale is per channel, s / V_th[c].
    theta_c = np.asarray(neu.v_threshold, np.float64) if isinstance(neu, MALIF) and \
        isinstance(neu.v_threshold, np.ndarray) else None
    if theta_c is not None:
        other = next((o for o in syns if not isinstance(o, (Conv2d, Linear))), None)
        if other is not None:
            raise UnsupportedLayer(f"an MA-SNN cell with per-channel thresholds after a {other.kind} layer",
                                   where=f"layer '{neu.name}'", hint="per-channel thresholds need a conv or linear "
                                                                     "layer in front; use one threshold for the layer")
        if not np.all(np.isfinite(theta_c) & (theta_c > 0)):
            raise QuantizationError(f"per-channel thresholds {theta_c.min():g} .. {theta_c.max():g} are not all "
                                    "positive and finite", where=f"layer '{neu.name}'", hint="v_threshold > 0")
    theta = 1.0 if theta_c is not None else fx.lif_theta(neu.v_threshold, neu_reset)
    if not theta > 0:
        raise QuantizationError(f"threshold {neu.v_threshold} is not above the reset value {neu_reset}",
                                where=f"layer '{neu.name}'", hint="v_threshold must exceed v_reset")
    if not np.isfinite(theta):
        raise QuantizationError(f"threshold {neu.v_threshold} is not finite", where=f"layer '{neu.name}'",
                                hint="give v_threshold a finite value")
    is_ma = isinstance(neu, MALIF)
    gain = 1.0 if is_ma else fx.input_weight_gain(neu.tau, neu.decay_input)
    wmax = fx.weight_max(weight_bits)
    effs = [o.weight.astype(np.float64) * gain * _per_row(theta_c, o) for o in syns]
    w_eff = effs[0] if len(effs) == 1 else np.concatenate([e.ravel() for e in effs])
    vth = fx.choose_vth(w_eff, theta, wmax)
    s = fx.lif_scale(vth, theta)
    qs, n_clipped = [], 0
    for e in effs:
        q, raw = fx.round_weights(e, s, wmax)
        qs.append(q.astype(np.int64))
        n_clipped += int(np.sum(raw != q))
    q = np.concatenate([x.ravel() for x in qs]) if len(qs) > 1 else qs[0]
    if n_clipped and vth == 0:
        raise QuantizationError(f"threshold {theta:g} is too small for weights up to {np.max(np.abs(w_eff)):g}: "
                                f"{n_clipped} weights would clip at {weight_bits} bits", where=f"layer '{neu.name}'",
                                hint=f"v_threshold - v_reset must be at least max|w|/{wmax} (rescale threshold and weights)")
    if q.size and not np.any(q) and np.any(w_eff):
        raise QuantizationError(f"threshold {theta:g} is too large: every weight rounds to 0 (the layer could never "
                                "fire from its inputs)", where=f"layer '{neu.name}'",
                                hint=f"v_threshold - v_reset must be below ~{fx.VTH_MAX} x max|w| (rescale)")
    out_shape = neu.out_shape
    bias_v, plain_v = 0.0, None
    gained = set(getattr(neu, "gain_groups", ()) or ())
    more = list(getattr(neu, "more_groups", ()) or ())
    plain = [o for o in syns if gained and o.name not in gained and o.name not in more]
    more_bias = [None] * len(more)
    if set(more) - {o.name for o in syns}:
        raise QuantizationError(f"the gained synapse groups {sorted(set(more) - {o.name for o in syns})} do not feed "
                                "the neuron", where=f"layer '{neu.name}'", hint="report this: fold_attention names them")
    if gained and not any(o.name in gained for o in syns):
        raise QuantizationError(f"the gained synapse groups {sorted(gained)} do not feed the neuron",
                                where=f"layer '{neu.name}'", hint="report this: fold_attention names the group")
    for o in syns:
        b = o.bias.astype(np.float64) * gain if o.bias is not None else np.zeros(o.weight.shape[0])
        if theta_c is not None:
            b = b / theta_c
        bv = fx.voltage_units(b, s)
        if isinstance(o, Conv2d):  # per output channel -> per neuron (C, H, W)
            bv = np.broadcast_to(bv[:, None, None], out_shape)
        elif isinstance(o, Dense):
            bv = bv.reshape(out_shape)
        if o in plain:                # the shortcut's bias: added ungained, after the gain
            plain_v = np.broadcast_to(bv, out_shape) + (0.0 if plain_v is None else plain_v)
            continue
        if o.name in more:            # a further gained group's bias: gained with its own map
            more_bias[more.index(o.name)] = np.broadcast_to(bv, out_shape)
            continue
        bias_v = bv if len(syns) == 1 else bias_v + np.broadcast_to(bv, out_shape)
    mant, exp, b_clipped = _bias(np.broadcast_to(bias_v, out_shape) if plain else bias_v)
    plain_bias = None
    if plain or more:                 # voltage units per neuron, as the mantissa/exponent would give them
        pm, pe, p_clipped = _bias(plain_v if plain_v is not None else np.zeros(out_shape))
        plain_bias = np.ascontiguousarray(fx.effective_bias(pm, pe).astype(np.int64))
        b_clipped += p_clipped
    more_fields, more_errors = {}, []
    if more:                          # one mantissa table and shift per further gained group
        mants, shifts, biases = [], [], []
        for k, name in enumerate(more):
            m, sh = fx.gain_mantissa(np.asarray(neu.more_gains[k], np.float64))
            mants.append(m.astype(np.int64))
            shifts.append(int(sh))
            more_errors.append(_gain_error(m, sh, neu.more_gains[k]))
            bm, be, bc = _bias(more_bias[k] if more_bias[k] is not None else np.zeros(out_shape))
            biases.append(fx.effective_bias(bm, be).astype(np.int64))
            b_clipped += bc
        more_fields = dict(more_gain_mant=np.ascontiguousarray(np.stack(mants)), more_gain_shift=tuple(shifts),
                           more_rectify=tuple(bool(r) for r in neu.more_rectify),
                           more_bias=np.ascontiguousarray(np.stack(biases)))
    if is_ma and isinstance(neu.alpha, np.ndarray):   # a leak per channel: dv per neuron
        dv_c = [fx.ma_dv(a) for a in np.asarray(neu.alpha, np.float64).tolist()]
        decay_error = float(max(abs((fx.DECAY_UNITY - d) / fx.DECAY_UNITY - a) for d, a in zip(dv_c, neu.alpha)))
        dv = np.ascontiguousarray(np.broadcast_to(np.asarray(dv_c, np.int64).reshape(
            (-1,) + (1,) * (len(out_shape) - 1)), tuple(out_shape)))
    elif is_ma:   # h = alpha * u': the voltage keeps alpha per step
        dv = fx.ma_dv(neu.alpha)
        decay_error = abs((fx.DECAY_UNITY - dv) / fx.DECAY_UNITY - neu.alpha)
    elif neu.tau is None:
        dv, decay_error = 0, 0.0
    else:
        dv = fx.lif_dv(neu.tau)
        decay_error = abs(dv / fx.DECAY_UNITY - 1.0 / neu.tau)
    gain_mant, gain_shift = _quantize_gain(neu) if gain_table else _check_gain(neu)
    has_gain = gain_mant is not None or not gain_table and getattr(neu, "input_gain", None) is not None
    offset = getattr(neu, "input_offset", None)
    if offset is not None:   # an additive map: voltage units like the bias, added with it before the ReLU
        chan = 1.0 if theta_c is None else 1.0 / neu.channel_values("v_threshold")
        offset = np.round(fx.voltage_units(np.asarray(offset, np.float64) * gain * chan, s)).astype(np.int64)
    step_bias, beta_error = _step_bias(neu, theta_c, s) if is_ma else (None, None)
    fixed = LoihiNeuron(du=fx.DECAY_MAX, dv=dv, vth=int(vth), bias_mant=mant, bias_exp=exp, step_bias=step_bias,
                        plain_bias=plain_bias, **more_fields, gain_mant=gain_mant, gain_shift=gain_shift, offset=offset,
                        gain_on_bias=(bool(getattr(neu, "gain_on_bias", False)) and has_gain)
                        or offset is not None,
                        rectify=bool(getattr(neu, "rectify_input", False)),
                        # MA-SNN resets to its threshold: 64*s*V_th = 64*vth + 1 exactly
                        v_reset=(64 * int(vth) + 1) if is_ma else 0)
    max_in = sum(_max_input(x, o) for x, o in zip(qs, syns))
    record = {"layer": neu.name, "synapse": syn.name, "vth": int(vth),
              "scale": s if theta_c is None else [s / t for t in theta_c.tolist()],
              "theta": theta if theta_c is None else theta_c.tolist(),
              "weight_bits": weight_bits, "weights_clipped": n_clipped, "weights_total": int(q.size),
              "bias_clipped": b_clipped, "dv": dv_c if isinstance(dv, np.ndarray) else dv, "decay_error": decay_error,
              "max_input": max_in, "current_may_wrap": bool(max_in * (1 << fx.ACT_SHIFT) >= fx.MAX_STATE),
              "threshold_rule": ">= mapped exactly (v > 64*vth with theta*64*s = 64*vth + 1)",
              "gain_shift": gain_shift if has_gain else None,
              "offset_max": int(np.max(np.abs(offset))) if offset is not None else None,
              "beta_error": beta_error,
              "gain_error": (_gain_error(gain_mant, gain_shift, neu.input_gain)
                             if gain_mant is not None else None)}
    if len(syns) > 1:
        record["groups"] = [o.name for o in syns]
    if plain or more:
        record["gained_groups"] = [o.name for o in syns if o not in plain and o.name not in more]
        record["plain_groups"] = [o.name for o in plain]
        if more:
            record["further_gained_groups"] = more
            record["further_gain_errors"] = more_errors
        record["group_rule"] = ("the attention gain (and its rectification) covers the gained groups' current and "
                                "bias; the plain groups' current and bias are added after it")
        record["scale_rule"] = "one scale for the layer, chosen from every group's weights"
    return qs, fixed, record


def _payload_consumers(graph) -> dict:
    """``{consuming synapse name: GradedSpikes node}``; the payloads are quantized with the synapse that
    reads them (in a chain the next synapse, in a graph the node's one reader), whose current must reach a
    LIF/IF or MA-SNN layer."""
    out = {}
    for n in graph:
        if not isinstance(n, GradedSpikes):
            continue
        name = n.name
        while True:
            readers = graph.consumers(name)
            if len(readers) != 1:
                raise UnsupportedLayer(f"graded spike payloads read by {len(readers)} layers", where=f"layer '{n.name}'",
                                       hint="report this: fold_attention builds one payload node per synapse")
            if graph[readers[0]].is_synapse:
                break
            name = readers[0]
        syn = graph[readers[0]]
        at = syn.name
        while not graph[at].is_neuron:
            nxt = graph.consumers(at)
            if len(nxt) != 1:
                break
            at = nxt[0]
        if not isinstance(graph[at], (LIF, MALIF)):
            raise UnsupportedLayer("graded spike payloads must feed a LIF/IF or MA-SNN layer", where=f"layer '{n.name}'")
        out[syn.name] = n
    return out


def _payload_quantized(pay, max_input: int):
    """The payloads ``qscale / 2**shift`` at the most bits (<= 8) that keep the consuming synapse's sums
    below 2**24 (its largest input ``max_input`` per unit payload); returns ``(pay, bits)``."""
    bits = fx.payload_bits_for(max_input)
    got = fx.quantize_payload(pay.scale, bits)
    if got is None or (got[1] == 0 and np.max(pay.scale) > (1 << bits) - 1):
        raise QuantizationError(f"graded spike payloads must be non-negative, not all zero and fit {bits} bits",
                                where=f"layer '{pay.name}'",
                                hint="static spike maps are >= 0; recalibrate, or use --attention dynamic")
    return pay.replace(qscale=got[0], shift=int(got[1])), bits


def _payload_bmax(syn, deq: np.ndarray) -> np.ndarray:
    """The largest payload each weight of ``syn`` can meet (B's maximum per input channel of a conv), shaped
    to multiply its weights."""
    if isinstance(syn, Conv2d):
        bmax = deq.reshape(deq.shape[0], -1).max(axis=1)
        return bmax[None, :, None, None] if syn.groups == 1 else np.asarray(float(bmax.max()))
    return deq.reshape(-1)[None, :]


def _payload_record(pay, bits: int, deq: np.ndarray) -> dict:
    return {"from": pay.name, "bits": bits, "shift": int(pay.shift), "max": int(np.max(pay.qscale)),
            "error": float(np.max(np.abs(deq - pay.scale))),
            "rule": "graded payloads qscale/2**shift in; the gain (mantissa g[t]*sigma/s, shift + "
                    "payload shift) gives the voltage scale sigma of the effective weights w*B; "
                    "bits <= 8 keep every synaptic sum below 2**24 (exact in float32)"}


def _payload_into_groups(syns, k: int, neu, pay, weight_bits: int, T: int):
    """A neuron with several synapse groups, one of them -- its only gained group -- fed graded payloads (PFA
    in a residual block; the others, a shortcut, plain): :func:`_payload_voltage_scale`'s rule with plain
    groups. The layer's voltage scale ``sigma`` is chosen from every group's effective weights (the payload
    group's as ``w * B``), the plain groups and every bias are quantized at ``sigma``; the payload group's
    weights at their own scale ``s`` (from ``w`` alone, full 8 bits), its gain mantissa ``g[t] sigma / s``
    (shift plus the payload shift) returning its input to ``sigma``. ``syns[k]`` reads the payloads."""
    syn = syns[k]
    if tuple(neu.gain_groups) != (syn.name,) or neu.more_groups or neu.gain_on_bias:
        raise UnsupportedLayer("graded spike payloads into a neuron whose attention gain covers other synapse groups "
                               "or its bias", where=f"layer '{neu.name}'", hint="one attention map per neuron is supported")
    (qa,), _, rec_a = _quantize_lif_groups([syn], neu, weight_bits)      # the payload group's own scale s
    if isinstance(rec_a["scale"], list):
        raise UnsupportedLayer("graded spike payloads into an MA-SNN cell with per-channel thresholds",
                               where=f"layer '{neu.name}'", hint="use one threshold for the layer, or --attention dynamic")
    pay, bits = _payload_quantized(pay, rec_a["max_input"])
    deq = np.asarray(pay.qscale, np.float64) / (1 << pay.shift)
    eff = list(syns)
    eff[k] = syn.replace(weight=(syn.weight.astype(np.float64) * _payload_bmax(syn, deq)))
    qs, fixed, rec = _quantize_lif_groups(eff, neu, weight_bits)        # sigma, plain groups and biases
    sigma, s = rec["scale"], rec_a["scale"]
    g = neu.input_gain if neu.input_gain is not None else np.ones((T,) + tuple(neu.out_shape))
    gained = neu.replace(input_gain=np.asarray(g, np.float64) * (sigma / s))
    gain_mant, gain_shift = _quantize_gain(gained)
    fixed = dataclasses.replace(fixed, gain_mant=gain_mant, gain_shift=int(gain_shift) + int(pay.shift))
    gain = 1.0 if isinstance(neu, MALIF) else fx.input_weight_gain(neu.tau, neu.decay_input)
    _, raw_eff = fx.round_weights(eff[k].weight.astype(np.float64) * gain, sigma, fx.weight_max(weight_bits))
    clipped_eff = int(np.sum(raw_eff != qs[k]))
    qs[k] = qa
    pmax = int(np.max(pay.qscale))
    max_in = sum(_max_input(q, o) for i, (q, o) in enumerate(zip(qs, syns)) if i != k) + rec_a["max_input"] * max(pmax, 1)
    rec.update(voltage_scale=sigma, payload_group_scale=s, gain_shift=int(gain_shift) + int(pay.shift),
               weights_clipped=rec["weights_clipped"] - clipped_eff + rec_a["weights_clipped"],
               gain_error=_gain_error(gain_mant, gain_shift, gained.input_gain), max_input=max_in,
               current_may_wrap=bool(max_in >= fx.MAX_STATE), payload={**_payload_record(pay, bits, deq),
                                                                         "into_group": syn.name})
    return qs, fixed, rec, pay


def _payload_voltage_scale(syn, neu, q, fixed, rec, pay, weight_bits: int, T: int):
    """The consumer of graded payloads ``qscale / 2**shift``: its synaptic input ``a = sum q * qscale``
    is rescaled by its gain, so its voltage scale ``sigma = (vth + 1/64) / theta`` is chosen from the
    effective weights ``w * B`` (as if ``B`` were in the weights) independently of the weight scale
    ``s``: gain mantissas ``round(g[t] * sigma / s * 2**S)``, gain shift ``S + shift``, bias ``64 sigma b``.
    The threshold rule (``64 sigma theta = 64 vth + 1``) is unchanged."""
    if fixed.gain_on_bias:
        raise UnsupportedLayer("graded spike payloads into a neuron whose gain covers its bias", where=f"layer '{neu.name}'",
                               hint="one attention map per neuron is supported")
    if isinstance(rec["scale"], list):
        raise UnsupportedLayer("graded spike payloads into an MA-SNN cell with per-channel thresholds",
                               where=f"layer '{neu.name}'", hint="use one threshold for the layer, or --attention dynamic")
    pay, bits = _payload_quantized(pay, rec["max_input"])
    theta, s = rec["theta"], rec["scale"]
    w_gain = fx.input_weight_gain(neu.tau, neu.decay_input) if isinstance(neu, LIF) else 1.0
    deq = np.asarray(pay.qscale, np.float64) / (1 << pay.shift)
    w_eff = syn.weight.astype(np.float64) * w_gain
    w_eff = w_eff * _payload_bmax(syn, deq)     # the largest |w * B| each tap can meet
    vth = fx.choose_vth(w_eff, theta, fx.weight_max(weight_bits))
    sigma = fx.lif_scale(vth, theta)
    g = neu.input_gain if neu.input_gain is not None else np.ones((T,) + tuple(neu.out_shape))
    gained = neu.replace(input_gain=np.asarray(g, np.float64) * (sigma / s))
    gain_mant, gain_shift = _quantize_gain(gained)
    b = syn.bias.astype(np.float64) * w_gain if syn.bias is not None else np.zeros(syn.weight.shape[0])
    bias_v = fx.voltage_units(b, sigma)
    if isinstance(syn, Conv2d):
        bias_v = np.broadcast_to(bias_v[:, None, None], neu.out_shape)
    elif isinstance(syn, Dense):
        bias_v = bias_v.reshape(neu.out_shape)
    mant, exp, b_clipped = _bias(bias_v)
    fixed = dataclasses.replace(fixed, vth=int(vth), bias_mant=mant, bias_exp=exp, gain_mant=gain_mant,
                                gain_shift=int(gain_shift) + int(pay.shift),
                                v_reset=(64 * int(vth) + 1) if isinstance(neu, MALIF) else 0)
    pmax = int(np.max(pay.qscale))
    rec.update(vth=int(vth), voltage_scale=sigma, bias_clipped=b_clipped, gain_shift=int(gain_shift) + int(pay.shift),
               gain_error=_gain_error(gain_mant, gain_shift, gained.input_gain),
               max_input=rec["max_input"] * max(pmax, 1),
               payload=_payload_record(pay, bits, deq))
    rec["current_may_wrap"] = bool(rec["max_input"] >= fx.MAX_STATE)   # GainLIF: only the synapse wraps
    return fixed, rec, pay


def _quantize_or(syn: SumPool2d, neu: Threshold):
    theta = float(neu.threshold)
    if not (0 <= theta < 64):
        raise QuantizationError(f"pooling threshold {theta} outside [0, 64)", where=f"layer '{neu.name}'")
    vth = int(math.floor(theta))   # counts are integers: count > theta  <=>  count > floor(theta)
    shape = neu.out_shape
    fixed = LoihiNeuron(du=fx.DECAY_MAX, dv=fx.DECAY_MAX, vth=vth, bias_mant=np.zeros(shape, np.int64),
                        bias_exp=np.zeros(shape, np.int64))
    record = {"layer": neu.name, "synapse": syn.name, "scale": 1.0, "vth": vth, "theta": theta,
              "weight_bits": None, "weights_clipped": 0, "weights_total": 1, "bias_clipped": 0, "dv": fx.DECAY_MAX,
              "decay_error": 0.0, "max_input": int(syn.kernel[0] * syn.kernel[1]), "current_may_wrap": False,
              "threshold_rule": "OR of the window: fires iff the spike count > floor(theta)"}
    return np.array(1, dtype=np.int64), fixed, record


def _quantize_logic(syns, neu: Threshold, weight_bits: int):
    """Neuron logic (SEW's AND / IAND, ``frontends.torch``): integer weights (+1, -1 for a negated input)
    kept as they are, a memoryless compartment (``du = dv = 4095``: nothing carries over a step) that fires
    iff the integer sum > ``floor(theta)``, exactly the float ``x > theta`` on integer sums."""
    theta, wmax = float(neu.threshold), fx.weight_max(weight_bits)
    if not (0 <= theta < 64):
        raise QuantizationError(f"logic threshold {theta} outside [0, 64)", where=f"layer '{neu.name}'",
                                hint="keep one plain factor in each product of spikes")
    qs = []
    for syn in syns:
        w = np.asarray(syn.weight, np.float64)
        if syn.bias is not None or not np.all(w == np.round(w)) or np.abs(w).max() > wmax:
            raise UnsupportedLayer(f"a threshold neuron fed by '{syn.name}', whose weights are not small integers",
                                   where=f"layer '{neu.name}'", hint="sum synapse groups into a LIF/IF neuron")
        qs.append(np.round(w).astype(np.int64))
    vth, shape = int(math.floor(theta)), neu.out_shape
    fixed = LoihiNeuron(du=fx.DECAY_MAX, dv=fx.DECAY_MAX, vth=vth, bias_mant=np.zeros(shape, np.int64),
                        bias_exp=np.zeros(shape, np.int64))
    max_in = int(sum(_max_input(np.clip(q, 0, None), o) for q, o in zip(qs, syns)))
    record = {"layer": neu.name, "synapse": syns[0].name, "groups": [s.name for s in syns], "scale": 1.0, "vth": vth, "theta": theta,
              "weight_bits": None, "weights_clipped": 0, "weights_total": int(sum(q.size for q in qs)),
              "bias_clipped": 0, "dv": fx.DECAY_MAX, "decay_error": 0.0, "max_input": max_in,
              "current_may_wrap": False,
              "threshold_rule": f"neuron logic ({neu.meta.get('logic', 'of spikes')}): integer weights, "
                                "fires iff their sum > floor(theta), nothing carried over a step"}
    return qs, fixed, record


def _quantize_readout(syn, neu: Readout, weight_bits: int, T: int):
    """A readout head: the synapse's current integrated by a compartment that never fires (``du = 4095``,
    ``dv = 0``, ``vth = VTH_MAX``) at the scale :func:`fixedpoint.readout_scale` picks (the largest that keeps
    the weights within ``weight_bits`` and a window's voltage below the firing boundary)."""
    wmax = fx.weight_max(weight_bits)
    if isinstance(syn, Voting):      # one weight 1/k per group member
        w_eff = np.full((1, int(syn.voting_size)), 1.0 / int(syn.voting_size))
        b = None
    elif isinstance(syn, (Linear, Dense)):
        w_eff = syn.weight.astype(np.float64)
        b = None if syn.bias is None else syn.bias.astype(np.float64)
    else:
        raise UnsupportedLayer(f"a readout of a '{syn.kind}' layer", where=f"layer '{neu.name}'",
                               hint="read out the current of a Linear layer")
    s = fx.readout_scale(w_eff, b, T, wmax)
    q, raw = fx.round_weights(w_eff, s, wmax)
    q = q.astype(np.int64)
    n_clipped = int(np.sum(raw != q))
    bias_v = fx.voltage_units(b, s) if b is not None else np.zeros(neu.out_shape)
    mant, exp, b_clipped = _bias(np.asarray(bias_v, np.float64).reshape(neu.out_shape))
    fixed = LoihiNeuron(du=fx.DECAY_MAX, dv=0, vth=fx.VTH_MAX, bias_mant=mant, bias_exp=exp)
    if isinstance(syn, Voting):
        q = np.array(int(q.reshape(-1)[0]), dtype=np.int64)
        max_in = int(q) * int(syn.voting_size)
    else:
        max_in = _max_input(q, syn)
    bias_max = float(np.max(np.abs(fx.effective_bias(mant, exp)))) if mant.size else 0.0
    reach = T * (max_in * (1 << fx.ACT_SHIFT) + bias_max)
    record = {"layer": neu.name, "synapse": syn.name, "scale": s, "vth": fx.VTH_MAX, "theta": None,
              "weight_bits": weight_bits, "weights_clipped": n_clipped, "weights_total": int(q.size),
              "bias_clipped": b_clipped, "dv": 0, "decay_error": 0.0, "max_input": max_in,
              "current_may_wrap": bool(max_in * (1 << fx.ACT_SHIFT) >= fx.MAX_STATE),
              "readout": {"value_unit": 64 * s, "window_reach": reach,
                          "never_fires": bool(reach <= fx.VTH_MAX << fx.VTH_SHIFT),
                          "rule": "a compartment that never fires: du=4095 (u = 64 a), dv=0 (v accumulates), "
                                  "vth=VTH_MAX; v read every step, value[t] = v[t]-v[t-1]; the scale is the "
                                  "largest keeping the weights in weight_bits and T steps of the largest input "
                                  "below 64*vth"},
              "threshold_rule": "none: a readout never fires (class = argmax of v at the end of the window)"}
    return q, fixed, record


def _neuron_after(graph, name: str, nodes) -> int:
    """Index in ``nodes`` of the neuron that ``name``'s current reaches (through Adds of currents)."""
    while not graph[name].is_neuron:
        (name,) = graph.consumers(name)
    return next(i for i, n in enumerate(nodes) if n.name == name)


def quantize(graph, weight_bits: int = fx.WEIGHT_BITS):
    """Attach ``qweight`` to synapses and ``fixed`` to neurons; record what was clipped."""
    if not 2 <= weight_bits <= fx.WEIGHT_BITS:
        raise QuantizationError(f"weight_bits={weight_bits}", where="weight_bits", hint="use 2..8")
    pairs = check_lowerable(graph)
    replaced, records = {}, []
    payload_into = _payload_consumers(graph)
    groups = neuron_groups(pairs)
    for syn, neu in pairs:
        if len(groups[neu.name]) > 1:          # several synapse groups: one scale for the neuron
            if neu.name in replaced:
                continue
            extra = {}
            if isinstance(neu, Threshold):
                qs, fixed, rec = _quantize_logic(groups[neu.name], neu, weight_bits)
            elif isinstance(neu, CubaLIF):
                qs, rq, qi, fixed, rec = quantize_cuba(groups[neu.name], neu, weight_bits)
                extra = {"rec_qweight": rq, "qi_bias": qi}
            elif isinstance(neu, (LIF, MALIF)) and any(o.name in payload_into for o in groups[neu.name]):
                fed = [i for i, o in enumerate(groups[neu.name]) if o.name in payload_into]
                if len(fed) > 1:
                    raise UnsupportedLayer(f"{len(fed)} synapse groups of one neuron read graded spike payloads",
                                           where=f"layer '{neu.name}'", hint="one attention map per neuron is supported")
                k = fed[0]
                qs, fixed, rec, pay = _payload_into_groups(groups[neu.name], k, neu,
                                                           payload_into[groups[neu.name][k].name], weight_bits,
                                                           int(graph.meta["timesteps"]))
                replaced[pay.name] = pay
            elif isinstance(neu, (LIF, MALIF)):
                qs, fixed, rec = _quantize_lif_groups(groups[neu.name], neu, weight_bits)
            else:
                raise UnsupportedLayer(f"a {neu.kind} fed by several synapse groups", where=f"layer '{neu.name}'",
                                       hint="sum synapse groups into a LIF/IF, CUBA or MA-SNN neuron")
            for o, q in zip(groups[neu.name], qs):
                replaced[o.name] = o.replace(qweight=q)
            replaced[neu.name] = neu.replace(fixed=fixed, **extra)
            records.append(rec)
            continue
        if isinstance(neu, Threshold):
            q, fixed, rec = _quantize_or(syn, neu)
        elif isinstance(neu, Readout):
            q, fixed, rec = _quantize_readout(syn, neu, weight_bits, int(graph.meta["timesteps"]))
        elif isinstance(neu, CubaLIF):
            (q,), rq, qi, fixed, rec = quantize_cuba([syn], neu, weight_bits)
            replaced[syn.name] = syn.replace(qweight=q)
            replaced[neu.name] = neu.replace(fixed=fixed, rec_qweight=rq, qi_bias=qi)
            records.append(rec)
            continue
        else:
            q, fixed, rec = _quantize_lif(syn, neu, weight_bits, gain_table=syn.name not in payload_into)
            if syn.name in payload_into:
                fixed, rec, pay = _payload_voltage_scale(syn, neu, q, fixed, rec, payload_into[syn.name],
                                                         weight_bits, int(graph.meta["timesteps"]))
                replaced[pay.name] = pay
        replaced[syn.name] = syn.replace(qweight=q)
        replaced[neu.name] = neu.replace(fixed=fixed)
        records.append(rec)
    nodes = [replaced.get(n.name, n) for n in graph]
    for k, n in enumerate(nodes):   # dynamic attention: per-sample gains from the attention process
        if isinstance(n, MAAttention):
            at = k + 1 if graph.is_chain() else _neuron_after(graph, n.name, nodes)
            neu = nodes[at]
            rec = next(r for r in records if r["layer"] == neu.name)
            if n.additive and isinstance(rec["scale"], list):
                raise UnsupportedLayer("PFA's additive attention into an MA-SNN cell with per-channel thresholds",
                                       where=f"layer '{neu.name}'", hint="compile with --attention static")
            # the integer current is 64 * s * (the LIF's input factor, 1/tau when it decays its input) * x;
            # one scale per channel for an MA-SNN cell with per-channel thresholds
            w_gain = fx.input_weight_gain(neu.tau, neu.decay_input) if isinstance(neu, LIF) else 1.0
            x_scale = (tuple(float((1 << fx.ACT_SHIFT) * sc) for sc in rec["scale"]) if isinstance(rec["scale"], list)
                       else float((1 << fx.ACT_SHIFT) * rec["scale"] * w_gain))
            nodes[k] = n.replace(x_scale=x_scale)
            nodes[at] = neu.replace(fixed=dataclasses.replace(neu.fixed, dynamic_gain=True, gain_shift=12,
                                                                 rectify=n.rectify, gain_on_bias=True))
            rec["attention"] = ("dynamic: per-sample offsets (PFA's relu(A + x)), sigmoid by lookup table"
                                if n.additive else "dynamic: per-sample gains, 12-bit, sigmoid by lookup table")
        if isinstance(n, SpikeAttention):   # graded payloads: the consumer divides its input by 2**8
            if graph.is_chain():
                j = next(m for m in range(k + 1, len(nodes)) if nodes[m].is_synapse) + 1
            else:                           # the one synapse it feeds, and that synapse's neuron
                j = _neuron_after(graph, graph.consumers(n.name)[0], nodes)
            neu = nodes[j]
            if dataclasses.replace(neu.fixed, plain_bias=None).gain_scheduled:
                raise UnsupportedLayer("a neuron fed by dynamic spike attention cannot carry other gains",
                                       where=f"layer '{neu.name}'")
            T = int(graph.meta["timesteps"])
            nodes[j] = neu.replace(fixed=dataclasses.replace(
                neu.fixed, gain_mant=np.ones((T,) + tuple(neu.out_shape), np.int64), gain_shift=8))
            rec = next(r for r in records if r["layer"] == neu.name)
            rec["attention"] = "dynamic: 8-bit graded spike payloads from the attention gate"
            rec["max_input"] *= 255
            rec["current_may_wrap"] = bool(rec["max_input"] * (1 << fx.ACT_SHIFT) >= fx.MAX_STATE)
    summary = {"layers": records, "weight_bits": weight_bits,
               "weights_clipped": sum(r["weights_clipped"] for r in records),
               "bias_clipped": sum(r["bias_clipped"] for r in records),
               "layers_that_may_wrap": [r["layer"] for r in records if r["current_may_wrap"]]}
    return with_record(graph, "quantize", summary, nodes)
