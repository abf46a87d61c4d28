"""Dynamic (per-sample) attention as the attention process computes it: integer arithmetic, in one place.

``--attention dynamic`` keeps each module's exact, per-sample map. The layer feeding the module is
delayed by one window (T steps) while an attention process reads the window and computes the map
(on Loihi 2 this would run on the chip's embedded x86 cores). This module is that computation, in
numpy integer arithmetic only, shared by the Lava process models (``backends/lava/dynamic.py``) and
the reference simulator, so the two agree bit for bit.

How the float module becomes integer arithmetic (a *program*, built once per module at emit time by
:func:`ma_program` / :func:`spike_program` from the module's float weights and the layer's scale):

- **weights**: every MLP / convolution matrix is quantized on its own to ``WEIGHT_BITS``-bit signed
  integers with a power-of-two scale ``2**e`` (``q = round(w * 2**e)``, ``e`` the largest exponent
  that keeps ``|q| <= 2**(WEIGHT_BITS-1) - 1``); biases (PFA) are stored at the accumulator's scale;
- **inputs**: MA-SNN reads the neuron's integer input current in voltage units ``x = 64*a + bias``
  (the float current times ``x_scale = 64*s``); TCJA / PFA read binary spikes, squeezed to integer
  spike counts (the float module's means are these counts over a known denominator);
- **pooling**: sums, maxima and rounded integer means (``(sum + n//2) // n``);
- **MLPs and convolutions**: integer multiply-accumulates in 64-bit accumulators (the program
  checks the worst case fits, and pre-shifts the pooled statistics when it would not);
- **sigmoid**: :data:`SIGMOID_LUT`, a 12-bit table over [-16, 16) in steps of 1/32. The accumulator
  is turned into a table index by a fixed-point multiplier (``index = (acc * mult + 2**(shift-1)) >>
  shift``, mult 15 bits), the compile-time constant that absorbs the weight exponents, the pooling
  denominators and the layer's scale: no float at run time;
- **gains and payloads**: MA-SNN's gain table is the product of its 12-bit maps (``>> 12`` after each
  multiply; ``x1 = TA*x``, ``x2 = CA*x1`` are rounded integer currents); TCJA's payload is its 12-bit
  map ``>> 4``; PFA's is ``sum_r w_r s_r tau_r kappa_r`` of 12-bit factors with one rounding at the end;
- **offsets** (PFA's additive variant, ``relu(A + x)``, on the input current like MA-SNN): the same
  factors from current sums, ``A = sum_r s_r tau_r kappa_r`` times ``x_scale`` by a ``MULT_BITS``-bit
  multiplier and a rounding shift, added to the neuron's input before its ReLU.
"""
from __future__ import annotations

import math

import numpy as np

from neurocomp.fixedpoint.formats import PAYLOAD_BITS   # 8-bit graded spike payloads

GAIN_SHIFT = 12
LUT_STEP = 32            # entries per unit of the sigmoid's argument
LUT_RANGE = 16           # the table covers [-16, 16)
LUT_SIZE = 2 * LUT_RANGE * LUT_STEP
SIGMOID_LUT = np.clip(np.round((1 << GAIN_SHIFT) / (1.0 + np.exp(-np.arange(-LUT_RANGE * LUT_STEP, LUT_RANGE * LUT_STEP)
                                                                 / LUT_STEP))), 0, (1 << GAIN_SHIFT) - 1).astype(np.int64)
WEIGHT_BITS = 8          # attention-process weights (MLPs, convolutions)
MULT_BITS = 15           # the accumulator -> table-index multiplier
ACC_BITS = 62            # accumulators must stay below 2**62 in magnitude (int64 with headroom)
INPUT_BOUND_BITS = 31    # |x| < 2**31 for MA's input current (64 * a 24-bit current + bias)
PAYLOAD_SHIFT = PAYLOAD_BITS          # the consuming neuron divides its input by 2**8 again
SOFTMAX_BITS = 12                     # PFA's rank weights softmax(lambda)


def sigmoid_lut(z: np.ndarray) -> np.ndarray:
    """12-bit sigmoid mantissa of a float ``z`` by the table (rounded to the nearest 1/32).

    Reference for tests and documentation; the attention processes index the table from integer
    accumulators with :func:`sigmoid_of_acc`."""
    idx = np.clip(np.round(np.asarray(z, np.float64) * LUT_STEP).astype(np.int64) + LUT_RANGE * LUT_STEP,
                  0, LUT_SIZE - 1)
    return SIGMOID_LUT[idx]


