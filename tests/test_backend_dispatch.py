"""The backends' per-node-class tables, the lowerable-layer rules beside the IR, and the layering of
``neurocomp/backends`` (reads the IR and the artifact only). No Lava run here: every check is fast."""
import ast
import dataclasses
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from neurocomp.backends import netx
from neurocomp.backends.lava import EMITTERS, emit, emitter_for, source_data, to_lava_layout, to_torch_layout
from neurocomp.errors import UnsupportedLayer
from neurocomp.ir import (AvgPool2d, BatchNorm, Graph, Input, LIF, Linear, LoihiNeuron, NODE_TYPES, Node, Scale)
from neurocomp.ir.rules import RULES, check_lowerable, lowering_violations
from neurocomp.passes.pipeline import lower
from nc_testutils import make_net

FLOAT_ONLY = {AvgPool2d, BatchNorm, Scale}     # folded away before lowering (check_lowerable refuses them)
ROOT = os.path.join(os.path.dirname(__file__), "..", "neurocomp")


def _fixed(n):
    z = np.zeros((n,), np.int64)
    return LoihiNeuron(du=4095, dv=0, vth=10, bias_mant=z, bias_exp=z)


def _chain(*middle, n=3, T=2):
    nodes = [Input(name="input", in_shape=(n,), out_shape=(n,)), *middle]
    return Graph.chain(nodes, {"timesteps": T})


def _linear(name, n=3):
    return Linear(name=name, in_shape=(n,), out_shape=(n,), weight=np.eye(n, dtype=np.float32),
                  qweight=np.eye(n, dtype=np.int64))


def _lif(name, n=3):
    return LIF(name=name, in_shape=(n,), out_shape=(n,), tau=None, fixed=_fixed(n))


def test_every_lowerable_node_class_has_a_lava_emitter_and_a_netx_entry():
    lowerable = set(NODE_TYPES.values()) - FLOAT_ONLY
    assert lowerable <= set(EMITTERS), sorted(c.__name__ for c in lowerable - set(EMITTERS))
    assert lowerable <= set(netx.WRITERS) | set(netx.REFUSED)
    assert not set(netx.WRITERS) & set(netx.REFUSED)
    assert all(r.endswith("no netx form") for r in netx.REFUSED.values())


@pytest.mark.parametrize("variant", [0, 1, 2, 3])
def test_pipeline_output_is_covered_by_both_tables(variant):
    from neurocomp.frontends.torch import module_to_graph
    model, shape = make_net(variant)
    q = lower(module_to_graph(model, shape, 4, "bernoulli"))
    kinds = {type(n) for n in q}
    assert kinds <= set(EMITTERS)
    assert kinds <= set(netx.WRITERS) | set(netx.REFUSED)
    netx.check_netx(q, exact=False)      # every node has its writer (threshold neurons let through)


def test_float_only_node_classes_are_refused_by_the_rules():
    bn = BatchNorm(name="bn", in_shape=(3,), out_shape=(3,), mean=np.zeros(3, np.float32), var=np.ones(3, np.float32))
    with pytest.raises(UnsupportedLayer, match=r"layer 'bn': 'batchnorm' cannot be lowered to Loihi cores"):
        check_lowerable(_chain(_linear("fc"), _lif("n"), bn))


def test_a_node_class_without_an_emitter_gets_a_one_line_typed_error():
    @dataclasses.dataclass(frozen=True, eq=False)
    class Mystery(Linear):               # a synapse to the rules, but no backend knows it
        kind = "mystery"

    m = Mystery(name="odd\nname", in_shape=(3,), out_shape=(3,), weight=np.eye(3, dtype=np.float32),
                qweight=np.eye(3, dtype=np.int64))
    g = _chain(m, _lif("n"))
    assert [s.name for s, _ in check_lowerable(g)] == ["odd\nname"]
    with pytest.raises(UnsupportedLayer, match="'mystery' has no Lava emitter") as e:
        emit(g, np.zeros((3, 2), np.int64), 2, "/nonexistent")      # refused before Lava is touched
    assert "layer 'odd\\nname'" in e.value.one_line() and "\n" not in e.value.one_line()
    with pytest.raises(UnsupportedLayer, match="layer 'odd.*'mystery' has no netx writer"):
        netx.check_netx(g)
    assert emitter_for(_linear("fc")) is EMITTERS[Linear]


