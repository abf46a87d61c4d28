"""The number formats: how the quantizer turns float quantities into Loihi's integers.

Bias mantissa/exponent, gain mantissa and shift, threshold and weight scale, weight rounding, decays
and graded spike payloads, written once. The quantize passes (``neurocomp.passes.quantize``,
``quantize_cuba``) call them on numpy arrays and fine-tuning's fake quantization
(``neurocomp.training.finetune``) on torch tensors; those marked "numpy or torch" use only operators
and methods both share, so the two give the same integers.
"""
from __future__ import annotations

import math

import numpy as np

from neurocomp.fixedpoint.loihi import BIAS_EXP_MAX, BIAS_MANT_MAX, BIAS_MANT_MIN, DECAY_MAX, DECAY_UNITY, MAX_STATE, VTH_MAX, _is_torch

GAIN_SHIFT_MAX = 16                          # largest right shift of a gain mantissa
PAYLOAD_BITS = 8                             # graded spike payloads: unsigned, at most 8 bits


def weight_max(weight_bits: int) -> int:
    """Largest integer weight of ``weight_bits`` signed bits (the smallest is ``-weight_max - 1``)."""
    return (1 << (weight_bits - 1)) - 1


def voltage_units(x, s: float):
    """``64 * s * x``: a float membrane quantity (bias, current) in Lava's voltage units for the
    layer's weight scale ``s`` (numpy or torch)."""
    return 64.0 * s * x


def round_weights(w_eff, s: float, wmax: int):
    """Integer weights ``clip(round(s * w_eff), -wmax - 1, wmax)`` (numpy or torch, half to even).
    Returns ``(q, raw)``, both floats of integer value (the caller casts); ``raw != q`` where clipped."""
    raw = (w_eff * s).round()
    return raw.clip(-wmax - 1, wmax), raw


def _select(cond, a, b):
    """``a`` where ``cond``, else ``b`` (numpy arrays or torch tensors)."""
    return a.where(cond, b) if _is_torch(cond) else np.where(cond, a, b)


def bias_mant_exp(bias_v):
    """Loihi's voltage bias ``mant * 2**exp`` (13-bit signed mantissa, 3-bit exponent) of a bias in
    voltage units (numpy or torch floats): per value, the smallest exponent whose rounded mantissa
    fits 13 bits; a value beyond ``2**12 * 2**7`` is clipped to the mantissa range at exponent 7.
    Returns ``(mant, exp, clipped count)``, mantissa and exponent as floats of integer value."""
    m = (bias_v / (1 << BIAS_EXP_MAX)).round()
    fits = (m >= BIAS_MANT_MIN) & (m <= BIAS_MANT_MAX)
    clipped = int((~fits).sum())
    mant, exp = m.clip(BIAS_MANT_MIN, BIAS_MANT_MAX), m * 0 + BIAS_EXP_MAX
    for e in range(BIAS_EXP_MAX - 1, -1, -1):    # the smallest exponent that fits is written last
        m = (bias_v / (1 << e)).round()
        fits = (m >= BIAS_MANT_MIN) & (m <= BIAS_MANT_MAX)
        mant, exp = _select(fits, m, mant), exp - (exp - e) * fits
    return mant, exp, clipped


def gain_shift(gmax: float) -> int:
    """Right shift of a gain table whose maximum is ``gmax > 0``: the largest (<= 16) keeping every
    mantissa within 12 bits (``gmax * 2**shift <= 4095``)."""
    return int(min(GAIN_SHIFT_MAX, max(0, math.floor(math.log2(DECAY_MAX / gmax)))))


def gain_mantissa(g):
    """A non-negative gain table (numpy or torch floats, positive maximum) as ``gain = mant / 2**shift``.
    Returns ``(mant, shift)``, the mantissas as floats of integer value."""
    shift = gain_shift(float(g.max()))
    m = g * (1 << shift)
    return (np.round(m, out=m) if isinstance(m, np.ndarray) else m.round()), shift   # numpy: rounded in place


def lif_theta(v_threshold: float, v_reset: float | None = 0.0) -> float:
    """The threshold distance the weight scale maps: ``v_threshold - v_reset`` (the hard reset is
    shifted to 0; an MA-SNN cell, which resets to its threshold, counts ``v_reset`` 0)."""
    return float(v_threshold) - (0.0 if v_reset is None else float(v_reset))


def input_weight_gain(tau: float | None, decay_input: bool) -> float:
    """The factor a LIF applies to its input current: ``1/tau`` for a decay-input LIF, else 1 (IF,
    LIF without input decay, MA-SNN cell). The quantizer scales the weights and bias by it."""
    return 1.0 / float(tau) if (tau is not None and decay_input) else 1.0


