"""The reference simulator's one walk: dispatch tables per IR node class, typed refusals, edges by name,
nothing written on the frozen IR nodes, no process-wide warning filter."""
import dataclasses
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional

from neurocomp.errors import BadGraph, UnsupportedLayer
from neurocomp.frontends.torch import module_to_graph
from neurocomp.ir import NODE_TYPES, AvgPool2d, BatchNorm, Graph, Input, LIF, Linear, Node, Scale
from neurocomp.nn import build
from neurocomp.passes.pipeline import lower
from neurocomp.sim import run_fixed, run_float
from neurocomp.sim.fixed_ops import FIXED_OPS
from neurocomp.sim.float_ops import FLOAT_OPS
from neurocomp.sim.walk import Run, entry
from nc_testutils import spike_input


@dataclass(frozen=True, eq=False)
class Mystery(Node):
    kind = "mystery"


@dataclass(frozen=True, eq=False)
class Add(Node):
    kind = "add"


def _refusal(op):
    return getattr(op, "refusal", None)


def test_every_node_class_has_a_float_and_a_fixed_entry():
    classes = set(NODE_TYPES.values())
    assert Input in classes and LIF in classes and len(classes) == len(NODE_TYPES)
    assert set(FLOAT_OPS) == classes and set(FIXED_OPS) == classes
    assert all(callable(op) and _refusal(op) is None for op in FLOAT_OPS.values())
    refused = {cls for cls, op in FIXED_OPS.items() if _refusal(op)}
    assert refused == {AvgPool2d, BatchNorm, Scale}                   # float-only: folded before quantize
    assert all("fold" in _refusal(FIXED_OPS[cls]) for cls in refused)


def _mystery_graph():
    return Graph.chain([Input("in", (4,), (4,)), Mystery("odd one", (4,), (4,))])


@pytest.mark.parametrize("run", [run_float, run_fixed])
def test_unknown_node_class_is_a_typed_error_naming_the_layer(run):
    assert entry(FLOAT_OPS, Mystery) is None and entry(FIXED_OPS, Mystery) is None
    with pytest.raises(UnsupportedLayer) as e:
        run(_mystery_graph(), torch.ones(2, 3, 4))
    assert e.value.where == "layer 'odd one'" and "mystery" in str(e.value)
    assert "\n" not in str(e.value)


def test_fixed_refusal_names_the_layer_and_says_why():
    g = Graph.chain([Input("in", (3,), (3,)), Scale("map", (3,), (3,), scale=np.ones((2, 3), np.float32))])
    with pytest.raises(UnsupportedLayer) as e:
        run_fixed(g, torch.ones(2, 1, 3))
    assert e.value.where == "layer 'map'" and "fixed-point" in str(e.value) and "fold" in str(e.value)
    assert torch.equal(run_float(g, torch.ones(2, 1, 3)).output, torch.ones(2, 1, 3))   # float has it


def test_failure_inside_an_entry_names_the_layer():
    g = Graph.chain([Input("in", (4,), (4,)), Linear("fc", (4,), (3,), weight=np.ones((3, 5), np.float32))])
    with pytest.raises(RuntimeError) as e:           # the error keeps its type, its message gains the layer
        run_float(g, torch.ones(2, 1, 4))
    assert str(e.value).startswith("layer 'fc' (linear): ")


def test_fixed_point_on_an_unquantized_graph_names_the_layer():
    g = Graph.chain([Input("in", (4,), (4,)), Linear("fc", (4,), (3,), weight=np.ones((3, 4), np.float32)),
                     LIF("lif", (3,), (3,))])
    with pytest.raises(BadGraph) as e:
        run_fixed(g, torch.ones(2, 1, 4))
    assert e.value.where == "layer 'fc'"


def _lin(name, n_in, n_out, seed):
    w = np.random.default_rng(seed).normal(0, 1.5, (n_out, n_in)).astype(np.float32)
    return Linear(name, (n_in,), (n_out,), weight=w, bias=np.full(n_out, 0.1, np.float32))


