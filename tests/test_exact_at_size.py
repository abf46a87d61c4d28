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
