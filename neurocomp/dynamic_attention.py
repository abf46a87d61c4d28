"""Dynamic (per-sample) MA-SNN attention as the attention process computes it, in one place.

``--attention dynamic`` keeps MA-SNN's exact, per-sample maps: the synaptic current of the layer is
buffered for the whole window (Lava: a T-step delay line in front of the neuron), an attention
process computes TA, CA and SA from the window, and streams the resulting gain table into the
gain-scheduled neuron as the delayed current arrives. This module is that computation, in numpy
only, shared by the Lava process model (``backends/lava_dynamic.py``) and the reference simulator,
so the two agree bit for bit:

- the input is the neuron's integer input current in voltage units ``x = 64*a + bias`` divided by
  the layer's scale (``64*s``), i.e. the float current the module saw in training;
- the small MLPs and the 3x3 convolution run in float64 on that (they are tiny: 2T*T/r_t + 2C*C/r_c
  + 18 weights);
- every sigmoid goes through :data:`SIGMOID_LUT`, a 12-bit table over [-16, 16) in steps of 1/32,
  and the gains are 12-bit mantissas (shift 12): ``x1 = TA*x``, ``x2 = CA*x1``, ``x3 = SA*x2`` use the
  table's values, and the neuron's gain is the product of the three, rounded to 12 bits.
"""
from __future__ import annotations

import numpy as np

GAIN_SHIFT = 12
LUT_STEP = 32            # entries per unit of the sigmoid's argument
LUT_RANGE = 16           # the table covers [-16, 16)
SIGMOID_LUT = np.clip(np.round((1 << GAIN_SHIFT) / (1.0 + np.exp(-np.arange(-LUT_RANGE * LUT_STEP, LUT_RANGE * LUT_STEP)
                                                                 / LUT_STEP))), 0, (1 << GAIN_SHIFT) - 1).astype(np.int64)


def sigmoid_lut(z: np.ndarray) -> np.ndarray:
    """12-bit sigmoid mantissa of ``z`` (float), by table lookup (round to the nearest 1/32)."""
    idx = np.clip(np.round(np.asarray(z, np.float64) * LUT_STEP).astype(np.int64) + LUT_RANGE * LUT_STEP,
                  0, 2 * LUT_RANGE * LUT_STEP - 1)
    return SIGMOID_LUT[idx]


def _mlp(z: np.ndarray, w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """``w2 @ relu(w1 @ z)`` over the last axis of ``z``."""
    return np.maximum(z @ w1.T, 0.0) @ w2.T


def _conv3x3(p: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``p`` [B, 2, H, W], kernel ``k`` [1, 2, kh, kw] (cross-correlation, zero 'same' padding)."""
    B, _, H, W = p.shape
    kh, kw = k.shape[2:]
    ph, pw = kh // 2, kw // 2
    padded = np.zeros((B, 2, H + 2 * ph, W + 2 * pw))
    padded[:, :, ph:ph + H, pw:pw + W] = p
    out = np.zeros((B, H, W))
    for a in range(kh):
        for b in range(kw):
            out += np.einsum("bchw,c->bhw", padded[:, :, a:a + H, b:b + W], k[0, :, a, b])
    return out


def ma_params(state: dict, parts: str) -> dict:
    """Flatten the module's weights (official state-dict names) into 2-D matrices / the SA kernel."""
    p = {}
    if "T" in parts:
        p["ta_w1"] = np.asarray(state["ta.sharedMLP.0.weight"], np.float64).reshape(
            np.asarray(state["ta.sharedMLP.0.weight"]).shape[0], -1)
        p["ta_w2"] = np.asarray(state["ta.sharedMLP.2.weight"], np.float64).reshape(
            np.asarray(state["ta.sharedMLP.2.weight"]).shape[0], -1)
    if "C" in parts:
        p["ca_w1"] = np.asarray(state["ca.sharedMLP.0.weight"], np.float64).reshape(
            np.asarray(state["ca.sharedMLP.0.weight"]).shape[0], -1)
        p["ca_w2"] = np.asarray(state["ca.sharedMLP.2.weight"], np.float64).reshape(
            np.asarray(state["ca.sharedMLP.2.weight"]).shape[0], -1)
    if "S" in parts:
        p["sa_w"] = np.asarray(state["sa.conv.weight"], np.float64)
    return p


def ma_gains(x: np.ndarray, params: dict, parts: str) -> np.ndarray:
    """Gain mantissas (shift 12) ``[B, T, *shape]`` for a window of currents ``x`` ``[B, T, *shape]``."""
    x = np.asarray(x, np.float64)
    B, T = x.shape[:2]
    one = 1 << GAIN_SHIFT
    total = np.full(x.shape, one, dtype=np.int64)
    cur = x
    if "T" in parts:
        flat = cur.reshape(B, T, -1)
        ta = sigmoid_lut(_mlp(flat.mean(-1), params["ta_w1"], params["ta_w2"])
                         + _mlp(flat.max(-1), params["ta_w1"], params["ta_w2"]))          # [B, T]
        ta = ta.reshape((B, T) + (1,) * (x.ndim - 2))
        cur = cur * (ta / one)
        total = (total * ta) >> GAIN_SHIFT
    if "C" in parts:
        per_c = np.moveaxis(cur, 2, 1).reshape(B, cur.shape[2], -1)                       # [B, C, T*H*W]
        ca = sigmoid_lut(_mlp(per_c.mean(-1), params["ca_w1"], params["ca_w2"])
                         + _mlp(per_c.max(-1), params["ca_w1"], params["ca_w2"]))          # [B, C]
        ca = ca.reshape(B, 1, -1, *([1] * (x.ndim - 3)))
        cur = cur * (ca / one)
        total = (total * ca) >> GAIN_SHIFT
    if "S" in parts:
        merged = cur.reshape(B, -1, *cur.shape[3:])                                        # [B, T*C, H, W]
        pooled = np.stack([merged.mean(1), merged.max(1)], axis=1)
        sa = sigmoid_lut(_conv3x3(pooled, params["sa_w"]))[:, None, None]                  # [B, 1, 1, H, W]
        total = (total * sa) >> GAIN_SHIFT
    return total


def ma_cost(shape, T: int, params: dict, parts: str) -> dict:
    """Operations and bits the attention process spends per inference (one sample window).

    Counted as in :func:`ma_gains`: pooling (one add or compare per element and statistic), MLP and
    convolution multiply-accumulates, sigmoid table lookups, map multiplies; bits moved: the window
    of 24-bit currents in, the 12-bit gain table out.
    """
    n = int(np.prod(shape))                 # neurons per step
    ops = {"pool": 0, "mac": 0, "lut": 0, "mul": 0}
    if "T" in parts:
        h = params["ta_w1"].shape[0]
        ops["pool"] += 2 * T * n
        ops["mac"] += 2 * 2 * h * T
        ops["lut"] += T
        ops["mul"] += 2 * T * n
    if "C" in parts:
        C = shape[0]
        h = params["ca_w1"].shape[0]
        ops["pool"] += 2 * T * n
        ops["mac"] += 2 * 2 * h * C
        ops["lut"] += C
        ops["mul"] += 2 * T * n
    if "S" in parts:
        hw = int(np.prod(shape[1:]))
        ops["pool"] += 2 * T * n
        ops["mac"] += int(params["sa_w"].size) * hw
        ops["lut"] += hw
        ops["mul"] += T * n
    return {"operations": ops, "total_operations": int(sum(ops.values())),
            "bits_in": 24 * T * n, "bits_out": GAIN_SHIFT * T * n}
