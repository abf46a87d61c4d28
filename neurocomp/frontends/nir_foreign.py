"""Foreign NIR 1.0.x graphs (snnTorch, Norse, Sinabs, Rockpool, Spyx, lava-dl, ...) -> IR.

NIR is continuous time; neurocomp runs in steps of ``dt`` seconds. ``dt`` comes from the graph's
metadata (``dt`` or ``neurocomp.dt``) if present, else from the caller (``--dt``), else a clear
error. Every neuron is discretised by forward Euler into a :class:`~neurocomp.ir.CubaLIF`:

| NIR node | per step (x = synaptic input) |
|---|---|
| IF(r, v_thr, v_reset) | v += dt*r*x |
| LIF(tau, r, v_leak, ...) | v += dt/tau * (v_leak - v + r*x) |
| CubaLIF(tau_syn, tau_mem, r, v_leak, w_in, ...) | i += dt/tau_syn * (w_in*x - i); v += dt/tau_mem * (v_leak - v + r*i) |
| I / LI / CubaLI | the same without threshold (non-spiking readouts) |
| Threshold(θ) | v = x, fires on v > θ |

The new current is used in the voltage update of the same step (snnTorch, Lava and Loihi order).
A neuron fires on ``v > v_threshold`` (NIR is strict). The reset mode is not stored in NIR: it is
the caller's ``reset`` ("zero", the NIR spec's reset to ``v_reset``, default; or "subtract").
``dt/tau`` must lie in (0, 1] (forward Euler is unstable otherwise; negative taus are refused).

Structure: nested subgraphs are flattened (their Input/Output become pass-throughs); a synapse
(Affine/Linear) that reads a neuron layer and writes back only into it is a recurrent weight of
that layer (``CubaLIF.rec_weight``, applied to the previous step's spikes, which is what Lava's
one-step Dense delay gives); what remains must be feed-forward: branches in and out, several edges
into a node summed (an IR ``Add`` named ``NODE.sum`` in front of it, as NIR specifies), e.g. two paths
into one LIF (each synapse's current summed in the neuron) or the spikes of two layers into one Affine.
Affine/Linear/Scale, Conv1d/Conv2d, SumPool2d/AvgPool2d and Flatten map to the IR's synapse nodes
(Conv1d as a Conv2d of height 1); a Delay of 0 steps is a pass-through, other delays are refused.

Files come in through :func:`neurocomp.frontends.nir.read_nir_file` (safety checks, ``nir.read``; a
graph that ``nir.read`` accepts only with ``type_check=False`` is read that way with a warning);
this module converts the graph it read. Shape rules and the graph walk are shared with the reader of
neurocomp's own graphs (``neurocomp.frontends.nir_common``). Every failure is one
:class:`~neurocomp.errors.NeurocompError` naming the node or edge.
"""
from __future__ import annotations

import dataclasses
import warnings

import nir
import numpy as np

from neurocomp import memory
from neurocomp.errors import BadGraph, TooLarge, UnsupportedLayer
from neurocomp.frontends.nir_common import (MAX_NIR_NODES, check_bias, check_edges, check_layer, conv_geometry, dag,
                                            input_shape, join, linear_weight, node_where, pool_node, ports, uniform)
from neurocomp.ir import Conv2d, CubaLIF, Flatten, Graph, Input, Linear

RESET_MODES = ("zero", "subtract")
NEURONS = (nir.IF, nir.LIF, nir.CubaLIF, nir.LI, nir.CubaLI, nir.I, nir.Threshold)
PASS = (nir.Input, nir.Output)


class NIRWarning(UserWarning):
    """Something in a foreign NIR file was accepted with an assumption."""


def graph_dt(g):
    md = dict(getattr(g, "metadata", None) or {})
    for key in ("neurocomp.dt", "dt", "time_step", "timestep"):
        if key in md:
            try:
                return float(np.asarray(md[key]).ravel()[0])
            except (TypeError, ValueError, IndexError):
                pass
    return None


# ---- flattening ---------------------------------------------------------------------------------
def _flatten(g, prefix=""):
    """Nested graphs -> (nodes, edges) with dotted names; subgraph ports stay as pass-through nodes."""
    nodes, edges = {}, []
    sub_in, sub_out = {}, {}
    for name, node in g.nodes.items():
        full = prefix + name
        if isinstance(node, nir.NIRGraph):
            n2, e2 = _flatten(node, full + ".")
            nodes.update(n2)
            edges += e2
            ins = [prefix + name + "." + k for k, v in node.nodes.items() if isinstance(v, nir.Input)]
            outs = [prefix + name + "." + k for k, v in node.nodes.items() if isinstance(v, nir.Output)]
            if len(ins) != 1 or len(outs) != 1:
                raise UnsupportedLayer(f"subgraph with {len(ins)} inputs and {len(outs)} outputs",
                                       where=f"NIR subgraph '{full}'", hint="one input and one output are supported")
            sub_in[full], sub_out[full] = ins[0], outs[0]
        else:
            nodes[full] = node
    for src, dst in g.edges:
        s, d = prefix + str(src), prefix + str(dst)
        s = sub_out.get(s, s)
        d = sub_in.get(d, d)
        edges.append((s, d))
    return nodes, edges


