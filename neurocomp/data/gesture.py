"""Synthetic DVS128-Gesture-like events (``gesture32``): 11 hand and arm motions, seeded, no downloads.

A stand-in for IBM's DVS128 Gesture at a size CPU training can afford. Each sample is a recording of
one person facing the sensor, rendered at ``native`` = 64×64 pixels over T = 16 steps (17 frames: the
frame before the window, then one per step), turned into events and OR-downsampled to 32×32:

- **Scene**: a static background (per-sample random grey levels 0.10–0.30 in 8×8-pixel tiles) with a
  static torso and head (grey 0.45); two arms, each a forearm segment from a fixed elbow (grey 0.7,
  3 px wide × scale) ending in a hand disc (grey 1.0, radius 3.5 px × scale), edges anti-aliased over
  one pixel. The sensor faces the person: the *right* hand is on the image's *left*. The resting arm
  of a one-arm gesture stays still (it occludes, but makes no events). Coordinates are in pixels of
  the 64×64 frame, x to the right, y down; "clockwise" is as seen by the sensor.
- **Events** (DVS semantics): with ``L_t = log(I_t + 0.05)``, an ON event (channel 0) where
  ``L_t − L_{t−1} > 0.3`` and an OFF event (channel 1) where it is ``< −0.3``; a still scene makes
  none.
- **Downsampling to 32×32**: a 2×2 block has an event of a polarity at a step when any of its four
  native pixels has one (an OR pool, ``native // size`` per side; ``native=128`` renders every length
  doubled and pools 4×4).
- **Sensor noise**, drawn at the native resolution before the pool: *background activity*, an
  independent event with probability ``noise`` (default 0.002) per native pixel, polarity and step,
  so ``1 − (1 − noise)^(f²)`` per output pixel (f = native // size; 0.80 % for the default), and
  ``hot_pixels`` (default 2) *hot pixels* per sample, native pixels of one random polarity that fire
  at each step with probability 0.5.
- **Per-sample jitter**: the person's position (±4 px in x and y), scale (0.85–1.15: the trajectory's
  size and the limbs' size), speed (the motion's cycles per window × 0.8–1.25) and phase (uniform).

Classes (11, the DVS128 Gesture list; balanced, sample i has label ``i % 11``); ``c`` = the
person's centre, ``s`` = scale, ``φ`` = the motion's phase over the window:

===== ======================= =====================================================================
label name                    what moves (pixels of the 64×64 frame)
===== ======================= =====================================================================
0     hand_clap               both hands meet and part horizontally at chest height: x = c ± s(3 +
                              9·(1 + cos φ)/2), 2 cycles
1     right_hand_wave         right hand beside the head, side to side: x = c − 16s + 6s·sin φ,
                              y = c − 16s + 1.5s·cos 2φ, 1.5 cycles
2     left_hand_wave          the mirror image of 1
3     right_arm_clockwise     right hand on a circle of radius 10s around (c − 14s, c − 4s), clockwise,
                              1.25 cycles
4     right_arm_counter_cw    as 3, counter-clockwise
5     left_arm_clockwise      the mirror position of 3, clockwise
6     left_arm_counter_cw     as 5, counter-clockwise
7     arm_roll                both hands on one circle of radius 5s around (c, c + 4s), half a turn
                              apart, rolling (direction drawn per sample), 2 cycles
8     air_drums               hands at x = c ∓ 10s beating up and down in anti-phase: y = c + 6s +
                              6s·sin(φ) / sin(φ + π), 2.5 cycles
9     air_guitar              right hand strumming at (c − 8s, c + 8s), y ± 5s, 3 cycles; left hand
                              on the neck at (c + 16s, c − 4s) sliding ±3s along the diagonal,
                              0.5 cycle
10    other                   one or both hands (drawn) on a random smooth path: a sum of two sines
                              per axis, 0.5–2 cycles, amplitude 3–9s, around a random point
===== ======================= =====================================================================

Determinism: the motion of sample i of a split comes from ``numpy.random.default_rng([seed,
split_code, i, 0])`` and its noise from ``default_rng([seed, split_code, i, 1])`` (train 0, test 1),
so a sample does not depend on the split's size or on the noise settings; the rendering is vectorised
over chunks of samples (numpy). Splits are cached as ``.npz`` under ``cache_dir`` (default
``$NEUROCOMP_CACHE`` or ``~/.cache/neurocomp``, subfolder ``gesture``). Defaults: 1650 train / 550 test
samples (150 / 50 per class), seed 0. :func:`count_map_centroid_accuracy` is the time-free baseline
(nearest centroid on per-polarity event-count maps) that the model cards report.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neurocomp.errors import BadInput

VERSION = 1
CLASS_NAMES = ("hand_clap", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
               "right_arm_counter_cw", "left_arm_clockwise", "left_arm_counter_cw", "arm_roll",
               "air_drums", "air_guitar", "other")
NUM_CLASSES = len(CLASS_NAMES)
TIMESTEPS = 16
SIZE = 32
NATIVE = 64
INPUT_SHAPE = (2, SIZE, SIZE)
SPLIT_CODES = {"train": 0, "test": 1}
DEFAULT_SIZES = {"train": 1650, "test": 550}
NOISE = 0.002            # background activity: P(event) per native pixel, polarity and step
HOT_PIXELS = 2           # hot pixels per sample (native), each firing with probability HOT_RATE
HOT_RATE = 0.5
THRESHOLD = 0.3          # log-intensity contrast threshold of an event
CHUNK = 64               # samples rendered at once

_CYCLES = (2.0, 1.5, 1.5, 1.25, 1.25, 1.25, 1.25, 2.0, 2.5, 3.0, 1.0)


def default_cache_dir() -> Path:
    """``$NEUROCOMP_CACHE/gesture`` or ``~/.cache/neurocomp/gesture``."""
    root = os.environ.get("NEUROCOMP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "neurocomp")
    return Path(root) / "gesture"


def _hands(rng: np.random.Generator, label: int, timesteps: int):
    """Per-sample motion in units of the 64-pixel frame: hands ``[T+1, 2, 2]`` (x, y of the right
    then the left hand), elbows ``[2, 2]``, background tiles ``[8, 8]``."""
    cx, cy = 32 + rng.uniform(-4, 4), 32 + rng.uniform(-4, 4)
    s = rng.uniform(0.85, 1.15)
    speed = rng.uniform(0.8, 1.25)
    phi0 = rng.uniform(0, 2 * np.pi)
    bg = rng.uniform(0.10, 0.30, size=(8, 8))
    u = np.arange(timesteps + 1) / timesteps                     # frame k at time k/T of the window
    phi = phi0 + 2 * np.pi * _CYCLES[label] * speed * u
    rest_r, rest_l = (cx - 12 * s, cy + 14 * s), (cx + 12 * s, cy + 14 * s)
    right = np.tile(rest_r, (len(u), 1))
    left = np.tile(rest_l, (len(u), 1))
    one = np.ones_like(u)
    if label == 0:                                               # hand clap
        dx = s * (3 + 9 * (1 + np.cos(phi)) / 2)
        right, left = np.stack([cx - dx, (cy + 2 * s) * one], 1), np.stack([cx + dx, (cy + 2 * s) * one], 1)
    elif label in (1, 2):                                        # waves
        side = -1 if label == 1 else 1
        hand = np.stack([cx + side * 16 * s + 6 * s * np.sin(phi), cy - 16 * s + 1.5 * s * np.cos(2 * phi)], 1)
        right, left = (hand, left) if label == 1 else (right, hand)
    elif label in (3, 4, 5, 6):                                  # arm circles
        side = -1 if label in (3, 4) else 1
        direction = 1 if label in (3, 5) else -1                 # +: clockwise on screen (y down)
        ang = direction * phi
        hand = np.stack([cx + side * 14 * s + 10 * s * np.cos(ang), cy - 4 * s + 10 * s * np.sin(ang)], 1)
        right, left = (hand, left) if side < 0 else (right, hand)
    elif label == 7:                                             # arm roll
        ang = (1 if rng.integers(2) else -1) * phi
        right = np.stack([cx + 5 * s * np.cos(ang), cy + 4 * s + 5 * s * np.sin(ang)], 1)
        left = np.stack([cx - 5 * s * np.cos(ang), cy + 4 * s - 5 * s * np.sin(ang)], 1)
    elif label == 8:                                             # air drums
        right = np.stack([(cx - 10 * s) * one, cy + 6 * s + 6 * s * np.sin(phi)], 1)
        left = np.stack([(cx + 10 * s) * one, cy + 6 * s - 6 * s * np.sin(phi)], 1)
    elif label == 9:                                             # air guitar
        right = np.stack([(cx - 8 * s) * one, cy + 8 * s + 5 * s * np.sin(phi)], 1)
        slide = 3 * s * np.sin(phi0 + 2 * np.pi * 0.5 * speed * u)
        left = np.stack([cx + 16 * s + slide, cy - 4 * s - slide], 1)
    else:                                                        # other: random smooth paths
        which = int(rng.integers(3))                             # 0 right, 1 left, 2 both
        paths = []
        for _ in range(2):
            centre = (cx + rng.uniform(-14, 14) * s, cy + rng.uniform(-12, 10) * s)
            f = rng.uniform(0.5, 2.0, size=(2, 2))
            a = rng.uniform(3, 9, size=(2, 2)) * s
            p = rng.uniform(0, 2 * np.pi, size=(2, 2))
            xy = [centre[d] + sum(a[d, k] * np.sin(2 * np.pi * f[d, k] * speed * u + p[d, k]) for k in range(2))
                  for d in range(2)]
            paths.append(np.stack(xy, 1))
        right = paths[0] if which in (0, 2) else right
        left = paths[1] if which in (1, 2) else left
    hands = np.stack([right, left], 1)                           # [T+1, 2, 2]
    elbows = np.array([[cx - 14 * s, cy + 4 * s], [cx + 14 * s, cy + 4 * s]])
    return hands, elbows, s, bg, (cx, cy)


def _render(hands, elbows, scale, bg, centre, native: int):
    """Intensity frames ``[N, T+1, native, native]`` (float32) of a chunk of samples."""
    f = native / 64.0
    n, frames = hands.shape[:2]
    yy, xx = np.mgrid[0:native, 0:native].astype(np.float32)
    px = (xx + 0.5) / f                                          # pixel centres in 64-frame units
    py = (yy + 0.5) / f
    tile = native // 8
    img = np.repeat(np.repeat(bg, tile, axis=1), tile, axis=2).astype(np.float32)   # [N, H, W]
    s = scale[:, None, None]
    cx, cy = centre[:, 0, None, None], centre[:, 1, None, None]
    torso = (np.abs(px - cx) < 9 * s) & (py > cy - 8 * s) & (py < cy + 20 * s)
    head = (px - cx) ** 2 + (py - cy + 15 * s) ** 2 < (6 * s) ** 2
    img = np.where(torso | head, np.float32(0.45), img)
    out = np.repeat(img[:, None], frames, axis=1)                # [N, T+1, H, W]
    px, py = px[None, None], py[None, None]
    aa = 1.0 / f                                                 # one native pixel, in 64-frame units
    for limb in range(2):
        hx, hy = hands[:, :, limb, 0, None, None], hands[:, :, limb, 1, None, None]
        ex, ey = elbows[:, limb, 0, None, None, None], elbows[:, limb, 1, None, None, None]
        vx, vy = hx - ex, hy - ey
        t = np.clip(((px - ex) * vx + (py - ey) * vy) / np.maximum(vx * vx + vy * vy, 1e-6), 0, 1)
        d_arm = np.hypot(px - ex - t * vx, py - ey - t * vy)
        d_hand = np.hypot(px - hx, py - hy)
        sc = s[:, None]
        arm = np.clip((1.5 * sc - d_arm) / aa + 0.5, 0, 1)
        hand = np.clip((3.5 * sc - d_hand) / aa + 0.5, 0, 1)
        out = out * (1 - arm) + np.float32(0.7) * arm
        out = out * (1 - hand) + np.float32(1.0) * hand
    return out.astype(np.float32)


def generate(n: int, split: str = "train", seed: int = 0, timesteps: int = TIMESTEPS, size: int = SIZE,
             native: int = NATIVE, noise: float = NOISE, hot_pixels: int = HOT_PIXELS, start: int = 0):
    """Samples ``start .. start+n-1`` of a split: ``(x uint8 [N, T, 2, size, size] in {0, 1}, y int64 [N])``,
    no caching."""
    if split not in SPLIT_CODES:
        raise BadInput(f"unknown split {split!r}", where="split", hint="use 'train' or 'test'")
    if native not in (64, 128) or size < 1 or native % size:
        raise BadInput(f"native {native} / size {size}", where="gesture32",
                       hint="native is 64 or 128 and a multiple of size (e.g. 64 / 32)")
    if timesteps < 2:
        raise BadInput(f"timesteps {timesteps}", where="gesture32", hint="use T >= 2 (the dataset's default is 16)")
    code, fac = SPLIT_CODES[split], native // size
    idx = np.arange(start, start + n)
    y = (idx % NUM_CLASSES).astype(np.int64)
    x = np.zeros((n, timesteps, 2, size, size), dtype=np.uint8)
    for c0 in range(0, n, CHUNK):
        part = range(c0, min(n, c0 + CHUNK))
        motion = [_hands(np.random.default_rng([seed, code, int(idx[j]), 0]), int(y[j]), timesteps) for j in part]
        hands, elbows, scale, bg, centre = (np.stack([np.asarray(m[k], dtype=np.float32) for m in motion])
                                            for k in range(5))
        frames = _render(hands, elbows, scale, bg, centre, native)
        logi = np.log(frames + np.float32(0.05))
        diff = logi[:, 1:] - logi[:, :-1]                        # [N, T, H, W]
        ev = np.stack([diff > THRESHOLD, diff < -THRESHOLD], axis=2)   # [N, T, 2, H, W]
        for j, k in enumerate(part):
            if noise > 0 or hot_pixels > 0:
                rng = np.random.default_rng([seed, code, int(idx[k]), 1])
                if noise > 0:
                    ev[j] |= rng.random(ev.shape[1:], dtype=np.float32) < noise
                for _ in range(hot_pixels):
                    pol, r, c = int(rng.integers(2)), int(rng.integers(native)), int(rng.integers(native))
                    ev[j, :, pol, r, c] |= rng.random(timesteps) < HOT_RATE
        pooled = ev.reshape(len(part), timesteps, 2, size, fac, size, fac).any(axis=(4, 6))
        x[part.start:part.stop] = pooled
    return x, y


def load_split(split: str = "train", n: int | None = None, seed: int = 0, timesteps: int = TIMESTEPS,
               size: int = SIZE, native: int = NATIVE, noise: float = NOISE, hot_pixels: int = HOT_PIXELS,
               cache_dir=None):
    """Return ``(x, y)``: x float32 time-major ``[T, N, 2, size, size]`` in {0, 1}, y int64 ``[N]``.

    Generated once and cached under ``cache_dir`` (see :func:`default_cache_dir`).
    """
    if split not in SPLIT_CODES:
        raise BadInput(f"unknown split {split!r}", where="split", hint="use 'train' or 'test'")
    n = DEFAULT_SIZES[split] if n is None else int(n)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / (f"gesture-v{VERSION}-{split}-n{n}-T{timesteps}-s{size}-native{native}-seed{seed}"
                     f"-noise{noise}-hot{hot_pixels}.npz")
    if path.is_file():
        with np.load(path) as f:
            x, y = f["x"], f["y"]
    else:
        x, y = generate(n, split, seed, timesteps, size, native, noise, hot_pixels)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez_compressed(tmp, x=x, y=y)
        os.replace(tmp, path)
    return np.ascontiguousarray(x.transpose(1, 0, 2, 3, 4)).astype(np.float32), y


def count_maps(x) -> np.ndarray:
    """Per-polarity event-count maps ``[N, 2·H·W]`` of time-major inputs ``[T, N, 2, H, W]`` (no time)."""
    x = np.asarray(x)
    return x.sum(axis=0).reshape(x.shape[1], -1).astype(np.float64)


def count_map_centroid_accuracy(x_train, y_train, x_test, y_test) -> float:
    """Test accuracy of a nearest-centroid classifier on event-count maps (inputs ``[T, N, ...]``)."""
    ftr, fte = count_maps(x_train), count_maps(x_test)
    cents = np.stack([ftr[y_train == k].mean(axis=0) for k in range(NUM_CLASSES)])
    d = ((fte[:, None, :] - cents[None]) ** 2).sum(axis=2)
    return float((d.argmin(axis=1) == np.asarray(y_test)).mean())
