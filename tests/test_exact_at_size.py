"""Lava == fixed-point reference on the DVS128 TCJA net's structure, small enough for the suite (issue 16).

Issue 16 measured the official TCJA DVS128 net (2x128x128 input, five Conv3x3(128)-BN-LIF-TCJA-MaxPool2
blocks, Linear 2048->512-LIF->110 + VotingLayer(10), T = 20, static attention, random weights, Bernoulli(0.15)
inputs) and found Lava missing the reference's spikes in the first OR pool, all reference-only, every later
layer agreeing. The cause is the one of issue 12: Lava 0.10's ``Conv`` keeps ``groups`` in int8, and the
OR pool after a 128-channel block is a depthwise sum pool with 128 groups (stored as -128: zero output).
Every block of the DVS128 net is 128 channels wide, so its *first* OR pool is already the wrapped one
(the 2x32x32 net of issue 12 had 32/64/128 blocks and failed only at its third); the untrained net is
silent after its first layer, which is why only 9 spikes differed and the later layers agreed.

The net here is the DVS128 net's structure on 2x8x8 (three 128-channel blocks down to 1x1, the same head,
T = 20), every layer made busy, so each of its 128-group OR pools and the voting head carry spikes; with the
emitter's regrouping undone (``layout.regroup_conv_weight``) it fails with the issue's signature: the first
OR pool fires on the reference only.

Magnitudes the size brings: Lava's stock LIF and Dense models compute in numpy int32, the reference in torch
int64; the two tests below step Lava's own model classes (no runtime) at inputs past 2**31 and check that
``fixedpoint`` wraps where they do (``wrap_int32`` in ``lif_step``, ``dense_lava_sum``).
"""
from __future__ import annotations

import pytest
import torch
from spikingjelly.activation_based import functional, layer

from busy_nets import bernoulli, lava_mismatches, layer_rates, lower_for, make_busy
from neurocomp.nn import backbones

T, HW, SHAPE = 20, 8, (2, 8, 8)


@pytest.fixture(scope="module")
def dvs_structure():
    """The DVS128 TCJA net's layers at 2x8x8 (blocks 128/128/128, hidden 512, 110 -> 11 votes), busy."""
    torch.manual_seed(16)
    model = backbones.build("tcja", T=T, in_channels=2, input_hw=HW, channels=(128, 128, 128), hidden=512,
                            num_classes=110)
    model.append(layer.VotingLayer(10, step_mode="m"))
    functional.set_step_mode(model, "m")
    model.eval()
    xc = bernoulli(T, 8, SHAPE, 0.15, seed=16)
    make_busy(model, xc, rate=(0.1, 0.3), seed=16, iters=12)
    return lower_for(model, SHAPE, T, "static", calib=xc)


@pytest.mark.lava
def test_dvs128_structure_is_exact_on_every_layer(dvs_structure):
    """Every 128-group OR pool, the gain-scheduled neurons after each TCJA, the 512 hidden layer and the
    voting head: Lava == reference on every layer and step of Bernoulli(0.15) samples, every layer busy."""
    q = dvs_structure
    ref, mism = lava_mismatches(q, bernoulli(T, 3, SHAPE, 0.15, seed=160))
    bad = {k: v for k, v in mism.items() if v[0]}
    assert not bad, f"Lava != reference (layer: mismatches, reference-only, Lava-only): {bad}"
    rates = layer_rates(ref)
    ors = [k for k in rates if k.endswith("_or")]
    assert len(ors) == 3, ors
    quiet = {k: r for k, r in rates.items() if k != q.output_node.name and r < 0.02}
    assert not quiet, f"layers not busy: {quiet}"


@pytest.mark.lava
def test_lif_step_wraps_in_int32_like_lavas_lif_model():
    """Magnitudes: Lava's stock LIF model (``PyLifResetModelBitAcc``, which runs every plain LIF, OR
    threshold and readout) holds ``a_in``, ``u`` and ``v`` in numpy int32, so ``a_in << 6`` and the ``u``
    and ``v`` sums wrap at 2**31 before its 24-bit current wrap; ``fx.lif_step`` (the reference, on torch
    int64) must wrap the same way. Lava's own model class is stepped directly, on inputs around 2**25
    (where ``a << 6`` leaves int32: a Dense of more than 2**25 / 127 active inputs), both signs, with a
    current decay so the state carries over. Before ``fx.wrap_int32`` the reference fired where Lava's
    model did not (and the other way round) on inputs of 2**25 and more."""
    import numpy as np
    from lava.proc.lif.models import PyLifResetModelBitAcc
    from neurocomp import fixedpoint as fx
    gen = np.random.default_rng(16)
    a = np.concatenate([[0, 1000, 2**25 - 2**17, 2**25 - 1, 2**25, 2**25 + 5, -(2**25), -(2**25) - 7, 40_000_000,
                         -40_000_000, 2**23 - 1, 2**26 + 3],
                        gen.integers(-2**27, 2**27, 52)]).astype(np.int64)
    n, du, dv, vth = a.size, 1000, 2048, 100
    lava = PyLifResetModelBitAcc({"reset_interval": 1000, "reset_offset": 999})
    lava.u, lava.v = np.zeros(n, np.int32), np.zeros(n, np.int32)
    lava.du, lava.dv, lava.vth = du, dv, vth
    lava.bias_mant, lava.bias_exp = np.full(n, 7, np.int16), np.full(n, 2, np.int16)
    lava.scale_bias()
    lava.scale_threshold()
    u = v = torch.zeros(n, dtype=torch.int64)
    for t in range(4):
        x = a if t % 2 == 0 else -a // 3
        lava.subthr_dynamics(np.zeros(n, np.int16) + x.astype(np.int32))   # as a_in.recv() hands it over
        s_lava = lava.spiking_activation()
        lava.reset_voltage(s_lava)
        u, v, s = fx.lif_step(u, v, torch.as_tensor(x), du, dv, torch.full((n,), 7 << 2), vth, torch.clamp)
        assert torch.equal(s, torch.as_tensor(s_lava)), f"step {t}: spikes differ at inputs {x[s.numpy() != s_lava]}"
        assert torch.equal(u, torch.as_tensor(lava.u, dtype=torch.int64)), f"step {t}: current differs"
        assert torch.equal(v, torch.as_tensor(lava.v, dtype=torch.int64)), f"step {t}: voltage differs"


