"""The quantizer's number formats (bias mantissa/exponent, gain mantissa, threshold and scale,
weight rounding) give the same integers on numpy (the quantize passes) and on torch (fine-tuning's
fake quantization), for random inputs, ties and out-of-range values included."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from neurocomp import fixedpoint as fx
from neurocomp.training.fakequant import QGain, QSynapse, layer_scale
from neurocomp.ir import LIF
from neurocomp.nn import StaticMap
from neurocomp.passes.quantize import _bias, _quantize_gain


def _reference_bias(bias_v):
    """The quantizer's rule, one value at a time: the smallest exponent whose 13-bit mantissa holds it."""
    out, clipped = [], 0
    for b in np.asarray(bias_v, np.float64).ravel():
        for e in range(fx.BIAS_EXP_MAX + 1):
            m = int(round(b / (1 << e)))
            if fx.BIAS_MANT_MIN <= m <= fx.BIAS_MANT_MAX:
                break
        else:
            m = int(np.clip(m, fx.BIAS_MANT_MIN, fx.BIAS_MANT_MAX))
            clipped += 1
        out.append((m, e))
    return out, clipped


def _reference_vth(w_eff, theta, wmax):
    """The quantizer's threshold choice as it was written in passes/quantize.py (issue 13)."""
    import math
    m = float(np.max(np.abs(w_eff))) if w_eff.size else 0.0
    if m == 0.0:
        return max(0, min(fx.VTH_MAX, int(math.floor(wmax * theta))))
    vth_max = min(int(math.floor((wmax + 0.5 - 1e-9) / m * theta - 1.0 / 64)), fx.VTH_MAX)
    if vth_max <= 0:
        return 0
    lo = max(0, int(math.ceil(0.75 * vth_max)))
    candidates = np.unique(np.linspace(lo, vth_max, num=min(64, vth_max - lo + 1)).round().astype(int))
    w64 = w_eff.astype(np.float64).ravel()
    best, best_err = vth_max, None
    for vth in candidates[::-1]:
        s = (vth + 1.0 / 64) / theta
        err = float(np.sum((w64 * s - np.round(w64 * s)) ** 2)) / s ** 2
        if best_err is None or err < best_err - 1e-15:
            best, best_err = int(vth), err
    return best


def _random_biases(rng, n=4000):
    mag = 2.0 ** rng.uniform(-3, 21, n)
    b = np.sign(rng.standard_normal(n)) * mag
    ties = (rng.integers(-2 ** 15, 2 ** 15, 400) + 0.5) * (2.0 ** rng.integers(0, 8, 400))   # x.5 at every exponent
    edges = np.array([4095.5, -4096.5, 4095.49, -4096.49, 4095 * 128.0, 4095.5 * 128, -4096 * 128.0,
                      -4096.5 * 128, 0.0, -0.0, 0.5, -0.5, 1.5, 2 ** 30, -2 ** 30])
    return np.concatenate([b, ties, edges])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bias_mantissa_exponent_numpy_torch_and_reference(seed):
    rng = np.random.default_rng(seed)
    bv = _random_biases(rng)
    ref, ref_clipped = _reference_bias(bv)
    mant, exp, clipped = _bias(bv)
    assert mant.dtype == np.int64 and exp.dtype == np.int64
    assert list(zip(mant.tolist(), exp.tolist())) == ref and clipped == ref_clipped
    tm, te, tc = fx.bias_mant_exp(torch.as_tensor(bv))          # fine-tuning's fake quantization
    assert tm.tolist() == mant.tolist() and te.tolist() == exp.tolist() and tc == clipped
    np.testing.assert_array_equal(fx.effective_bias(tm, te).numpy(), mant * (2 ** exp))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gain_mantissa_numpy_torch(seed):
    rng = np.random.default_rng(seed)
    for gmax in (1e-6, 0.03, 0.9, 1.0, 3.7, 4095.0, 5000.0):
        g = rng.uniform(0, 1, (4, 3, 5)) * gmax
        g.flat[0] = gmax
        neu = LIF(name="n", in_shape=(3, 5), out_shape=(3, 5), tau=2.0, v_threshold=1.0, v_reset=0.0,
                  decay_input=True, input_gain=g)
        mant, shift = _quantize_gain(neu)
        sm = StaticMap(shape=list(g.shape), source="test")
        sm.map.copy_(torch.as_tensor(g))
        got = QGain(sm, "current").table().detach()               # fine-tuning's fake-quantized table
        np.testing.assert_array_equal(got.double().numpy(), (mant / (1 << shift)).astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_scale_numpy_torch(seed):
    rng = np.random.default_rng(seed)
    for theta, w_gain, bits, spread in ((1.0, 0.5, 8, 1.0), (0.3, 1.0, 8, 5.0), (2.5, 1 / 3, 6, 0.01),
                                        (1e-3, 1.0, 8, 1.0), (40.0, 0.5, 4, 1.0)):
        w = torch.as_tensor((rng.standard_normal((16, 9)) * spread).astype(np.float32))
        s = layer_scale(w, theta, w_gain, bits)
        w_eff = w.numpy().astype(np.float64) * w_gain
        wmax = (1 << (bits - 1)) - 1
        assert s == (_reference_vth(w_eff, theta, wmax) + 1.0 / 64) / theta
        syn = torch.nn.Linear(9, 16, bias=False)
        with torch.no_grad():
            syn.weight.copy_(w)
        qs = QSynapse(syn, theta, w_gain, bits)
        qs.eval()
        wq, _ = qs.fake_weights()                                  # fine-tuning's fake-quantized weights
        ref = np.clip(np.round(w_eff * s), -wmax - 1, wmax)
        np.testing.assert_allclose(wq.detach().double().numpy() * s * w_gain, ref, rtol=1e-6, atol=1e-6)
