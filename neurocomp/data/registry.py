"""Named datasets a checkpoint can refer to, as time-major test inputs ``[T, N, *shape]``."""
from __future__ import annotations

import numpy as np

from neurocomp.data import digits, events, gesture
from neurocomp.errors import BadInput

DATASETS = ("digits", "events", "gesture32")
NUM_CLASSES = {"digits": digits.NUM_CLASSES, "events": events.NUM_CLASSES,
               "gesture32": gesture.NUM_CLASSES}


def load_inputs(dataset: str, split: str, timesteps: int, encoding: str, n: int | None = None, seed: int = 0):
    """Return ``(x [T, N, *shape] float32, y [N] int64)`` for the first ``n`` samples of a split."""
    if dataset == "digits":
        if encoding not in ("bernoulli", "current"):
            raise BadInput(f"encoding {encoding!r} is unknown for dataset digits", where="encoding",
                           hint="digits samples are encoded as 'bernoulli' or 'current'; recompile the model")
        x, y = digits.load_split(split, seed=seed)
        if n is not None:
            x, y = x[:n], y[:n]
        return digits.encode(x, timesteps, encoding, seed=seed + (0 if split == "test" else 1)), y
    if dataset == "events":
        x, y = events.load_split(split, seed=seed, timesteps=timesteps)
        if n is not None:
            x, y = x[:, :n], y[:n]
        return x, y
    if dataset == "gesture32":
        if encoding != "events":
            raise BadInput(f"encoding {encoding!r} is unknown for dataset gesture32", where="encoding",
                           hint="gesture32 samples are event frames: recompile with --encoding events")
        size = gesture.DEFAULT_SIZES.get(split)            # per-sample seeds: the first n of the split
        return gesture.load_split(split, n=size if n is None or size is None else min(n, size), seed=seed,
                                  timesteps=timesteps)
    raise BadInput(f"unknown dataset {dataset!r}", where="dataset",
                   hint=f"known: {', '.join(DATASETS)}; or pass --inputs FILE.npy")
