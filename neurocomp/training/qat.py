"""The quantization-aware training loop of fine-tuning (:func:`train_qat`) and what it needs.

Adam with cosine annealing on the model's training split; a stratified validation fraction is held
out (:func:`split_train_val`) and the epoch with the best emulated fixed-point validation accuracy is
kept (the test split is never used to choose); distillation adds an MSE between the output firing
rates and those of the original float model with its per-sample attention (the teacher,
:func:`load_teacher`, :func:`teacher_rates`); an exponential moving average of the trained
parameters is used for validation and the result; event recordings can be augmented
(:func:`augment_events`). Gains are kept non-negative. Every model runs over time through
:func:`neurocomp.frontends.torch.run_torch_model`.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from neurocomp.errors import BadInput
from neurocomp.frontends.torch import run_torch_model
from neurocomp.training.config import FinetuneConfig
from neurocomp.training.fakequant import QSynapse


def _data(dataset: str, T: int, encoding: str, seed: int):
    from neurocomp.training.train import DEFAULTS, Data
    from neurocomp.data.registry import DATASETS
    if dataset not in DATASETS:
        raise BadInput(f"the model's dataset is {dataset!r}", where="finetune",
                       hint=f"finetune trains on a named dataset's training split ({', '.join(DATASETS)})")
    recipe = dict(DEFAULTS, name="finetune", dataset=dataset, timesteps=T, encoding=encoding, seed=seed)
    return Data(recipe)


def split_train_val(y, val_fraction: float, seed: int):
    """Indices ``(train, val)`` of a stratified split of the training labels ``y``: per class, a
    seeded permutation, the first ``round(val_fraction * n_class)`` samples go to validation. The
    two sets are disjoint and cover ``range(len(y))``; ``val_fraction=0`` gives an empty ``val``."""
    y = np.asarray(y)
    n = len(y)
    if not 0.0 <= val_fraction < 1.0:
        raise BadInput(f"--val-fraction {val_fraction}", where="--val-fraction", hint="give a fraction in [0, 1)")
    if val_fraction == 0.0:
        return np.arange(n), np.zeros(0, np.int64)
    rng = np.random.default_rng([int(seed), 0x5A1])      # its own stream, independent of torch's
    val = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        val.extend(idx[:int(round(val_fraction * len(idx)))].tolist())
    val = np.sort(np.asarray(val, np.int64))
    train = np.setdiff1d(np.arange(n), val)
    if len(val) == 0 or len(train) == 0:
        raise BadInput(f"--val-fraction {val_fraction} of {n} training samples leaves an empty "
                       f"{'validation' if len(val) == 0 else 'training'} set", where="--val-fraction",
                       hint="use more training samples or another fraction")
    return train, val


def augment_events(x: np.ndarray, rng: np.random.Generator, max_shift: int = 1) -> np.ndarray:
    """Label-preserving augmentation of event recordings ``[T, B, C, H, W]`` (the synthetic motion
    set, :mod:`neurocomp.data.events`): per sample, with probability 1/2 a transpose of the sensor
    (a horizontal motion becomes a vertical one in the same "forward"/"backward" sense: right <-> down,
    left <-> up; speed unchanged), then a translation by up to ``max_shift`` pixels along each axis
    with zero fill (the position is a nuisance variable). The original events_pfa model keeps its
    test accuracy on inputs augmented so (99.6 % vs 99.4 %; with 2-pixel shifts it drops to 96.8 %:
    objects get cut at the border)."""
    T, B = x.shape[:2]
    H, W = x.shape[-2:]
    out = np.zeros_like(x)
    for b in range(B):
        s = x[:, b]
        if H == W and rng.random() < 0.5:
            s = s.swapaxes(-1, -2)
        dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
        ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
        xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
        out[:, b, ..., yd, xd] = s[..., ys, xs]
    return out


def load_teacher(path):
    """The original (float, per-sample attention) torch model of a checkpoint, in eval mode and frozen
    (:func:`teacher_rates` runs it)."""
    from neurocomp.frontends.checkpoint import load_checkpoint
    model = load_checkpoint(path).model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def teacher_rates(teacher, x: np.ndarray, batch_size: int = 128) -> torch.Tensor:
    """Output firing rates ``[N, K]`` (spike count / T) of ``teacher`` on time-major inputs ``x``."""
    return run_torch_model(teacher, x, batch_size=batch_size).mean(0)


def evaluate_split(model, x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int = 128) -> dict:
    """Accuracy (argmax of spike counts, ties to the lowest class as :func:`neurocomp.training.train.evaluate`)
    and SMSE loss of ``model`` on time-major inputs ``x`` (the loss summed batch by batch)."""
    model.eval()
    out_all = run_torch_model(model, x[:, :len(y)], batch_size=batch_size)
    correct, loss = 0, 0.0
    for i in range(0, len(y), batch_size):
        out = out_all[:, i:i + batch_size]
        yb = torch.as_tensor(y[i:i + batch_size])
        correct += int((out.sum(0).argmax(1) == yb).sum())
        loss += float(F.mse_loss(out.mean(0), F.one_hot(yb, num_classes).to(out.dtype), reduction="sum"))
    return {"acc": correct / len(y), "loss": loss / (len(y) * num_classes)}


def _snapshot(qat) -> dict:
    return {k: v.detach().clone() for k, v in qat.state_dict().items()}


def _invalidate(qat) -> None:
    """Weights changed outside the optimizer: recompute every layer's scale on next use."""
    for m in qat.modules():
        if isinstance(m, QSynapse):
            m._s, m._stale = None, True