def _contract(nodes, edges, top_inputs, top_outputs):
    """Remove pass-through nodes (inner Input/Output, zero Delay) by joining their edges."""
    def passthrough(name, node):
        if name in top_inputs or name in top_outputs:
            return False
        if isinstance(node, PASS):
            return True
        if isinstance(node, nir.Delay):
            return bool(np.all(np.asarray(node.delay) == 0))
        return False

    # adjacency as insertion-ordered sets: removing one pass-through costs its own edges only, so a
    # chain of n zero Delays contracts in O(n) (it was O(n^2): every removal rescanned every edge)
    succ, pred = {}, {}
    for s, d in edges:
        succ.setdefault(s, {})[d] = None
        pred.setdefault(d, {})[s] = None
    for name in [k for k, v in nodes.items() if passthrough(k, v)]:
        ins = [s for s in pred.pop(name, {}) if s != name]
        outs = [d for d in succ.pop(name, {}) if d != name]
        for s in ins:
            succ[s].pop(name, None)
        for d in outs:
            pred[d].pop(name, None)
        for s in ins:
            for d in outs:
                succ.setdefault(s, {})[d] = None
                pred.setdefault(d, {})[s] = None
        del nodes[name]
    return nodes, [(s, d) for s, ds in succ.items() for d in ds]


# ---- parameters ----------------------------------------------------------------------------------
_NOT_PARAMETERS = ("input_type", "output_type", "metadata")


def check_parameters(name, node):
    """Every numeric field of a foreign node must be real and finite (one-line error otherwise)."""
    where = f"NIR node '{name}'"
    fields = [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else list(vars(node))
    for field in fields:
        if field in _NOT_PARAMETERS:
            continue
        v = getattr(node, field, None)
        if isinstance(v, (str, bytes, type(None), dict, nir.NIRNode)):
            continue
        a = np.asarray(v) if isinstance(v, (list, tuple, np.ndarray, complex, float, int, np.generic)) else None
        if a is None:
            continue
        if a.dtype.kind == "c":
            raise BadGraph(f"field '{field}' holds complex numbers", where=where,
                           hint="NIR parameters are real numbers; export the real part if that is what you mean")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise BadGraph(f"field '{field}' holds NaN or inf", where=where, hint="fix the exported parameters")
        if a.dtype.kind in "OSUV":
            raise BadGraph(f"field '{field}' holds {a.dtype} values, not numbers", where=where,
                           hint="re-export the graph; every parameter must be numeric")


def _per_neuron(v, shape, where, field):
    a = np.asarray(v, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise BadGraph(f"field '{field}' holds NaN or inf", where=where, hint="fix the exported parameters")
    if a.size == 1:
        return np.full(shape, float(a.ravel()[0]), np.float32)
    if a.size != int(np.prod(shape)):
        raise BadGraph(f"field '{field}' has {a.size} values for a layer of shape {tuple(shape)}", where=where,
                       hint="the graph file is inconsistent")
    return a.reshape(shape).astype(np.float32)


def _ratio(dt, tau, where, field):
    t = uniform(tau, where, field)
    if not t > 0:
        raise BadGraph(f"time constant {field}={t:g} is not positive", where=where,
                       hint="time constants must be positive seconds")
    k = dt / t
    if k > 1.0 + 1e-9:
        raise UnsupportedLayer(f"{field}={t:g} s is shorter than dt={dt:g} s (dt/tau={k:.3g} > 1)", where=where,
                               hint="pass a smaller --dt")
    return min(k, 1.0)


def _neuron(name, node, shape, dt, reset):
    where = node_where(name)
    if dt is None:
        raise BadGraph("the graph has no dt in its metadata and none was given", where=where,
                       hint="pass --dt SECONDS (the NIR paper's graphs use 1e-4)")
    kw = dict(name=name, in_shape=shape, out_shape=shape, meta={"nir_type": type(node).__name__, "dt": dt})
    pn = lambda v, f: _per_neuron(v, shape, where, f)   # noqa: E731
    if isinstance(node, nir.Threshold):
        return CubaLIF(alpha=0.0, beta=0.0, v_threshold=uniform(node.threshold, where, "threshold"),
                       reset="zero", **kw)
    spiking = isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF))
    th = uniform(node.v_threshold, where, "v_threshold") if spiking else 0.0
    v_reset = uniform(getattr(node, "v_reset", 0.0), where, "v_reset") if spiking else 0.0
    if isinstance(node, (nir.IF, nir.I)):
        r = pn(node.r, "r") * dt
        return CubaLIF(alpha=0.0, beta=1.0, r=r, v_threshold=th, v_reset=v_reset, reset=reset, spiking=spiking, **kw)
    if isinstance(node, (nir.LIF, nir.LI)):
        k = _ratio(dt, node.tau, where, "tau")
        r = pn(node.r, "r") * np.float32(k)
        vb = pn(node.v_leak, "v_leak") * np.float32(k)
        return CubaLIF(alpha=0.0, beta=1.0 - k, r=r, v_bias=vb if np.any(vb) else None, v_threshold=th,
                       v_reset=v_reset, reset=reset, spiking=spiking, **kw)
    # CubaLIF / CubaLI
    ks = _ratio(dt, node.tau_syn, where, "tau_syn")
    km = _ratio(dt, node.tau_mem, where, "tau_mem")
    w_in = pn(getattr(node, "w_in", 1.0), "w_in") * np.float32(ks)
    r = pn(node.r, "r") * np.float32(km)
    vb = pn(node.v_leak, "v_leak") * np.float32(km)
    return CubaLIF(alpha=1.0 - ks, beta=1.0 - km, w_in=w_in, r=r, v_bias=vb if np.any(vb) else None,
                   v_threshold=th, v_reset=v_reset, reset=reset, spiking=spiking, **kw)


