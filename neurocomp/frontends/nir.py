"""NIR graph -> IR.

Graphs written by neurocomp (``neurocomp.*`` metadata, see ``neurocomp.backends.nir``) come back
as exactly the IR they were written from. Nodes without that metadata are read by their standard
NIR meaning (see ``_foreign_node``).
"""
from __future__ import annotations

import json

import nir
import numpy as np

from neurocomp.errors import BadGraph, UnsupportedLayer, UnsupportedLayers
from neurocomp.ir import (AvgPool2d, BatchNorm, Conv2d, Flatten, Graph, Input, LIF, Linear, SumPool2d, Threshold)

PREFIX = "neurocomp."


def _md(node) -> dict:
    return dict(getattr(node, "metadata", None) or {})


def _scalar(a, where, field):
    arr = np.asarray(a, dtype=np.float64).ravel()
    if arr.size == 0:
        raise BadGraph(f"field '{field}' is empty", where=where)
    if not np.all(arr == arr[0]):
        raise UnsupportedLayer(f"field '{field}' differs between neurons", where=where,
                               hint="neurocomp supports one value per layer for this field")
    return float(arr[0])


def _pair(v):
    v = np.asarray(v).ravel()
    return (int(v[0]), int(v[0])) if v.size == 1 else (int(v[0]), int(v[1]))


def _meta_of(md):
    raw = md.get(PREFIX + "meta")
    if raw is None:
        return {}
    return json.loads(raw if isinstance(raw, str) else raw.decode())


def _shape_of(node, key):
    t = getattr(node, key, None) or {}
    v = t.get("input" if key == "input_type" else "output")
    return None if v is None else tuple(int(s) for s in np.asarray(v).ravel())


def _pool_out(size, k, s, p):
    return (size + 2 * p - k) // s + 1


