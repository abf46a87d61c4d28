"""Train a zoo model from a JSON recipe: ``neurocomp train RECIPE`` / ``python -m neurocomp.training.train``.

A recipe (``models/<name>/recipe.json``)::

    {
      "name": "digits_plain",
      "model": {"builder": "plain", "kwargs": {...}},     # neurocomp.nn.backbones.BUILDERS
      "dataset": "digits" | "events" | "gesture32",
      "dataset_kwargs": {...},                           # events: n_train, n_test, seed, noise
                                                         # gesture32: also hot_pixels, native
      "timesteps": 8,
      "encoding": "bernoulli" | "current" | "events",    # digits: see neurocomp.data.digits
      "resample_encoding": true,                         # digits/bernoulli: fresh train draws each epoch
      "loss": "smse" | "tet",  "tet_lambda": 0.001,
      "lr": 0.001, "weight_decay": 0.0,                   # Adam + cosine annealing over the epochs
      "epochs": 30, "batch_size": 32, "seed": 0,
      "description": "free text for the model card"
    }

The surrogate (``atan`` or ``triangle``) is a backbone kwarg (``surrogate_name``). Losses:
**SMSE** = MSE(mean over T of the output spikes, one-hot label); **TET** =
``(1−λ)·mean_t CE(o_t, y) + λ·MSE(o, 1)`` with the output spikes as logits.

Outputs, in ``--out`` (default: the recipe's folder): ``model.pt`` (neurocomp checkpoint, via
:func:`neurocomp.frontends.checkpoint.save_checkpoint`), ``metrics.json`` (per-epoch train loss,
train and test accuracy, lr, seconds; rewritten after every epoch) and ``card.md`` (sections that
other tools keep between ``<!-- name:begin -->`` and ``<!-- name:end -->`` survive a retrain).
Seeds fix torch, numpy and the data order; CUDA is used when available, else CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from neurocomp.frontends.torch import run_torch_model
from neurocomp.nn import build, param_count

_SECTION = re.compile(r"<!-- ([\w.-]+):begin -->.*?<!-- \1:end -->", re.S)
DEFAULTS = {
    "dataset_kwargs": {}, "encoding": "bernoulli", "resample_encoding": True, "loss": "smse",
    "tet_lambda": 1e-3, "lr": 1e-3, "weight_decay": 0.0, "epochs": 30, "batch_size": 32,
    "seed": 0, "description": "",
}


def load_recipe(recipe) -> dict:
    """A recipe dict from a path or a dict, with defaults filled in."""
    if isinstance(recipe, (str, os.PathLike)):
        from neurocomp import safeio
        from neurocomp.errors import BadInput
        path = str(recipe)
        text = safeio.read_bytes(path, error=BadInput, what="recipe", max_bytes=1 << 20)
        try:
            recipe = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadInput(f"is not valid JSON ({e})", where=path, hint="fix the recipe file")
        if not isinstance(recipe, dict):
            raise BadInput("is not a JSON object", where=path, hint="a recipe is an object of settings")
    out = dict(DEFAULTS)
    out.update(recipe)
    for key in ("name", "model", "dataset", "timesteps"):
        if key not in out:
            raise ValueError(f"recipe is missing '{key}'")
    return out


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


class Data:
    """Train/test inputs, time-major ``[T, N, ...]`` float32 spikes, and labels."""

    def __init__(self, recipe: dict):
        self.recipe = recipe
        T, kw = recipe["timesteps"], recipe["dataset_kwargs"]
        if recipe["dataset"] == "digits":
            from neurocomp.data import digits
            self.input_shape = digits.INPUT_SHAPE
            self.num_classes = digits.NUM_CLASSES
            self._static_train, self.y_train = digits.load_split("train")
            static_test, self.y_test = digits.load_split("test")
            self.x_test = digits.encode(static_test, T, recipe["encoding"], seed=0)
            self.x_train = digits.encode(self._static_train, T, recipe["encoding"], seed=0)
            self._encode = digits.encode
        elif recipe["dataset"] == "events":
            from neurocomp.data import events
            if recipe["encoding"] != "events":
                raise ValueError("the events dataset needs encoding 'events'")
            common = dict(seed=kw.get("seed", 0), timesteps=T, noise=kw.get("noise", 0.01),
                          cache_dir=kw.get("cache_dir"))
            self.x_train, self.y_train = events.load_split("train", kw.get("n_train"), **common)
            self.x_test, self.y_test = events.load_split("test", kw.get("n_test"), **common)
            self.input_shape = events.INPUT_SHAPE
            self.num_classes = events.NUM_CLASSES
            self._static_train = None
        elif recipe["dataset"] == "gesture32":
            from neurocomp.data import gesture
            if recipe["encoding"] != "events":
                raise ValueError("the gesture32 dataset needs encoding 'events'")
            common = dict(seed=kw.get("seed", 0), timesteps=T, noise=kw.get("noise", gesture.NOISE),
                          hot_pixels=kw.get("hot_pixels", gesture.HOT_PIXELS),
                          native=kw.get("native", gesture.NATIVE), cache_dir=kw.get("cache_dir"))
            self.x_train, self.y_train = gesture.load_split("train", kw.get("n_train"), **common)
            self.x_test, self.y_test = gesture.load_split("test", kw.get("n_test"), **common)
            self.input_shape = gesture.INPUT_SHAPE
            self.num_classes = gesture.NUM_CLASSES
            self._static_train = None
        else:
            raise ValueError(f"unknown dataset '{recipe['dataset']}' (use 'digits', 'events' or 'gesture32')")

    def train_inputs(self, epoch: int) -> np.ndarray:
        """Training inputs for ``epoch`` (fresh Bernoulli draws per epoch when resampling)."""
        r = self.recipe
        if (self._static_train is not None and r["encoding"] == "bernoulli"
                and r["resample_encoding"] and epoch > 0):
            return self._encode(self._static_train, r["timesteps"], "bernoulli",
                                seed=1000 + r["seed"] * 1000 + epoch)
        return self.x_train


def loss_fn(out: torch.Tensor, y: torch.Tensor, kind: str, num_classes: int,
            tet_lambda: float = 1e-3) -> torch.Tensor:
    """SMSE or TET loss of output spikes ``out [T, B, K]`` against labels ``y [B]``."""
    if kind == "smse":
        return F.mse_loss(out.mean(0), F.one_hot(y, num_classes).to(out.dtype))
    if kind == "tet":
        ce = torch.stack([F.cross_entropy(o, y) for o in out]).mean()
        return (1 - tet_lambda) * ce + tet_lambda * F.mse_loss(out, torch.ones_like(out))
    raise ValueError(f"unknown loss '{kind}' (use 'smse' or 'tet')")


def evaluate(model, x: np.ndarray, y: np.ndarray, batch_size: int = 128, device="cpu") -> float:
    """Accuracy of argmax(spike count over T) (ties -> lowest index) on time-major inputs."""
    model.eval()
    counts = run_torch_model(model, x[:, :len(y)], device=device, batch_size=batch_size).sum(0)
    return (counts.argmax(1) == torch.as_tensor(y)).sum().item() / len(y)


def train(recipe, out_dir=None, device=None, epochs: int | None = None, progress: bool = True,
          save: bool = True, limit: int | None = None) -> dict:
    """Train from ``recipe`` (path or dict). Returns ``{"model", "metrics", "test_acc", ...}``.

    ``epochs`` overrides the recipe's; ``limit`` keeps only the first samples of each split (for
    tests); ``save=False`` writes nothing.
    """
    from tqdm import tqdm

    recipe_path = recipe if isinstance(recipe, (str, os.PathLike)) else None
    recipe = load_recipe(recipe)
    if epochs is not None:
        recipe["epochs"] = int(epochs)
    if out_dir is None:
        out_dir = Path(recipe_path).parent if recipe_path else Path("models") / recipe["name"]
    out_dir = Path(out_dir)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    seed_everything(recipe["seed"])

    data = Data(recipe)
    y_train, y_test, x_test = data.y_train, data.y_test, data.x_test
    if limit:
        y_train, y_test, x_test = y_train[:limit], y_test[:limit], x_test[:, :limit]
    model = build(recipe["model"]["builder"], **recipe["model"].get("kwargs", {})).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, recipe["epochs"]))
    gen = torch.Generator().manual_seed(recipe["seed"])
    metrics, n, bs = [], len(y_train), recipe["batch_size"]
    if save:
        out_dir.mkdir(parents=True, exist_ok=True)

    t_train = time.time()
    for epoch in range(recipe["epochs"]):
        t_start = time.time()
        x_train = data.train_inputs(epoch)[:, :n]
        model.train()
        order = torch.randperm(n, generator=gen).numpy()
        total_loss, correct = 0.0, 0
        bar = tqdm(range(0, n, bs), desc=f"{recipe['name']} epoch {epoch + 1}/{recipe['epochs']}",
                   disable=not progress, leave=False, file=sys.stderr)
        for i in bar:
            idx = order[i:i + bs]
            xb = torch.as_tensor(x_train[:, idx], device=device)
            yb = torch.as_tensor(y_train[idx], device=device)
            out = run_torch_model(model, xb, grad=True)
            loss = loss_fn(out, yb, recipe["loss"], data.num_classes, recipe["tet_lambda"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(idx)
            correct += (out.sum(0).argmax(1) == yb).sum().item()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        lr = opt.param_groups[0]["lr"]
        sched.step()
        test_acc = evaluate(model, x_test, y_test, device=device)
        row = {"epoch": epoch + 1, "train_loss": total_loss / n, "train_acc": correct / n,
               "test_acc": test_acc, "lr": lr, "seconds": round(time.time() - t_start, 2)}
        metrics.append(row)
        if progress:
            print(json.dumps(row), file=sys.stderr)
        if save:
            _write_json(out_dir / "metrics.json", {"recipe": recipe, "device": str(device),
                                                   "epochs": metrics})

    result = {"model": model.cpu().eval(), "metrics": metrics, "recipe": recipe,
              "test_acc": metrics[-1]["test_acc"] if metrics else evaluate(model.cpu(), x_test, y_test),
              "params": param_count(model), "input_shape": data.input_shape, "out_dir": out_dir,
              "num_classes": data.num_classes, "device": str(device),
              "train_seconds": round(time.time() - t_train, 1), "threads": torch.get_num_threads()}
    if recipe["dataset"] == "events":
        from neurocomp.data.events import summed_baseline
        result["summed_lr_acc"] = summed_baseline(data.x_train[:, :n], y_train, x_test, y_test)
    if recipe["dataset"] == "gesture32":
        from neurocomp.data.gesture import count_map_centroid_accuracy
        result["count_centroid_acc"] = count_map_centroid_accuracy(data.x_train[:, :n], y_train, x_test, y_test)
    if save:
        save_model(result)
        write_card(result, recipe_path)
    return result


def save_model(result: dict) -> Path:
    """Write ``model.pt`` in neurocomp's checkpoint format."""
    from neurocomp.frontends.checkpoint import save_checkpoint
    recipe = result["recipe"]
    path = Path(result["out_dir"]) / "model.pt"
    extra = {"name": recipe["name"], "test_acc": result["test_acc"], "params": result["params"],
             "num_classes": result["num_classes"]}
    save_checkpoint(result["model"], str(path), input_shape=list(result["input_shape"]),
                    timesteps=recipe["timesteps"], encoding=recipe["encoding"],
                    dataset=recipe["dataset"], extra=extra)
    return path