# ---- integer building blocks ---------------------------------------------------------------------

def quantize_weights(w, bits: int = WEIGHT_BITS):
    """``(q, e)``: ``q = round(w * 2**e)`` as int64 with ``|q| <= 2**(bits-1) - 1``, ``e`` as large as allowed."""
    w = np.asarray(w, np.float64)
    top = (1 << (bits - 1)) - 1
    m = float(np.abs(w).max()) if w.size else 0.0
    if m == 0.0:
        return np.zeros(w.shape, np.int64), 0
    e = int(math.floor(math.log2(top / m)))
    while np.abs(np.round(w * 2.0 ** e)).max() > top:      # rounding can push the largest entry over
        e -= 1
    return np.round(w * 2.0 ** e).astype(np.int64), e


def requantizer(factor: float, bound: float) -> dict:
    """Constants that turn an accumulator ``acc`` into ``round(factor * acc)`` with integers only.

    ``bound`` is the accumulator's worst-case magnitude. Returns ``{mult, shift, pre, limit}``:
    ``acc`` is clipped to ``±limit`` (beyond it the table saturates anyway), optionally pre-shifted
    right by ``pre`` bits (so that the product fits 64 bits), multiplied by the ``MULT_BITS``-bit
    ``mult`` and shifted right by ``shift`` with rounding."""
    if not (factor > 0 and math.isfinite(factor)):
        raise ValueError(f"attention requantizer: factor must be positive and finite, got {factor!r}")
    k = math.floor(math.log2(factor))
    total = max(0, (MULT_BITS - 1) - k)                   # factor * 2**total has MULT_BITS bits (or more if factor is big)
    mult = int(round(factor * 2.0 ** total))
    limit = int(min(math.ceil((LUT_RANGE * LUT_STEP + 1) / factor) + 1, max(1.0, bound)))
    pre = 0
    while (limit >> pre) * mult >= 2 ** ACC_BITS or total - pre > 48:
        pre += 1
    pre = min(pre, total)
    return {"mult": mult, "shift": total - pre, "pre": pre, "limit": limit}


def _shift_round(v: np.ndarray, n: int) -> np.ndarray:
    """``round(v / 2**n)`` (half up) for int64 ``v``."""
    return v if n <= 0 else (v + (1 << (n - 1))) >> n


def sigmoid_of_acc(acc: np.ndarray, rq: dict) -> np.ndarray:
    """12-bit sigmoid mantissas of the values ``rq`` maps the integer accumulators ``acc`` to."""
    a = np.clip(np.asarray(acc, np.int64), -rq["limit"], rq["limit"])
    a = _shift_round(a, rq["pre"]) * rq["mult"]
    idx = _shift_round(a, rq["shift"]) + LUT_RANGE * LUT_STEP
    return SIGMOID_LUT[np.clip(idx, 0, LUT_SIZE - 1)]