@pytest.mark.lava
def test_dense_sum_wraps_like_lavas_dense_model():
    """Magnitudes: Lava's bit-accurate Dense multiplies graded payloads by its (doubled, int32) weights in a
    numpy int32 dot product, which wraps at 2**31 before the halving (2048 inputs of payload 255 at weight
    127 already reach 2**26; a few 10,000 of them wrap); the reference's Linear/Dense sum must wrap the same
    way (``fx.dense_lava_sum``, used by ``sim.fixed_ops``). Lava's own model class runs one step here with
    its ports replaced by stubs; a spike input takes the same path. Before ``dense_lava_sum`` the graded
    sums above 2**30 differed."""
    import numpy as np
    from lava.proc.dense.models import PyDenseModelBitAcc
    from lava.utils.weightutils import SignMode
    from neurocomp import fixedpoint as fx
    gen = np.random.default_rng(16)
    n_in = 40_000
    w8 = np.concatenate([np.full((2, n_in), 127), np.full((1, n_in), -128), gen.integers(-128, 128, (5, n_in)),
                         gen.integers(0, 128, (4, n_in))]).astype(np.int64)
    for graded in (True, False):
        x = (np.full(n_in, 255) if graded else np.ones(n_in)).astype(np.int64)
        x[: n_in // 8] = 0 if graded else 1
        w2, wexp = fx.dense_lava_weights(w8)
        lava = PyDenseModelBitAcc({"weight_exp": wexp, "num_weight_bits": 8, "sign_mode": SignMode.MIXED})
        lava.weights = w2.astype(np.int32)
        lava.num_message_bits = np.array([8 if graded else 0])
        lava.a_buff = np.zeros(w8.shape[0], np.int32)
        sent = []
        lava.s_in = type("In", (), {"recv": lambda self: np.zeros(n_in, bool) + x.astype(np.int32)})()
        lava.a_out = type("Out", (), {"send": lambda self, a: sent.append(np.array(a))})()
        lava.run_spk()
        lava.run_spk()
        delivered = np.zeros(w8.shape[0], np.int32)
        delivered[:] = sent[-1]                 # what Lava's int32 channel carries on
        ref = fx.dense_lava_sum(torch.as_tensor(w8 @ x), graded)
        assert torch.equal(ref, torch.as_tensor(delivered, dtype=torch.int64)), (graded, ref, delivered)


def _non_square(family: str, T: int, H: int = 8, W: int = 4, C: int = 8):
    """One block of ``family`` (as in ``nn.backbones``) on a 2xHxW input, H != W, then Linear -> LIF."""
    from neurocomp.nn import PFA, TCJA, TCSA, MALIFNode
    from neurocomp.nn.backbones import lif
    conv = [layer.Conv2d(2, C, 3, padding=1, bias=family != "pfa", step_mode="m"), layer.BatchNorm2d(C, step_mode="m")]
    if family == "tcja":
        mods = conv + [lif(), TCJA(2, 2, T, C), layer.MaxPool2d(2, step_mode="m")]
    elif family == "ma":
        mods = conv + [layer.AvgPool2d(2, step_mode="m"), TCSA(T, C, t_ratio=2, c_ratio=4), MALIFNode()]
    else:
        mods = [PFA(H, W, T, 2, 3, 2)] + conv + [lif(), layer.AvgPool2d(2, step_mode="m"), PFA(H // 2, W // 2, T, C, 3, 2)]
    return torch.nn.Sequential(*mods, layer.Flatten(step_mode="m"), layer.Linear(C * (H // 2) * (W // 2), 10, step_mode="m"),
                               lif() if family != "ma" else MALIFNode())


@pytest.mark.lava
@pytest.mark.parametrize("family", ["tcja", "ma", "pfa"])
def test_non_square_maps_are_exact(family):
    """Layouts: Lava's (W, H, C) order on a map with H != W (8x4), where a swapped axis cannot hide: conv and
    pool geometry, the flatten permutation into the Linear, and the per-neuron tables of static attention
    (MA-SNN's per-position gains, PFA's per-position payloads; TCJA's per-channel weights and step gains)."""
    Tn, shape = 6, (2, 8, 4)
    torch.manual_seed(7)
    model = _non_square(family, Tn)
    functional.set_step_mode(model, "m")
    model.eval()
    xc = bernoulli(Tn, 8, shape, 0.2, seed=7)
    make_busy(model, xc, rate=(0.1, 0.3), seed=7, iters=12)
    q = lower_for(model, shape, Tn, "static", calib=xc)
    ref, mism = lava_mismatches(q, bernoulli(Tn, 3, shape, 0.2, seed=70))
    bad = {k: v for k, v in mism.items() if v[0]}
    assert not bad, f"Lava != reference (layer: mismatches, reference-only, Lava-only): {bad}"
    rates = layer_rates(ref)
    assert all(r > 0.01 for r in rates.values()), rates
