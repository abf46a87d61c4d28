"""Graphs, not chains: residual and branching networks built in the IR, exact from torch to Lava.

Each test builds a small block twice from the same random weights: as torch modules (SpikingJelly
multi-step LIF neurons) run by hand in the test, and as the float IR (``Graph.build``). The float
reference must equal torch spike for spike; the lowered graph (BN folded per branch, shortcuts as
synapses, one scale per neuron over all its groups, unequal branch depths equalised by delays) must
give the same spikes in Lava as in the fixed-point reference on every layer and step.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import neuron

from neurocomp.errors import BadGraph
from neurocomp.ir import Add, AvgPool2d, BatchNorm, Concat, Conv2d, Flatten, Graph, Input, LIF, Linear, Readout
from neurocomp.ir.timing import time_alignment
from neurocomp.passes.pipeline import lower
from neurocomp.sim import run_fixed, run_float

T, B = 4, 2
SHAPE = (2, 8, 8)


class Net:
    """Builds a block as torch modules and as IR nodes at once (same weights, same names)."""

    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.nodes, self.inputs, self.torch = [Input("x", SHAPE, SHAPE)], {}, {}

    def conv_bn(self, name, src, c_in, c_out, k=3, hw=SHAPE[1:], stride=1):
        conv = torch.nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False, stride=stride)
        bn = torch.nn.BatchNorm2d(c_out).eval()
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=self.gen) / (c_in * k * k) ** 0.5 * 1.5)
            bn.running_mean.copy_(torch.randn(c_out, generator=self.gen) * 0.1)
            bn.running_var.copy_(torch.rand(c_out, generator=self.gen) * 0.5 + 0.5)
            bn.weight.copy_(torch.rand(c_out, generator=self.gen) + 0.5)
            bn.bias.copy_(torch.rand(c_out, generator=self.gen) * 0.6 + 0.3)
        hw_out = tuple((h + 2 * (k // 2) - k) // stride + 1 for h in hw)
        shape_in, shape_out = (c_in,) + tuple(hw), (c_out,) + hw_out
        self.add(Conv2d(f"{name}.conv", shape_in, shape_out, weight=conv.weight.detach().numpy().copy(),
                        padding=(k // 2, k // 2), stride=(stride, stride)), src, conv)
        self.add(BatchNorm(f"{name}.bn", shape_out, shape_out, mean=bn.running_mean.numpy().copy(),
                           var=bn.running_var.numpy().copy(), weight=bn.weight.detach().numpy().copy(),
                           bias=bn.bias.detach().numpy().copy(), eps=bn.eps), f"{name}.conv", bn)
        return f"{name}.bn"

    def lif(self, name, src, shape):
        self.add(LIF(name, shape, shape, tau=2.0, v_threshold=1.0, v_reset=0.0), src,
                 neuron.LIFNode(tau=2.0, v_threshold=1.0, v_reset=0.0, step_mode="m"))
        return name

    def add(self, node, srcs, module=None):
        srcs = (srcs,) if isinstance(srcs, str) else tuple(srcs)
        self.nodes.append(node)
        self.inputs[node.name] = srcs
        self.torch[node.name] = module
        return node.name

    def busy(self, x):
        """Every BatchNorm normalises its input on ``x`` then shifts it near the threshold, so every
        layer fires (random weights alone leave deep layers silent)."""
        for k, n in enumerate(self.nodes):
            if not isinstance(n, BatchNorm):
                continue
            y = self.run_torch(x)[self.inputs[n.name][0]]
            bn = self.torch[n.name]
            with torch.no_grad():
                bn.running_mean.copy_(y.mean((0, 1, 3, 4)))
                bn.running_var.copy_(y.var((0, 1, 3, 4), unbiased=False) + 1e-3)
                bn.weight.copy_(torch.rand(bn.num_features, generator=self.gen) * 0.6 + 0.6)
                bn.bias.copy_(torch.rand(bn.num_features, generator=self.gen) * 0.5 + 0.7)
            self.nodes[k] = n.replace(mean=bn.running_mean.numpy().copy(), var=bn.running_var.numpy().copy(),
                                      weight=bn.weight.detach().numpy().copy(), bias=bn.bias.detach().numpy().copy())
        return self

    def graph(self):
        return Graph.build(self.nodes, self.inputs, {"timesteps": T, "encoding": "bernoulli"})

    def run_torch(self, x):
        """The block in torch ops, node by node (an independent computation of the same network)."""
        vals = {"x": x}
        with torch.no_grad():
            for n in self.nodes[1:]:
                if any(s not in vals for s in self.inputs[n.name]):
                    break
                args = [vals[s] for s in self.inputs[n.name]]
                m = self.torch[n.name]
                if isinstance(n, Add):
                    out = args[0]
                    for a in args[1:]:
                        out = out + a
                elif isinstance(n, Concat):
                    out = torch.cat(args, dim=2)
                elif isinstance(n, Readout):
                    out = args[0]
                elif isinstance(n, LIF):
                    m.reset()
                    out = m(args[0])
                else:
                    y = m(args[0].flatten(0, 1))
                    out = y.reshape(args[0].shape[:2] + y.shape[1:])
                vals[n.name] = out
        return vals


def _spiking_resnet():
    """Stem, a Spiking-ResNet block (identity shortcut of spikes into the second LIF), then a block
    with a 1x1 conv + BN downsampling shortcut (2 -> 4 channels): branches of depth 2 and 1."""
    n = Net(1)
    s0 = n.lif("stem.sn", n.conv_bn("stem", "x", 2, 2), SHAPE)
    s1 = n.lif("b1.sn1", n.conv_bn("b1.1", s0, 2, 2), SHAPE)
    a = n.add(Add("b1.add", SHAPE, SHAPE), [n.conv_bn("b1.2", s1, 2, 2), s0])
    s2 = n.lif("b1.sn2", a, SHAPE)
    wide = (4,) + SHAPE[1:]
    s3 = n.lif("b2.sn1", n.conv_bn("b2.1", s2, 2, 4), wide)
    a2 = n.add(Add("b2.add", wide, wide), [n.conv_bn("b2.2", s3, 4, 4), n.conv_bn("b2.down", s2, 2, 4, k=1)])
    n.lif("b2.sn2", a2, wide)
    return n.busy(_inputs(5))


def _sew_concat():
    """Stem, a SEW block (ADD of spikes: graded 0..2 into the next conv), a concat of the SEW output
    with the stem's spikes (arriving two steps apart), and a conv + LIF head over the concat."""
    n = Net(2)
    s0 = n.lif("stem.sn", n.conv_bn("stem", "x", 2, 2), SHAPE)
    s1 = n.lif("sew.sn1", n.conv_bn("sew.1", s0, 2, 2), SHAPE)
    s2 = n.lif("sew.sn2", n.conv_bn("sew.2", s1, 2, 2), SHAPE)
    sew = n.add(Add("sew.add", SHAPE, SHAPE), [s2, s0])
    s3 = n.lif("mid.sn", n.conv_bn("mid", sew, 2, 2), SHAPE)
    cat = n.add(Concat("cat", (2,) + SHAPE[1:], (4,) + SHAPE[1:]), [s3, s0])
    n.lif("head.sn", n.conv_bn("head", cat, 4, 2), SHAPE)
    return n.busy(_inputs(5))


