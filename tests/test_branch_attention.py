"""Attention inside branching graphs (issue 15 item 3), through neurocomp's front door.

Tiny user block classes (tests/residual_models.py), made busy, compiled by ``neurocomp.api.compile`` and
checked: the float reference equals the user's torch model (its static version in static/portable mode)
spike for spike on every neuron layer, and Lava equals the fixed-point reference on every layer and step.

- MA-SNN's CSA-MS-ResNet block: CSA on the residual branch's current before the membrane-level add, in
  static (two stacked blocks: the last neuron gains two groups, each with its own map), portable and
  dynamic mode; the neuron after the add gains only those synapse groups, the shortcut stays plain.
- TCJA under an MS-ResNet block (the official TCJA class, torch.save + trust_pickle), static and dynamic:
  the rank-1 g[t] (dynamic: the gate's payload scale) applies to the conv after the map, one group of a
  two-group neuron.
- PFA (a spatially varying map on spikes; the official TCSAModule class, save_checkpoint) inside a
  Spiking-ResNet block, static (B per position in front of the conv: graded payloads of the neuron before
  it, the conv kept, exact; g[t] on that group, the shortcut plain) and dynamic.
- One-line refusals for what is not built.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

import official_fixtures as of
import residual_models as rm
from busy_nets import bernoulli, lava_mismatches
from test_residual_models import busy
from neurocomp import api
from neurocomp.errors import NeurocompError
from neurocomp.frontends.checkpoint import load_checkpoint, save_checkpoint
from neurocomp.frontends.torch import run_torch_model
from neurocomp.ir.serialize import load_graph
from neurocomp.passes.pipeline import fold
from neurocomp.sim import run_float

T, SHAPE = 4, (2, 8, 8)


def _compile(model, tmp, mode, pickle=False):
    np.save(tmp / "calib.npy", bernoulli(T, 8, SHAPE, p=0.3, seed=4).numpy().swapaxes(0, 1))
    if pickle:
        torch.save(model, tmp / "model.pt")
        return api.compile(str(tmp / "model.pt"), str(tmp / "art"), trust_pickle=True, input_shape=SHAPE, timesteps=T,
                           encoding="bernoulli", attention=mode, calib=str(tmp / "calib.npy"))
    ckpt = save_checkpoint(model, str(tmp / "model.pt"), input_shape=SHAPE, timesteps=T, encoding="bernoulli")
    return api.compile(ckpt, str(tmp / "art"), attention=mode, calib=str(tmp / "calib.npy"))


def _build(cls, mode, tmp_path_factory, pickle=False, **kw):
    torch.manual_seed(0)
    model = busy(cls(**kw).eval(), seed=1)
    tmp = tmp_path_factory.mktemp(f"{cls.__name__}_{mode}")
    out = _compile(model, tmp, mode, pickle)
    torch_model = model if mode == "dynamic" else load_checkpoint(os.path.join(out, "static_model.pt")).model
    return {"model": model, "torch": torch_model, "out": out, "mode": mode,
            "float": load_graph(os.path.join(out, "float")), "fixed": load_graph(os.path.join(out, "fixed")),
            "manifest": json.load(open(os.path.join(out, "manifest.json")))}


X = bernoulli(T, 3, SHAPE, p=0.3, seed=5)


def _neurons(model):
    return [p for p, m in model.named_modules() if type(m).__name__ == "LIFNode"]


def _check_exact(art, lava=True):
    """Float reference == torch on every neuron layer; Lava == fixed reference on every layer and step."""
    neurons = _neurons(art["torch"])
    _, want = run_torch_model(art["torch"], X, record=neurons)
    got = run_float(art["float"], X)
    for n in neurons:
        assert torch.equal(got.spikes[n].bool(), want[n].bool()), n
    assert all(int(want[n].sum()) > 0 for n in neurons), {n: int(want[n].sum()) for n in neurons}
    if not lava:
        return want
    ref, mism = lava_mismatches(art["fixed"], X)
    bad = {k: v for k, v in mism.items() if v[0]}
    assert not bad, f"Lava != reference (layer: mismatches, reference-only, Lava-only): {bad}"
    assert sum(int(s.sum()) for s in ref.spikes.values()) > 0
    return want


def _quantized(art, layer):
    return next(r for p in art["fixed"].meta["passes"] if p["pass"] == "quantize" for r in p["layers"]
                if r["layer"] == layer)


@pytest.fixture(scope="module", params=["static", "portable", "dynamic"])
def csa(request, tmp_path_factory):
    return _build(rm.CSAMSNet2 if request.param == "static" else rm.CSAMSNet, request.param, tmp_path_factory)


@pytest.mark.lava
def test_csa_ms_block_gains_only_the_residual_branch_exactly(csa):
    want = _check_exact(csa, lava=csa["mode"] != "portable")     # portable runs stock Lava processes only
    neu = csa["fixed"]["sn"]
    if csa["mode"] == "portable":        # the map's per-channel mean is in the branch conv: no gain at all
        assert not neu.gain_groups and not neu.fixed.gain_scheduled
        return
    maps = next(p for p in csa["manifest"]["passes"] if p["pass"] == "fold_attention")["maps"]
    if csa["mode"] == "static":
        # block 2's first neuron: block 1's branch gained, the stem's current (the shortcut) plain; the last
        # neuron: block 1's branch (its copy) gained, block 2's branch with its own map, the stem plain
        assert csa["fixed"]["block2.sn1"].gain_groups == ("block1.conv2",)
        assert neu.gain_groups == ("block1.conv2@sn",) and neu.more_groups == ("block2.conv2",)
        assert neu.fixed.more_rectify == (True,) and neu.fixed.more_bias.shape == (1, 4, 8, 8)
        rec = _quantized(csa, "sn")
        assert rec["further_gained_groups"] == ["block2.conv2"] and rec["plain_groups"] == ["stem.0@sn"]
        assert [m["gained_groups"] for m in maps] == [["block1.conv2"], ["block2.conv2"]]
        # the fold itself is exact: the folded float graph is the static model, spike for spike
        folded = run_float(fold(csa["float"], "static"), X)
        for n, s in want.items():
            assert torch.equal(folded.spikes[n].bool(), s.bool()), n
    else:
        assert neu.gain_groups == ("block.conv2",) and neu.fixed.dynamic_gain
        rec = _quantized(csa, "sn")
        assert rec["gained_groups"] == ["block.conv2"] and rec["plain_groups"] == ["stem.0@sn"]
        assert [m["gained_groups"] for m in maps] == [["block.conv2"]]
    assert neu.fixed.plain_bias is not None and neu.fixed.gain_on_bias and neu.fixed.rectify


@pytest.mark.lava
def test_a_map_after_the_add_gains_every_group(tmp_path_factory):
    art = _build(rm.CSAAfterAddNet, "static", tmp_path_factory)
    want = _check_exact(art)
    neu = art["fixed"]["sn"]
    assert neu.gain_groups == () and neu.input_gain is not None and neu.fixed.plain_bias is None
    folded = run_float(fold(art["float"], "static"), X)
    assert torch.equal(folded.spikes["sn"].bool(), want["sn"].bool())


@pytest.mark.lava
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_tcja_under_an_ms_block_official_class_pickled(mode, tmp_path_factory):
    art = _build(rm.TCJAMSNet, mode, tmp_path_factory, pickle=True, tcja=of.TCJA(2, 1, T, 4))
    _check_exact(art)
    neu = art["fixed"]["sn"]
    # static: g[t]; dynamic: the payloads' 2**-8 -- on the conv after the map only, not on the shortcut
    assert neu.gain_groups == ("block.conv2",)
    assert not neu.fixed.gain_on_bias and neu.fixed.plain_bias is not None
    assert neu.fixed.gain_shift == 8 if mode == "dynamic" else neu.fixed.gain_mant.shape[0] == T
    rec = next(p for p in art["manifest"]["passes"] if p["pass"] == "fold_attention")["maps"][0]
    assert rec["acts_on"] == "spikes" and rec["consumer"] == ["sn"]
    assert rec["gained_groups"] == ["block.conv2"]


@pytest.mark.lava
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_pfa_inside_a_resnet_block_official_class(mode, tmp_path_factory):
    art = _build(rm.PFAResNet, mode, tmp_path_factory, pfa=of.TCSAModule(H=8, W=8, T=T, C=4, rank=2))
    _check_exact(art)
    assert art["fixed"]["block.sn2"].gain_groups == ("block.conv2",)
    assert _quantized(art, "block.sn2")["plain_groups"] == ["add1.shortcut1"]
    if mode == "static":   # B as graded payloads of sn1 into conv2 (no Dense); the shortcut's group plain
        assert "dense" not in [n.kind for n in art["fixed"]]
        assert _quantized(art, "block.sn2")["payload"]["into_group"] == "block.conv2"


@pytest.mark.lava
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_official_ma_csa_on_b_t_inside_a_time_major_block(mode, tmp_path_factory):
    """MA-SNN's own CSA class takes [B, T, ...]: a block that turns the branch's current for it and back."""
    art = _build(rm.OfficialCSAMSNet, mode, tmp_path_factory, att=of.CSA(T, 4, c_ratio=2, t_ratio=2))
    _check_exact(art)
    assert art["fixed"]["sn"].gain_groups == ("block.conv1",)          # the branch (BN folded into its conv)
    assert _quantized(art, "sn")["plain_groups"] == ["stem.0@sn"]


@pytest.mark.parametrize("cls,mode,words", [
    (rm.SharedSpikeMapNet, "static", "layer 'tcja'"),
    (rm.SharedSpikeMapNet, "dynamic", "layer 'tcja'"),
    (rm.CSAMSNet2, "dynamic", "layer 'block1.att'"),
    (rm.CSAAfterAddNet, "portable", "layer 'att'"),
], ids=["spike_map_into_an_add", "dynamic_spike_map_into_an_add", "dynamic_map_reaching_two_neurons",
        "portable_map_on_a_shared_current"])
def test_unsupported_attention_in_a_graph_is_one_line(cls, mode, words, tmp_path):
    model = cls().eval()
    with pytest.raises(NeurocompError) as e:
        _compile(model, tmp_path, mode)
    msg = e.value.one_line()
    assert words in msg and "\n" not in msg
    assert "--attention static" in msg or "feed the scaled spikes" in msg        # the next step that works
    assert not os.path.exists(tmp_path / "art")
