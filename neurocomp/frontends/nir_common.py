"""What neurocomp's two NIR readers share: ``frontends/nir.py`` (neurocomp's own graphs, read back
exactly) and ``frontends/nir_foreign.py`` (other frameworks' graphs, discretised).

Shapes (a layer's size cap, the Input's shape, convolution and pooling geometry, a linear weight
against its input), one value per layer, the edge check and the walk over the graph (:func:`dag`, branches in and out;
:func:`join`, NIR's sum of several edges into a node as an IR ``Add``). Each raises the typed
one-line error both readers raise, naming the NIR node or edge; the file reader adds the path.
"""
from __future__ import annotations

import nir
import numpy as np

from neurocomp.errors import BadGraph, UnsupportedLayer
from neurocomp.ir import Add, AvgPool2d, SumPool2d

MAX_NEURONS = 10_000_000   # per layer; larger shapes are refused before anything is allocated
MAX_NIR_NODES = 1_000      # NIR nodes, nested graphs included (nir.read's type inference is quadratic)
DAG_HINT = ("a feed-forward graph is supported (branches in and out, edges into a node summed), plus, in graphs "
            "from other frameworks, a neuron layer's own recurrent weight")


def node_where(name) -> str:
    return f"NIR node '{name}'"


def pair(v) -> tuple:
    v = np.asarray(v).ravel()
    return (int(v[0]), int(v[0])) if v.size == 1 else (int(v[0]), int(v[1]))