def _restore(qat, state) -> None:
    qat.load_state_dict(state)
    _invalidate(qat)


@torch.no_grad()
def _swap(qat, params, shadow) -> None:
    """Exchange the values of ``params`` and their EMA ``shadow`` in place."""
    for p, e in zip(params, shadow):
        tmp = p.detach().clone()
        p.copy_(e)
        e.copy_(tmp)
    _invalidate(qat)


def train_qat(qat, params_w, params_g, data, config: FinetuneConfig, *, qgains=(), train_idx=None, val_idx=None,
              teacher=None, info: dict | None = None, name: str = "finetune", eval_test: bool = True,
              progress: bool = True) -> list:
    """Adam + cosine annealing over ``config.epochs``; returns per-epoch metrics (train loss/accuracy
    of the emulated fixed-point model, its validation and test accuracy). Of ``config`` it reads
    epochs, lr, gain_lr, loss, batch_size, seed, limit, select, distill, ema and augment.

    ``train_idx``/``val_idx``: indices into the training split (default: the first ``limit``
    samples, no validation). ``teacher`` with ``distill = a > 0``: the loss is
    ``(1 - a) * task + a * MSE(student rates, teacher rates)`` on the output firing rates.
    ``select`` ``"best"`` (the default with a validation split): after training, the weights of the
    epoch (0 = before training) with the best emulated fixed-point validation accuracy (ties: lower
    validation SMSE, then the later epoch) are restored; ``info`` receives ``select``,
    ``selected_epoch`` and the validation record.
    ``ema = d > 0``: an exponential moving average of the trained parameters (decay ``d`` per step)
    is kept; validation, test and the returned model use the averaged parameters.
    ``augment``: training batches go through :func:`augment_events` (the teacher, if any, sees the
    same augmented inputs)."""
    from tqdm import tqdm
    from neurocomp.training.train import loss_fn, seed_everything
    epochs, lr, gain_lr, loss, batch_size, seed, limit = (config.epochs, config.lr, config.gain_rate, config.loss,
                                                          config.batch_size, config.seed, config.limit)
    distill, ema, augment = config.distill, config.ema, config.augment
    if train_idx is None:
        train_idx = np.arange(len(data.y_train) if limit is None else min(limit, len(data.y_train)))
    train_idx = np.asarray(train_idx, np.int64)
    val_idx = np.zeros(0, np.int64) if val_idx is None else np.asarray(val_idx, np.int64)
    select = config.select or ("best" if len(val_idx) else "last")
    if select == "best" and len(val_idx) == 0:
        raise BadInput("--select best needs a validation split", where="--select",
                       hint="give --val-fraction > 0, or --select last")
    if distill and teacher is None:
        raise BadInput("distillation needs the teacher model", where="--distill", hint="give a teacher or --distill 0")
    aug_rng = np.random.default_rng([int(seed), 0xA06])
    seed_everything(seed)
    groups = [g for g in ({"params": params_w, "lr": lr}, {"params": params_g, "lr": gain_lr}) if g["params"]]
    opt = torch.optim.Adam(groups)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    gen = torch.Generator().manual_seed(seed)
    y_all = data.y_train
    y_train = y_all[train_idx]
    n, metrics = len(train_idx), []
    x_val, y_val = data.x_train[:, val_idx], y_all[val_idx]     # the fixed (epoch-0) encoding
    best = None
    trained = [p for p in list(params_w) + list(params_g)]
    shadow = [p.detach().clone() for p in trained] if ema else None

    def consider(epoch, v):
        nonlocal best
        key = (v["acc"], -v["loss"], epoch)
        if best is None or key > best[0]:
            best = (key, epoch, dict(v), _snapshot(qat))

    if len(val_idx):
        v0 = evaluate_split(qat, x_val, y_val, data.num_classes)
        if info is not None:
            info["val_before"] = {"acc_emulated_fixed": v0["acc"], "smse": v0["loss"]}
        if select == "best":
            consider(0, v0)
    t_cache = (None, None)
    for epoch in range(epochs):
        t0 = time.time()
        x_epoch = data.train_inputs(epoch)
        x_train = x_epoch[:, train_idx]
        t_rate = None
        if distill and not augment:
            if t_cache[0] is not x_epoch:          # events: once; digits: its Bernoulli spikes change per epoch
                t_cache = (x_epoch, teacher_rates(teacher, x_train))
            t_rate = t_cache[1]
        qat.train()
        order = torch.randperm(n, generator=gen).numpy()
        total, correct = 0.0, 0
        bar = tqdm(range(0, n, batch_size), desc=f"{name} epoch {epoch + 1}/{epochs}", disable=not progress,
                   leave=False, file=sys.stderr)
        for i in bar:
            idx = order[i:i + batch_size]
            xnp = x_train[:, idx]
            if augment:
                xnp = augment_events(xnp, aug_rng)
            xb, yb = torch.as_tensor(xnp), torch.as_tensor(y_train[idx])
            out = run_torch_model(qat, xb, grad=True)
            lo = loss_fn(out, yb, loss, data.num_classes)
            if distill:
                tr_b = teacher_rates(teacher, xnp) if augment else t_rate[idx]
                lo = (1.0 - distill) * lo + distill * F.mse_loss(out.mean(0), tr_b)
            opt.zero_grad()
            lo.backward()
            opt.step()
            with torch.no_grad():
                for qg in qgains:
                    qg.g.clamp_(min=0.0)
                if shadow is not None:
                    for p, e in zip(trained, shadow):
                        e.lerp_(p.detach(), 1.0 - ema)
            total += lo.item() * len(idx)
            correct += int((out.sum(0).argmax(1) == yb).sum())
            bar.set_postfix(loss=f"{lo.item():.4f}")
        row = {"epoch": epoch + 1, "train_loss": total / n, "train_acc": correct / n,
               "lr": opt.param_groups[0]["lr"]}
        sched.step()
        if shadow is not None:
            _swap(qat, trained, shadow)          # evaluate (and snapshot) the averaged model
        if len(val_idx):
            v = evaluate_split(qat, x_val, y_val, data.num_classes)
            row["val_acc_emulated_fixed"], row["val_smse"] = v["acc"], v["loss"]
            if select == "best":
                consider(epoch + 1, v)
        if eval_test:      # reported only: never used to choose anything
            row["test_acc_emulated_fixed"] = evaluate_split(qat, data.x_test, data.y_test, data.num_classes)["acc"]
        if shadow is not None:
            _swap(qat, trained, shadow)
        row["seconds"] = round(time.time() - t0, 2)
        metrics.append(row)
        if progress:
            print(json.dumps(row), file=sys.stderr)
    if shadow is not None and select == "last":
        _swap(qat, trained, shadow)
    if select == "best":
        _restore(qat, best[3])
        selected = best[1]
        sel_val = {"acc_emulated_fixed": best[2]["acc"], "smse": best[2]["loss"]}
    else:
        selected = epochs
        sel_val = ({"acc_emulated_fixed": metrics[-1]["val_acc_emulated_fixed"], "smse": metrics[-1]["val_smse"]}
                   if len(val_idx) and metrics else None)
    if info is not None:
        info["select"] = select
        info["selected_epoch"] = selected
        info["val_selected"] = sel_val
    qat.eval()
    return metrics
