"""gesture32, the synthetic DVS128-Gesture-like events (neurocomp.data.gesture), and the zoo trained on it."""
import os

import numpy as np
import pytest
import torch

from nc_testutils import assert_lava_equals_reference, zoo_checkpoints
from neurocomp.data import gesture
from neurocomp.data.registry import load_inputs
from neurocomp.errors import BadInput


def test_deterministic_independent_of_split_size_and_noise():
    a, ya = gesture.generate(12, "train", seed=3)
    b, yb = gesture.generate(12, "train", seed=3)
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    tail, ytail = gesture.generate(5, "train", seed=3, start=7)
    assert np.array_equal(tail, a[7:]) and np.array_equal(ytail, ya[7:])
    assert not np.array_equal(a, gesture.generate(12, "train", seed=4)[0])
    assert not np.array_equal(a, gesture.generate(12, "test", seed=3)[0])
    clean = gesture.generate(12, "train", seed=3, noise=0.0, hot_pixels=0)[0]
    assert np.all(a >= clean) and a.sum() > clean.sum()          # noise only adds events to the same motion


def test_shapes_dtypes_both_polarities_balanced():
    x, y = gesture.generate(22, "test", noise=0.0, hot_pixels=0)
    assert x.shape == (22, 16, 2, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    assert set(np.unique(x)) == {0, 1}
    assert np.bincount(y).tolist() == [2] * gesture.NUM_CLASSES == [2] * len(gesture.CLASS_NAMES)
    per_pol = x.sum(axis=(1, 3, 4))                              # [N, 2]
    assert (per_pol > 0).all()                                   # every gesture moves: ON and OFF events
    big = gesture.generate(2, "test", native=128, noise=0.0, hot_pixels=0)[0]   # 128x128 pooled 4x4
    assert big.shape == (2, 16, 2, 32, 32) and (big.sum(axis=(1, 3, 4)) > 0).all()


def test_polarity_on_ahead_of_the_bright_hand_off_behind_it():
    """Right-hand wave (only the right hand moves): at every step where the hand moves, the ON events'
    centroid lies ahead of the OFF events' centroid along the hand's motion (the hand is brighter than
    the scene: ON where it arrives, OFF where it left)."""
    seed, code = 0, gesture.SPLIT_CODES["test"]
    x, y = gesture.generate(33, "test", seed=seed, noise=0.0, hot_pixels=0)
    ahead = []
    for i in np.flatnonzero(y == 1):
        hands = gesture._hands(np.random.default_rng([seed, code, int(i), 0]), 1, 16)[0]   # [T+1, 2, 2] x, y
        for t in range(16):
            on, off = np.argwhere(x[i, t, 0]), np.argwhere(x[i, t, 1])                   # (row, col)
            move = (hands[t + 1, 0] - hands[t, 0])[::-1]
            if len(on) and len(off) and np.linalg.norm(move) > 1:
                ahead.append(np.dot(on.mean(0) - off.mean(0), move) > 0)
    assert len(ahead) > 20 and np.mean(ahead) > 0.9, (len(ahead), np.mean(ahead))


def test_noise_rates_as_documented():
    p = 0.01
    clean = gesture.generate(11, "train", noise=0.0, hot_pixels=0)[0].astype(bool)
    noisy = gesture.generate(11, "train", noise=p, hot_pixels=0)[0].astype(bool)
    rate = (noisy & ~clean).sum() / (~clean).sum()
    expected = 1 - (1 - p) ** 4                                  # a 2x2 OR pool of native pixels
    assert abs(rate - expected) < 0.05 * expected, (rate, expected)
    hot = gesture.generate(11, "train", noise=0.0, hot_pixels=3)[0].astype(bool)
    extra = hot & ~clean                                         # [N, T, 2, H, W]
    for s in extra:
        pixels = s.any(axis=0)
        assert pixels.sum() <= 3
        assert s.sum() >= 0.25 * 16 * pixels.sum()               # each fires at half the steps


def test_classes_separable_by_count_maps_well_above_chance():
    xtr, ytr = gesture.generate(154, "train")
    xte, yte = gesture.generate(66, "test")
    acc = gesture.count_map_centroid_accuracy(xtr.transpose(1, 0, 2, 3, 4), ytr, xte.transpose(1, 0, 2, 3, 4), yte)
    assert acc > 0.4, acc                                        # chance 1/11 = 0.09


def test_registry_loads_gesture32(tmp_path, monkeypatch):
    monkeypatch.setenv("NEUROCOMP_CACHE", str(tmp_path))
    x, y = load_inputs("gesture32", "test", 16, "events", n=3)
    assert x.shape == (16, 3, 2, 32, 32) and x.dtype == np.float32
    raw, yr = gesture.generate(3, "test")
    assert np.array_equal(x, raw.transpose(1, 0, 2, 3, 4)) and np.array_equal(y, yr)
    assert list((tmp_path / "gesture").glob("*.npz"))
    with pytest.raises(BadInput, match="gesture32"):
        load_inputs("gesture32", "test", 16, "bernoulli", n=3)


AT_SIZE = zoo_checkpoints(at_size=True)


@pytest.mark.lava
@pytest.mark.parametrize("path", AT_SIZE, ids=[os.path.basename(os.path.dirname(p)) for p in AT_SIZE])
def test_gesture_zoo_compiles_and_lava_equals_reference(path, tmp_path, monkeypatch):
    from neurocomp.api import calibration_inputs
    from neurocomp.frontends.attention import attention_modules, calibrate, make_static
    from neurocomp.frontends.checkpoint import load_checkpoint
    from neurocomp.frontends.torch import module_to_graph, run_torch_model
    from neurocomp.passes.pipeline import lower
    from neurocomp.sim import run_float

    monkeypatch.setenv("NEUROCOMP_CACHE", str(tmp_path))
    loaded = load_checkpoint(path)
    assert loaded.dataset == "gesture32" and loaded.input_shape == (2, 32, 32) and loaded.timesteps >= 16
    assert attention_modules(loaded.model)
    xc, yc, _ = calibration_inputs(loaded, samples=32)
    static = make_static(loaded.model, calibrate(loaded.model, xc, yc))
    x, _ = load_inputs(loaded.dataset, "test", loaded.timesteps, loaded.encoding, n=2)
    x = torch.as_tensor(x)
    g = module_to_graph(static, loaded.input_shape, loaded.timesteps, loaded.encoding)
    assert torch.equal(run_float(g, x).output, run_torch_model(static, x))
    assert_lava_equals_reference(lower(g, attention="static"), x)