def test_a_new_node_kind_is_refused_by_the_rules_naming_the_layer():
    @dataclasses.dataclass(frozen=True, eq=False)
    class Add(Node):
        kind = "add"

    g = _chain(_linear("fc"), _lif("n"), Add(name="sum", in_shape=(3,), out_shape=(3,)))
    with pytest.raises(UnsupportedLayer, match="layer 'sum': 'add' cannot be lowered to Loihi cores"):
        emit(g, np.zeros((3, 2), np.int64), 2, "/nonexistent")


def test_rules_collect_every_violation_and_check_raises_the_first():
    g = _chain(_linear("a"), _linear("b"), _lif("n1"), _linear("c"))
    pairs, found = lowering_violations(g)
    assert [(s.name, n.name) for s, n in pairs] == [("b", "n1")]
    assert [e.one_line().split(":")[0] for e in found] == ["layer 'b'", "layer 'c'"]
    assert "two synaptic layers in a row ('a' then 'b')" in found[0].message
    assert "ends with a synapse" in found[1].message
    with pytest.raises(UnsupportedLayer, match="two synaptic layers in a row") as e:
        check_lowerable(g)
    assert e.value.one_line() == found[0].one_line()
    assert len(RULES) == len({r.__name__ for r in RULES})


def test_neuron_without_synapse_names_the_layer_before():
    with pytest.raises(UnsupportedLayer, match=r"layer 'n': neuron layer without a synapse in front \(after 'input'\)"):
        check_lowerable(_chain(_lif("n")))


def test_layout_round_trip_and_back_to_back_source():
    a = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)          # (T, C, H, W)
    lv = to_lava_layout(a, lead=1)
    assert lv.shape == (2, 5, 4, 3) and lv[1, 4, 2, 0] == a[1, 0, 2, 4]
    assert np.array_equal(to_torch_layout(lv, lead=1), a)
    assert to_lava_layout(np.arange(6)).shape == (6,)          # 1-D vectors stay
    x = np.zeros((3, 2, 4))                                    # T=3, B=2, N=4
    x[1, 1, 2] = 1                                             # sample 1, step 1, neuron 2
    d = source_data(x, depth=2)
    assert d.shape == (4, 3 * 2 + 2) and d[2, 1 * 3 + 1] == 1 and d.sum() == 1
    x3 = np.zeros((2, 1, 2, 3, 4))
    x3[1, 0, 1, 2, 3] = 1
    d3 = source_data(x3, depth=1)
    assert d3.shape == (4, 3, 2, 3) and d3[3, 2, 1, 1] == 1


def test_backends_import_neither_passes_nor_the_simulator():
    bad = []
    for path in glob.glob(os.path.join(ROOT, "backends", "**", "*.py"), recursive=True):
        for node in ast.walk(ast.parse(open(path).read())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad += [f"{os.path.relpath(path, ROOT)}: {n}" for n in names
                    if any(n == m or n.startswith(m + ".") for m in ("neurocomp.passes", "neurocomp.sim"))]
    assert not bad, bad


def test_importing_the_backends_imports_no_lava():
    code = ("import sys, neurocomp.backends.lava, neurocomp.backends.netx, neurocomp.ir.rules, neurocomp.results;"
            "print(sorted(m for m in sys.modules if m == 'lava' or m.startswith('lava.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.path.join(ROOT, "..")})
    assert out.stdout.strip() == "[]", out.stdout