def lif_scale(vth: int, theta: float) -> float:
    """The LIF weight scale ``s = (vth + 1/64) / theta``: the float threshold ``theta`` (fire on
    ``>=``) lands exactly on Lava's boundary ``v > 64 * vth`` (``64 s theta = 64 vth + 1``)."""
    return (vth + 1.0 / 64) / theta


def choose_vth(w_eff: np.ndarray, theta: float, wmax: int) -> int:
    """The LIF threshold mantissa for effective weights ``w_eff`` (numpy) and threshold ``theta``:
    among the top quarter of the thresholds whose scale :func:`lif_scale` keeps every weight within
    ``wmax``, the one with the smallest weight-rounding error."""
    m = float(np.max(np.abs(w_eff))) if w_eff.size else 0.0
    if m == 0.0:
        return max(0, min(VTH_MAX, int(math.floor(wmax * theta))))
    s_max = (wmax + 0.5 - 1e-9) / m
    vth_max = int(math.floor(s_max * theta - 1.0 / 64))
    vth_max = min(vth_max, VTH_MAX)
    if vth_max <= 0:
        return 0
    lo = max(0, int(math.ceil(0.75 * vth_max)))
    candidates = np.unique(np.linspace(lo, vth_max, num=min(64, vth_max - lo + 1)).round().astype(int))
    w64 = np.asarray(w_eff, np.float64).ravel()
    scales = [(vth + 1.0 / 64) / theta for vth in candidates[::-1]]     # numpy floats, as the plain loop had them
    best, best_err = vth_max, None
    for vth, s, total in zip(candidates[::-1], scales, _rounding_error_sums(w64, scales)):
        err = float(total) / s ** 2
        if best_err is None or err < best_err - 1e-15:
            best, best_err = int(vth), err
    return best


def _rounding_error_sums(w64: np.ndarray, scales):
    """``[np.sum((w64 * s - np.round(w64 * s)) ** 2) for s in scales]``, the same float64 values, cache-sized.

    ``np.sum`` of a long contiguous float64 vector adds the pairwise sums of consecutive blocks (numpy's
    buffer size) one after the other; so here every scale's squared rounding errors are made block by
    block, eight scales of a block together in a buffer the cache holds, and summed in that order, instead
    of four passes over the whole layer per scale. Used only where :func:`_sum_block` found that order."""
    block = _sum_block()
    if block is None or w64.size <= block or len(scales) < 2:
        return _plain_sums(w64, scales)
    out = []
    for k in range(0, len(scales), _ROWS):    # 8 scales x one block, twice: about 1 MB (measured fastest)
        out += _blocked_sums(w64, scales[k:k + _ROWS], block)
    return out


_ROWS = 8


def _plain_sums(w64, scales):
    t, r = np.empty_like(w64), np.empty_like(w64)
    out = []
    for s in scales:                        # np.sum((w64 * s - np.round(w64 * s)) ** 2), in place
        np.multiply(w64, s, out=t)
        np.round(t, out=r)
        np.subtract(t, r, out=t)
        np.square(t, out=t)
        out.append(np.sum(t))
    return out


def _blocked_sums(w64, scales, block: int):
    col = np.asarray(scales, np.float64)[:, None]
    t, r = np.empty((len(scales), block)), np.empty((len(scales), block))
    totals = np.zeros(len(scales))
    for i in range(0, w64.size, block):
        part = w64[i:i + block]
        tt, rr = t[:, :part.size], r[:, :part.size]
        np.multiply(col, part[None, :], out=tt)
        np.round(tt, out=rr)
        np.subtract(tt, rr, out=tt)
        np.square(tt, out=tt)
        totals += tt.sum(axis=1)
    return list(totals)


_BLOCK = []


def _sum_block():
    """numpy's buffer size when :func:`_blocked_sums` gives exactly :func:`_plain_sums` with it (checked
    once, on vectors of a few blocks and a partial one), else None (then the sums are made plainly)."""
    if not _BLOCK:
        block = int(np.getbufsize())
        rng = np.random.default_rng(16)
        scales = [1.0 / 3, 2.71, 97.5]
        ok = all([float(a) for a in _blocked_sums(w, scales, block)] == [float(a) for a in _plain_sums(w, scales)]
                 for w in (rng.standard_normal(3 * block + 77) * 40, rng.random(2 * block) ** 8 * 1e3))
        _BLOCK.append(block if ok else None)
    return _BLOCK[0]