def _convert(name, node, in_shape, md):
    """One NIR node -> list of IR nodes (usually one)."""
    where = f"NIR node '{name}'"
    meta = _meta_of(md)
    if isinstance(node, nir.Conv2d):
        w = np.asarray(node.weight, dtype=np.float32)
        if md.get(PREFIX + "op") == "batchnorm":
            return [BatchNorm(name=name, in_shape=in_shape, out_shape=in_shape, mean=np.asarray(md[PREFIX + "mean"]),
                              var=np.asarray(md[PREFIX + "var"]),
                              weight=np.asarray(md[PREFIX + "weight"]) if PREFIX + "weight" in md else None,
                              bias=np.asarray(md[PREFIX + "bias"]) if PREFIX + "bias" in md else None,
                              eps=float(md[PREFIX + "eps"]), meta=meta)]
        if len(in_shape) != 3:
            raise BadGraph(f"Conv2d input has shape {in_shape}", where=where, hint="a (C, H, W) input is needed")
        if isinstance(node.padding, str):
            raise UnsupportedLayer(f"padding={node.padding!r}", where=where, hint="use explicit integer padding")
        stride, pad, dil = _pair(node.stride), _pair(node.padding), _pair(node.dilation)
        C, H, W = in_shape
        k = w.shape[2:]
        out = (w.shape[0], (H + 2 * pad[0] - dil[0] * (k[0] - 1) - 1) // stride[0] + 1,
               (W + 2 * pad[1] - dil[1] * (k[1] - 1) - 1) // stride[1] + 1)
        has_bias = md.get(PREFIX + "has_bias", True)
        bias = np.asarray(node.bias, dtype=np.float32) if node.bias is not None else None
        if not has_bias or (bias is not None and PREFIX + "has_bias" not in md and not np.any(bias)):
            bias = None if not has_bias else bias
        return [Conv2d(name=name, in_shape=in_shape, out_shape=out, weight=w, bias=bias, stride=stride,
                       padding=pad, dilation=dil, groups=int(node.groups), meta=meta)]
    if isinstance(node, (nir.Affine, nir.Linear)):
        if md.get(PREFIX + "op") == "batchnorm":
            return [BatchNorm(name=name, in_shape=in_shape, out_shape=in_shape, mean=np.asarray(md[PREFIX + "mean"]),
                              var=np.asarray(md[PREFIX + "var"]),
                              weight=np.asarray(md[PREFIX + "weight"]) if PREFIX + "weight" in md else None,
                              bias=np.asarray(md[PREFIX + "bias"]) if PREFIX + "bias" in md else None,
                              eps=float(md[PREFIX + "eps"]), meta=meta)]
        w = np.asarray(node.weight, dtype=np.float32)
        if w.ndim != 2:
            raise BadGraph(f"weight has shape {w.shape}", where=where, hint="a 2-D (out, in) weight is needed")
        if in_shape != (w.shape[1],):
            raise BadGraph(f"weight expects {w.shape[1]} inputs but the incoming tensor has shape {in_shape}",
                           where=where)
        bias = np.asarray(node.bias, dtype=np.float32) if isinstance(node, nir.Affine) else None
        return [Linear(name=name, in_shape=in_shape, out_shape=(w.shape[0],), weight=w, bias=bias, meta=meta)]
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        k, s, p = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
        C, H, W = in_shape
        out = (C, _pool_out(H, k[0], s[0], p[0]), _pool_out(W, k[1], s[1], p[1]))
        cls = SumPool2d if isinstance(node, nir.SumPool2d) else AvgPool2d
        return [cls(name=name, in_shape=in_shape, out_shape=out, kernel=k, stride=s, padding=p, meta=meta)]
    if isinstance(node, nir.Threshold):
        return [Threshold(name=name, in_shape=in_shape, out_shape=in_shape,
                          threshold=_scalar(node.threshold, where, "threshold"), meta=meta)]
    if isinstance(node, nir.Flatten):
        ndim = len(in_shape)
        start, end = int(node.start_dim) % ndim, int(node.end_dim) % ndim
        if start != 0 or end != ndim - 1:
            raise UnsupportedLayer(f"Flatten of dims {node.start_dim}..{node.end_dim}", where=where,
                                   hint="only full flattening is supported")
        return [Flatten(name=name, in_shape=in_shape, out_shape=(int(np.prod(in_shape)),), meta=meta)]
    if isinstance(node, (nir.LIF, nir.IF)) and (PREFIX + "threshold_rule") in md:
        reset = md.get(PREFIX + "reset", "hard")
        v_reset = None if reset == "soft" else _scalar(node.v_reset, where, "v_reset")
        th = _scalar(node.v_threshold, where, "v_threshold")
        if isinstance(node, nir.IF):
            return [LIF(name=name, in_shape=in_shape, out_shape=in_shape, tau=None, v_threshold=th,
                        v_reset=v_reset, meta=meta)]
        return [LIF(name=name, in_shape=in_shape, out_shape=in_shape, tau=float(md[PREFIX + "tau_steps"]),
                    decay_input=bool(md[PREFIX + "decay_input"]), v_threshold=th, v_reset=v_reset, meta=meta)]
    return None


def _order(graph: nir.NIRGraph):
    """Topological order of a chain-shaped NIR graph; clear errors for anything else."""
    nodes = graph.nodes
    succ, pred = {}, {}
    for src, dst in graph.edges:
        for end in (src, dst):
            if end not in nodes:
                raise BadGraph(f"edge ({src!r} -> {dst!r}) names an unknown node {end!r}", where="NIR edges",
                               hint="the graph file is inconsistent")
        succ.setdefault(src, []).append(dst)
        pred.setdefault(dst, []).append(src)
    inputs = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
    if len(inputs) != 1:
        raise UnsupportedLayer(f"{len(inputs)} Input nodes", where="NIR graph", hint="one input is supported")
    order, cur = [], inputs[0]
    seen = set()
    while True:
        if cur in seen:
            raise UnsupportedLayer(f"recurrent edge into '{cur}'", where="NIR graph",
                                   hint="recurrent graphs are not supported by this frontend path")
        seen.add(cur)
        order.append(cur)
        nxt = succ.get(cur, [])
        if not nxt:
            break
        if len(nxt) > 1 or len(pred.get(nxt[0], [])) > 1:
            raise UnsupportedLayer(f"node '{cur}' branches or merges", where="NIR graph",
                                   hint="only chains are supported by this frontend path")
        cur = nxt[0]
    return order


def nir_to_graph(graph: nir.NIRGraph, meta=None) -> Graph:
    """Convert a NIR graph to the IR. neurocomp-written graphs round-trip exactly."""
    order = _order(graph)
    gmd = dict(getattr(graph, "metadata", None) or {})
    ir_nodes, problems = [], []
    shape = None
    for name in order:
        node = graph.nodes[name]
        md = _md(node)
        if isinstance(node, nir.Input):
            shape = _shape_of(node, "input_type")
            ir_nodes.append(Input(name=name, in_shape=shape, out_shape=shape, meta=_meta_of(md)))
            continue
        if isinstance(node, nir.Output):
            continue
        try:
            converted = _convert(name, node, shape, md)
        except (UnsupportedLayer, BadGraph) as e:
            problems.append(e)
            continue
        if converted is None:
            problems.append(UnsupportedLayer(f"{type(node).__name__} cannot be imported", where=f"NIR node '{name}'",
                                             hint="see the README for supported NIR node types"))
            continue
        ir_nodes.extend(converted)
        shape = tuple(converted[-1].out_shape)
    if problems:
        raise problems[0] if len(problems) == 1 else UnsupportedLayers(problems)
    g_meta = {}
    if PREFIX + "timesteps" in gmd:
        g_meta["timesteps"] = int(gmd[PREFIX + "timesteps"])
    if PREFIX + "encoding" in gmd:
        enc = gmd[PREFIX + "encoding"]
        g_meta["encoding"] = enc.decode() if isinstance(enc, bytes) else str(enc)
    if PREFIX + "dt" in gmd:
        g_meta["dt"] = float(gmd[PREFIX + "dt"])
    g_meta.update(meta or {})
    if ir_nodes and "input_shape" not in g_meta:
        g_meta["input_shape"] = list(ir_nodes[0].out_shape)
    return Graph.chain(ir_nodes, g_meta)


def read_nir(path: str, meta=None) -> Graph:
    return nir_to_graph(nir.read(path), meta)
