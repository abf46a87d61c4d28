"""neurocomp's process-model choice for Lava runs: the fast Conv model computes what Lava's own computes."""
import numpy as np
import pytest

pytestmark = pytest.mark.lava


def _lava_conv():
    from lava.proc.conv import utils
    return utils


def _conv_exact():
    from neurocomp.backends.lava.models import conv_exact
    return conv_exact

CASES = [  # (W, H, C_in, C_out, kernel, stride, padding, dilation, groups, graded)
    (8, 8, 2, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, False),
    (7, 5, 6, 9, (3, 2), (2, 1), (1, 0), (1, 1), 3, False),
    (9, 9, 4, 8, (3, 3), (1, 2), (2, 2), (2, 1), 2, True),
    (6, 6, 8, 8, (2, 2), (2, 2), (0, 0), (1, 1), 8, False),        # a sum pool (depthwise)
    (4, 4, 12, 12, (2, 2), (2, 2), (0, 0), (1, 1), 4, True),       # regrouped: 3 channels per group
    (5, 6, 3, 5, (1, 1), (1, 1), (0, 0), (1, 1), 1, True),
    (10, 3, 4, 6, (3, 3), (3, 1), (1, 1), (1, 1), 2, False),
]


@pytest.mark.parametrize("case", CASES)
def test_conv_exact_equals_lava_conv_bit_for_bit(case):
    W, H, ci, co, k, s, p, d, g, graded = case
    rng = np.random.default_rng(sum(case[:4]))
    w = rng.integers(-255, 256, (co, k[0], k[1], ci // g)).astype(np.int32)
    for rate in (0.05, 0.5, 1.0):
        x = (rng.random((W, H, ci)) < rate)
        x = (x * rng.integers(1, 256, x.shape)).astype(np.int32) if graded else x
        ref = _lava_conv().conv(x, w, k, s, p, d, g)
        got = _conv_exact()(x, w, k, s, p, d, g)
        assert got.dtype == ref.dtype and got.shape == ref.shape
        assert np.array_equal(got, ref), (case, rate)
        assert np.abs(ref).max() > 0


def test_wrapped_groups_give_zeros_like_lava():
    """An int8-wrapped group count (128 -> -128) makes Lava's loop run zero times: all zeros."""
    x = np.ones((4, 4, 128), bool)
    w = np.ones((128, 2, 2, 1), np.int32)
    assert not _lava_conv().conv(x, w, (2, 2), (2, 2), (0, 0), (1, 1), -128).any()
    assert not _conv_exact()(x, w, (2, 2), (2, 2), (0, 0), (1, 1), -128).any()


def test_lava_run_with_lavas_own_conv_model_gives_the_same_spikes(monkeypatch):
    """A busy net with a 3x3 conv and a 128-channel sum pool (regrouped) run through Lava with
    neurocomp's models and with Lava's stock ones: identical spikes on every layer and step."""
    import torch
    import neurocomp.backends.lava.models as lm
    from busy_nets import bernoulli, lower_for, make_busy
    from neurocomp.backends.lava import run_lava
    from spikingjelly.activation_based import functional, layer, neuron
    T = 6
    model = torch.nn.Sequential(layer.Conv2d(2, 128, 3, padding=1), layer.BatchNorm2d(128),
                                neuron.LIFNode(tau=2.0, step_mode="m"), layer.MaxPool2d(2), layer.Flatten(),
                                layer.Linear(128 * 4, 10), neuron.LIFNode(tau=2.0, step_mode="m"))
    functional.set_step_mode(model, "m")
    make_busy(model, bernoulli(T, 16, (2, 4, 4), 0.2, seed=5), rate=(0.2, 0.4), seed=5)
    q = lower_for(model, (2, 4, 4), T)
    x = bernoulli(T, 3, (2, 4, 4), 0.2, seed=6)
    fast = run_lava(q, x).spikes
    monkeypatch.setenv(lm.STOCK_ENV, "1")            # the documented opt-out: Lava's own Conv model
    assert lm.replaced_models("fixed_pt") == {}
    stock = run_lava(q, x).spikes
    assert set(fast) == set(stock)
    for name in fast:
        assert torch.equal(fast[name], stock[name]), name
    assert all(int(s.sum()) > 0 for s in fast.values())


@pytest.mark.parametrize("tag", ["fixed_pt", "floating_pt"])
def test_run_config_chooses_what_lava_would_except_the_conv(tag, tmp_path):
    """Every process of an emitted net (TCJA with folded attention: GainLIF, recorders, pools) gets
    the model Lava's own lookup and selection pick; only fixed-point Conv gets the fast model."""
    from lava.magma.compiler.compiler_graphs import ProcGroupDiGraphs, find_processes
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.conv.process import Conv
    from busy_nets import bernoulli, lower_for, make_busy
    from neurocomp.backends.lava import emit
    from neurocomp.backends.lava.models import PyConvModelFixedFast, run_config
    from neurocomp.nn import backbones
    from spikingjelly.activation_based import functional
    T = 4
    model = backbones.build("tcja", T=T, in_channels=2, input_hw=8, channels=(8, 16), num_classes=4)
    functional.set_step_mode(model, "m")
    xc = bernoulli(T, 8, (2, 8, 8), 0.2, seed=1)
    make_busy(model, xc, seed=1, iters=8)
    q = lower_for(model, (2, 8, 8), T, "static", calib=xc)
    net = emit(q, np.zeros((8, 8, 2, T), np.int64 if tag == "fixed_pt" else float), T, str(tmp_path), tag)
    anchor = net.layers[-1][1]
    chosen = run_config(anchor, tag).exception_proc_model_map
    procs = find_processes(anchor)
    kinds = {type(p).__name__ for p in procs}
    assert {"Conv", "Dense", "GainLIF", "SpikeRecorder", "RingBuffer"} <= kinds, kinds
    lava_cfg = Loihi2SimCfg(select_tag=tag)
    for p in {type(p): p for p in procs}.values():      # one of each class (Lava's lookup is slow)
        assert all(chosen[o] is chosen[p] for o in procs if type(o) is type(p))
        if tag == "fixed_pt" and isinstance(p, Conv):
            assert chosen[p] is PyConvModelFixedFast
            continue
        own = ProcGroupDiGraphs._select_proc_models(p, ProcGroupDiGraphs._find_proc_models(p), lava_cfg)
        assert (chosen[p].__module__, chosen[p].__qualname__) == (own.__module__, own.__qualname__), p.name
