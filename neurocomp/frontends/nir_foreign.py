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
one-step Dense delay gives); what remains must be a chain. Affine/Linear/Scale, Conv1d/Conv2d,
SumPool2d/AvgPool2d and Flatten map to the IR's synapse nodes (Conv1d as a Conv2d of height 1);
a Delay of 0 steps is a pass-through, other delays are refused.

Graphs that ``nir.read`` accepts only with ``type_check=False`` are read that way with a warning.
Every failure is one :class:`~neurocomp.errors.NeurocompError` naming the node or edge.
"""
from __future__ import annotations

import warnings

import nir
import numpy as np

from neurocomp.errors import BadGraph, NeurocompError, UnsupportedLayer
from neurocomp.ir import (AvgPool2d, Conv2d, CubaLIF, Flatten, Graph, Input, Linear, SumPool2d)

RESET_MODES = ("zero", "subtract")
NEURONS = (nir.IF, nir.LIF, nir.CubaLIF, nir.LI, nir.CubaLI, nir.I, nir.Threshold)
PASS = (nir.Input, nir.Output)


class NIRWarning(UserWarning):
    """Something in a foreign NIR file was accepted with an assumption."""


def _first_line(e) -> str:
    t = str(e).strip()
    return t.splitlines()[0][:200] if t else type(e).__name__


def read_nir_file(path: str):
    """``nir.read`` with type checking, else without it (warning). Returns (graph, warnings)."""
    notes = []
    from neurocomp.frontends.nir import open_nir   # regular file, HDF5 structure, links and sizes checked
    with open_nir(path) as f:
        try:
            return nir.read(f.fh), notes
        except Exception as e1:   # noqa: BLE001 - nir raises many types; all become one line below
            first = _first_line(e1)
        try:
            f.fh.seek(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                g = nir.read(f.fh, type_check=False)
        except Exception as e2:   # noqa: BLE001
            raise BadGraph(f"is not a readable NIR graph ({type(e2).__name__}: {_first_line(e2)})", where=path,
                           hint="re-export it with nir >= 1.0") from None
    msg = f"{path}: read only with type_check=False ({first})"
    warnings.warn(msg, NIRWarning, stacklevel=2)
    notes.append(msg)
    return g, notes


def is_neurocomp_graph(g) -> bool:
    md = dict(getattr(g, "metadata", None) or {})
    if any(str(k).startswith("neurocomp.") for k in md):
        return True
    return any(any(str(k).startswith("neurocomp.") for k in (getattr(n, "metadata", None) or {}))
               for n in g.nodes.values())


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


def _check_edges(nodes, edges):
    for s, d in edges:
        for end in (s, d):
            if end not in nodes:
                raise BadGraph(f"edge ({s!r} -> {d!r}) names an unknown node {end!r}", where="NIR edge",
                               hint="the graph file is inconsistent (dangling edge)")


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
    import dataclasses
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


def _check_neurons(shape, where):
    from neurocomp.frontends.nir import MAX_NEURONS
    from neurocomp import memory
    n = memory.product(shape)
    if not shape or min(shape) < 1 or n > MAX_NEURONS:
        raise BadGraph(f"a layer of shape {tuple(shape)} ({n} neurons)", where=where,
                       hint=f"every dimension must be positive and a layer at most {MAX_NEURONS} neurons")
    return n


def _arr(v, where, field):
    a = np.asarray(v, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise BadGraph(f"field '{field}' holds NaN or inf", where=where)
    return a


def _uniform(v, where, field):
    a = _arr(v, where, field).ravel()
    if a.size == 0:
        raise BadGraph(f"field '{field}' is empty", where=where)
    if not np.all(a == a[0]):
        raise UnsupportedLayer(f"field '{field}' differs between neurons", where=where,
                               hint="Loihi has one value per layer for decays, thresholds and resets")
    return float(a[0])


def _per_neuron(v, shape, where, field):
    a = _arr(v, where, field)
    if a.size == 1:
        return np.full(shape, float(a.ravel()[0]), np.float32)
    if a.size != int(np.prod(shape)):
        raise BadGraph(f"field '{field}' has {a.size} values for a layer of shape {tuple(shape)}", where=where,
                       hint="the graph file is inconsistent")
    return a.reshape(shape).astype(np.float32)


def _ratio(dt, tau, where, field):
    t = _uniform(tau, where, field)
    if not t > 0:
        raise BadGraph(f"time constant {field}={t:g} is not positive", where=where,
                       hint="time constants must be positive seconds")
    k = dt / t
    if k > 1.0 + 1e-9:
        raise UnsupportedLayer(f"{field}={t:g} s is shorter than dt={dt:g} s (dt/tau={k:.3g} > 1)", where=where,
                               hint="pass a smaller --dt")
    return min(k, 1.0)


def _neuron(name, node, shape, dt, reset):
    where = f"NIR node '{name}'"
    if dt is None:
        raise BadGraph("the graph has no dt in its metadata and none was given", where=where,
                       hint="pass --dt SECONDS (the NIR paper's graphs use 1e-4)")
    kw = dict(name=name, in_shape=shape, out_shape=shape, meta={"nir_type": type(node).__name__, "dt": dt})
    pn = lambda v, f: _per_neuron(v, shape, where, f)   # noqa: E731
    if isinstance(node, nir.Threshold):
        return CubaLIF(alpha=0.0, beta=0.0, v_threshold=_uniform(node.threshold, where, "threshold"),
                       reset="zero", **kw)
    spiking = isinstance(node, (nir.IF, nir.LIF, nir.CubaLIF))
    th = _uniform(node.v_threshold, where, "v_threshold") if spiking else 0.0
    v_reset = _uniform(getattr(node, "v_reset", 0.0), where, "v_reset") if spiking else 0.0
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


def _pair(v):
    v = np.asarray(v).ravel()
    return (int(v[0]), int(v[0])) if v.size == 1 else (int(v[0]), int(v[1]))


def _conv_out(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def _synapse(name, node, shape, nxt_weight_in=None):
    """Stateless NIR node -> list of IR nodes; ``shape`` is the incoming IR shape."""
    where = f"NIR node '{name}'"
    meta = {"nir_type": type(node).__name__}
    if isinstance(node, (nir.Affine, nir.Linear)):
        w = np.asarray(node.weight, dtype=np.float32)
        if w.ndim != 2:
            raise BadGraph(f"weight has shape {w.shape}", where=where, hint="a 2-D (out, in) weight is needed")
        if len(shape) != 1 or w.shape[1] != shape[0]:
            hint = ("the weight looks transposed" if len(shape) == 1 and w.shape[0] == shape[0]
                    else "the graph file is inconsistent")
            raise BadGraph(f"weight {w.shape} expects {w.shape[1]} inputs but the incoming tensor has shape "
                           f"{tuple(shape)}", where=where, hint=hint)
        bias = None
        if isinstance(node, nir.Affine) and node.bias is not None:
            bias = np.asarray(node.bias, dtype=np.float32).reshape(-1)
            if bias.shape != (w.shape[0],):
                raise BadGraph(f"bias has shape {bias.shape}, expected ({w.shape[0]},)", where=where)
            if not np.any(bias):
                bias = None
        return [Linear(name=name, in_shape=shape, out_shape=(w.shape[0],), weight=w, bias=bias, meta=meta)]
    if isinstance(node, nir.Scale):
        s = np.asarray(node.scale, dtype=np.float32).ravel()
        if len(shape) != 1 or s.size not in (1, shape[0]):
            raise UnsupportedLayer(f"Scale of {s.size} values on shape {tuple(shape)}", where=where,
                                   hint="Scale is supported on 1-D tensors")
        from neurocomp import memory
        memory.check(8 * shape[0] * shape[0], f"the {shape[0]}x{shape[0]} weight matrix of a Scale", where=where)
        w = np.diag(np.broadcast_to(s, (shape[0],))).astype(np.float32)
        return [Linear(name=name, in_shape=shape, out_shape=shape, weight=w, bias=None, meta=meta)]
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        w = np.asarray(node.weight, dtype=np.float32)
        is1d = isinstance(node, nir.Conv1d)
        if w.ndim != (3 if is1d else 4):
            raise BadGraph(f"weight has shape {w.shape}", where=where, hint="(C_out, C_in/groups, *kernel) is needed")
        if isinstance(node.padding, str):
            raise UnsupportedLayer(f"padding={node.padding!r}", where=where, hint="use explicit integer padding")
        if is1d:
            w = w[:, :, None, :]
            stride, pad, dil = ((1, _pair(node.stride)[0]), (0, _pair(node.padding)[0]), (1, _pair(node.dilation)[0]))
        else:
            stride, pad, dil = _pair(node.stride), _pair(node.padding), _pair(node.dilation)
        if len(shape) != 3:
            raise BadGraph(f"convolution input has shape {tuple(shape)}", where=where,
                           hint="the Input node's input_type must give (C, H, W) / (C, L)")
        C, H, W = shape
        groups = int(np.asarray(node.groups).ravel()[0])
        if groups < 1 or w.shape[1] * groups != C or min(stride) < 1 or min(dil) < 1 or min(pad) < 0:
            raise BadGraph(f"weight {w.shape} (groups={groups}) does not fit a {C}-channel input", where=where)
        out = (w.shape[0], _conv_out(H, w.shape[2], stride[0], pad[0], dil[0]),
               _conv_out(W, w.shape[3], stride[1], pad[1], dil[1]))
        if min(out) < 1:
            raise BadGraph(f"gives an empty output {out}", where=where)
        bias = None if node.bias is None else np.asarray(node.bias, dtype=np.float32).reshape(-1)
        if bias is not None and bias.size == 1 and w.shape[0] > 1:
            bias = np.full(w.shape[0], bias[0], np.float32)
        if bias is not None and bias.shape != (w.shape[0],):
            raise BadGraph(f"bias has shape {bias.shape}, expected ({w.shape[0]},)", where=where)
        if bias is not None and not np.any(bias):
            bias = None
        return [Conv2d(name=name, in_shape=shape, out_shape=out, weight=w, bias=bias, stride=stride, padding=pad,
                       dilation=dil, groups=groups, meta=meta)]
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        k, s, p = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
        if len(shape) != 3:
            raise BadGraph(f"pooling input has shape {tuple(shape)}", where=where)
        C, H, W = shape
        out = (C, (H + 2 * p[0] - k[0]) // s[0] + 1, (W + 2 * p[1] - k[1]) // s[1] + 1)
        if min(out) < 1 or min(k) < 1 or min(s) < 1:
            raise BadGraph(f"pooling kernel {k}, stride {s}, padding {p} on {tuple(shape)}", where=where)
        cls = SumPool2d if isinstance(node, nir.SumPool2d) else AvgPool2d
        return [cls(name=name, in_shape=shape, out_shape=out, kernel=k, stride=s, padding=p, meta=meta)]
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
def _input_shape(node, name):
    t = getattr(node, "input_type", None) or {}
    v = t.get("input", None)
    if v is None and t:
        v = next(iter(t.values()))
    if v is None:
        raise BadGraph("the Input node has no input_type", where=f"NIR node '{name}'",
                       hint="re-export the graph with an input shape")
    shape = tuple(int(s) for s in np.asarray(v).ravel())
    if not shape or min(shape) < 1:
        raise BadGraph(f"the Input node has shape {shape}", where=f"NIR node '{name}'")
    return shape


def foreign_to_graph(g, dt=None, reset: str = "zero", meta=None) -> Graph:
    """Convert a foreign NIR graph to an IR chain (neurons as CubaLIF, recurrence folded in)."""
    if reset not in RESET_MODES:
        raise BadGraph(f"unknown reset mode {reset!r}", where="--reset", hint="use zero or subtract")
    dt = graph_dt(g) if graph_dt(g) is not None else dt
    if dt is not None and not (np.isfinite(dt) and dt > 0):
        raise BadGraph(f"dt={dt!r}", where="--dt", hint="dt must be a positive number of seconds")
    for s, d in g.edges:
        if s not in g.nodes or d not in g.nodes:
            bad = s if s not in g.nodes else d
            raise BadGraph(f"edge ({s!r} -> {d!r}) names an unknown node {bad!r}", where="NIR edge",
                           hint="the graph file is inconsistent (dangling edge)")
    nodes, edges = _flatten(g)
    from neurocomp.frontends.nir import MAX_NIR_NODES
    if len(nodes) > MAX_NIR_NODES:
        from neurocomp.errors import TooLarge
        raise TooLarge(f"the graph has {len(nodes)} nodes, more than {MAX_NIR_NODES}", where="NIR graph",
                       hint="remove pass-through nodes (zero Delays, Identity) before exporting")
    for name, node in nodes.items():
        check_parameters(name, node)
    _check_edges(nodes, edges)
    top_in = [k for k, v in g.nodes.items() if isinstance(v, nir.Input)]
    top_out = [k for k, v in g.nodes.items() if isinstance(v, nir.Output)]
    if len(top_in) != 1:
        raise UnsupportedLayer(f"{len(top_in)} Input nodes", where="NIR graph", hint="one input is supported")
    if len(top_out) != 1:
        raise UnsupportedLayer(f"{len(top_out)} Output nodes", where="NIR graph", hint="one output is supported")
    nodes, edges = _contract(dict(nodes), edges, set(top_in), set(top_out))
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
                raise UnsupportedLayer("two recurrent synapses on one layer", where=f"NIR node '{name}'")
            rec[tgt] = name
    for tgt, syn in rec.items():
        edges = [(s, d) for s, d in edges if s != syn and d != syn]
    succ, pred = {}, {}
    for s, d in edges:
        succ.setdefault(s, []).append(d)
        pred.setdefault(d, []).append(s)
    order, cur, seen = [], top_in[0], set()
    while True:
        if cur in seen:
            raise UnsupportedLayer(f"a cycle through '{cur}' that is not a neuron's own recurrent weight",
                                   where="NIR graph", hint="only Affine/Linear self-loops on a neuron layer are supported")
        seen.add(cur)
        order.append(cur)
        nxt = succ.get(cur, [])
        if not nxt:
            break
        if len(nxt) > 1:
            raise UnsupportedLayer(f"node '{cur}' feeds {len(nxt)} nodes ({', '.join(map(repr, nxt))})",
                                   where="NIR graph", hint="only chains (plus recurrent self-loops) are supported")
        if len(pred.get(nxt[0], [])) > 1:
            raise UnsupportedLayer(f"node '{nxt[0]}' sums {len(pred[nxt[0]])} inputs "
                                   f"({', '.join(map(repr, pred[nxt[0]]))})", where="NIR graph",
                                   hint="only chains (plus recurrent self-loops) are supported")
        cur = nxt[0]
    if order[-1] not in top_out:
        raise BadGraph(f"the chain from the input ends at '{order[-1]}', not at the Output", where="NIR graph",
                       hint="the graph file is inconsistent")
    rec_syn = set(rec.values())
    unused = [k for k in nodes if k not in seen and k not in rec_syn]
    if unused:
        raise BadGraph(f"node(s) {', '.join(map(repr, unused[:5]))} are not connected to the input-output chain",
                       where="NIR graph", hint="remove or connect them")
    shape = _input_shape(nodes[top_in[0]], top_in[0])
    _check_neurons(shape, f"NIR node '{top_in[0]}'")
    conv1d = any(isinstance(nodes[k], nir.Conv1d) for k in order)
    if conv1d and len(shape) == 2:
        shape = (shape[0], 1, shape[1])
    ir = [Input(name=top_in[0], in_shape=shape, out_shape=shape, meta={"nir_input_shape": list(_input_shape(
        nodes[top_in[0]], top_in[0]))})]
    for name in order[1:-1]:
        node = nodes[name]
        if isinstance(node, NEURONS):
            n = _neuron(name, node, shape, dt, reset)
            if name in rec:
                rs = nodes[rec[name]]
                where = f"NIR node '{rec[name]}'"
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
            ir.append(n)
        else:
            ir.extend(_synapse(name, node, shape))
        shape = tuple(ir[-1].out_shape)
        _check_neurons(shape, f"NIR node '{name}'")
    gm = {"source": "nir", "dt": dt, "reset": reset, "input_shape": list(ir[0].out_shape)}
    gm.update(meta or {})
    return Graph.chain(ir, gm)


def read_foreign_nir(path: str, dt=None, reset: str = "zero", meta=None) -> Graph:
    """Read any NIR file into the IR (neurocomp-written ones through the exact round-trip reader)."""
    g, notes = read_nir_file(path)
    try:
        if is_neurocomp_graph(g):
            from neurocomp.frontends.nir import nir_to_graph
            out = nir_to_graph(g, meta)
        else:
            out = foreign_to_graph(g, dt=dt, reset=reset, meta=meta)
    except NeurocompError as e:
        e.where = f"{path}: {e.where}" if e.where else path
        e.args = (e.one_line(),)
        raise
    except (KeyError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise BadGraph(f"holds an inconsistent node ({type(e).__name__}: {_first_line(e)})", where=path,
                       hint="re-export it; every node needs its fields with matching shapes") from None
    if notes:
        out = Graph(out.nodes, out.inputs, {**out.meta, "read_warnings": notes})
    return out
