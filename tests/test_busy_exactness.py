"""Lava == fixed-point reference on *busy* networks (issue 12), every layer and every step.

Every net here has each spiking layer set from data to fire at a chosen rate (``busy_nets.make_busy``:
BatchNorm statistics from the layer's input, affine by bisection), so large synaptic sums, pools
over many active inputs and wide layers are exercised, unlike trained-but-quiet or random nets.

Covered: plain (Conv-BN-LIF-MaxPool), TCJA, MA-SNN and PFA backbones in static, portable and
dynamic attention mode; the layer types of ``nc_testutils.make_net`` (IF, no decay_input, reset
!= 0, strided conv, BN1d, AvgPool before a conv, Linear-only); channel counts up to 256 (and 200,
a non-power of two) at 4x4..8x8 and spatial sizes up to 32x32; firing rates from almost silent
(1 %) to almost saturated (95 %); the issue's own 2x32x32 TCJA net, its MA-SNN and PFA
counterparts, and every zoo model made busy. The small 128-channel pool net fails without the
fix of issue 12 (Lava's Conv kept ``groups`` in int8: 128 -> -128, all-zero output).
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st
from spikingjelly.activation_based import functional, layer, neuron

from busy_nets import bernoulli, lava_mismatches, layer_rates, lower_for, make_busy
from nc_testutils import make_net, zoo_checkpoints
from neurocomp.nn import backbones

SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def assert_exact(q, x, min_rate=0.0):
    """Lava == reference on every layer and step; every non-output layer fires at >= ``min_rate``."""
    ref, mism = lava_mismatches(q, x)
    bad = {k: v for k, v in mism.items() if v[0]}
    assert not bad, f"Lava != reference (layer: mismatches, reference-only, Lava-only): {bad}"
    rates = layer_rates(ref)
    out_name = q.output_node.name
    quiet = {k: r for k, r in rates.items() if k != out_name and r < min_rate}
    assert not quiet, f"layers not busy: {quiet}"
    assert sum(int(s.sum()) for s in ref.spikes.values()) > 0
    return rates


def busy(model, shape, T, rate=(0.1, 0.3), seed=0, n=32, p=0.15, iters=24):
    functional.set_step_mode(model, "m")
    model.eval()
    x = bernoulli(T, n, shape, p, seed=1000 + seed)
    make_busy(model, x, rate=rate, seed=seed, iters=iters)
    return model, x


def lif():
    return neuron.LIFNode(tau=2.0, step_mode="m")


def pool_net(C, hw=8, groups_conv=False):
    """Conv-BN-LIF-MaxPool2 with C channels [-> depthwise Conv-BN-LIF] -> Linear-LIF."""
    mods = [layer.Conv2d(2, C, 3, padding=1), layer.BatchNorm2d(C), lif()]
    if groups_conv:
        mods += [layer.Conv2d(C, C, 3, padding=1, groups=C), layer.BatchNorm2d(C), lif()]
    mods += [layer.MaxPool2d(2), layer.Flatten(), layer.Linear(C * (hw // 2) ** 2, 10), lif()]
    return torch.nn.Sequential(*mods)


# ---- the small reproduction of issue 12 and its relatives -----------------------------------
@pytest.mark.lava
@pytest.mark.parametrize("C", [128, 200, 256])
def test_maxpool_over_wide_layer_is_exact(C):
    """A MaxPool over >= 128 busy channels (a groups = C sum pool in Lava): Lava's OR fires too.
    C=128 is the small reproduction of issue 12 (before the fix: every reference OR spike missing)."""
    T = 8
    model, _ = busy(pool_net(C, hw=4), (2, 4, 4), T, seed=C)
    q = lower_for(model, (2, 4, 4), T)
    assert_exact(q, bernoulli(T, 4, (2, 4, 4), 0.15, seed=C), min_rate=0.05)


@pytest.mark.lava
def test_depthwise_conv_with_128_groups_is_exact():
    """A user conv with groups = 128 (depthwise) has the same Lava int8 limit and is regrouped."""
    T = 6
    model, _ = busy(pool_net(128, hw=4, groups_conv=True), (2, 4, 4), T, seed=7)
    q = lower_for(model, (2, 4, 4), T)
    assert_exact(q, bernoulli(T, 3, (2, 4, 4), 0.2, seed=7), min_rate=0.05)


def test_regrouped_weight_computes_the_same_convolution():
    from neurocomp.backends.lava import regroup_conv_weight
    import torch.nn.functional as F
    gen = torch.Generator().manual_seed(0)
    for groups, co, ci in ((128, 128, 128), (200, 400, 200), (256, 256, 512), (131, 131, 131)):
        w = torch.randint(-128, 128, (co, ci // groups, 3, 3), generator=gen).numpy()
        w2, g2 = regroup_conv_weight(w, groups)
        assert g2 <= 127 and groups % g2 == 0
        x = (torch.rand(1, ci, 5, 5, generator=gen) < 0.5).double()
        a = F.conv2d(x, torch.as_tensor(w).double(), padding=1, groups=groups)
        b = F.conv2d(x, torch.as_tensor(w2).double(), padding=1, groups=g2)
        assert torch.equal(a, b)


# ---- firing-rate property test --------------------------------------------------------------
@pytest.mark.lava
@settings(max_examples=6, **SETTINGS)
@given(lo=st.sampled_from([0.01, 0.05, 0.2, 0.5, 0.8]), width=st.sampled_from([0.0, 0.15]),
       C=st.sampled_from([16, 130]), seed=st.integers(0, 1000))
def test_exact_at_any_firing_rate(lo, width, C, seed):
    """From almost silent to almost saturated layers (rates lo..lo+width per channel)."""
    T = 8
    hi = min(0.95, lo + width)
    mods = [layer.Conv2d(2, C, 3, padding=1), layer.BatchNorm2d(C), lif(), layer.MaxPool2d(2),
            layer.Conv2d(C, 32, 3, padding=1), layer.BatchNorm2d(32), lif(), layer.Flatten(),
            layer.Linear(32 * 16, 10), lif()]
    model, _ = busy(torch.nn.Sequential(*mods), (2, 8, 8), T, rate=(lo, hi), seed=seed)
    rates = assert_exact(lower_for(model, (2, 8, 8), T), bernoulli(T, 3, (2, 8, 8), 0.15, seed=seed))
    assert rates["2"] == pytest.approx((lo + hi) / 2, abs=0.1)   # the chosen rate is reached


# ---- every layer type, every backbone and attention mode -------------------------------------
@pytest.mark.lava
@pytest.mark.parametrize("variant", [0, 1, 2, 3])
def test_layer_types_busy(variant):
    model, shape = make_net(variant, seed=variant)
    T = 8
    model, _ = busy(model, shape, T, rate=(0.2, 0.6), seed=variant)
    assert_exact(lower_for(model, shape, T), bernoulli(T, 6, shape, 0.3, seed=variant), min_rate=0.02)


# MA-SNN and PFA in dynamic mode run at 128 channels and 32x32 below (the issue's counterparts)
FAMILIES = [("plain", "static"), ("tcja", "static"), ("tcja", "portable"), ("tcja", "dynamic"),
            ("ma", "static"), ("ma", "portable"), ("pfa", "static"), ("pfa", "portable")]


@pytest.mark.lava
@pytest.mark.parametrize("family,mode", FAMILIES, ids=[f"{f}-{m}" for f, m in FAMILIES])
def test_backbones_wide_busy(family, mode):
    """Each backbone with a 256-channel block (8x8 input, blocks 32 and 256 channels)."""
    T = 8
    kw = {} if family == "plain" else {"T": T}
    model = backbones.build(family, in_channels=2, input_hw=8, channels=(32, 256), num_classes=10, **kw)
    model, xc = busy(model, (2, 8, 8), T, seed=len(family))
    q = lower_for(model, (2, 8, 8), T, mode, calib=xc)
    assert_exact(q, bernoulli(T, 3, (2, 8, 8), 0.15, seed=3), min_rate=0.02)


# ---- the net of issue 12 and its MA-SNN / PFA counterparts, 2x32x32, T = 16, 16 samples -----
ISSUE_T, ISSUE_SAMPLES = 16, 16
ISSUE = [("tcja", "static", 0.05), ("tcja", "dynamic", 0.05), ("ma", "static", 0.02), ("ma", "dynamic", 0.02),
         ("pfa", "static", 0.02), ("pfa", "dynamic", 0.02)]


def issue_net(family, hw=32):
    model = backbones.build(family, T=ISSUE_T, in_channels=2, input_hw=hw, channels=(32, 64, 128),
                            num_classes=10)
    return busy(model, (2, hw, hw), ISSUE_T, rate=(0.1, 0.3), seed=12, n=8, iters=14)


@pytest.fixture(scope="module")
def issue_nets():
    """Each family's busy 2x32x32 net, built once for its static and dynamic test."""
    built = {}

    def get(family):
        if family not in built:
            built[family] = issue_net(family)
        return built[family]
    return get