def _ms_resnet():
    """MS-ResNet: membrane shortcuts, i.e. adds of currents. The stem's current feeds block 1's neuron
    and its sum; each block's sum feeds the next block's neuron and the next sum. The last sum goes
    into a LIF head."""
    n = Net(4)
    s0 = n.lif("stem.sn", n.conv_bn("stem", "x", 2, 2), SHAPE)
    cur = n.conv_bn("c0", s0, 2, 2)
    for b in (1, 2):
        s1 = n.lif(f"b{b}.sn1", cur, SHAPE)
        s2 = n.lif(f"b{b}.sn2", n.conv_bn(f"b{b}.1", s1, 2, 2), SHAPE)
        cur = n.add(Add(f"b{b}.add", SHAPE, SHAPE), [n.conv_bn(f"b{b}.2", s2, 2, 2), cur])
    n.lif("head.sn", cur, SHAPE)
    return n.busy(_inputs(5))


def _avgpool_shortcut():
    """A downsampling block whose shortcut is an average pool then a 1x1 conv + BN (the pool folds into
    that conv); the residual branch is a stride-2 conv."""
    n = Net(6)
    s0 = n.lif("stem.sn", n.conv_bn("stem", "x", 2, 2), SHAPE)
    small = (2, 4, 4)
    s1 = n.lif("b.sn1", n.conv_bn("b.1", s0, 2, 2, stride=2), small)
    pool = n.add(AvgPool2d("b.pool", SHAPE, small, kernel=(2, 2), stride=(2, 2)), s0,
                 torch.nn.AvgPool2d(2, 2))
    a = n.add(Add("b.add", small, small), [n.conv_bn("b.2", s1, 2, 2, hw=small[1:]),
                                           n.conv_bn("b.down", pool, 2, 2, k=1, hw=small[1:])])
    n.lif("b.sn2", a, small)
    return n.busy(_inputs(5))


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((T, B) + SHAPE, generator=g) < 0.4).float()


