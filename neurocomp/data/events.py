"""Synthetic event-camera dataset: classes defined by motion, solvable only with time.

Each sample is a DVS-like recording of one bright, randomly shaped object on a dark 16×16 sensor,
as binary event frames ``[T, 2, H, W]`` (channel 0 = ON events, channel 1 = OFF events), T = 10.

Classes (4, balanced: sample i has label ``i % 4``), the motion along a random axis:

====== ============================== =========================
label  direction along the axis       speed
====== ============================== =========================
0      forward (right, or down)       slow: 1 pixel per step
1      forward (right, or down)       fast: 2 pixels per step
2      backward (left, or up)         slow
3      backward (left, or up)         fast
====== ============================== =========================

Nuisance variables, drawn per sample: the axis (horizontal or vertical), the shape (filled
rectangles 2–4 pixels a side and a 4×4 disc, so every row along the motion is at least 2 pixels
long), the swept length L ∈ {4, 6, 8} pixels, the position and the onset step. The object appears
at step t0, moves for L/speed steps and vanishes at the next step, always inside the window.

Events: ``ON_t = occ_t ∧ ¬occ_{t−1}``, ``OFF_t = occ_{t−1} ∧ ¬occ_t`` (occupancy ``occ_{−1} = 0``),
plus independent noise events with probability ``noise`` (default 0.01) per pixel, polarity and step.

Why time is needed: every pixel the object sweeps receives exactly one ON and one OFF event,
whatever the direction or speed, so the time-summed frames of the four classes have the same
distribution; a logistic regression on them scores near chance (25 %). The direction and the
speed are only visible in the order and spacing of the events over time. :func:`summed_baseline`
measures this; the zoo's model cards report it next to the SNN accuracies.

Determinism and caching: sample i of a split is drawn from ``numpy.random.default_rng([seed,
split_code, i])`` (train 0, test 1), so it does not depend on the split's size. Splits are cached
as ``.npz`` files under ``cache_dir`` (default ``$NEUROCOMP_CACHE`` or ``~/.cache/neurocomp``,
subfolder ``events``). Defaults: 2000 train / 500 test samples, seed 0.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

VERSION = 1
NUM_CLASSES = 4
CLASS_NAMES = ("forward-slow", "forward-fast", "backward-slow", "backward-fast")
TIMESTEPS = 10
SIZE = 16
INPUT_SHAPE = (2, SIZE, SIZE)
SPLIT_CODES = {"train": 0, "test": 1}
DEFAULT_SIZES = {"train": 2000, "test": 500}
SWEEPS = (4, 6, 8)


def _shapes() -> list[np.ndarray]:
    shapes = [np.ones((h, w), dtype=bool) for h in (2, 3, 4) for w in (2, 3, 4) if h * w <= 12]
    disc = np.ones((4, 4), dtype=bool)
    disc[[0, 0, 3, 3], [0, 3, 0, 3]] = False
    return shapes + [disc]


SHAPES = _shapes()


def default_cache_dir() -> Path:
    """``$NEUROCOMP_CACHE/events`` or ``~/.cache/neurocomp/events``."""
    root = os.environ.get("NEUROCOMP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                             "neurocomp")
    return Path(root) / "events"


def make_sample(rng: np.random.Generator, label: int, timesteps: int = TIMESTEPS,
                size: int = SIZE, noise: float = 0.01) -> np.ndarray:
    """One sample of class ``label``: uint8 event frames ``[T, 2, size, size]``."""
    forward = label in (0, 1)
    speed = 1 if label in (0, 2) else 2
    shape = SHAPES[rng.integers(len(SHAPES))]
    vertical = bool(rng.integers(2))      # drawn along x, transposed at the end when vertical
    # the same sweeps for both speeds (those the slow object fits in T), else the summed frames
    # would tell the speed apart
    sweeps = [s for s in SWEEPS if s + 2 <= timesteps]
    if not sweeps:
        raise ValueError(f"timesteps must be at least {min(SWEEPS) + 2}")
    sweep = int(rng.choice(sweeps))
    steps = sweep // speed
    t0 = int(rng.integers(0, timesteps - 1 - steps))         # vanishes at t0 + steps + 1 <= T - 1
    sh, sw = shape.shape
    lo = int(rng.integers(0, size - sw - sweep + 1))         # swept x range [lo, lo + sweep + sw)
    y = int(rng.integers(0, size - sh + 1))
    occ = np.zeros((timesteps, size, size), dtype=bool)
    for k in range(steps + 1):
        x = lo + k * speed if forward else lo + sweep - k * speed
        occ[t0 + k, y:y + sh, x:x + sw] = shape
    prev = np.concatenate([np.zeros((1, size, size), dtype=bool), occ[:-1]])
    events = np.stack([occ & ~prev, prev & ~occ], axis=1)    # [T, 2, H, W]
    if noise > 0:
        events |= rng.random(events.shape) < noise
    if vertical:
        events = events.transpose(0, 1, 3, 2)
    return events.astype(np.uint8)


def generate(n: int, split: str = "train", seed: int = 0, timesteps: int = TIMESTEPS,
             size: int = SIZE, noise: float = 0.01):
    """Generate ``n`` samples: ``(x uint8 [N, T, 2, H, W], y int64 [N])``, no caching."""
    code = SPLIT_CODES[split]
    y = np.arange(n, dtype=np.int64) % NUM_CLASSES
    x = np.stack([make_sample(np.random.default_rng([seed, code, i]), int(y[i]), timesteps, size,
                              noise) for i in range(n)])
    return x, y


def load_split(split: str = "train", n: int | None = None, seed: int = 0,
               timesteps: int = TIMESTEPS, size: int = SIZE, noise: float = 0.01,
               cache_dir=None):
    """Return ``(x, y)``: x float32 time-major ``[T, N, 2, H, W]`` in {0, 1}, y int64 ``[N]``.

    Generated once and cached under ``cache_dir`` (see :func:`default_cache_dir`).
    """
    if split not in SPLIT_CODES:
        raise ValueError(f"unknown split '{split}' (use 'train' or 'test')")
    n = DEFAULT_SIZES[split] if n is None else int(n)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / f"events-v{VERSION}-{split}-n{n}-T{timesteps}-s{size}-seed{seed}-noise{noise}.npz"
    if path.is_file():
        with np.load(path) as f:
            x, y = f["x"], f["y"]
    else:
        x, y = generate(n, split, seed, timesteps, size, noise)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez_compressed(tmp, x=x, y=y)
        os.replace(tmp, path)
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3, 4)).astype(np.float32), y


def summed_baseline(x_train, y_train, x_test, y_test) -> float:
    """Test accuracy of a logistic regression on time-summed frames (inputs ``[T, N, ...]``)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def feats(x):
        return np.asarray(x).sum(axis=0).reshape(np.shape(x)[1], -1)

    scaler = StandardScaler().fit(feats(x_train))
    clf = LogisticRegression(max_iter=2000, C=1.0)
    clf.fit(scaler.transform(feats(x_train)), y_train)
    return float(clf.score(scaler.transform(feats(x_test)), y_test))