def cuba_scale(m: float, theta: float, wmax: int, spiking: bool):
    """``(vth, s)`` of a CUBA layer whose largest effective weight is ``m``: spiking, the largest
    ``vth`` keeping every weight within ``wmax`` and ``s = vth / theta`` (fire on ``>``, mapped
    exactly); a readout ``s = wmax / m`` and no threshold."""
    if not spiking:
        return 0, (wmax / m) if m > 0 else 1.0
    vth = VTH_MAX if m == 0.0 else int(math.floor(wmax * theta / m))
    vth = max(1, min(vth, VTH_MAX))
    return vth, vth / theta


def readout_scale(w_eff: np.ndarray, b_eff, timesteps: int, wmax: int) -> float:
    """The weight scale ``s`` of a non-firing readout (``Readout``: ``du = 4095``, ``dv = 0``, ``vth =
    VTH_MAX``): no threshold to scale against, so the largest ``s`` that keeps every weight within
    ``wmax`` (``s = wmax / max|w|``, as a CUBA readout's), lowered where needed so that no neuron's
    voltage can leave Lava's range over a window: ``T * (64 * sum|round(s w)| + |64 s b|)`` at most
    ``64 * VTH_MAX`` (below the firing boundary ``v > 64 * vth`` and the 24-bit saturation), whatever
    the input spikes. ``w_eff`` (numpy) is ``(out, in)``; ``b_eff`` a per-output bias or None."""
    w = np.abs(np.asarray(w_eff, np.float64)).reshape(np.shape(w_eff)[0], -1)
    b = np.zeros(w.shape[0]) if b_eff is None else np.abs(np.asarray(b_eff, np.float64)).reshape(-1)
    m = float(w.max()) if w.size else 0.0
    s = wmax / m if m > 0 else (1.0 if not np.any(b) else wmax / float(b.max()))
    limit = float(VTH_MAX << 6)

    def reach(scale):
        q = np.minimum(np.round(w * scale), wmax + 1)
        return timesteps * float(np.max(64.0 * q.sum(1) + 64.0 * scale * b)) if q.size else 0.0
    for _ in range(64):            # shrink until the worst case fits (rounding can need a second step)
        r = reach(s)
        if r <= limit:
            break
        s = s * min(0.999, limit / r)
    return s


def lif_dv(tau: float) -> int:
    """Voltage decay of a LIF with time constant ``tau``: ``round(4096 / tau)`` within 0..4095."""
    return min(max(int(round(DECAY_UNITY / tau)), 0), DECAY_MAX)


def ma_dv(alpha: float) -> int:
    """Voltage decay of an MA-SNN cell keeping ``alpha`` per step: ``round(4096 (1 - alpha))`` within 0..4095."""
    return min(max(int(round(DECAY_UNITY * (1.0 - alpha))), 0), DECAY_MAX)


def cuba_du(alpha: float) -> int:
    """Current decay of a CUBA neuron keeping ``alpha``: ``round(4096 (1 - alpha)) - 1`` within 0..4095."""
    return int(min(max(round(DECAY_UNITY * (1.0 - alpha)) - 1, 0), DECAY_MAX))


def cuba_dv(beta: float) -> int:
    """Voltage decay of a CUBA neuron keeping ``beta``: ``round(4096 (1 - beta))`` within 0..4096."""
    return int(min(max(round(DECAY_UNITY * (1.0 - beta)), 0), DECAY_UNITY))


def quantize_payload(scale: np.ndarray, bits: int = PAYLOAD_BITS):
    """Graded spike payloads ``scale ~ qscale / 2**shift``: the largest shift (<= 24) whose rounded
    maximum fits ``bits`` unsigned bits. Returns ``(qscale int64, shift)``; None if the scale is not
    non-negative with a positive maximum."""
    b = np.asarray(scale, np.float64)
    top = float(np.max(b)) if b.size else 0.0
    if not top > 0 or float(np.min(b)) < -1e-6 * top:
        return None
    pmax = (1 << bits) - 1
    shift = 0
    while shift < 24 and round(top * (1 << (shift + 1))) <= pmax:
        shift += 1
    while shift > 0 and round(top * (1 << shift)) > pmax:
        shift -= 1
    q = np.clip(np.round(b * (1 << shift)), 0, pmax).astype(np.int64)
    return q, shift


def payload_bits_for(max_input: int) -> int:
    """Payload bits (<= 8) such that every synaptic sum, ``max_input * (2**bits - 1)``, stays below 2**24,
    where Lava's Conv (a float32 convolution of integers) is exact; a sum above 2**23 would wrap at 24 bits
    in Lava and in the reference alike (``current_may_wrap``)."""
    bits = PAYLOAD_BITS
    while bits > 1 and max_input * ((1 << bits) - 1) >= 2 * MAX_STATE:
        bits -= 1
    return bits
