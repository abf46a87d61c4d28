"""Loihi fixed-point arithmetic, in exactly one place.

These functions mirror Lava's bit-accurate models (``PyLifModelBitAcc``/``PyLifResetModelBitAcc``,
``PyDenseModelBitAcc``, ``PyConvModelFixed``; lava-nc 0.10). They use only Python operators, so
the same code runs on numpy int64 arrays (custom Lava process models) and on torch int64 tensors
(the batched reference simulator).
"""
from __future__ import annotations

DECAY_SHIFT = 12
DECAY_UNITY = 1 << DECAY_SHIFT      # 4096
ACT_SHIFT = 6                       # a_in is added as a * 2**6
VTH_SHIFT = 6                       # vth is compared as vth * 2**6
STATE_BITS = 24
MAX_STATE = 1 << (STATE_BITS - 1)   # 2**23
WEIGHT_BITS = 8
WEIGHT_MAX = (1 << (WEIGHT_BITS - 1)) - 1    # 127
WEIGHT_MIN = -(1 << (WEIGHT_BITS - 1))       # -128
DECAY_MAX = DECAY_UNITY - 1                  # 12-bit du, dv
VTH_MAX = (1 << 17) - 1                      # 17-bit threshold mantissa
BIAS_MANT_MAX = (1 << 12) - 1                # 13-bit signed mantissa
BIAS_MANT_MIN = -(1 << 12)
BIAS_EXP_MAX = 7                             # 3-bit exponent


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


def trunc_decay(x, keep):
    """``sign(x) * (|x| * keep >> 12)``: Loihi's decay, truncating toward zero. ``keep`` is an int or
    an integer array broadcasting against ``x`` (a decay per neuron)."""
    if isinstance(keep, int) and keep == 0:
        return x * 0
    if isinstance(keep, int) and keep == DECAY_UNITY:
        return x
    y = x * keep
    if _is_torch(y):   # the same truncating division, in one kernel
        return y.div(DECAY_UNITY, rounding_mode="trunc")
    q = abs(y) >> DECAY_SHIFT
    return q - 2 * q * (y < 0)


INT32_LIMIT = 1 << 31


def wrap_int32(x):
    """Two's-complement int32 wrap of integers held wider (int64): what Lava's stock LIF model does
    silently, its state and input being numpy int32 (``a_in << 6`` and the ``u``/``v`` sums wrap there).
    Identity unless some value lies outside int32 (the common case costs one max)."""
    if _is_torch(x) and (not x.numel() or int(x.abs().max()) < INT32_LIMIT):
        return x
    return (x + INT32_LIMIT) % (2 * INT32_LIMIT) - INT32_LIMIT


def wrap_state(x):
    """Wrap a current into 24-bit two's complement the way Lava does (u > 2**23 or u <= -2**23)."""
    if _is_torch(x) and x.numel() and int(x.abs().max()) < MAX_STATE:
        return x
    return x - 2 * MAX_STATE * (x > MAX_STATE) + 2 * MAX_STATE * (x <= -MAX_STATE)


def clip_voltage(x, xp_clip):
    """Saturate a voltage to +-(2**23 - 1); ``xp_clip`` is ``numpy.clip`` or ``torch.clamp``."""
    return xp_clip(x, -(MAX_STATE - 1), MAX_STATE - 1)


def effective_bias(bias_mant, bias_exp):
    """``bias_mant * 2**bias_exp`` (exponents are non-negative in neurocomp's output)."""
    return bias_mant * (1 << bias_exp) if isinstance(bias_exp, int) else bias_mant * (2 ** bias_exp)


def lif_step(u, v, a, du, dv, bias, vth, xp_clip, counts=None):
    """One step of Loihi's CUBA LIF. ``a`` is the synaptic input (weight units), ``bias`` the
    effective bias (voltage units), ``vth`` the 17-bit mantissa. Returns ``(u, v, s)`` with
    ``s`` boolean and ``v`` already reset where it spiked. With a ``counts`` dict, the number of
    current wraps and voltage saturations of this step are added to it.

    Lava's model computes in int32 (``PyLifResetModelBitAcc``: ``a_in << 6`` added to the decayed
    current, then ``decayed_volt + u + bias``), so a synaptic input of 2**25 or more wraps there before
    the 24-bit current wrap; :func:`wrap_int32` does the same here (no effect below that)."""
    u_raw = trunc_decay(u, DECAY_UNITY - (du + 1)) + a * (1 << ACT_SHIFT)
    u = wrap_state(wrap_int32(u_raw))
    v_raw = trunc_decay(v, DECAY_UNITY - dv) + u + bias
    v = clip_voltage(wrap_int32(v_raw), xp_clip)
    if counts is not None:
        counts["current_wraps"] = counts.get("current_wraps", 0) + int((u != u_raw).sum())
        counts["voltage_saturations"] = counts.get("voltage_saturations", 0) + int((v != v_raw).sum())
    s = v > (vth << VTH_SHIFT)
    v = v * (~s)
    return u, v, s


def wrap_synaptic(x):
    """Conv output wrap to 24 bits (``PyConvModelFixed.clamp_precision``)."""
    if _is_torch(x) and x.numel() and int(x.abs().max()) < MAX_STATE:
        return x
    return ((x + MAX_STATE) % (2 * MAX_STATE)) - MAX_STATE