def test_a_node_gets_its_inputs_by_edge_not_from_the_previous_node():
    nodes = [Input("in", (5,), (5,)), _lin("fc1", 5, 4, 1), LIF("lif1", (4,), (4,)),
             _lin("fc2", 5, 3, 2), LIF("lif2", (3,), (3,))]
    inputs = {"in": (), "fc1": ("in",), "lif1": ("fc1",), "fc2": ("in",), "lif2": ("fc2",)}   # fc2 skips lif1
    g = Graph(tuple(nodes), inputs)
    g.validate()
    x = spike_input(6, 7, (5,), p=0.5, seed=3)
    r = run_float(g, x)
    alone = run_float(Graph.chain([nodes[0], nodes[3], nodes[4]]), x)
    assert torch.equal(r.output, alone.output) and torch.equal(r.spikes["lif2"], alone.spikes["lif2"])
    assert list(r.spikes) == ["lif1", "lif2"] and r.output.sum() > 0


def test_a_node_kind_with_two_inputs_is_one_table_entry():
    nodes = [Input("in", (5,), (5,)), _lin("fc1", 5, 3, 1), _lin("fc2", 5, 3, 2), Add("sum", (3,), (3,)),
             LIF("lif", (3,), (3,))]
    inputs = {"in": (), "fc1": ("in",), "fc2": ("in",), "sum": ("fc1", "fc2"), "lif": ("sum",)}
    g = Graph(tuple(nodes), inputs)
    x = spike_input(6, 7, (5,), p=0.5, seed=4)
    ops = dict(FLOAT_OPS)
    ops[Add] = lambda run, node, a, b: a + b
    run = Run(g, ops, "float")
    out = run.run(x.float())
    a = run_float(Graph.chain([nodes[0], nodes[1]]), x).output
    b = run_float(Graph.chain([nodes[0], nodes[2]]), x).output
    ref = run_float(Graph.chain([Input("in", (3,), (3,)), LIF("lif", (3,), (3,))]), a + b)
    assert torch.equal(out, ref.output) and out.sum() > 0 and list(run.spikes) == ["lif"]
    with pytest.raises(UnsupportedLayer, match="layer 'sum'"):
        run_float(g, x)                                # the shipped table has no Add


def _tiny(kind, T):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    kw = dict(in_channels=2, num_classes=3, input_hw=8, channels=(4, 6), T=T)
    m = build(kind, **({"kernel_size_t": 2, "kernel_size_c": 2} if kind == "tcja" else
                       {"t_ratio": 1, "c_ratio": 2} if kind == "ma" else {"rank": 2}), **kw)
    for p in m.parameters():
        if p.requires_grad:
            p.data.copy_((torch.rand(p.shape, generator=gen) * 2 - 1) * 2.5 / max(1, p.shape[-1] ** 0.5))
    functional.set_step_mode(m, "m")
    return m.eval()


def _own_fields_only(graph):
    for n in graph:
        extra = set(vars(n)) - {f.name for f in dataclasses.fields(n)}
        assert not extra, f"layer '{n.name}' carries {sorted(extra)}"


@pytest.mark.parametrize("kind", ["tcja", "ma", "pfa"])
def test_runs_write_nothing_on_the_nodes_and_set_no_process_wide_warning_filter(kind):
    T = 4
    g = module_to_graph(_tiny(kind, T), (2, 8, 8), T, attention_mode="dynamic")
    assert any(n.kind in ("spike_attention", "ma_attention") for n in g)
    q = lower(g, attention="dynamic")
    x = spike_input(T, 3, (2, 8, 8), p=0.3, seed=5)
    filters = list(warnings.filters)
    a, b = run_float(g, x), run_float(g, x)                  # the second run reuses the cached modules
    f = run_fixed(q, x)
    assert warnings.filters == filters
    assert torch.equal(a.output, b.output) and f.output.dtype == torch.bool and set(f.stats) == set(f.spikes)
    _own_fields_only(g)
    _own_fields_only(q)