def _synapse(name, node, shape):
    """Stateless NIR node -> list of IR nodes; ``shape`` is the incoming IR shape."""
    where = node_where(name)
    meta = {"nir_type": type(node).__name__}
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = linear_weight(node, shape, where)
        bias = None
        if isinstance(node, nir.Affine) and node.bias is not None:
            bias = np.asarray(node.bias, dtype=np.float32).reshape(-1)
            check_bias(bias, w.shape[0], where)
            if not np.any(bias):
                bias = None
        return [Linear(name=name, in_shape=shape, out_shape=(w.shape[0],), weight=w, bias=bias, meta=meta)]
    if isinstance(node, nir.Scale):
        s = np.asarray(node.scale, dtype=np.float32).ravel()
        if len(shape) != 1 or s.size not in (1, shape[0]):
            raise UnsupportedLayer(f"Scale of {s.size} values on shape {tuple(shape)}", where=where,
                                   hint="Scale is supported on 1-D tensors")
        memory.check(8 * shape[0] * shape[0], f"the {shape[0]}x{shape[0]} weight matrix of a Scale", where=where)
        w = np.diag(np.broadcast_to(s, (shape[0],))).astype(np.float32)
        return [Linear(name=name, in_shape=shape, out_shape=shape, weight=w, bias=None, meta=meta)]
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        w, stride, pad, dil, groups, out = conv_geometry(node, shape, where)
        bias = None if node.bias is None else np.asarray(node.bias, dtype=np.float32).reshape(-1)
        if bias is not None and bias.size == 1 and w.shape[0] > 1:
            bias = np.full(w.shape[0], bias[0], np.float32)
        check_bias(bias, w.shape[0], where)
        if bias is not None and not np.any(bias):
            bias = None
        return [Conv2d(name=name, in_shape=shape, out_shape=out, weight=w, bias=bias, stride=stride, padding=pad,
                       dilation=dil, groups=groups, meta=meta)]
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        return [pool_node(name, node, shape, meta)]
    if isinstance(node, nir.Flatten):
        nd = len(shape)
        start, end = int(node.start_dim), int(node.end_dim)
        if start == 1 and nd >= 2 and end == -1:
            warnings.warn(f"{where}: Flatten(start_dim=1) read as flattening the whole sample (batch dim "
                          "convention)", NIRWarning, stacklevel=2)
            start = 0
        if start % nd != 0 or end % nd != nd - 1:
            raise UnsupportedLayer(f"Flatten of dims {node.start_dim}..{node.end_dim} of {tuple(shape)}",
                                   where=where, hint="only full flattening is supported")
        return [Flatten(name=name, in_shape=shape, out_shape=(int(np.prod(shape)),), meta=meta)]
    if isinstance(node, nir.Delay):
        raise UnsupportedLayer("a non-zero Delay", where=where,
                               hint="Lava's Dense/Conv carry one fixed step; per-synapse delays are not emitted")
    raise UnsupportedLayer(f"{type(node).__name__} cannot be imported", where=where,
                           hint="see docs/interop.md for the supported NIR node types")