@pytest.mark.lava
@pytest.mark.parametrize("family,mode,min_rate", ISSUE, ids=[f"{f}-{m}" for f, m, _ in ISSUE])
def test_issue_12_net_and_counterparts_are_exact(issue_nets, family, mode, min_rate):
    """The issue's TCJA net (blocks 32/64/128, Conv3x3-BN-LIF-attention-MaxPool2, head Linear-LIF,
    every layer at 10-30 %) and its MA-SNN and PFA counterparts of the same shape, in static and
    dynamic attention mode: Lava == reference on every layer and step of 16 Bernoulli(0.15) samples.
    (PFA static folds its spatial maps into graded spike payloads, tests/test_fold_scaling.py.)"""
    model, xc = issue_nets(family)
    q = lower_for(model, (2, 32, 32), ISSUE_T, mode, calib=xc)
    assert_exact(q, bernoulli(ISSUE_T, ISSUE_SAMPLES, (2, 32, 32), 0.15, seed=2), min_rate=min_rate)


# ---- the zoo, every layer made busy -----------------------------------------------------------
ZOO = zoo_checkpoints()       # the chain zoo (the residual zoo: tests/test_residual_zoo.py)


@pytest.mark.lava
@pytest.mark.parametrize("path", ZOO, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_zoo_models_made_busy_are_exact(path):
    from neurocomp.data.registry import load_inputs
    from neurocomp.frontends.attention import attention_modules
    from neurocomp.frontends.checkpoint import load_checkpoint
    m = load_checkpoint(path)
    T, shape = m.timesteps, tuple(m.input_shape)
    xc, _ = load_inputs(m.dataset, "train", T, m.encoding, n=32)
    xc = torch.as_tensor(xc).float()
    make_busy(m.model, xc, rate=(0.15, 0.4), seed=1)
    x, _ = load_inputs(m.dataset, "test", T, m.encoding, n=6)
    x = torch.as_tensor(x)
    modes = ["static", "dynamic"] if attention_modules(m.model) else ["static"]
    for mode in modes:
        assert_exact(lower_for(m.model, shape, T, mode, calib=xc, encoding=m.encoding), x, min_rate=0.02)


# ---- quantization is reported apart from exactness -------------------------------------------
@pytest.mark.lava
def test_simulate_reports_quantization_apart_from_exactness(tmp_path):
    """On a busy net the fixed point disagrees with the float graph on some spikes (quantization),
    while Lava equals the reference: simulate shows both, separately."""
    import numpy as np
    from neurocomp import save_checkpoint
    from neurocomp.api import compile as nc_compile, format_result, simulate
    from neurocomp.artifact import Artifact
    from neurocomp.sim import run_fixed, run_float
    T = 8
    model, _ = busy(pool_net(16, hw=8), (2, 8, 8), T, rate=(0.2, 0.5), seed=3)
    ckpt = str(tmp_path / "busy.pt")
    save_checkpoint(model, ckpt, input_shape=(2, 8, 8), timesteps=T, encoding="bernoulli")
    out = nc_compile(ckpt, str(tmp_path / "art"))
    x = bernoulli(T, 12, (2, 8, 8), 0.2, seed=4)
    r = simulate(out, backend="lava", inputs=np.swapaxes(x.numpy(), 0, 1), progress=False)
    assert r["exact_match_fraction"] == 1.0
    art = Artifact(out)
    f, q = run_float(art.float_graph, x), run_fixed(art.fixed_graph, x)
    rows = {row["name"]: row for row in r["quantization"]["per_layer"]}
    assert set(rows) == set(q.spikes)
    for name, s in q.spikes.items():
        agree = float((f.spikes[name].bool() == s.bool()).float().mean())
        assert rows[name]["agreement"] == pytest.approx(agree)
        assert rows[name]["fixed_spikes"] == int(s.sum())
    assert min(row["agreement"] for row in rows.values()) < 1.0     # a busy net shows quantization error
    same = float((f.predictions() == q.predictions()).float().mean())
    assert r["quantization"]["same_class_fixed_vs_float_graph"] == pytest.approx(same)
    text = format_result(r)
    assert "quantization" in text and "exact match Lava vs reference" in text