@pytest.mark.parametrize("build", [_spiking_resnet, _sew_concat, _ms_resnet, _avgpool_shortcut])
def test_float_reference_equals_torch(build):
    net, x = build(), _inputs()
    ref = run_float(net.graph(), x)
    want = net.run_torch(x)
    for name, spikes in ref.spikes.items():
        rate = float(want[name].mean())
        assert 0.02 < rate < 0.9, f"{name} fires at {rate:.3f}: the test would prove nothing"
        assert torch.equal(spikes, want[name]), name


@pytest.mark.lava
@pytest.mark.parametrize("build", [_spiking_resnet, _sew_concat, _ms_resnet, _avgpool_shortcut])
def test_lava_equals_fixed_reference(build):
    from busy_nets import lava_mismatches
    q = lower(build().graph())
    x = _inputs(1)
    ref, mism = lava_mismatches(q, x)
    assert all(v.sum() > 0 for v in ref.spikes.values()), {k: float(v.float().mean()) for k, v in ref.spikes.items()}
    assert mism and all(m == (0, 0, 0) for m in mism.values()), mism


def test_one_scale_per_neuron_over_all_groups():
    q = lower(_spiking_resnet().graph())
    rec = {r["layer"]: r for p in q.meta["passes"] if p["pass"] == "quantize" for r in p["layers"]}
    assert set(rec["b2.sn2"]["groups"]) == {"b2.2.conv", "b2.down.conv"}
    # the identity shortcut is a synapse of ones at the neuron's scale: its integer weight is round(s / tau)
    short = q["b1.add.shortcut1"]
    s = rec["b1.sn2"]["scale"]
    assert int(short.qweight.ravel()[0]) == int(np.round(s * 0.5)) and np.all(short.qweight == short.qweight.ravel()[0])
    # BN folded into the conv of its own branch; consumers of the BN now read the conv
    assert "b2.down.bn" not in {n.name for n in q} and q.inputs["b2.add"] == ("b2.2.conv", "b2.down.conv")


def test_unequal_depths_are_delayed_per_edge():
    tim = time_alignment(lower(_spiking_resnet().graph()))
    d = tim["layer_delay"]
    assert d["stem.sn"] == 1 and d["b1.sn1"] == 2 and d["b1.sn2"] == 3 and d["b2.sn2"] == 5
    assert tim["added_delay"] == {"stem.sn->b1.add.shortcut1": 1, "b1.sn2->b2.down.conv": 1}
    tim = time_alignment(lower(_sew_concat().graph()))
    # the SEW add: stem spikes (delay 1) meet sew.sn2 (delay 3) at mid.conv; the concat: stem meets mid.sn (4)
    assert tim["added_delay"] == {"stem.sn->mid.conv": 2, "stem.sn->head.conv": 3}


