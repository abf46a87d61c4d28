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
    for part, prefix in (("T", "ta"), ("C", "ca")):
        if part in parts:
            for i, key in ((1, "0"), (2, "2")):
                w = np.asarray(state[f"{prefix}.sharedMLP.{key}.weight"], np.float64)
                p[f"{prefix}_w{i}"] = w.reshape(w.shape[0], -1)
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
    for part, key, width in (("T", "ta_w1", T), ("C", "ca_w1", shape[0])):   # avg and max through one MLP
        if part in parts:
            h = params[key].shape[0]
            ops["pool"] += 2 * T * n
            ops["mac"] += 2 * 2 * h * width
            ops["lut"] += width
            ops["mul"] += 2 * T * n
    if "S" in parts:
        hw = int(np.prod(shape[1:]))
        ops["pool"] += 2 * T * n
        ops["mac"] += int(params["sa_w"].size) * hw
        ops["lut"] += hw
        ops["mul"] += T * n
    return {"operations": ops, "total_operations": int(sum(ops.values())),
            "bits_in": 24 * T * n, "bits_out": GAIN_SHIFT * T * n}


# ---- maps on spikes: TCJA and PFA, applied as graded-spike payloads ------------------------------
PAYLOAD_BITS = 8
PAYLOAD_SHIFT = PAYLOAD_BITS          # the consuming neuron divides its input by 2**8 again


def _same_pad(k: int):
    left = (k - 1) // 2
    return left, k - 1 - left


