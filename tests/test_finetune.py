"""neurocomp finetune: QAT on the folded graph emulates the quantizer exactly; loss goes down;
the new artifact records before/after and keeps the attention info."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from neurocomp.api import compile as compile_
from neurocomp.artifact import Artifact
from neurocomp.errors import BadInput
from neurocomp.finetune import (QGain, QSynapse, finetune, folded_graph, graph_to_module, qat_model,
                                quantize_bias, quantize_gain, quantize_weight, layer_scale, train_qat, _data)
from neurocomp.frontends.checkpoint import save_checkpoint
from neurocomp.train import loss_fn, seed_everything

T = 4


def _tiny(tmp_path, builder, **kw):
    """A tiny model trained briefly in float (the zoo trainer), compiled."""
    from neurocomp.train import train
    recipe = {"name": f"tiny_{builder}", "dataset": "digits", "timesteps": T, "epochs": 2, "lr": 5e-3,
              "model": {"builder": builder, "kwargs": dict(T=T, in_channels=1, num_classes=10, input_hw=8,
                                                           channels=[4], **kw)}}
    model = train(recipe, save=False, progress=False, limit=384)["model"].eval()
    ckpt = str(tmp_path / f"{builder}.pt")
    save_checkpoint(model, ckpt, input_shape=[1, 8, 8], timesteps=T, encoding="bernoulli", dataset="digits")
    art = compile_(ckpt, str(tmp_path / f"{builder}.art"), calib_samples=64)
    return art


@pytest.fixture(scope="module")
def plain_art(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("ft_plain"), "plain")


@pytest.fixture(scope="module")
def ma_art(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("ft_ma"), "ma", t_ratio=2, c_ratio=2)


@pytest.fixture(scope="module")
def tcja_art(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("ft_tcja"), "tcja", kernel_size_t=2, kernel_size_c=2)


def _loss(qat, data, n=128):
    from neurocomp.finetune import _forward
    with torch.no_grad():
        out = _forward(qat, torch.as_tensor(data.x_train[:, :n]))
        return float(loss_fn(out, torch.as_tensor(data.y_train[:n]), "smse", 10))


def test_qat_steps_lower_the_loss(plain_art):
    art = Artifact(plain_art)
    model, layers = graph_to_module(folded_graph(art.float_graph))
    qat, qsyn, _ = qat_model(model, layers)
    data = _data("digits", T, "bernoulli", 0)
    qat.eval()
    before = _loss(qat, data)
    params = [p for q in qsyn for p in q.syn.parameters()]
    train_qat(qat, params, [], data, epochs=3, lr=1e-2, gain_lr=1e-2, limit=128, progress=False, eval_test=False)
    qat.eval()
    after = _loss(qat, data)
    assert after < 0.9 * before, (before, after)


def _check_emulation(path):
    """The fake-quantized weights/biases/gains of the rebuilt model are the artifact's integers."""
    art = Artifact(path)
    model, layers = graph_to_module(folded_graph(art.float_graph, (art.manifest.get("attention") or {})
                                                 .get("mode", "static")))
    qat, qsyn, qgain = qat_model(model, layers)
    qat.eval()
    fixed = {n.name: n for n in art.fixed_graph.nodes}
    recs = {r["layer"]: r for p in art.fixed_graph.meta["passes"] if p["pass"] == "quantize" for r in p["layers"]}
    gains = {id(qg.sm): qg for qg in qgain}
    mods = list(model)
    checked = 0
    for L, qs in zip(layers, qsyn):
        rec = recs[L["name"]]
        syn, neu = fixed[rec["synapse"]], fixed[L["name"]].fixed
        s = layer_scale(qs.syn.weight, qs.theta, qs.w_gain, qs.weight_bits)
        assert s == pytest.approx(rec["scale"], rel=0, abs=0)
        q = quantize_weight(qs.syn.weight, s, qs.w_gain, qs.weight_bits).numpy()
        np.testing.assert_array_equal(q, syn.qweight)
        # the STE forward uses exactly the dequantized integers
        wq, bq = qs.fake_weights()
        back = wq.detach().double().numpy() * s * qs.w_gain        # float32 weights: 1e-7 relative
        np.testing.assert_allclose(back, syn.qweight, rtol=1e-6, atol=1e-6)
        bias_v = (neu.bias_mant * (2 ** neu.bias_exp)).reshape(-1)
        got = quantize_bias(qs.syn.bias, s, qs.w_gain).numpy()
        per = bias_v.reshape(got.shape[0], -1)   # conv: per channel, broadcast over positions
        np.testing.assert_array_equal(per, np.broadcast_to(got[:, None], per.shape))
        if L["gain"] is not None:
            qg = gains[id(mods[L["gain"]].sm if isinstance(mods[L["gain"]], QGain) else mods[L["gain"]])]
            table = qg.table().detach().double()
            mant = neu.gain_mant / (1 << neu.gain_shift)
            np.testing.assert_array_equal(np.broadcast_to(quantize_gain(table).numpy(), mant.shape), mant)
            assert torch.equal(quantize_gain(table), table)
        checked += 1
    assert checked == len(layers) >= 2
    return art