def test_bad_graphs_are_one_line_naming_the_edge():
    i, a = Input("x", SHAPE, SHAPE), LIF("a", SHAPE, SHAPE)
    b, s = LIF("b", (3, 8, 8), (3, 8, 8)), Add("s", SHAPE, SHAPE)
    with pytest.raises(BadGraph, match=r"edge 'x' -> 'b'.*expects shape \(3, 8, 8\)") as e:
        Graph.build([i, a, b, s], {"a": ("x",), "b": ("x",), "s": ("a", "b")})
    assert "\n" not in e.value.one_line()
    with pytest.raises(BadGraph, match=r"closes a cycle \((a -> s -> a|s -> a -> s)\)"):
        Graph.build([i, a, s], {"a": ("s",), "s": ("a", "x")})
    with pytest.raises(BadGraph, match=r"edge 'q' -> 's'"):
        Graph.build([i, a, s], {"a": ("x",), "s": ("a", "q")})


def test_netx_refuses_a_branching_graph_naming_the_edge(tmp_path):
    from neurocomp.backends.netx import write_netx
    from neurocomp.errors import UnsupportedLayer
    with pytest.raises(UnsupportedLayer, match=r"edge '\S+' -> '\S+' branches") as e:
        write_netx(lower(_spiking_resnet().graph()), str(tmp_path / "net.h5"))
    assert "\n" not in e.value.one_line() and not (tmp_path / "net.h5").exists()


def test_core_mapping_sums_fan_in_over_groups_and_addends():
    from neurocomp.passes.map_cores import map_cores
    m = map_cores(lower(_spiking_resnet().graph()), "loihi2").meta["mapping"]
    lay = {l["layer"]: l for l in m["layers"]}
    # b2.sn2: a 3x3 conv over 4 channels (36 taps) plus a 1x1 conv over 2 channels (2) per centre neuron
    assert lay["b2.sn2"]["max_fan_in_per_neuron"] == 36 + 2 and lay["b2.sn2"]["inputs"] == 4 * 64 + 2 * 64
    # b1.sn2: 3x3 over 2 channels (18) plus the identity shortcut (1 depthwise tap)
    assert lay["b1.sn2"]["max_fan_in_per_neuron"] == 19
    m = map_cores(lower(_sew_concat().graph()), "loihi2").meta["mapping"]
    lay = {l["layer"]: l for l in m["layers"]}
    assert lay["mid.sn"]["max_fan_in_per_neuron"] == 2 * 18      # the conv once per addend of the SEW add
    assert lay["head.sn"]["max_fan_in_per_neuron"] == 36         # the concat's 4 channels, split in two parts


def test_a_graph_round_trips_through_the_ir_files(tmp_path):
    from neurocomp.ir.serialize import load_graph, save_graph
    q = lower(_sew_concat().graph())
    save_graph(q, str(tmp_path))
    back = load_graph(str(tmp_path))
    assert back.digest() == q.digest() and back.inputs["cat"] == ("mid.sn", "stem.sn") and not back.is_chain()


def test_a_current_into_several_neurons_is_copied_per_neuron():
    q = lower(_ms_resnet().graph())
    groups = {r["layer"]: r.get("groups") for p in q.meta["passes"] if p["pass"] == "quantize" for r in p["layers"]}
    assert groups["b1.sn1"] is None and groups["b2.sn1"] == ["b1.2.conv", "c0.conv@b2.sn1"]
    assert groups["head.sn"] == ["b2.2.conv", "b1.2.conv@head.sn", "c0.conv@head.sn"]
    assert np.array_equal(q["c0.conv@head.sn"].weight, q["c0.conv"].weight)
    assert "b1.add" not in {n.name for n in q}           # the shared sums are replaced by each neuron's own
    # the head's groups come from neurons at delays 5, 3 and 1: the shallower ones are delayed to arrive with the deepest
    tim = time_alignment(q)
    # (b2.sn1: b1.2.conv from b1.sn2 at delay 3 arrives at 4; the stem's copy at 2 waits 2 steps)
    assert tim["added_delay"] == {"stem.sn->c0.conv@b2.sn1": 2, "b1.sn2->b1.2.conv@head.sn": 2,
                                  "stem.sn->c0.conv@head.sn": 4}
    assert tim["layer_delay"]["head.sn"] == 6 and tim["added_delay_cost"]["extra_steps"] == 8


