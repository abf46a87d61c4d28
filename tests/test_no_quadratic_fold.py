"""No quadratic folds (issue 16, item 2): a static spike map that varies over space (PFA) in a branching
graph folds into graded spike payloads of the producer on that edge, not into a conv unrolled as a Dense,
so its cost is proportional to the layer; the dense unrolling that remains (an overlapping pool between
the map and its conv, where no proportional form exists) is checked against the memory budget first.

- PFA inside an MS-ResNet block (``backbones.pfa_resnet``, 2x8x8): no Dense, the folded float IR equals
  the unfolded one, Lava equals the fixed-point reference on every layer and step.
- One map read by two convs (each into its own neuron): one payload edge per conv, no Dense, exact.
- The same net at 2x32x32 folds and quantizes within a bounded memory (numpy's peak, traced) and holds no
  array larger than O(layer); the old fold unrolled each block's conv into an 8192x8192 matrix.
- An overlapping pool in front of a per-position map still unrolls, and a budget too small for that matrix
  stops it in one line naming the layer and the estimate.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from busy_nets import bernoulli, lava_mismatches
from test_residual_models import busy
from neurocomp.errors import OutOfBudget
from neurocomp.frontends.attention import calibrate, make_static
from neurocomp.frontends.checkpoint import load_checkpoint, save_checkpoint
from neurocomp.frontends.torch import module_to_graph
from neurocomp.nn import backbones
from neurocomp.passes.pipeline import fold, lower
from neurocomp.sim import run_float

T = 4


def _static_graph(model, hw, tmp, calib_n=4, channels_in=2):
    """The float IR of ``model`` with its attention calibrated (Bernoulli(0.3) inputs) and made static, as
    ``neurocomp compile --attention static`` builds it through the front door."""
    shape = (channels_in, hw, hw)
    path = save_checkpoint(model, str(tmp / "model.pt"), input_shape=shape, timesteps=T, encoding="bernoulli")
    loaded = load_checkpoint(path)
    stats = calibrate(loaded.model, bernoulli(T, calib_n, shape, p=0.3, seed=4))
    static = make_static(loaded.model, stats)
    return module_to_graph(static, shape, T, "bernoulli", attention_mode="static", calibration=stats)


def _assert_fold_exact(g, x):
    """The folded float IR computes what the unfolded one computes with each spike map replaced by its
    recorded rank-1 factorisation ``g[t] B`` (up to float rounding); the factorisation's own error is the
    manifest's ``rank1_error``."""
    from neurocomp.ir import Scale
    from neurocomp.passes.fold_attention import rank1
    nodes = []
    for n in g:
        if isinstance(n, Scale) and not n.additive:
            gt, B, _ = rank1(n.scale.astype(np.float64))
            n = n.replace(scale=(gt.reshape((-1,) + (1,) * B.ndim) * B[None]).astype(np.float32))
        nodes.append(n)
    want, got = run_float(g.rewrite(nodes), x).spikes, run_float(fold(g, "static"), x).spikes
    for name, s in want.items():
        assert int(s.sum()) > 0, name
        assert (got[name].bool() != s.bool()).float().mean() < 1e-3, name


def _pfa_resnet(hw, channels, seed=0):
    torch.manual_seed(seed)
    return backbones.pfa_resnet(T=T, in_channels=2, input_hw=hw, channels=channels, blocks=1, num_classes=3).eval()


@pytest.fixture(scope="module")
def resnet8(tmp_path_factory):
    model = busy(_pfa_resnet(8, 4), seed=1)
    g = _static_graph(model, 8, tmp_path_factory.mktemp("pfa_resnet8"))
    return g, lower(g)


@pytest.mark.lava
def test_pfa_in_a_resnet_block_folds_to_payloads_and_lava_equals_reference(resnet8):
    g, q = resnet8
    kinds = [n.kind for n in q]
    assert "dense" not in kinds and kinds.count("graded_spikes") == 1, kinds
    pay = next(n for n in q if n.kind == "graded_spikes")
    # on the edge from the branch's first neuron into the conv after the map, one payload per neuron
    assert q.inputs[pay.name] == ("blocks.0.branch.0",) and q.consumers(pay.name) == ("blocks.0.branch.2",)
    assert pay.qscale.shape == (4, 8, 8) and 1 <= int(pay.qscale.max()) <= 255
    maps = next(p for p in q.meta["passes"] if p["pass"] == "fold_attention")["maps"]
    assert len(maps) == 1 and "graded spike payloads" in maps[0]["rule"] and maps[0]["error"] < 1e-2
    x = bernoulli(T, 3, (2, 8, 8), p=0.3, seed=5)
    _assert_fold_exact(g, x)
    ref, mism = lava_mismatches(q, x)
    assert not {k: v for k, v in mism.items() if v[0]}, mism
    assert all(int(s.sum()) > 0 for s in ref.spikes.values()), {k: int(s.sum()) for k, s in ref.spikes.items()}