# ---- structure -----------------------------------------------------------------------------------
def foreign_to_graph(g, dt=None, reset: str = "zero", meta=None) -> Graph:
    """Convert a foreign NIR graph to an IR graph (neurons as CubaLIF, recurrence folded in, the edges into a
    node summed)."""
    if reset not in RESET_MODES:
        raise BadGraph(f"unknown reset mode {reset!r}", where="--reset", hint="use zero or subtract")
    dt = graph_dt(g) if graph_dt(g) is not None else dt
    if dt is not None and not (np.isfinite(dt) and dt > 0):
        raise BadGraph(f"dt={dt!r}", where="--dt", hint="dt must be a positive number of seconds")
    check_edges(g.nodes, g.edges)
    top_in, top_out = ports(g.nodes)
    nodes, edges = _flatten(g)
    if len(nodes) > MAX_NIR_NODES:
        raise TooLarge(f"the graph has {len(nodes)} nodes, more than {MAX_NIR_NODES}", where="NIR graph",
                       hint="remove pass-through nodes (zero Delays, Identity) before exporting")
    for name, node in nodes.items():
        check_parameters(name, node)
    check_edges(nodes, edges)
    nodes, edges = _contract(dict(nodes), edges, {top_in}, {top_out})
    succ, pred = {}, {}
    for s, d in edges:
        succ.setdefault(s, []).append(d)
        pred.setdefault(d, []).append(s)
    # recurrent synapses: neuron -> Affine/Linear -> same neuron, nothing else in or out
    rec = {}
    for name, node in nodes.items():
        if isinstance(node, (nir.Affine, nir.Linear)) and pred.get(name) and len(pred[name]) == 1 \
                and succ.get(name) == pred[name] and isinstance(nodes[pred[name][0]], NEURONS):
            tgt = pred[name][0]
            if tgt in rec:
                raise UnsupportedLayer("two recurrent synapses on one layer", where=node_where(name))
            rec[tgt] = name
    rec_syn = set(rec.values())
    edges = [(s, d) for s, d in edges if s not in rec_syn and d not in rec_syn]
    order, preds = dag(nodes, edges, top_in, top_out, aside=rec_syn,
                       cycle_note=" that is not a neuron's own recurrent weight")
    shape = nir_shape = input_shape(nodes[top_in], top_in)
    conv1d = any(isinstance(nodes[k], nir.Conv1d) for k in order)
    if conv1d and len(shape) == 2:
        shape = (shape[0], 1, shape[1])
    ir = [Input(name=top_in, in_shape=shape, out_shape=shape, meta={"nir_input_shape": list(nir_shape)})]
    inputs, shapes, ir_name, taken = {}, {top_in: shape}, {top_in: top_in}, set(nodes)
    for name in order[1:]:
        srcs = [ir_name[s] for s in preds[name]]
        joined = join(name, srcs, shapes, taken)    # several edges into a node: NIR sums them
        for a in joined:
            ir.append(a)
            inputs[a.name], shapes[a.name] = tuple(srcs), tuple(a.out_shape)
            srcs = [a.name]
        if name == top_out:
            continue
        shape = shapes[srcs[0]]
        node = nodes[name]
        if isinstance(node, NEURONS):
            n = _neuron(name, node, shape, dt, reset)
            if name in rec:
                rs = nodes[rec[name]]
                where = node_where(rec[name])
                w = np.asarray(rs.weight, dtype=np.float32)
                if len(shape) != 1 or w.shape != (shape[0], shape[0]):
                    raise BadGraph(f"recurrent weight {w.shape} on a layer of shape {shape}", where=where)
                kw = {"rec_weight": w, "meta": {**n.meta, "recurrent_synapse": rec[name]}}
                b = getattr(rs, "bias", None) if isinstance(rs, nir.Affine) else None
                if b is not None and np.any(b):
                    b = np.asarray(b, dtype=np.float32).reshape(-1)
                    w_in = n.w_in if n.w_in is not None else np.ones(shape, np.float32)
                    kw["i_bias"] = (w_in * b).astype(np.float32)
                n = n.replace(**kw)
            made = [n]
        else:
            made = _synapse(name, node, shape)
        for m in made:
            ir.append(m)
            inputs[m.name], shapes[m.name] = tuple(srcs), check_layer(m.out_shape, node_where(name))
            srcs = [m.name]
        ir_name[name] = srcs[0]
    gm = {"source": "nir", "dt": dt, "reset": reset, "input_shape": list(ir[0].out_shape)}
    gm.update(meta or {})
    return Graph.build(ir, inputs, gm)