def test_what_is_not_lowered_yet_is_refused_in_one_line():
    from neurocomp.errors import UnsupportedLayer
    # one synapse's current into two neurons, in a graph given straight to the quantizer
    n = Net(3)
    s0 = n.lif("stem.sn", n.conv_bn("stem", "x", 2, 2), SHAPE)
    c = n.conv_bn("b.1", s0, 2, 2)
    n.lif("b.sn1", c, SHAPE)
    n.add(Add("b.add", SHAPE, SHAPE), [c, n.conv_bn("b.2", s0, 2, 2)])
    n.lif("b.sn2", "b.add", SHAPE)
    n.add(Add("out", SHAPE, SHAPE), ["b.sn1", "b.sn2"])
    n.add(Conv2d("head", SHAPE, SHAPE, weight=np.ones((2, 2, 1, 1), np.float32)), "out")
    n.lif("head.sn", "head", SHAPE)
    from neurocomp.passes.fold_bn import fold_batchnorm
    from neurocomp.passes.quantize import quantize
    with pytest.raises(UnsupportedLayer, match=r"the current of 'b\.1\.conv' feeds two neurons "
                                               r"\('b\.sn1' and 'b\.sn2'\)") as e:
        quantize(fold_batchnorm(n.graph()))
    assert "\n" not in e.value.one_line()


def test_activity_counts_every_group_and_addend():
    import torch.nn.functional as F
    from neurocomp.metrics import layer_activity
    q, x = lower(_sew_concat().graph()), _inputs(1)
    ref = run_fixed(q, x)
    act = layer_activity(q, x, ref.spikes)["layers"]

    def reach(s, c_out):        # events of a 3x3 'same' conv: each spike reaches the c_out x (in-bounds 3x3) targets
        return int(F.conv2d(s.flatten(0, 1).double(), torch.ones(c_out, s.shape[2], 3, 3, dtype=torch.float64),
                            padding=1).sum())
    sp = {k: v.bool() for k, v in ref.spikes.items()}
    assert act["mid.sn"]["synaptic_ops"] == reach(sp["sew.sn2"], 2) + reach(sp["stem.sn"], 2)
    assert act["head.sn"]["synaptic_ops"] == reach(sp["mid.sn"], 2) + reach(sp["stem.sn"], 2)
    q = lower(_spiking_resnet().graph())
    act = layer_activity(q, x, run_fixed(q, x).spikes)["layers"]
    assert set(act["b2.sn2"]["groups"]) == {"b2.2.conv", "b2.down.conv"} and "groups" not in act["b1.sn1"]


def test_the_table_shows_what_each_branch_reads():
    from neurocomp.ir import table
    rows = {line.split()[0]: line for line in table(lower(_sew_concat().graph())).splitlines()[2:]}
    assert "<- mid.sn | stem.sn" in rows["cat"] and "<- sew.sn2 + stem.sn" in rows["sew.add"]
    assert "<-" not in rows["stem.sn"]          # it reads the row above it



@pytest.mark.lava
def test_a_readout_head_after_a_residual_block_is_exact_in_lava():
    from neurocomp.backends.lava import run_lava
    n = _spiking_resnet()
    flat = n.add(Flatten("flat", (4, 8, 8), (256,)), "b2.sn2", torch.nn.Flatten())
    fc = torch.nn.Linear(256, 10, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(10, 256, generator=n.gen) * 0.1)
    n.add(Linear("fc", (256,), (10,), weight=fc.weight.detach().numpy().copy()), flat, fc)
    n.add(Readout("out", (10,), (10,)), "fc")
    x = _inputs(2)
    assert torch.equal(run_float(n.graph(), x).output, n.run_torch(x)["out"])
    q = lower(n.graph())
    ref, lava = run_fixed(q, x), run_lava(q, x)
    assert ref.output.abs().sum() > 0 and torch.equal(lava.spikes["out"].to(torch.int64), ref.spikes["out"])
    assert all(torch.equal(lava.spikes[k].bool(), ref.spikes[k].bool()) for k in ref.spikes if k != "out")