def dense_lava_weights(w8):
    """Integer weights in [-128, 127] as Lava Dense expects them to stay exact: ``(2*w8, weight_exp=-1)``.

    Lava's bit-accurate Dense drops the lowest bit of mixed-sign weights; doubled weights are even,
    so nothing is lost, and the -1 exponent halves the (even) sum exactly.
    """
    return 2 * w8, -1


def dense_lava_sum(y, graded: bool):
    """The synaptic input Lava's bit-accurate Dense delivers for the integer sums ``y`` of the weights
    ``w8`` (emitted as ``dense_lava_weights``: ``2*w8`` with ``weight_exp = -1``).

    Graded inputs (payloads) meet the weights in a numpy int32 dot product, which wraps at 2**31 before
    the halving; spikes are summed in int64 and the halved sum is cast into the int32 output channel.
    Identity unless a sum leaves int32 (a Dense of more than 2**30 / (127 * 255) graded inputs)."""
    return wrap_int32(2 * y) // 2 if graded else wrap_int32(y)


def cuba_step(u, v, a, du, dv, v_bias, i_bias, vth, subtract, spiking, xp_clip):
    """One step of neurocomp's CUBA neuron (``CubaLIF``; Lava process ``neurocomp.backends.lava.cuba``).

    As :func:`lif_step` plus a per-neuron current bias ``i_bias`` (u units), ``dv`` up to 4096
    (4096: no voltage memory), reset by subtraction of ``vth * 2**6`` when ``subtract``, and no
    spikes at all when not ``spiking`` (a readout whose ``v`` is read)."""
    u = wrap_state(trunc_decay(u, DECAY_UNITY - (du + 1)) + a * (1 << ACT_SHIFT) + i_bias)
    v = clip_voltage(trunc_decay(v, DECAY_UNITY - dv) + u + v_bias, xp_clip)
    theta = vth << VTH_SHIFT
    s = (v > theta) if spiking else (v != v)
    v = v - s * theta if subtract else v * (~s)
    return u, v, s


def trunc_shift(x, shift: int):
    """``sign(x) * (|x| >> shift)``: a right shift truncating toward zero."""
    q = abs(x) >> shift
    return q - 2 * q * (x < 0)


def window_step_bias(step_bias, t: int):
    """The step bias ``gain_lif_step`` takes at step ``t`` of a sample window: none at ``t = 0`` (MA-SNN's
    ``h_0 = 0`` has no ``beta``; from ``t = 1`` on, ``h = alpha*u' + beta``), else ``step_bias`` (may be None)."""
    return None if step_bias is None or t == 0 else step_bias


def group_gain_input(a, bias, gain_t, gain_shift: int, rectify: bool):
    """One further gained synapse group's input in voltage units: ``(a * 2**6 + bias)``, rectified if asked,
    times the step's gain mantissa, shifted right by ``gain_shift`` (truncating toward zero) -- what
    :func:`gain_lif_step` does to its first gained group with ``gain_on_bias``. Callers add it as ``gained_t``."""
    x = a * (1 << ACT_SHIFT) + bias
    if rectify:
        x = x * (x > 0)
    return trunc_shift(x * gain_t, gain_shift)


def gain_lif_step(v, a, bias, gain_t, gain_shift, dv, vth, v_reset, rectify, gain_on_bias, xp_clip, offset_t=None,
                  step_bias_t=None, plain_a=None, plain_bias=None, gained_t=None):
    """One step of neurocomp's gain-scheduled LIF (attention as membrane-potential scaling).

    The input current ``x = a * 2**6`` (plus the bias when the gain covers it) is rectified if
    asked, multiplied by the step's gain mantissa and shifted right by ``gain_shift`` (truncating
    toward zero); the voltage then integrates like Loihi's LIF with no current memory
    (``du = 4095``). After a spike the voltage is set to ``v_reset`` (0, or MA-SNN's threshold).
    ``dv`` is an int or an integer array per neuron (MA-SNN cells with a leak per channel).
    ``gain_t`` may be None (gain 1). ``offset_t`` (voltage units, or None) is the step's additive map
    (PFA's additive variant), added with the bias before the ReLU (the neuron's gain covers its bias).
    ``step_bias_t`` (voltage units per neuron, or None) is added to the decayed voltage, outside gain and
    ReLU: MA-SNN's ``beta``, which callers pass at every step but a window's first (:func:`window_step_bias`).
    ``plain_a`` (weight units, or None) is the input of the synapse groups the gain does not cover (a shortcut
    beside an attention-scaled branch), added as ``plain_a * 2**6 + plain_bias`` after the gain, unrectified;
    ``gained_t`` (voltage units, or None) the sum of further gained groups (:func:`group_gain_input`).
    Returns ``(v, s)``.
    """
    x = a * (1 << ACT_SHIFT)
    if gain_on_bias:
        x = x + bias
    if offset_t is not None:
        x = x + offset_t
    if rectify:
        x = x * (x > 0)
    if gain_t is not None:
        x = trunc_shift(x * gain_t, gain_shift)
    if not gain_on_bias:
        x = x + bias
    if plain_a is not None:
        x = x + plain_a * (1 << ACT_SHIFT) + plain_bias
    if gained_t is not None:
        x = x + gained_t
    v = trunc_decay(v, DECAY_UNITY - dv)
    if step_bias_t is not None:
        v = v + step_bias_t
    v = clip_voltage(v + x, xp_clip)
    s = v > (vth << VTH_SHIFT)
    v = v * (~s) + v_reset * s
    return v, s