def conv_out(size, k, s, p, d=1) -> int:
    """Output length of a convolution or pooling window over ``size`` inputs."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def check_layer(shape, where) -> tuple:
    """``shape`` as a tuple of ints if every dimension is positive and it holds at most
    :data:`MAX_NEURONS` neurons (refused before anything that size is allocated)."""
    shape = tuple(int(s) for s in shape)
    n = 1
    for s in shape:
        n *= s
    if not shape or min(shape) < 1 or n > MAX_NEURONS:
        raise BadGraph(f"a layer of shape {shape} ({n} neurons)", where=where,
                       hint=f"every dimension must be positive and a layer at most {MAX_NEURONS} neurons; "
                            "check kernel, stride and padding against the input shape")
    return shape


def input_shape(node, name) -> tuple:
    """The shape an Input node declares (``input_type['input']``, else its one entry), checked."""
    t = getattr(node, "input_type", None) or {}
    v = t.get("input", None)
    if v is None and t:
        v = next(iter(t.values()))
    if v is None:
        raise BadGraph("the Input node has no input_type", where=node_where(name),
                       hint="re-export the graph with an input shape")
    return check_layer(np.asarray(v).ravel(), node_where(name))


def uniform(v, where, field) -> float:
    """The one value of a per-layer field (thresholds, decays, resets): finite and equal for every neuron."""
    a = np.asarray(v, dtype=np.float64).ravel()
    if a.size == 0:
        raise BadGraph(f"field '{field}' is empty", where=where)
    if not np.all(np.isfinite(a)):
        raise BadGraph(f"field '{field}' holds NaN or inf", where=where, hint="fix the exported parameters")
    if not np.all(a == a[0]):
        raise UnsupportedLayer(f"field '{field}' differs between neurons", where=where,
                               hint="Loihi has one value per layer for decays, thresholds and resets")
    return float(a[0])


def check_bias(bias, n, where) -> None:
    if bias is not None and tuple(bias.shape) != (n,):
        raise BadGraph(f"bias has shape {tuple(bias.shape)}, expected ({n},)", where=where,
                       hint="the file is inconsistent; re-export it")


def linear_weight(node, shape, where) -> np.ndarray:
    """The (out, in) weight of an Affine/Linear, checked against the incoming shape."""
    w = np.asarray(node.weight, dtype=np.float32)
    if w.ndim != 2:
        raise BadGraph(f"weight has shape {w.shape}", where=where, hint="a 2-D (out, in) weight is needed")
    if len(shape) != 1 or w.shape[1] != shape[0]:
        hint = ("the weight looks transposed" if len(shape) == 1 and w.shape[0] == shape[0]
                else "the graph file is inconsistent")
        raise BadGraph(f"weight {w.shape} expects {w.shape[1]} inputs but the incoming tensor has shape "
                       f"{tuple(shape)}", where=where, hint=hint)
    return w


def conv_geometry(node, shape, where):
    """``(weight, stride, padding, dilation, groups, out_shape)`` of a NIR Conv2d, or of a Conv1d read as
    a Conv2d of height 1 (weight ``(C_out, C_in/groups, kH, kW)``), checked against the incoming
    ``(C, H, W)`` shape."""
    is1d = isinstance(node, nir.Conv1d)
    w = np.asarray(node.weight, dtype=np.float32)
    if w.ndim != (3 if is1d else 4):
        raise BadGraph(f"{type(node).__name__} weight has shape {w.shape}", where=where,
                       hint="a (C_out, C_in/groups, *kernel) weight is needed")
    if isinstance(node.padding, str):
        raise UnsupportedLayer(f"padding={node.padding!r}", where=where, hint="use explicit integer padding")
    if is1d:
        w = w[:, :, None, :]
        stride, pad, dil = ((1, pair(node.stride)[0]), (0, pair(node.padding)[0]), (1, pair(node.dilation)[0]))
    else:
        stride, pad, dil = pair(node.stride), pair(node.padding), pair(node.dilation)
    if len(shape) != 3:
        raise BadGraph(f"convolution input has shape {tuple(shape)}", where=where,
                       hint="a (C, H, W) input is needed (a Conv1d's input (C, L) is read as (C, 1, L))")
    C, H, W = shape
    groups = int(np.asarray(node.groups).ravel()[0])
    if groups < 1 or min(stride) < 1 or min(dil) < 1 or min(pad) < 0 or w.shape[1] * groups != C:
        raise BadGraph(f"weight {w.shape} (groups={groups}, stride={stride}, dilation={dil}, padding={pad}) "
                       f"does not fit its {C}-channel input", where=where, hint="the file is inconsistent; re-export it")
    out = check_layer((w.shape[0], conv_out(H, w.shape[2], stride[0], pad[0], dil[0]),
                       conv_out(W, w.shape[3], stride[1], pad[1], dil[1])), where)
    return w, stride, pad, dil, groups, out


def pool_node(name, node, shape, meta):
    """A NIR SumPool2d / AvgPool2d as the IR's, checked against the incoming ``(C, H, W)`` shape."""
    where = node_where(name)
    k, s, p = pair(node.kernel_size), pair(node.stride), pair(node.padding)
    if len(shape) != 3:
        raise BadGraph(f"pooling input has shape {tuple(shape)}", where=where, hint="a (C, H, W) input is needed")
    if min(k) < 1 or min(s) < 1 or min(p) < 0:
        raise BadGraph(f"pooling kernel {k}, stride {s}, padding {p}", where=where,
                       hint="kernel and stride must be positive, padding non-negative")
    C, H, W = shape
    out = check_layer((C, conv_out(H, k[0], s[0], p[0]), conv_out(W, k[1], s[1], p[1])), where)
    cls = SumPool2d if isinstance(node, nir.SumPool2d) else AvgPool2d
    return cls(name=name, in_shape=tuple(shape), out_shape=out, kernel=k, stride=s, padding=p, meta=meta)


# ---- structure -----------------------------------------------------------------------------------
def check_edges(nodes, edges) -> None:
    for s, d in edges:
        for end in (s, d):
            if end not in nodes:
                raise BadGraph(f"edge ({s!r} -> {d!r}) names an unknown node {end!r}", where="NIR edge",
                               hint="the graph file is inconsistent (dangling edge)")


def ports(nodes) -> tuple[str, str]:
    """The names of the one Input and the one Output node."""
    ins = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
    outs = [k for k, v in nodes.items() if isinstance(v, nir.Output)]
    if len(ins) != 1:
        raise UnsupportedLayer(f"{len(ins)} Input nodes", where="NIR graph", hint="one input is supported")
    if len(outs) != 1:
        raise UnsupportedLayer(f"{len(outs)} Output nodes", where="NIR graph", hint="one output is supported")
    return ins[0], outs[0]