def _mean_int(total: np.ndarray, n: int) -> np.ndarray:
    """Rounded integer mean of ``n`` values whose sum is ``total`` (half up)."""
    return (total + n // 2) // n


def _mlp_int(z: np.ndarray, q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    """``q2 @ relu(q1 @ z)`` over the last axis, int64."""
    return np.maximum(z @ q1.T, 0) @ q2.T


def _mlp_bound(x_bound: float, q1: np.ndarray, q2: np.ndarray) -> float:
    """Largest |output| of :func:`_mlp_int` for inputs bounded by ``x_bound``."""
    h = x_bound * np.abs(q1).sum(1).max()
    return float(h * np.abs(q2).sum(1).max())


def _conv2d_same(p: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``p`` [B, Cin, H, W], kernel ``k`` [Cout, Cin, kh, kw]: cross-correlation, zero padding k//2 (torch's)."""
    B, _, H, W = p.shape
    kh, kw = k.shape[2:]
    ph, pw = kh // 2, kw // 2
    padded = np.zeros((B, p.shape[1], H + 2 * ph, W + 2 * pw), p.dtype)
    padded[:, :, ph:ph + H, pw:pw + W] = p
    out = np.zeros((B, k.shape[0], H + 2 * ph - kh + 1, W + 2 * pw - kw + 1), np.result_type(p, k))
    for a in range(kh):
        for b in range(kw):
            out += np.einsum("bchw,oc->bohw", padded[:, :, a:a + out.shape[2], b:b + out.shape[3]], k[:, :, a, b])
    return out


def _check_fits(bound: float, what: str):
    if bound >= 2.0 ** ACC_BITS:
        raise ValueError(f"attention process: {what} may reach {bound:.3g}, beyond the 64-bit accumulator")


# ---- MA-SNN: maps on the input current, gains of the gain-scheduled neuron -----------------------

def ma_weights(state: dict, parts: str) -> dict:
    """The module's float weights (official state-dict names) as 2-D matrices / the SA kernel."""
    p = {}
    for part, prefix in (("T", "ta"), ("C", "ca")):
        if part in parts:
            for i, key in ((1, "0"), (2, "2")):
                w = np.asarray(state[f"{prefix}.sharedMLP.{key}.weight"], np.float64)
                p[f"{prefix}_w{i}"] = w.reshape(w.shape[0], -1)
    if "S" in parts:
        p["sa_w"] = np.asarray(state["sa.conv.weight"], np.float64)
    return p


CHANNEL_SHIFT = MULT_BITS    # per-channel current scales brought to one: x * mult_c >> 15


def ma_program(state: dict, parts: str, x_scale) -> dict:
    """Integer program of an MA-SNN module whose input current is scaled by ``x_scale`` (= 64*s).

    TA/CA: ``arg = (f(avg) + f(max)) / x_scale`` with ``f`` the ReLU MLP; run on the integer pooled
    currents with the quantized matrices, ``arg * 32`` is the accumulator times
    ``32 * 2**pre / (x_scale * 2**(e1+e2))``. SA likewise with the kernel's exponent.
    ``x_scale`` may be a sequence, one scale per channel (an MA-SNN cell with per-channel thresholds):
    the currents are first brought to the smallest of them (``x * mult_c >> 15``, rounded), the
    scale the maps are then computed at."""
    if np.ndim(x_scale):
        scales = np.asarray(x_scale, np.float64)
        if not np.all(scales > 0):
            raise ValueError("MA attention program needs the layer's positive x_scale (set by the quantize pass)")
        common = float(scales.min())
        prog = ma_program(state, parts, common)
        prog["channel_mult"] = np.round(common / scales * (1 << CHANNEL_SHIFT)).astype(np.int64)
        return prog
    if not (x_scale and x_scale > 0):
        raise ValueError("MA attention program needs the layer's positive x_scale (set by the quantize pass)")
    w = ma_weights(state, parts)
    prog = {"parts": parts}
    x_bound = 2.0 ** INPUT_BOUND_BITS
    for part, prefix in (("T", "ta"), ("C", "ca")):
        if part not in parts:
            continue
        q1, e1 = quantize_weights(w[f"{prefix}_w1"])
        q2, e2 = quantize_weights(w[f"{prefix}_w2"])
        pre = 0
        while 2 * _mlp_bound(x_bound / 2 ** pre, q1, q2) >= 2.0 ** ACC_BITS:
            pre += 1                                          # pre-shift the pooled statistics
        bound = 2 * _mlp_bound(x_bound / 2 ** pre, q1, q2)
        prog[prefix] = {"w1": q1, "w2": q2, "e": (e1, e2), "pre": pre,
                        "rq": requantizer(LUT_STEP * 2.0 ** pre / (x_scale * 2.0 ** (e1 + e2)), bound)}
    if "S" in parts:
        k, e = quantize_weights(w["sa_w"])
        bound = x_bound * float(np.abs(k).sum())
        _check_fits(bound, "the SA convolution")
        prog["sa"] = {"k": k, "e": e, "rq": requantizer(LUT_STEP / (x_scale * 2.0 ** e), bound)}
    return prog


def _ma_pooled_map(pooled_sum: np.ndarray, pooled_max: np.ndarray, n: int, p: dict) -> np.ndarray:
    """σ(f(avg) + f(max)) for one TA/CA map, from per-index sums and maxima of ``n`` values."""
    avg = _shift_round(_mean_int(pooled_sum, n), p["pre"])
    mx = _shift_round(pooled_max, p["pre"])
    return sigmoid_of_acc(_mlp_int(avg, p["w1"], p["w2"]) + _mlp_int(mx, p["w1"], p["w2"]), p["rq"])


def ma_gains(x: np.ndarray, prog: dict) -> np.ndarray:
    """Gain mantissas (shift 12) ``[B, T, *shape]`` for a window of integer currents ``x`` ``[B, T, *shape]``."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError("ma_gains takes the integer input current (64*a + bias), not floats")
    x = x.astype(np.int64)
    if "channel_mult" in prog:     # per-channel scales -> the common one (the maps only read x)
        m = prog["channel_mult"]
        x = _shift_round(x * m.reshape((1, 1, -1) + (1,) * (x.ndim - 3)), CHANNEL_SHIFT)
    parts = prog["parts"]
    B, T = x.shape[:2]
    half = 1 << (GAIN_SHIFT - 1)
    total = np.full(x.shape, 1 << GAIN_SHIFT, dtype=np.int64)
    cur = x
    if "T" in parts:
        flat = cur.reshape(B, T, -1)
        ta = _ma_pooled_map(flat.sum(-1), flat.max(-1), flat.shape[-1], prog["ta"])        # [B, T]
        ta = ta.reshape((B, T) + (1,) * (x.ndim - 2))
        cur = (cur * ta + half) >> GAIN_SHIFT
        total = (total * ta) >> GAIN_SHIFT
    if "C" in parts:
        per_c = np.moveaxis(cur, 2, 1).reshape(B, cur.shape[2], -1)                           # [B, C, T*H*W]
        ca = _ma_pooled_map(per_c.sum(-1), per_c.max(-1), per_c.shape[-1], prog["ca"])      # [B, C]
        ca = ca.reshape(B, 1, -1, *([1] * (x.ndim - 3)))
        cur = (cur * ca + half) >> GAIN_SHIFT
        total = (total * ca) >> GAIN_SHIFT
    if "S" in parts:
        merged = cur.reshape(B, -1, *cur.shape[3:])                                           # [B, T*C, H, W]
        pooled = np.stack([_mean_int(merged.sum(1), merged.shape[1]), merged.max(1)], axis=1)
        sa = sigmoid_of_acc(_conv2d_same(pooled, prog["sa"]["k"])[:, 0], prog["sa"]["rq"])   # [B, H, W]
        total = (total * sa[:, None, None]) >> GAIN_SHIFT
    return total


def ma_cost(shape, T: int, state: dict, parts: str) -> dict:
    """Operations and bits the attention process spends per inference (one sample window).

    Counted as in :func:`ma_gains`: pooling (one add or compare per element and statistic, one
    division per mean), integer MLP and convolution multiply-accumulates, sigmoid table lookups
    (each with its requantizing multiply), map multiplies; bits moved: the window of 24-bit
    currents in, the 12-bit gain table out."""
    w = ma_weights(state, parts)
    n = int(np.prod(shape))                 # neurons per step
    ops = {"pool": 0, "mac": 0, "lut": 0, "mul": 0}
    for part, key, width in (("T", "ta_w1", T), ("C", "ca_w1", shape[0])):   # avg and max through one MLP
        if part in parts:
            h = w[key].shape[0]
            ops["pool"] += 2 * T * n + width
            ops["mac"] += 2 * 2 * h * width
            ops["lut"] += width
            ops["mul"] += 2 * T * n
    if "S" in parts:
        hw = int(np.prod(shape[1:]))
        ops["pool"] += 2 * T * n + hw
        ops["mac"] += int(w["sa_w"].size) * hw
        ops["lut"] += hw
        ops["mul"] += T * n
    return {"operations": ops, "total_operations": int(sum(ops.values())),
            "bits_in": 24 * T * n, "bits_out": GAIN_SHIFT * T * n, "arithmetic": arithmetic_note()}


# ---- PFA's additive variant: a map added to the input current, offsets of the neuron's input ----------

def pfa_offset_program(state: dict, shape, x_scale: float) -> dict:
    """Integer program of PFA's additive variant (``relu(A + x)``) reading the neuron's integer input
    current ``x`` ``[C, H, W]`` per step (the float current times ``x_scale``).

    The factors are PFA's (sigmoids of ``TS_conv`` over the channel mean, ``TC_FC`` / ``SC_FC`` over
    the spatial mean), computed like :func:`spike_program`'s on current sums whose denominators include
    ``x_scale``; ``A = sum_r s_r tau_r kappa_r`` (unweighted, ``2**36`` per unit) becomes the offset
    ``A * x_scale`` in voltage units by a ``MULT_BITS``-bit multiplier and a rounding shift."""
    if not (x_scale and x_scale > 0):
        raise ValueError("PFA offset program needs the layer's positive x_scale (set by the quantize pass)")
    C, H, W = (int(d) for d in shape)
    x_bound = 2.0 ** INPUT_BOUND_BITS
    prog = {"kind": "pfa_offset"}
    for key, wname, bname, n in (("s", "TS_conv.weight", "TS_conv.bias", C), ("tau", "TC_FC.weight", "TC_FC.bias", H * W),
                                 ("kappa", "SC_FC.weight", "SC_FC.bias", H * W)):
        q, e = quantize_weights(state[wname])
        den = n * x_scale                             # a mean over n currents of scale x_scale
        b = np.round(np.asarray(state[bname], np.float64) * 2.0 ** e * den).astype(np.int64)
        fan = np.abs(q).reshape(q.shape[0], -1).sum(1)
        bound = float((n * x_bound * fan + np.abs(b)).max())
        _check_fits(bound, f"PFA's {wname}")
        prog[key] = {"w": q, "b": b, "rq": requantizer(LUT_STEP / (den * 2.0 ** e), bound)}
    factor = x_scale / 2.0 ** (3 * GAIN_SHIFT)
    shift = max(0, (MULT_BITS - 1) - math.floor(math.log2(factor)))
    prog["mult"], prog["shift"] = int(round(factor * 2.0 ** shift)), int(shift)
    R = int(np.asarray(state["TS_conv.weight"]).shape[0])
    _check_fits(float(R) * 2.0 ** (3 * GAIN_SHIFT) * prog["mult"], "PFA's offset")
    return prog


def pfa_offsets(x: np.ndarray, prog: dict) -> np.ndarray:
    """Offsets (voltage units) ``[B, T, C, H, W]`` for a window of integer currents ``x`` ``[B, T, C, H, W]``."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError("pfa_offsets takes the integer input current (64*a + bias), not floats")
    x = x.astype(np.int64)
    ps, pt, pk = prog["s"], prog["tau"], prog["kappa"]
    s = sigmoid_of_acc(_conv2d_same(x.sum(axis=2), ps["w"]) + ps["b"][None, :, None, None], ps["rq"])   # [B, R, H, W]
    z = x.sum(axis=(3, 4))                                                                        # [B, T, C]
    tau = sigmoid_of_acc(z @ pt["w"].T + pt["b"], pt["rq"])                                       # [B, T, R]
    kappa = sigmoid_of_acc(z.transpose(0, 2, 1) @ pk["w"].T + pk["b"], pk["rq"])                  # [B, C, R]
    acc = np.einsum("brhw,btr,bcr->btchw", s, tau, kappa)
    return _shift_round(acc * prog["mult"], prog["shift"])


def current_program(module: str, state: dict, parts: str, shape, x_scale) -> dict:
    """The program of an attention on the input current: MA-SNN's gains or PFA's additive offsets
    (``x_scale``: one scale, or MA-SNN's one per channel)."""
    if module == "PFA":
        if np.ndim(x_scale):
            raise ValueError("PFA's additive attention needs one current scale for the layer")
        return pfa_offset_program(state, shape, float(x_scale))
    return ma_program(state, parts, x_scale)


def current_attention(x: np.ndarray, prog: dict) -> np.ndarray:
    """What the program computes from a window of integer currents: gain mantissas or offsets."""
    return pfa_offsets(x, prog) if prog.get("kind") == "pfa_offset" else ma_gains(x, prog)


def pfa_offset_cost(shape, T: int, state: dict) -> dict:
    """Operations and bits per inference of PFA's additive attention process (as :func:`pfa_offsets`)."""
    C = int(shape[0])
    n = int(np.prod(shape))
    hw = n // C
    R = int(np.asarray(state["TS_conv.weight"]).shape[0])
    k2 = int(np.prod(np.asarray(state["TS_conv.weight"]).shape[2:]))
    ops = {"pool": 2 * T * n, "mac": R * T * k2 * hw + 2 * R * C * T, "lut": R * (hw + T + C),
           "mul": 3 * R * T * C * hw + T * n}
    return {"operations": ops, "total_operations": int(sum(ops.values())),
            "bits_in": 24 * T * n, "bits_out": 24 * T * n, "arithmetic": arithmetic_note()}


def arithmetic_note() -> str:
    return (f"integer: {WEIGHT_BITS}-bit weights with power-of-two scales, 64-bit accumulators, "
            f"{MULT_BITS}-bit requantizing multipliers, {GAIN_SHIFT}-bit sigmoid table over "
            f"[-{LUT_RANGE}, {LUT_RANGE}) in steps of 1/{LUT_STEP}")


# ---- maps on spikes: TCJA and PFA, applied as graded-spike payloads ------------------------------

def _same_pad(k: int):
    left = (k - 1) // 2
    return left, k - 1 - left


def _conv1d_same(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """torch Conv1d(padding='same', bias=False): ``x`` [B, Cin, L], ``w`` [Cout, Cin, K] -> [B, Cout, L]."""
    B, Cin, L = x.shape
    K = w.shape[2]
    left, right = _same_pad(K)
    xp = np.zeros((B, Cin, L + K - 1), x.dtype)
    xp[:, :, left:left + L] = x
    out = np.zeros((B, w.shape[0], L), np.result_type(x, w))
    for m in range(K):
        out += np.einsum("bil,oi->bol", xp[:, :, m:m + L], w[:, :, m])
    return out


def to_payload(a12: np.ndarray) -> np.ndarray:
    """12-bit map mantissas -> 8-bit spike payloads (a spike carries ``payload / 2**8``)."""
    return np.asarray(a12, np.int64) >> (GAIN_SHIFT - PAYLOAD_BITS)


def spike_program(module: str, state: dict, src_shape, pool=(1, 1)) -> dict:
    """Integer program of a TCJA/TLA/CLA or PFA module reading spikes of shape ``src_shape`` (C, H, W).

    TCJA: per-(t, c) spike counts ``n`` over the H*W positions; ``P = conv(n, q_p)``, ``Q = conv(n^T, q_q)``
    and the argument is ``P*Q / ((H*W)**2 2**(e_p+e_q))`` (TCJA), ``Q / (H*W 2**e_q)`` (TLA) or
    ``P / (H*W 2**e_p)`` (CLA). PFA: counts of the (pooled) spikes summed over channels (spatial
    map, T input channels of its k x k conv) and over positions (temporal and channel maps), each
    accumulator with its bias at its own scale."""
    C, H, W = (int(d) for d in src_shape)
    kh, kw = (int(d) for d in pool)
    prog = {"module": module, "pool": (kh, kw)}
    if module in ("TCJA", "TLA", "CLA"):
        den = H * W
        if module in ("TCJA", "CLA"):
            prog["p"] = quantize_weights(state["conv.weight"])
        if module in ("TCJA", "TLA"):
            prog["q"] = quantize_weights(state["conv_c.weight"])
        bound = {k: float(den * np.abs(prog[k][0]).sum(axis=(1, 2)).max()) for k in ("p", "q") if k in prog}
        if module == "TCJA":
            e = prog["p"][1] + prog["q"][1]
            prog["rq"] = requantizer(LUT_STEP / (den * den * 2.0 ** e), bound["p"] * bound["q"])
        else:
            k = "p" if module == "CLA" else "q"
            prog["rq"] = requantizer(LUT_STEP / (den * 2.0 ** prog[k][1]), bound[k])
        return prog
    if module != "PFA":
        raise ValueError(f"no integer attention program for module {module!r}")
    Hp, Wp = H // kh, W // kw
    d = kh * kw                                       # a pooled input is a count of d spikes
    den_u, den_z = C * d, Hp * Wp * d
    for key, wname, bname, den in (("s", "TS_conv.weight", "TS_conv.bias", den_u),
                                   ("tau", "TC_FC.weight", "TC_FC.bias", den_z),
                                   ("kappa", "SC_FC.weight", "SC_FC.bias", den_z)):
        q, e = quantize_weights(state[wname])
        b = np.round(np.asarray(state[bname], np.float64) * 2.0 ** e * den).astype(np.int64)
        fan = np.abs(q).reshape(q.shape[0], -1).sum(1)
        bound = float((den * fan + np.abs(b)).max())
        _check_fits(bound, f"PFA's {wname}")
        prog[key] = {"w": q, "b": b, "e": e, "rq": requantizer(LUT_STEP / (den * 2.0 ** e), bound)}
    lam = np.asarray(state["weight"], np.float64)
    sm = np.exp(lam - lam.max())
    prog["w_rank"] = np.round(sm / sm.sum() * (1 << SOFTMAX_BITS)).astype(np.int64)
    _check_fits(float(prog["w_rank"].sum()) * 2.0 ** (3 * GAIN_SHIFT), "PFA's rank sum")
    return prog


def _tcja_payload(counts: np.ndarray, prog: dict) -> np.ndarray:
    """Payloads ``[B, T, C]`` from per-(t, c) spike counts ``[B, T, C]``."""
    acc = None
    if "p" in prog:
        acc = _conv1d_same(counts, prog["p"][0])
    if "q" in prog:
        q = _conv1d_same(counts.transpose(0, 2, 1), prog["q"][0]).transpose(0, 2, 1)
        acc = q if acc is None else acc * q
    return to_payload(sigmoid_of_acc(acc, prog["rq"]))


def _pfa_payload(x: np.ndarray, prog: dict) -> np.ndarray:
    """Payloads ``[B, T, C, H, W]`` from (pooled) spike counts ``x`` ``[B, T, C, H, W]``."""
    u = x.sum(axis=2)                                                          # [B, T, H, W]
    ps = prog["s"]
    s = sigmoid_of_acc(_conv2d_same(u, ps["w"]) + ps["b"][None, :, None, None], ps["rq"])   # [B, R, H, W]
    z = x.sum(axis=(3, 4))                                                     # [B, T, C]
    pt, pk = prog["tau"], prog["kappa"]
    tau = sigmoid_of_acc(z @ pt["w"].T + pt["b"], pt["rq"])                   # [B, T, R]
    kappa = sigmoid_of_acc(z.transpose(0, 2, 1) @ pk["w"].T + pk["b"], pk["rq"])   # [B, C, R]
    acc = np.einsum("r,brhw,btr,bcr->btchw", prog["w_rank"], s, tau, kappa)   # 2**(12*4) per unit
    shift = SOFTMAX_BITS + 3 * GAIN_SHIFT - PAYLOAD_BITS
    return np.clip(_shift_round(acc, shift), 0, (1 << PAYLOAD_BITS) - 1)


def spike_payload(prog: dict, source: np.ndarray) -> np.ndarray:
    """Payloads for the spikes a TCJA/PFA module scales, from the map's binary source ``[B, T, C, H, W]``.

    TCJA: the source is the LIF's (pre-pool) spikes; the payload is per (t, c). PFA: the source is
    the module's input; with a pool ``(k, k)`` the source is the pre-pool spikes, sum-pooled here,
    and the payload is repeated over each pooling window (the scale then sits before the pool)."""
    x = (np.asarray(source) != 0).astype(np.int64)
    if prog["module"] in ("TCJA", "TLA", "CLA"):
        return _tcja_payload(x.sum(axis=(3, 4)), prog)[:, :, :, None, None]
    kh, kw = prog["pool"]
    if (kh, kw) == (1, 1):
        return _pfa_payload(x, prog)
    B, T, C, H, W = x.shape
    pooled = x[:, :, :, :H // kh * kh, :W // kw * kw].reshape(B, T, C, H // kh, kh, W // kw, kw).sum(axis=(4, 6))
    pay = np.repeat(np.repeat(_pfa_payload(pooled, prog), kh, axis=3), kw, axis=4)
    out = np.zeros((B, T, C, H, W), np.int64)
    out[:, :, :, :pay.shape[3], :pay.shape[4]] = pay
    return out


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
        ops["pool"] += T * n                                          # sum over C, then over (h, w)
        ops["mac"] += R * T * k2 * hwp + R * C * T + R * T * C
        ops["lut"] += R * (hwp + T + C)
        ops["mul"] += 3 * R * T * C * hwp
    return {"operations": ops, "total_operations": int(sum(ops.values())),
            "bits_in": T * n, "bits_out": PAYLOAD_BITS * T * n, "arithmetic": arithmetic_note()}