def write_card(result: dict, recipe_path=None) -> Path:
    """Write ``card.md`` beside the checkpoint from the measured numbers."""
    r, out_dir = result["recipe"], Path(result["out_dir"])
    cmd_recipe = recipe_path or out_dir / "recipe.json"
    m = result["metrics"][-1] if result["metrics"] else {}
    if r["dataset"] == "digits":
        data = ("scikit-learn `load_digits` (8×8, 10 classes), fixed stratified split "
                "1437 train / 360 test (`neurocomp.data.digits`)")
        enc = (f"`{r['encoding']}` over T={r['timesteps']} steps"
               + ("; test spikes drawn with seed 0, train spikes redrawn every epoch"
                  if r["encoding"] == "bernoulli" and r["resample_encoding"] else ""))
    elif r["dataset"] == "gesture32":
        kw = r["dataset_kwargs"]
        data = ("synthetic DVS128-Gesture-like events (`neurocomp.data.gesture`: 11 hand/arm motions, "
                f"rendered at {kw.get('native', 64)}×{kw.get('native', 64)}, OR-pooled to 32×32, 2 polarities, "
                f"sensor noise {kw.get('noise', 0.002)} per native pixel, {kw.get('hot_pixels', 2)} hot pixels), "
                f"{kw.get('n_train', 1650)} train / {kw.get('n_test', 550)} test, seed {kw.get('seed', 0)}")
        enc = f"binary event frames used directly as input spikes, T={r['timesteps']}"
    else:
        kw = r["dataset_kwargs"]
        data = ("synthetic motion events (`neurocomp.data.events`: 2 polarities, 16×16, 4 classes = "
                "direction × speed), "
                f"{kw.get('n_train', 2000)} train / {kw.get('n_test', 500)} test, seed {kw.get('seed', 0)}")
        enc = f"binary event frames used directly as input spikes, T={r['timesteps']}"
    lines = [
        f"# {r['name']}", "", r["description"], "",
        f"- **Dataset**: {data}",
        f"- **Encoding**: {enc}",
        f"- **Timesteps**: {r['timesteps']}",
        f"- **Backbone**: `{r['model']['builder']}` {json.dumps(r['model'].get('kwargs', {}))}",
        f"- **Parameters**: {result['params']}",
        f"- **Loss / optimiser**: {r['loss'].upper()}, Adam lr {r['lr']}, cosine annealing, "
        f"{r['epochs']} epochs, batch {r['batch_size']}, seed {r['seed']}",
        f"- **Float test accuracy (measured)**: {100 * result['test_acc']:.2f} % after the last "
        f"epoch, no model selection on the test split (train accuracy in the last epoch "
        f"{100 * m.get('train_acc', float('nan')):.2f} %)",
    ]
    if "summed_lr_acc" in result:
        lines.append(f"- **Time-summed logistic-regression baseline**: "
                     f"{100 * result['summed_lr_acc']:.2f} % (chance 25 %)")
    if "count_centroid_acc" in result:
        lines.append(f"- **Time-free baseline** (nearest centroid on event-count maps): "
                     f"{100 * result['count_centroid_acc']:.2f} % (chance {100 / result['num_classes']:.2f} %)")
    lines += [
        "- **Output**: spikes of the last LIF layer, one neuron per class; prediction = argmax of "
        "the spike count over T (ties -> lowest index)",
        "", "Reproduce (writes model.pt, metrics.json and this card):", "",
        "```", f"python -m neurocomp.training.train {cmd_recipe}    # or: neurocomp train {cmd_recipe}",
        "```", "",
        f"Trained on `{result.get('device', 'cpu')}`; per-epoch metrics in `metrics.json`."
        + (f" Training wall time: {result['train_seconds']:.0f} s (the epochs and their test evaluations, "
           f"{result['threads']} torch threads, {os.cpu_count()} CPUs)." if "train_seconds" in result else ""), "",
    ]
    path = out_dir / "card.md"
    text = "\n".join(lines)
    if path.is_file():  # keep sections other tools maintain between <!-- x:begin --> / <!-- x:end -->
        kept = [m.group(0) for m in _SECTION.finditer(path.read_text())]
        text += "".join("\n" + k + "\n" for k in kept)
    path.write_text(text)
    return path


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def main(argv=None) -> int:
    """CLI: ``neurocomp train RECIPE [--epochs N] [--out DIR] [--device D] [--quiet]``."""
    p = argparse.ArgumentParser(prog="neurocomp train", description="Train a model from a JSON recipe.")
    p.add_argument("recipe", help="path to recipe.json")
    p.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    p.add_argument("--out", default=None, help="output folder (default: the recipe's folder)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    args = p.parse_args(argv)
    res = train(args.recipe, out_dir=args.out, device=args.device, epochs=args.epochs,
                progress=not args.quiet)
    summary = {"name": res["recipe"]["name"], "test_acc": res["test_acc"], "params": res["params"]}
    for key in ("summed_lr_acc", "count_centroid_acc"):
        if key in res:
            summary[key] = res[key]
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
