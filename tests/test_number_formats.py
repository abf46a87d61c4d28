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
        # the threshold behind the scale is an integer register value, no weight clips at that scale,
        # and the largest weight uses at least 3/4 of the weight range (the quantizer searches the top quarter)
        vth = s * theta - 1.0 / 64
        assert abs(vth - round(vth)) < 1e-6 and 0 <= round(vth) <= fx.VTH_MAX
        assert np.abs(np.round(w_eff * s)).max() <= wmax
        if round(vth) > 0:                   # 0: a threshold too small for any register value
            assert np.abs(w_eff).max() * s >= 0.75 * wmax - 1.0
        syn = torch.nn.Linear(9, 16, bias=False)
        with torch.no_grad():
            syn.weight.copy_(w)
        qs = QSynapse(syn, theta, w_gain, bits)
        qs.eval()
        wq, _ = qs.fake_weights()                                  # fine-tuning's fake-quantized weights
        ref = np.clip(np.round(w_eff * s), -wmax - 1, wmax)
        np.testing.assert_allclose(wq.detach().double().numpy() * s * w_gain, ref, rtol=1e-6, atol=1e-6)