class TwoReaders(torch.nn.Module):
    """PFA's scaled spikes read by two convs, each into a neuron of its own, their spikes added (SEW)."""

    def __init__(self):
        super().__init__()
        from neurocomp.nn import PFA
        import residual_models as rm
        self.stem, self.pfa = torch.nn.Sequential(rm.conv_bn(2, 4), rm.lif()), PFA(8, 8, T, 4, 3, 2)
        self.a, self.b = torch.nn.Sequential(rm.conv_bn(4, 4), rm.lif()), torch.nn.Sequential(rm.conv_bn(4, 4), rm.lif())
        self.head = torch.nn.Sequential(rm.conv_bn(4, 4), rm.lif(), rm.layer.Flatten(step_mode="m"),
                                        rm.layer.Linear(4 * 64, 3, step_mode="m"), rm.lif())

    def forward(self, x):
        s = self.pfa(self.stem(x))
        return self.head(self.a(s) + self.b(s))


@pytest.mark.lava
def test_one_map_read_by_two_convs_gets_a_payload_edge_each(tmp_path):
    model = busy(TwoReaders().eval(), seed=1)
    g = _static_graph(model, 8, tmp_path)
    q = lower(g)
    pays = [n for n in q if n.kind == "graded_spikes"]
    assert "dense" not in [n.kind for n in q] and len(pays) == 2
    assert {q.inputs[p.name] for p in pays} == {("stem.1",)}
    assert sorted(q.consumers(p.name) for p in pays) == [("a.0.0",), ("b.0.0",)]
    x = bernoulli(T, 3, (2, 8, 8), p=0.3, seed=5)
    _assert_fold_exact(g, x)
    _, mism = lava_mismatches(q, x)
    assert not {k: v for k, v in mism.items() if v[0]}, mism


def test_pfa_resnet_32x32_static_fold_is_proportional_to_the_layer(tmp_path):
    C, hw = 8, 32
    g = _static_graph(_pfa_resnet(hw, C), hw, tmp_path, calib_n=2)
    tracemalloc.start()
    try:
        q = lower(g)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    layer = C * hw * hw                                 # neurons of the largest layer
    # the old fold built an 8192x8192 float64 matrix (512 MiB) and its float32 copies
    assert peak < 64 * 2 ** 20, peak
    assert "dense" not in [n.kind for n in q]
    biggest = max((a.size, n.name, f) for n in q for f, a in n.arrays().items())
    assert biggest[0] <= T * layer, biggest            # gain tables T x layer; weights and payloads smaller


def test_an_overlapping_pool_still_unrolls_behind_the_memory_guard(tmp_path, monkeypatch):
    """A per-position map after an overlapping average pool has no payload form: the conv is unrolled
    (exact), and a budget too small for the matrix refuses it in one line naming the layer and the size."""
    from spikingjelly.activation_based import functional, layer
    from neurocomp.nn import PFA
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        layer.Conv2d(2, 4, 3, padding=1, step_mode="m"), layer.BatchNorm2d(4, step_mode="m"),
        backbones.lif(), layer.AvgPool2d(3, stride=1, padding=1, step_mode="m"), PFA(8, 8, T, 4, 3, 2),
        layer.Conv2d(4, 4, 3, padding=1, step_mode="m"), layer.BatchNorm2d(4, step_mode="m"), backbones.lif(),
        layer.Flatten(step_mode="m"), layer.Linear(4 * 64, 3, step_mode="m"), backbones.lif())
    functional.set_step_mode(model, "m")
    model = busy(model.eval(), seed=1)
    g = _static_graph(model, 8, tmp_path)
    assert "dense" in [n.kind for n in lower(g)]       # 256 x 256: within any budget
    monkeypatch.setenv("NEUROCOMP_MAX_MEMORY", "512K")  # the unrolled matrix needs 1 MiB
    with pytest.raises(OutOfBudget) as e:
        lower(g)
    msg = e.value.one_line()
    assert "layer '5'" in msg and "256x256" in msg and "1.0 MiB" in msg and "\n" not in msg, msg
    assert "non-overlapping" in msg                   # the next step that works


def test_ma_spatial_map_static_is_a_gain_table_per_neuron(tmp_path):
    """MA-SNN's TCSA (a map over time, channel and space on the input current; the 128x128 bench row's
    block) folds in static mode into each cell's input gain table, one value per neuron and step: the convs
    stay convs, no Dense, and no array exceeds T x the largest layer."""
    from neurocomp.ir import MALIF
    C, hw = 4, 8
    torch.manual_seed(0)
    model = backbones.build("ma", T=T, in_channels=2, input_hw=hw, channels=(C, C), num_classes=3,
                            t_ratio=1, c_ratio=2).eval()
    q = lower(_static_graph(model, hw, tmp_path))
    kinds = [n.kind for n in q]
    assert "dense" not in kinds and kinds.count("conv2d") == 2, kinds
    cells = [n for n in q if isinstance(n, MALIF)]
    conv_cells = [n for n in cells if len(n.out_shape) == 3]
    assert len(conv_cells) == 2
    for n in conv_cells:                                # the spatial map: a gain per neuron and step
        assert n.input_gain is not None and n.input_gain.shape == (T,) + tuple(n.out_shape), n.name
        assert np.ptp(n.input_gain, axis=(2, 3)).max() > 0, n.name     # it does vary over space
    biggest = max((a.size, n.name, f) for n in q for f, a in n.arrays().items())
    assert biggest[0] <= T * C * hw * hw, biggest
