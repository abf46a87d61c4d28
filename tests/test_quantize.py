"""Quantization rules on small hand-checked cases."""
import numpy as np
import pytest
import torch

from neurocomp import fixedpoint as fx
from neurocomp.passes.pipeline import lower
from neurocomp.ir import Graph, Input, LIF, Linear
from neurocomp.passes import quantize
from neurocomp.sim import run_fixed, run_float


def _one_layer(weights, bias=None, tau=None, th=1.0, v_reset=0.0, decay_input=True):
    w = np.asarray(weights, dtype=np.float32)
    n_out, n_in = w.shape
    return Graph.chain([Input(name="input", in_shape=(n_in,), out_shape=(n_in,)),
                        Linear(name="fc", in_shape=(n_in,), out_shape=(n_out,), weight=w,
                               bias=None if bias is None else np.asarray(bias, np.float32)),
                        LIF(name="lif", in_shape=(n_out,), out_shape=(n_out,), tau=tau, v_threshold=th,
                            v_reset=v_reset, decay_input=decay_input)], {"timesteps": 4})


def test_float_reference_fires_on_ties():
    # IF neuron, threshold 1: two inputs of 0.5 reach exactly 1.0 -> SpikingJelly fires (v >= th).
    g = _one_layer([[0.5, 0.5], [0.5, 0.49], [0.25, 0.25]])
    x = torch.tensor([[[1.0, 1.0]], [[0.0, 0.0]], [[1.0, 1.0]], [[1.0, 1.0]]])
    f = run_float(g, x).output[:, 0]
    assert f[0].tolist() == [1.0, 0.0, 0.0]          # the tie fires, the near-tie does not


def test_fixed_point_is_exactly_the_dequantized_model_with_ge():
    """With integer weights q = round(s*w), the fixed network fires exactly when the float model
    with weights q/s reaches v >= theta: the threshold is neither shifted nor made strict."""
    rng = np.random.default_rng(0)
    w = rng.uniform(-0.6, 0.6, size=(32, 24))
    g = _one_layer(w, th=1.3)
    q = quantize(g)
    s = q.meta["passes"][-1]["layers"][0]["scale"]
    x = torch.as_tensor(rng.random((40, 8, 24)) < 0.3, dtype=torch.float32)
    fixed = run_fixed(q, x).output.numpy()
    w_deq = q["fc"].qweight.astype(np.float64) / s          # what the integers mean in float units
    v = np.zeros((8, 32))
    expect = np.zeros_like(fixed)
    for t in range(40):
        v = v + x[t].numpy().astype(np.float64) @ w_deq.T
        spk = v >= 1.3
        expect[t] = spk
        v[spk] = 0.0
    assert expect.sum() > 50
    assert np.array_equal(fixed, expect)


def test_threshold_lands_on_lava_boundary():
    g = quantize(_one_layer([[0.3, -0.7]], tau=2.0, th=1.25))
    fixed = g["lif"].fixed
    rec = g.meta["passes"][-1]["layers"][0]
    # theta * 64 * s == 64 * vth + 1: "v >= theta" becomes "v > 64*vth" exactly
    assert abs(rec["theta"] * 64 * rec["scale"] - (64 * fixed.vth + 1)) < 1e-9
    q = g["fc"].qweight
    assert q.min() >= -128 and q.max() <= 127
    assert max(abs(int(q.min())), int(q.max())) >= 120     # the range is used
    assert fixed.dv == 2048 and fixed.du == 4095


def test_bias_and_reset_shift():
    g = quantize(_one_layer([[0.5]], bias=[0.25], tau=2.0, th=1.0, v_reset=0.2))
    rec = g.meta["passes"][-1]["layers"][0]
    fixed = g["lif"].fixed
    assert rec["theta"] == pytest.approx(0.8)
    b = int(fx.effective_bias(int(fixed.bias_mant[0]), int(fixed.bias_exp[0])))
    # bias per step in voltage units: 64 * s * b / tau
    assert b == pytest.approx(64 * rec["scale"] * 0.25 / 2.0, abs=2 ** int(fixed.bias_exp[0]))


def test_weight_bits_sweep_uses_fewer_levels():
    g = _one_layer(np.linspace(-1, 1, 40).reshape(4, 10))
    for bits in (2, 4, 8):
        q = quantize(g, weight_bits=bits)["fc"].qweight
        assert q.min() >= -(2 ** (bits - 1)) and q.max() <= 2 ** (bits - 1) - 1
        assert len(np.unique(q)) <= 2 ** bits


def test_lif_step_matches_lava_reference_trace():
    # The trace from lava-loihi.md section 1.6 (measured on Lava fixed_pt): Dense([[40]]), spikes at
    # t = 0, 1, 2, 5, LIF(du=1024, dv=256, vth=50, bias_mant=3, bias_exp=2), one-step Dense delay.
    spikes_in = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    a = [0] + [40 * s for s in spikes_in[:-1]]
    u = v = 0
    us, vs, ss = [], [], []
    for t in range(12):
        u, v, s = fx.lif_step(np.int64(u), np.int64(v), np.int64(a[t]), 1024, 256, 3 * 4, 50, np.clip)
        us.append(int(u)); vs.append(int(v)); ss.append(int(s))
    assert us[:7] == [0, 2560, 4479, 5918, 4437, 3326, 5053]
    assert vs[:3] == [12, 2583, 0]
    assert ss == [0, 0, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0]


def test_batchnorm_fold_matches_conv_then_bn():
    from neurocomp.ir import BatchNorm, Conv2d
    from neurocomp.passes import fold_batchnorm
    rng = np.random.default_rng(3)
    w = rng.normal(size=(3, 2, 3, 3)).astype(np.float32)
    b = rng.normal(size=3).astype(np.float32)
    bn = dict(mean=rng.normal(size=3).astype(np.float32), var=rng.uniform(0.5, 2, 3).astype(np.float32),
              weight=rng.uniform(0.5, 1.5, 3).astype(np.float32), bias=rng.normal(size=3).astype(np.float32), eps=1e-3)
    g = Graph.chain([Input(name="input", in_shape=(2, 5, 5), out_shape=(2, 5, 5)),
                     Conv2d(name="c", in_shape=(2, 5, 5), out_shape=(3, 5, 5), weight=w, bias=b, padding=(1, 1)),
                     BatchNorm(name="bn", in_shape=(3, 5, 5), out_shape=(3, 5, 5), **bn),
                     LIF(name="n", in_shape=(3, 5, 5), out_shape=(3, 5, 5))], {"timesteps": 2})
    folded = fold_batchnorm(g)
    assert [n.kind for n in folded] == ["input", "conv2d", "lif"]
    x = torch.as_tensor(rng.random((1, 4, 2, 5, 5)), dtype=torch.float32)
    conv = torch.nn.functional.conv2d(x[0], torch.as_tensor(w), torch.as_tensor(b), padding=1)
    k = bn["weight"] / np.sqrt(bn["var"] + bn["eps"])
    expect = (conv - torch.as_tensor(bn["mean"])[:, None, None]) * torch.as_tensor(k)[:, None, None] \
        + torch.as_tensor(bn["bias"])[:, None, None]
    c = folded["c"]
    got = torch.nn.functional.conv2d(x[0], torch.as_tensor(c.weight), torch.as_tensor(c.bias), padding=1)
    assert torch.allclose(got, expect, atol=1e-5)
