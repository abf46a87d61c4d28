"""A Loihi compartment's voltage over a whole window, in floats that hold every value exactly.

The arithmetic is ``neurocomp.fixedpoint``'s (``lif_step`` with ``du = 4095``, no current memory, and
``gain_lif_step``); this module evaluates it fast, for the reference simulator. Each step there is

    v = clip(trunc_decay(v, 4096 - dv) + w[t]);   s = v > theta;   v = v_reset where s

where ``w[t]``, the step's input in voltage units, depends on the inputs only (``64 a + bias`` for a
stock LIF, the gained input for a gain-scheduled one). So ``w[t]`` is computed in a few vectorised
operations and the recurrence is five in-place operations per step (decay, add, compare, reset, and a
min/max when a saturation is possible), instead of the integer expression's twenty-odd.

Exactness: every value is an integer and every operation is exact in the float type chosen, by bounds
computed before the walk (:func:`window_bounds`) from the largest ``|w|`` (measured on the data) and the
decay: with ``|v| <= P`` after a step, ``|trunc(v * k / 4096)| <= floor(k P / 4096)``, and the voltage
before the clip is at most that plus ``max |w|``. float32 holds every integer below 2**24 and
``v * (k / 4096)`` exactly when ``|v| * odd(k) < 2**24`` (``odd(k)``: ``k`` without its factors 2);
float64 the same below 2**53. ``trunc`` of an exact product is the truncating division
``trunc_decay`` computes; ``v > theta`` and the reset compare and write integers. When the bound says the
voltage stays within ``+-(2**23 - 1)``, the clip is provably the identity and is skipped (no saturation
can be counted); otherwise each step's min/max decides, and the saturated neurons are counted and
clipped as ``clip_voltage`` does. A layer whose bounds fit neither type returns None: the caller runs the
integer expression step by step (``sim.fixed_ops``). ``tests/test_voltage.py`` checks both agree.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from neurocomp import fixedpoint as fx

CLIP = fx.MAX_STATE - 1                 # clip_voltage's bound
EXACT = {torch.float32: 1 << 24, torch.float64: 1 << 53}


def keep(dv):
    """``4096 - dv``: the factor (over 4096) ``trunc_decay`` keeps; an int, or an int64 array per neuron."""
    if isinstance(dv, np.ndarray) and dv.size > 1:
        return fx.DECAY_UNITY - dv.astype(np.int64)
    return fx.DECAY_UNITY - int(np.asarray(dv).reshape(-1)[0])


def _kmax(k) -> int:
    return int(np.max(k)) if isinstance(k, np.ndarray) else int(k)


def _power_of_two(k) -> bool:
    return not isinstance(k, np.ndarray) and k > 0 and k & (k - 1) == 0


def window_bounds(wmax: int, k, T: int, v_reset: int) -> tuple:
    """``(raw, post, clips)`` over ``T`` steps of a window: bounds on ``|v|`` before the clip and after the
    step (clip and reset), and whether a clip can happen at all; ``wmax`` bounds ``|w[t]|`` and ``k`` is the
    kept decay (:func:`keep`). Python integers: exact."""
    kmax = _kmax(k)
    post = raw = 0
    reset = abs(int(v_reset))
    for _ in range(int(T)):
        r = (kmax * post) // fx.DECAY_UNITY + int(wmax)
        raw = max(raw, r)
        nxt = max(reset, min(r, CLIP))
        if nxt == post:
            break
        post = nxt
    return raw, max(post, reset), raw > CLIP


def memoryless(wmax: int, k, T: int, v_reset: int) -> bool:
    """Whether every decayed voltage of the window truncates to 0 (``floor(k P / 4096) = 0``)."""
    return (_kmax(k) * window_bounds(wmax, k, T, v_reset)[1]) // fx.DECAY_UNITY == 0


def window_dtype(wmax: int, k, T: int, v_reset: int, at_least=torch.float32):
    """The float type (float32 preferred, or ``at_least``) the window's recurrence is exact in, or None:
    every voltage below its limit, and the decay's product too (``v * k`` then a truncating division by
    4096; ``k`` a power of two: the division by ``4096 / k`` alone)."""
    raw, post, _ = window_bounds(wmax, k, T, v_reset)
    scalar = not isinstance(k, np.ndarray)
    product = post if scalar and (_power_of_two(k) or k in (0, fx.DECAY_UNITY)) else post * _kmax(k)
    for dt in (torch.float32, torch.float64):
        if EXACT[dt] < EXACT[at_least]:
            continue
        if raw < EXACT[dt] and product < EXACT[dt]:
            return dt
    return None


def run_window(T: int, like: torch.Tensor, feed, k, theta: int, v_reset: int, wmax: int, dtype,
               counts: dict | None = None) -> torch.Tensor:
    """Spikes ``bool [T, *like.shape]`` of the recurrence, exact in ``dtype`` (:func:`window_dtype`).

    The voltage is kept negated, ``n = -v`` (the decay truncates toward zero, so it commutes with the sign):
    then the reset is one ``threshold_`` (``n`` kept where ``n > -(theta + 1)``, i.e. ``v <= theta``; else
    ``-v_reset``) and the spike one ``lt``. ``feed(n, t)`` subtracts ``w[t]`` from ``n`` in place. With
    ``counts``, saturations are added to ``counts["voltage_saturations"]``."""
    raw, post, clips = window_bounds(wmax, k, T, v_reset)
    kmax = _kmax(k)
    still = memoryless(wmax, k, T, v_reset)
    mult = div = None
    if still or kmax == fx.DECAY_UNITY and not isinstance(k, np.ndarray):
        pass
    elif _power_of_two(k):
        div = fx.DECAY_UNITY // k            # one truncating division by a power of two: exact
    else:
        mult = torch.as_tensor(k, dtype=dtype, device=like.device) if isinstance(k, np.ndarray) else int(k)
        div = fx.DECAY_UNITY
    n = torch.zeros(like.shape, dtype=dtype, device=like.device)
    out = torch.empty((T,) + tuple(like.shape), dtype=torch.bool, device=like.device)
    saturated = 0
    for t in range(T):
        if still:
            n.zero_()
        else:
            if mult is not None:
                n.mul_(mult)
            if div is not None:
                n.div_(div, rounding_mode="trunc")
        feed(n, t)
        if clips:
            lo, hi = torch.aminmax(n)
            if float(lo) < -CLIP or float(hi) > CLIP:
                saturated += int(((n > CLIP) | (n < -CLIP)).sum())
                n.clamp_(-CLIP, CLIP)
        s = out[t]
        torch.lt(n, -theta, out=s)
        if not still:                        # (a voltage without memory starts again from 0)
            F.threshold_(n, -(theta + 1), -int(v_reset))
    if counts is not None:
        counts["voltage_saturations"] = counts.get("voltage_saturations", 0) + saturated
    return out


def amax(x) -> int:
    """``max |x|`` of an integer-valued tensor (or numpy array), as a Python int (0 when empty)."""
    if isinstance(x, np.ndarray):
        return int(np.abs(x.astype(np.int64)).max()) if x.size else 0
    if not x.numel():
        return 0
    if x.dtype == torch.bool:
        return int(bool(x.any()))
    lo, hi = torch.aminmax(x)
    return int(max(abs(lo.item()), abs(hi.item())))
