"""neurocomp finetune: QAT on the folded graph emulates the quantizer exactly; loss goes down;
the new artifact records before/after and keeps the attention info."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from neurocomp import fixedpoint as fx
from neurocomp.api import compile as compile_
from neurocomp.artifact import Artifact
from neurocomp.errors import BadInput
from neurocomp.frontends.checkpoint import save_checkpoint
from neurocomp.frontends.torch import run_torch_model
from neurocomp.passes.pipeline import fold as folded_graph
from neurocomp.training.config import FinetuneConfig
from neurocomp.training.fakequant import QGain, layer_scale, qat_model
from neurocomp.training.finetune import finetune
from neurocomp.training.qat import (augment_events, evaluate_split, load_teacher, split_train_val, teacher_rates,
                                    train_qat, _data)
from neurocomp.training.rebuild import graph_to_module
from neurocomp.training.train import loss_fn, seed_everything

T = 4


def _cfg(**kw):
    """A training-loop recipe: no distillation, no weight averaging unless asked."""
    return FinetuneConfig(**{"distill": 0.0, "ema": 0.0, **kw})


def _tiny(tmp_path, builder, **kw):
    """A tiny model trained briefly in float (the zoo trainer), compiled."""
    from neurocomp.training.train import train
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
    out = run_torch_model(qat, torch.as_tensor(data.x_train[:, :n]))
    return float(loss_fn(out, torch.as_tensor(data.y_train[:n]), "smse", 10))


def test_qat_steps_lower_the_loss(plain_art):
    art = Artifact(plain_art)
    model, layers = graph_to_module(folded_graph(art.float_graph))
    qat, qsyn, _ = qat_model(model, layers)
    data = _data("digits", T, "bernoulli", 0)
    qat.eval()
    before = _loss(qat, data)
    params = [p for q in qsyn for p in q.syn.parameters()]
    train_qat(qat, params, [], data, _cfg(epochs=3, lr=1e-2, gain_lr=1e-2, limit=128), progress=False, eval_test=False)
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
        q, _ = fx.round_weights(qs.syn.weight.detach().double() * qs.w_gain, s, fx.weight_max(qs.weight_bits))
        np.testing.assert_array_equal(q.numpy(), syn.qweight)
        # the STE forward uses exactly the dequantized integers
        wq, bq = qs.fake_weights()
        back = wq.detach().double().numpy() * s * qs.w_gain        # float32 weights: 1e-7 relative
        np.testing.assert_allclose(back, syn.qweight, rtol=1e-6, atol=1e-6)
        bias_v = (neu.bias_mant * (2 ** neu.bias_exp)).reshape(-1)
        mant, exp, _ = fx.bias_mant_exp(fx.voltage_units(qs.syn.bias.detach().double() * qs.w_gain, s))
        got = fx.effective_bias(mant, exp).numpy()
        per = bias_v.reshape(got.shape[0], -1)   # conv: per channel, broadcast over positions
        np.testing.assert_array_equal(per, np.broadcast_to(got[:, None], per.shape))
        if L["gain"] is not None:
            qg = gains[id(mods[L["gain"]].sm if isinstance(mods[L["gain"]], QGain) else mods[L["gain"]])]
            table = qg.table().detach().double()
            mant = neu.gain_mant / (1 << neu.gain_shift)
            gm, gs = fx.gain_mantissa(table)
            np.testing.assert_array_equal(np.broadcast_to((gm / (1 << gs)).numpy(), mant.shape), mant)
            assert torch.equal(gm / (1 << gs), table)
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
    finetune(ma_art, out, epochs=1, lr=5e-3, limit=64, weights=False, progress=False, measure=False,
             val_fraction=0.0, ema=0.0)      # the last epoch's raw weights: this test checks that the gains moved
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


# ---- validation split, model selection, distillation, CLI ----------------------------------------

def test_val_split_is_stratified_disjoint_and_seeded():
    y = np.repeat(np.arange(4), [50, 30, 20, 100])
    tr, va = split_train_val(y, 0.1, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(200))
    assert [int((y[va] == c).sum()) for c in range(4)] == [5, 3, 2, 10]         # per class
    tr2, va2 = split_train_val(y, 0.1, seed=0)
    assert np.array_equal(va, va2)                                              # same seed, same split
    assert not np.array_equal(va, split_train_val(y, 0.1, seed=1)[1])           # another seed, another split
    assert len(split_train_val(y, 0.0, seed=0)[1]) == 0
    with pytest.raises(BadInput):
        split_train_val(y[:3], 0.1, seed=0)                                     # rounds to an empty validation set
    with pytest.raises(BadInput):
        split_train_val(y, 1.0, seed=0)


def _qat_of(path):
    art = Artifact(path)
    model, layers = graph_to_module(folded_graph(art.float_graph))
    qat, qsyn, qgain = qat_model(model, layers)
    return qat, [p for q in qsyn for p in q.syn.parameters()], qgain


class _Poisoned:
    """Data whose training inputs are NaN at the validation indices: training on any of them makes
    the loss and the weights NaN."""

    def __init__(self, data, val_idx):
        self.d, self.val_idx = data, val_idx
        self.y_train, self.x_test, self.y_test = data.y_train, data.x_test, data.y_test
        self.x_train, self.num_classes = data.x_train, data.num_classes

    def train_inputs(self, epoch):
        x = np.array(self.d.train_inputs(epoch), copy=True)
        x[:, self.val_idx] = np.nan
        return x


def test_training_never_sees_the_validation_samples(plain_art):
    qat, params, _ = _qat_of(plain_art)
    data = _data("digits", T, "bernoulli", 0)
    tr, va = split_train_val(data.y_train[:160], 0.2, seed=0)
    info = {}
    m = train_qat(qat, params, [], _Poisoned(data, va), _cfg(epochs=2, lr=1e-2, gain_lr=1e-2, select="last"),
                  progress=False, eval_test=False, train_idx=tr, val_idx=va, info=info)
    assert all(np.isfinite(r["train_loss"]) for r in m)
    assert all(bool(torch.isfinite(p).all()) for p in params)
    assert 0.0 <= m[-1]["val_acc_emulated_fixed"] <= 1.0 and info["selected_epoch"] == 2
    # the poison works: training on all 160 samples makes the weights NaN (the quantizer then fails)
    qat2, params2, _ = _qat_of(plain_art)
    with pytest.raises(ValueError, match="NaN"):
        train_qat(qat2, params2, [], _Poisoned(data, va), _cfg(epochs=1, lr=1e-2, gain_lr=1e-2, select="last"),
                  progress=False, eval_test=False, train_idx=np.arange(160))


def test_select_best_restores_the_chosen_epoch(plain_art):
    qat, params, _ = _qat_of(plain_art)
    data = _data("digits", T, "bernoulli", 0)
    tr, va = split_train_val(data.y_train[:192], 0.25, seed=0)
    info = {}
    m = train_qat(qat, params, [], data, _cfg(epochs=3, lr=3e-2, gain_lr=3e-2, select="best"),
                  progress=False, eval_test=False, train_idx=tr, val_idx=va, info=info)
    accs = [info["val_before"]["acc_emulated_fixed"]] + [r["val_acc_emulated_fixed"] for r in m]
    sel = info["selected_epoch"]
    assert 0 <= sel <= 3 and accs[sel] == max(accs) == info["val_selected"]["acc_emulated_fixed"]
    # the model left behind is that epoch's: same validation accuracy and loss, recomputed
    again = evaluate_split(qat, data.x_train[:, va], data.y_train[va], 10)
    assert again["acc"] == info["val_selected"]["acc_emulated_fixed"]
    assert again["loss"] == pytest.approx(info["val_selected"]["smse"], rel=1e-6)
    with pytest.raises(BadInput):
        train_qat(qat, params, [], data, _cfg(epochs=1, lr=1e-3, gain_lr=1e-3, select="best", limit=32), progress=False)


def test_teacher_rates_are_the_original_models_and_distillation_changes_training(tcja_art):
    from neurocomp.frontends.checkpoint import load_checkpoint
    data = _data("digits", T, "bernoulli", 0)
    teacher = load_teacher(Artifact(tcja_art).checkpoint)
    x = data.x_train[:, :40]
    ref = run_torch_model(load_checkpoint(Artifact(tcja_art).checkpoint).model, torch.as_tensor(x)).mean(0)
    rates = teacher_rates(teacher, x, batch_size=16)
    assert rates.shape == (40, 10) and torch.equal(rates, ref)
    finals = []
    for distill in (0.0, 0.9):
        art = Artifact(tcja_art)
        seed_everything(0)
        model, layers = graph_to_module(folded_graph(art.float_graph, "static"))
        qat, qsyn, qgain = qat_model(model, layers)
        params = [p for q in qsyn for p in q.syn.parameters()]
        m = train_qat(qat, params, [q.g for q in qgain], data, _cfg(epochs=1, lr=5e-3, gain_lr=5e-3, distill=distill),
                      progress=False, eval_test=False, train_idx=np.arange(64), teacher=teacher, qgains=qgain)
        finals.append((m[0]["train_loss"], torch.cat([p.detach().flatten() for p in params])))
    assert finals[0][0] != finals[1][0]                      # another loss ...
    assert not torch.equal(finals[0][1], finals[1][1])       # ... another model
    with pytest.raises(BadInput):
        train_qat(qat, params, [], data, _cfg(epochs=1, lr=1e-3, gain_lr=1e-3, distill=0.5, limit=32), progress=False)


def test_finetune_records_selection_and_distillation(tcja_art, tmp_path):
    out = str(tmp_path / "tcja_sel")
    rec = finetune(tcja_art, out, epochs=2, lr=5e-3, limit=120, progress=False, measure=False, distill=0.5)
    art = _check_emulation(out)                                # selection keeps the exact emulation
    ft = art.manifest["finetune"]
    assert ft == json.loads(json.dumps(rec))
    tr, va = split_train_val(_data("digits", T, "bernoulli", 0).y_train[:120], 0.1, 0)
    assert (ft["val_samples"], ft["train_samples"]) == (len(va), len(tr)) and len(va) + len(tr) == 120
    assert ft["select"] == "best"
    assert 0 <= ft["selected_epoch"] <= 2 and ft["distill"] == 0.5
    assert ft["teacher"]["checkpoint"] == "model.pt"
    accs = [ft["val_before"]["acc_emulated_fixed"]] + [r["val_acc_emulated_fixed"] for r in ft["metrics"]]
    assert ft["val_selected"]["acc_emulated_fixed"] == max(accs) == accs[ft["selected_epoch"]]
    # fine-tuning the fine-tuned artifact distils from the original model, not from the folded one
    rec2 = finetune(out, str(tmp_path / "tcja_sel2"), epochs=1, lr=1e-3, limit=64, progress=False, measure=False,
                    distill=0.5, val_fraction=0.0)
    assert rec2["teacher"]["checkpoint"] == "source_model.pt" and rec2["select"] == "last"
    assert rec2["selected_epoch"] == 1 and rec2["val_selected"] is None


def test_cli_flags_and_one_line_errors(tcja_art, tmp_path, capsys, monkeypatch):
    from neurocomp import cli
    a = cli.build_parser().parse_args(["finetune", "X", "-o", "Y", "--val-fraction", "0.2", "--distill", "0.3",
                                       "--select", "last", "--ema", "0.95"])
    assert (a.val_fraction, a.distill, a.select, a.ema) == (0.2, 0.3, "last", 0.95)
    d = cli.build_parser().parse_args(["finetune", "X", "-o", "Y"])
    D = FinetuneConfig()
    assert (d.val_fraction, d.distill, d.select, d.epochs, d.lr, d.ema, d.batch_size, d.loss) == (
        D.val_fraction, D.distill, None, D.epochs, D.lr, D.ema, D.batch_size, D.loss)
    for flags, word in ((["--distill", "1.5"], "--distill"), (["--distill", "-0.1"], "--distill"),
                        (["--val-fraction", "1"], "--val-fraction"), (["--val-fraction", "-0.2"], "--val-fraction"),
                        (["--val-fraction", "0", "--select", "best"], "--select"), (["--ema", "1"], "--ema")):
        rc = cli.main(["finetune", tcja_art, "-o", str(tmp_path / "never"), "-q", *flags])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith("error:") and word in err and "\n" not in err, (flags, err)
        assert not os.path.exists(tmp_path / "never")
    # a full (tiny) run through the CLI: the flags reach the manifest
    out = str(tmp_path / "cli_ft")
    rc = cli.main(["finetune", tcja_art, "-o", out, "-q", "--epochs", "1", "--train-samples", "80",
                   "--val-fraction", "0.25", "--distill", "0.25", "--lr", "1e-3", "--ema", "0.9"])
    assert rc == 0
    assert "kept epoch" in capsys.readouterr().out
    ft = Artifact(out).manifest["finetune"]
    tr, va = split_train_val(_data("digits", T, "bernoulli", 0).y_train[:80], 0.25, 0)
    assert (ft["val_samples"], ft["train_samples"], ft["distill"], ft["select"], ft["ema"]) == (
        len(va), len(tr), 0.25, "best", 0.9)


def test_ema_evaluates_and_returns_the_averaged_model(plain_art):
    data = _data("digits", T, "bernoulli", 0)
    tr, va = split_train_val(data.y_train[:192], 0.25, seed=0)
    finals = {}
    for ema in (0.0, 0.9):
        qat, params, _ = _qat_of(plain_art)
        m = train_qat(qat, params, [], data, _cfg(epochs=2, lr=3e-2, gain_lr=3e-2, select="last", ema=ema),
                      progress=False, eval_test=False, train_idx=tr, val_idx=va)
        again = evaluate_split(qat, data.x_train[:, va], data.y_train[va], 10)
        assert again["acc"] == m[-1]["val_acc_emulated_fixed"]          # validation saw the returned model
        assert again["loss"] == pytest.approx(m[-1]["val_smse"], rel=1e-6)
        finals[ema] = torch.cat([p.detach().flatten() for p in params])
    assert not torch.equal(finals[0.0], finals[0.9])
    with pytest.raises(BadInput):
        train_qat(qat, params, [], data, _cfg(epochs=1, lr=1e-3, gain_lr=1e-3, ema=1.0, limit=32), progress=False)


def test_augment_events_transposes_and_shifts_by_at_most_one_pixel(tcja_art, tmp_path):
    x = np.zeros((3, 64, 2, 6, 6), np.float32)
    x[0, :, 0, 2, 3] = 1.0                    # one ON event at (y=2, x=3), step 0, in every sample
    x[2, :, 1, 4, 1] = 1.0                    # one OFF event at (4, 1), step 2
    a = augment_events(x, np.random.default_rng(0))
    assert a.shape == x.shape and a.dtype == x.dtype and a.sum() == x.sum()   # nothing cut this far from the border
    transposed = 0
    for b in range(64):
        (t0, c0, y0, x0), = np.argwhere(a[0:1, b] > 0)
        (t2, c2, y2, x2), = np.argwhere(a[2:3, b] > 0)
        # same transform for both events: a shift of (2,3)->(4,1) or of the transposed pair (3,2)->(1,4)
        if abs(y0 - 2) <= 1 and abs(x0 - 3) <= 1 and (y2 - y0, x2 - x0) == (2, -2):
            pass
        elif abs(y0 - 3) <= 1 and abs(x0 - 2) <= 1 and (y2 - y0, x2 - x0) == (-2, 2):
            transposed += 1
        else:
            raise AssertionError((b, (y0, x0), (y2, x2)))
        assert (c0, c2) == (0, 1)
    assert 10 < transposed < 54                                        # about half
    assert np.array_equal(a, augment_events(x, np.random.default_rng(0)))     # seeded
    with pytest.raises(BadInput, match="augment"):
        finetune(tcja_art, str(tmp_path / "never"), epochs=1, augment=True, progress=False, measure=False)
    from neurocomp import cli
    assert cli.build_parser().parse_args(["finetune", "X", "-o", "Y", "--augment"]).augment is True
    assert cli.build_parser().parse_args(["finetune", "X", "-o", "Y"]).augment is False


def test_train_qat_with_augmentation_and_distillation_runs(tcja_art, monkeypatch):
    import neurocomp.training.qat as ftm
    data = _data("digits", T, "bernoulli", 0)       # train_qat itself does not look at the dataset
    teacher = load_teacher(Artifact(tcja_art).checkpoint)
    seen = {"aug": [], "teacher": []}
    real_aug, real_rates = ftm.augment_events, ftm.teacher_rates

    def aug(x, rng):
        out = real_aug(x, rng)
        seen["aug"].append(out)
        return out

    def rates(t, x, *a, **k):
        seen["teacher"].append(x)
        return real_rates(t, x, *a, **k)

    monkeypatch.setattr(ftm, "augment_events", aug)
    monkeypatch.setattr(ftm, "teacher_rates", rates)
    finals = []
    for augment in (False, True):
        art = Artifact(tcja_art)
        seed_everything(0)
        model, layers = graph_to_module(folded_graph(art.float_graph, "static"))
        qat, qsyn, qgain = qat_model(model, layers)
        params = [p for q in qsyn for p in q.syn.parameters()]
        seen["aug"].clear(), seen["teacher"].clear()
        m = train_qat(qat, params, [q.g for q in qgain], data,
                      _cfg(epochs=1, lr=5e-3, gain_lr=5e-3, distill=0.5, augment=augment),
                      progress=False, eval_test=False, train_idx=np.arange(64), teacher=teacher, qgains=qgain)
        assert np.isfinite(m[0]["train_loss"])
        finals.append(torch.cat([p.detach().flatten() for p in params]))
    # with augmentation: one augmented batch per step, and the teacher saw exactly those inputs
    assert len(seen["aug"]) == 2 and all(a is b for a, b in zip(seen["aug"], seen["teacher"]))
    assert not torch.equal(finals[0], finals[1])


def test_a_model_with_other_than_one_output_per_class_is_refused_in_one_line(tmp_path):
    """3 output neurons against the digits' 10 classes: a one-line error before any training or
    writing (it was a raw traceback in mse_loss)."""
    from spikingjelly.activation_based import layer, neuron
    model = torch.nn.Sequential(layer.Flatten(), layer.Linear(64, 3), neuron.LIFNode(tau=2.0))
    ckpt = str(tmp_path / "three.pt")
    save_checkpoint(model, ckpt, input_shape=[1, 8, 8], timesteps=T, encoding="bernoulli", dataset="digits")
    art = compile_(ckpt, str(tmp_path / "three.art"))
    out = tmp_path / "ft"
    with pytest.raises(BadInput, match="3 output neurons but dataset 'digits' has 10 classes"):
        finetune(art, str(out), _cfg(epochs=1), progress=False, measure=False)
    assert not out.exists()