def test_plain_finetune_manifest_and_emulation(plain_art, tmp_path):
    out = str(tmp_path / "plain_ft")
    rec = finetune(plain_art, out, epochs=1, lr=1e-3, limit=96, progress=False)
    art = _check_emulation(out)
    ft = art.manifest["finetune"]
    assert ft["epochs"] == 1 and ft["lr"] == 1e-3 and ft["trained"] == ["weights", "biases"]
    for side in ("before", "after"):
        assert 0.0 <= ft[side]["fixed_reference"] <= 1.0 and ft[side]["samples"] == 360
    assert ft["before"]["float_torch"] is not None and ft["after"]["float_torch"] is not None
    assert len(ft["metrics"]) == 1 and "train_loss" in ft["metrics"][0]
    assert rec["after"] == ft["after"]
    assert art.manifest["attention"] is None
    assert os.path.exists(os.path.join(out, "source_model.pt"))
    with pytest.raises(BadInput):
        finetune(plain_art, str(tmp_path / "nothing"), epochs=1, weights=False, progress=False, measure=False)


def test_ma_gain_tables_train_and_fold_exactly(ma_art, tmp_path):
    src = Artifact(ma_art)
    out = str(tmp_path / "ma_ft")
    finetune(ma_art, out, epochs=1, lr=5e-3, limit=64, weights=False, progress=False, measure=False)
    art = _check_emulation(out)
    assert art.manifest["finetune"]["trained"] == ["gain tables"]
    assert art.manifest["attention"]["maps"] == src.manifest["attention"]["maps"]
    # only the gains moved: the integer weights are the source artifact's
    a = {n.name: n for n in src.fixed_graph.nodes if getattr(n, "qweight", None) is not None}
    b = {n.name: n for n in art.fixed_graph.nodes if getattr(n, "qweight", None) is not None}
    assert [np.asarray(n.qweight).shape for n in a.values()] == [np.asarray(n.qweight).shape for n in b.values()]
    for x, y in zip(a.values(), b.values()):
        np.testing.assert_array_equal(x.qweight, y.qweight)
    ga = [n.fixed.gain_mant for n in src.fixed_graph.nodes if getattr(getattr(n, "fixed", None), "gain_mant", None) is not None]
    gb = [n.fixed.gain_mant for n in art.fixed_graph.nodes if getattr(getattr(n, "fixed", None), "gain_mant", None) is not None]
    assert len(ga) == len(gb) == 2 and any(not np.array_equal(x, y) for x, y in zip(ga, gb))


def test_tcja_spike_gains_keep_mean_one(tcja_art, tmp_path):
    out = str(tmp_path / "tcja_ft")
    finetune(tcja_art, out, epochs=1, lr=5e-3, limit=64, progress=False, measure=False)
    art = _check_emulation(out)
    folds = [r for p in art.manifest["passes"] if p["pass"] == "fold_attention" for r in p["maps"]]
    assert folds and all(r["error"] < 1e-6 for r in folds)      # rank-1 by construction
    from neurocomp.frontends.checkpoint import load_checkpoint
    maps = [m.map for m in load_checkpoint(art.checkpoint).model if type(m).__name__ == "StaticMap"]
    assert maps and all(abs(float(m.mean()) - 1.0) < 1e-5 for m in maps)
