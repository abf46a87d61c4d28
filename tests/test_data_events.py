"""Synthetic motion events: determinism, caching, event semantics, and 'needs time'."""
import numpy as np
import pytest

from neurocomp.data import events
from neurocomp.data.user_events import load_event_frames


def test_deterministic_and_independent_of_split_size():
    xa, ya = events.generate(40, "train", seed=3)
    xb, yb = events.generate(40, "train", seed=3)
    xc, _ = events.generate(60, "train", seed=3)
    xd, _ = events.generate(40, "train", seed=4)
    xt, _ = events.generate(40, "test", seed=3)
    assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    assert np.array_equal(xa, xc[:40])
    assert not np.array_equal(xa, xd) and not np.array_equal(xa, xt)


def test_shapes_binary_balanced():
    x, y = events.generate(80, seed=0)
    assert x.shape == (80, 10, 2, 16, 16) and x.dtype == np.uint8
    assert set(np.unique(x)) <= {0, 1}
    assert np.bincount(y).tolist() == [20, 20, 20, 20]


def test_every_swept_pixel_gets_one_on_and_one_off_event():
    x, _ = events.generate(40, seed=1, noise=0.0)
    on, off = x[:, :, 0].sum(axis=1), x[:, :, 1].sum(axis=1)     # [N, H, W]
    assert np.array_equal(on, off)
    assert on.max() == 1 and on.sum() > 0


def test_cache_round_trip(tmp_path):
    x, y = events.load_split("test", n=24, cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    x2, y2 = events.load_split("test", n=24, cache_dir=tmp_path)
    assert x.shape == (10, 24, 2, 16, 16) and x.dtype == np.float32
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    raw, _ = events.generate(24, "test")
    assert np.array_equal(x, raw.transpose(1, 0, 2, 3, 4))


def _motion_rule(x):
    """Hand-made temporal classifier: centroid displacement of the clean occupancy over time."""
    preds = []
    for s in x:                                   # [T, 2, H, W], noise-free
        on = s[:, 0]
        steps = [t for t in range(len(on)) if on[t].any()]
        cents = [np.argwhere(on[t]).mean(axis=0) for t in steps[1:]] if len(steps) > 2 else []
        if len(cents) < 2:
            preds.append(-1)
            continue
        d = cents[-1] - cents[0]
        axis = int(np.argmax(np.abs(d)))
        speed = abs(d[axis]) / (steps[-1] - steps[1])
        forward = d[axis] > 0
        preds.append((0 if forward else 2) + (1 if speed > 1.5 else 0))
    return np.array(preds)


def test_needs_time_summed_frames_near_chance_temporal_rule_solves_it():
    xtr, ytr = events.generate(600, "train", seed=0)
    xte, yte = events.generate(400, "test", seed=0)
    lr = events.summed_baseline(xtr.transpose(1, 0, 2, 3, 4), ytr, xte.transpose(1, 0, 2, 3, 4), yte)
    assert lr < 0.40, lr                           # chance = 0.25
    clean, yc = events.generate(200, "test", seed=0, noise=0.0)
    assert (_motion_rule(clean) == yc).mean() > 0.9


def test_user_event_frames_npy_and_npz(tmp_path):
    frames = np.random.default_rng(0).poisson(0.3, size=(5, 8, 2, 4, 4))   # [N, T, C, H, W] counts
    np.save(tmp_path / "a.npy", frames)
    x, y = load_event_frames(tmp_path / "a.npy", timesteps=8, input_shape=(2, 4, 4))
    assert x.shape == (8, 5, 2, 4, 4) and y is None
    assert np.array_equal(x, (frames > 0).transpose(1, 0, 2, 3, 4).astype(np.float32))
    np.savez(tmp_path / "b.npz", frames=frames[0], labels=np.array([3]))
    x, y = load_event_frames(tmp_path / "b.npz")
    assert x.shape == (8, 1, 2, 4, 4) and y.tolist() == [3]
    np.save(tmp_path / "neg.npy", -frames)
    with pytest.raises(ValueError, match="negative"):
        load_event_frames(tmp_path / "neg.npy")
    with pytest.raises(ValueError, match="expects 10"):
        load_event_frames(tmp_path / "a.npy", timesteps=10)