def _conv1d_same(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """torch Conv1d(padding='same', bias=False): ``x`` [B, Cin, L], ``w`` [Cout, Cin, K] -> [B, Cout, L]."""
    B, Cin, L = x.shape
    K = w.shape[2]
    left, right = _same_pad(K)
    xp = np.zeros((B, Cin, L + K - 1))
    xp[:, :, left:left + L] = x
    out = np.zeros((B, w.shape[0], L))
    for m in range(K):
        out += np.einsum("bil,oi->bol", xp[:, :, m:m + L], w[:, :, m])
    return out


def to_payload(a12: np.ndarray) -> np.ndarray:
    """12-bit map mantissas -> 8-bit spike payloads (a spike carries ``payload / 2**8``)."""
    return np.asarray(a12, np.int64) >> (GAIN_SHIFT - PAYLOAD_BITS)


def tcja_payload(spikes: np.ndarray, state: dict, module: str) -> np.ndarray:
    """TCJA / TLA / CLA map ``[B, T, C]`` as 8-bit payloads, from binary spikes ``[B, T, C, H, W]``."""
    z = np.asarray(spikes, np.float64).mean(axis=(3, 4))                     # [B, T, C]
    p = _conv1d_same(z, np.asarray(state["conv.weight"], np.float64)) if module in ("TCJA", "CLA") else None
    q = None
    if module in ("TCJA", "TLA"):
        q = _conv1d_same(z.transpose(0, 2, 1), np.asarray(state["conv_c.weight"], np.float64)).transpose(0, 2, 1)
    arg = p * q if module == "TCJA" else (q if module == "TLA" else p)
    return to_payload(sigmoid_lut(arg))


def pfa_payload(x: np.ndarray, state: dict) -> np.ndarray:
    """PFA map ``[B, T, C, H, W]`` as 8-bit payloads, from its input ``x`` (pooled spikes)."""
    x = np.asarray(x, np.float64)
    B, T, C, H, W = x.shape
    one = float(1 << GAIN_SHIFT)
    wts = np.asarray(state["TS_conv.weight"], np.float64)                    # [R, T, k, k]
    R, _, k, _ = wts.shape
    u = x.mean(axis=2)                                                        # [B, T, H, W]
    pad = k // 2
    up = np.zeros((B, T, H + 2 * pad, W + 2 * pad))
    up[:, :, pad:pad + H, pad:pad + W] = u
    conv = np.zeros((B, R, H, W)) + np.asarray(state["TS_conv.bias"], np.float64)[None, :, None, None]
    for a in range(k):
        for b in range(k):
            conv += np.einsum("bthw,rt->brhw", up[:, :, a:a + H, b:b + W], wts[:, :, a, b])
    s = sigmoid_lut(conv) / one                                               # [B, R, H, W]
    z = x.mean(axis=(3, 4))                                                   # [B, T, C]
    tau = sigmoid_lut(z @ np.asarray(state["TC_FC.weight"], np.float64).T
                      + np.asarray(state["TC_FC.bias"], np.float64)) / one      # [B, T, R]
    kappa = sigmoid_lut(z.transpose(0, 2, 1) @ np.asarray(state["SC_FC.weight"], np.float64).T
                        + np.asarray(state["SC_FC.bias"], np.float64)) / one    # [B, C, R]
    lam = np.asarray(state["weight"], np.float64)
    w = np.exp(lam - lam.max())
    w = w / w.sum()
    a = np.einsum("r,brhw,btr,bcr->btchw", w, s, tau, kappa)
    return np.clip(np.round(a * (1 << PAYLOAD_BITS)), 0, (1 << PAYLOAD_BITS) - 1).astype(np.int64)


def spike_payload(module: str, state: dict, source: np.ndarray, pool=None) -> np.ndarray:
    """Payloads for the spikes a TCJA/PFA module scales, from the map's source ``[B, T, ...]``.

    TCJA: the source is the LIF's (pre-pool) spikes; the payload is per (t, c). PFA: the source is
    the module's input; with ``pool=(k, k)`` the source is the pre-pool spikes, averaged here, and the
    payload is repeated over each pooling window (the scale then sits before the pool).
    """
    if module in ("TCJA", "TLA", "CLA"):
        return tcja_payload(source, state, module)[:, :, :, None, None]
    x = np.asarray(source, np.float64)
    if pool is not None and tuple(pool) != (1, 1):
        kh, kw = pool
        B, T, C, H, W = x.shape
        x = x[:, :, :, :H // kh * kh, :W // kw * kw].reshape(B, T, C, H // kh, kh, W // kw, kw).mean(axis=(4, 6))
        pay = pfa_payload(x, state)
        pay = np.repeat(np.repeat(pay, kh, axis=3), kw, axis=4)
        out = np.zeros((B, T, C, H, W), np.int64)
        out[:, :, :, :pay.shape[3], :pay.shape[4]] = pay
        return out
    return pfa_payload(x, state)


def spike_cost(module: str, state: dict, shape, T: int, pool=(1, 1)) -> dict:
    """Operations and bits per inference of a TCJA/PFA attention gate (as :func:`spike_payload` runs)."""
    n = int(np.prod(shape))
    C = shape[0]
    hw = n // C
    ops = {"pool": T * n, "mac": 0, "lut": 0, "mul": T * n}      # squeeze + payload multiplies
    if module in ("TCJA", "TLA", "CLA"):
        for key in ("conv.weight", "conv_c.weight"):
            if key in state:
                ops["mac"] += int(np.asarray(state[key]).size) * (C if key == "conv.weight" else T)
        ops["lut"] += T * C
        if module == "TCJA":
            ops["mul"] += T * C
    else:
        R = int(np.asarray(state["TS_conv.weight"]).shape[0])
        k2 = int(np.prod(np.asarray(state["TS_conv.weight"]).shape[2:]))
        hwp = hw // (pool[0] * pool[1])
        ops["pool"] += T * n                                          # mean over C, then over (h, w)
        ops["mac"] += R * T * k2 * hwp + R * C * T + R * T * C
        ops["lut"] += R * (hwp + T + C)
        ops["mul"] += 3 * R * T * C * hwp
    return {"operations": ops, "total_operations": int(sum(ops.values())),
            "bits_in": T * n, "bits_out": PAYLOAD_BITS * T * n}
