"""scikit-learn's ``load_digits`` (8x8 grey digits, 1797 samples) as a static spiking dataset.

Split: a fixed, stratified 80/20 split (``seed=0``) -> 1437 train / 360 test samples.
Pixels are scaled to [0, 1] (value / 16). Encodings over T steps, time-major ``[T, N, 1, 8, 8]``:
- ``bernoulli``: rate coding, spike with probability = pixel value, a fixed seed per split
  drawn per sample from ``numpy.random.default_rng([seed, index])``, so a sample's spikes do not
  depend on which other samples are encoded with it, and every stage and run sees the same spikes;
- ``current``: direct current, the pixel value repeated at every step.
"""
from __future__ import annotations

import numpy as np

INPUT_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


def load_split(split: str = "test", seed: int = 0):
    """Return ``(x, y)``: x float32 ``[N, 1, 8, 8]`` in [0, 1], y int64 ``[N]``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=seed, stratify=y)
    if split == "train":
        return xtr, ytr
    if split == "test":
        return xte, yte
    raise ValueError(f"unknown split '{split}' (use 'train' or 'test')")


def encode(x: np.ndarray, timesteps: int, encoding: str = "bernoulli", seed: int = 0,
           indices=None) -> np.ndarray:
    """Encode static samples ``[N, ...]`` into time-major inputs ``[T, N, ...]`` (float32).

    ``indices`` are the samples' positions in their split (default ``0..N-1``); they seed the
    Bernoulli draws so that sample ``i`` always gets the same spikes.
    """
    if encoding == "bernoulli":
        indices = range(len(x)) if indices is None else indices
        out = np.empty((timesteps,) + x.shape, dtype=np.float32)
        for j, i in enumerate(indices):
            rng = np.random.default_rng([seed, int(i)])
            out[:, j] = rng.random((timesteps,) + x.shape[1:]) < x[j][None]
        return out
    if encoding == "current":
        return np.repeat(x[None], timesteps, axis=0).astype(np.float32)
    raise ValueError(f"unknown encoding '{encoding}' (use 'bernoulli' or 'current')")