def dag(nodes, edges, start, end, aside=(), cycle_note="") -> tuple[list, dict]:
    """``(order, preds)``: the node names from ``start`` to ``end`` in an order where every node follows
    what feeds it, and each node's sources (``{name: [source, ...]}``, in edge order; NIR sums the edges
    into a node). Branches in and out are allowed; a cycle, an edge into the Input or out of the
    Output, and a node off every path from the input to the output (except those in ``aside``) are each
    one error naming a node. Linear in the number of nodes and edges."""
    succ, preds = {}, {}
    for s, d in edges:
        if d not in succ.setdefault(s, {}):          # a repeated edge counts once
            succ[s][d] = None
            preds.setdefault(d, []).append(s)
    if preds.get(start):
        raise BadGraph(f"an edge into the Input node '{start}' (from '{preds[start][0]}')", where="NIR graph",
                       hint="the graph file is inconsistent; only the input feeds the graph")
    if succ.get(end):
        raise BadGraph(f"an edge out of the Output node '{end}' (to '{next(iter(succ[end]))}')", where="NIR graph",
                       hint="the graph file is inconsistent")

    def reach(first, step):
        seen, todo = {first}, [first]
        while todo:
            for k in step(todo.pop()):
                if k not in seen:
                    seen.add(k)
                    todo.append(k)
        return seen

    ahead = reach(start, lambda k: succ.get(k, ()))
    behind = reach(end, lambda k: preds.get(k, ()))
    if end not in ahead:
        raise BadGraph("no path from the input leads to the Output", where="NIR graph",
                       hint="the graph file is inconsistent")
    unused = [k for k in nodes if (k not in ahead or k not in behind) and k not in aside]
    if unused:
        raise BadGraph(f"node(s) {', '.join(map(repr, unused[:5]))} are not on a path from the input to the output",
                       where="NIR graph", hint="remove or connect them")
    live = ahead & behind
    missing = {k: sum(1 for s in preds.get(k, ()) if s in live) for k in live}
    order, ready = [], [start]
    while ready:                                       # Kahn's algorithm, sources first
        k = ready.pop()
        order.append(k)
        for d in succ.get(k, ()):
            if d in live:
                missing[d] -= 1
                if missing[d] == 0:
                    ready.append(d)
    if len(order) < len(live):                         # what is left lies on or after a cycle: walk back onto one
        left = {k for k in live if missing[k] > 0}
        cur, seen = next(k for k in nodes if k in left), set()
        while cur not in seen:
            seen.add(cur)
            cur = next(s for s in preds[cur] if s in left)
        raise UnsupportedLayer(f"a cycle through '{cur}'{cycle_note}", where="NIR graph", hint=DAG_HINT)
    return order, {k: [s for s in preds.get(k, ()) if s in live] for k in order}


def join(name, srcs, shapes, taken) -> list:
    """The IR nodes that stand for NIR's sum of the edges into node ``name`` (several sources): one Add
    named ``name.sum``, the sum of ``srcs`` (IR names, ``shapes`` their shapes); none for one source.
    ``taken``: the names in use (the new one is added)."""
    if len(srcs) < 2:
        return []
    first = tuple(shapes[srcs[0]])
    other = next((s for s in srcs[1:] if tuple(shapes[s]) != first), None)
    if other is not None:
        raise BadGraph(f"the edges into it carry shapes {first} (from '{srcs[0]}') and {tuple(shapes[other])} "
                       f"(from '{other}'); NIR sums the edges into a node, so they must have one shape",
                       where=node_where(name), hint="the graph file is inconsistent; flatten or reshape a branch")
    add = f"{name}.sum"
    while add in taken:
        add += "_"
    taken.add(add)
    return [Add(name=add, in_shape=first, out_shape=first, meta={"nir_sum_of_edges_into": name})]
