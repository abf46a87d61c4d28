"""Fold average pooling into the adjacent synapse so each neuron layer has exactly one synapse.

Average pooling is linear, so it composes exactly (in real arithmetic) with a neighbouring
convolution or linear layer:

- ``AvgPool(k) -> [Flatten] -> Linear`` or ``-> Dense``: ``W' = W @ P`` with P the pooling matrix
  (any geometry).
- ``AvgPool(k, stride k) -> Conv(K, stride s, pad p)``: one conv of kernel ``K*k``, stride ``s*k``,
  padding ``p*k`` whose taps repeat ``W/k^2`` over each pooling window. Exact when the pooled
  input's edges are not cut (H, W divisible by k) or the conv has no padding.
- ``Conv(K, stride 1, pad p) -> AvgPool(k, stride k)`` (pooling of input current, MA-SNN style):
  one conv of kernel ``K+k-1``, stride ``k``, padding ``p``, the full convolution of W with a
  ``k x k`` box of ``1/k^2``.

In a graph with branches an average pool may be an addend of a residual (a downsampling shortcut,
:func:`_pools_in_adds`): into an add of currents (Spiking-ResNet's ``sn(bn(conv(x)) + pool(x))``) the pool
is its own synapse group, a depthwise conv of ``1/(kh*kw)``; into an add of spikes (SEW's ``f(x) + pool(x)``)
each synapse reading the sum is applied to each addend by linearity (``S(a + pool(x)) = S(a) + S'(x)``,
``S'`` the pool folded into ``S`` as above, without the bias), the two currents added before the neuron.

MaxPool over spikes is not handled here: the frontend already made it ``SumPool2d -> Threshold``.
"""
from __future__ import annotations

import numpy as np

from neurocomp.errors import UnsupportedLayer
from neurocomp.ir import Add, AvgPool2d, Conv2d, Dense, Flatten, Graph, Linear
from neurocomp.passes._util import feeds_only, with_record


def pooling_matrix(pool: AvgPool2d) -> np.ndarray:
    """Dense matrix (out_size, in_size) of an AvgPool2d on torch-flattened (C, H, W) tensors."""
    C, H, W = pool.in_shape
    _, Ho, Wo = pool.out_shape
    (kh, kw), (sh, sw), (ph, pw) = pool.kernel, pool.stride, pool.padding
    P = np.zeros((C * Ho * Wo, C * H * W), dtype=np.float64)
    for c in range(C):
        for i in range(Ho):
            for j in range(Wo):
                row = (c * Ho + i) * Wo + j
                for a in range(kh):
                    for b in range(kw):
                        y, x = i * sh - ph + a, j * sw - pw + b
                        if 0 <= y < H and 0 <= x < W:
                            P[row, (c * H + y) * W + x] += 1.0 / (kh * kw)
    return P


def _times_pooling(weight: np.ndarray, pool: AvgPool2d) -> np.ndarray:
    """``weight (float64) @ pooling_matrix(pool)``, the same float64 values. A square pool (stride = kernel,
    no padding) puts each input pixel in at most one window, so every output is one product
    ``w * 1/(kh kw)`` (BLAS adds only exact zeros to it: ``+ 0.0`` gives the zeros' sign as BLAS does),
    gathered without the dense ``(C Ho Wo) x (C H W)`` matrix or the matrix product; other pools, and
    weights that are not all finite, take the dense product."""
    w64 = np.asarray(weight, np.float64)
    if not _square_pool(pool) or not np.all(np.isfinite(w64)):
        return w64 @ pooling_matrix(pool)
    C, H, W = pool.in_shape
    _, Ho, Wo = pool.out_shape
    kh, kw = pool.kernel
    y, x = np.arange(H)[:, None] // kh, np.arange(W)[None, :] // kw
    covered = np.broadcast_to((y < Ho) & (x < Wo), (C, H, W)).ravel()
    rows = ((np.arange(C)[:, None, None] * Ho + np.minimum(y, Ho - 1)) * Wo + np.minimum(x, Wo - 1)).ravel()
    out = np.zeros((w64.shape[0], C * H * W), np.float64)
    out[:, covered] = w64[:, rows[covered]] * (0.0 + 1.0 / (kh * kw)) + 0.0
    return out


def _square_pool(pool):
    return tuple(pool.stride) == tuple(pool.kernel) and tuple(pool.padding) == (0, 0)


def _pool_then_conv(pool: AvgPool2d, conv: Conv2d) -> Conv2d:
    k = pool.kernel
    C, H, W = pool.in_shape
    cut = (H % k[0] or W % k[1])
    if not _square_pool(pool) or tuple(conv.dilation) != (1, 1) or (cut and any(conv.padding)):
        raise UnsupportedLayer(f"AvgPool2d cannot be folded into the next conv '{conv.name}' exactly "
                               f"(pool k={pool.kernel} s={pool.stride} p={pool.padding}, input {H}x{W}, "
                               f"conv padding {conv.padding}, dilation {conv.dilation})",
                               where=f"layer '{pool.name}'",
                               hint="use stride = kernel, no pool padding, and sizes divisible by the kernel, "
                                    "or MaxPool2d over spikes")
    w = np.repeat(np.repeat(conv.weight.astype(np.float64), k[0], axis=2), k[1], axis=3) / (k[0] * k[1])
    return conv.replace(in_shape=pool.in_shape, weight=w.astype(np.float32),
                        stride=(conv.stride[0] * k[0], conv.stride[1] * k[1]),
                        padding=(conv.padding[0] * k[0], conv.padding[1] * k[1]),
                        meta={**conv.meta, "folded_avgpool": pool.name})


def _conv_then_pool(conv: Conv2d, pool: AvgPool2d) -> Conv2d:
    if not _square_pool(pool) or tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1):
        raise UnsupportedLayer(f"AvgPool2d after conv '{conv.name}' cannot be folded into it exactly",
                               where=f"layer '{pool.name}'",
                               hint="use a stride-1 undilated conv and a pool with stride = kernel, no padding")
    kh, kw = pool.kernel
    Co, Ci, Kh, Kw = conv.weight.shape
    w = np.zeros((Co, Ci, Kh + kh - 1, Kw + kw - 1))
    for a in range(kh):
        for b in range(kw):
            w[:, :, a:a + Kh, b:b + Kw] += conv.weight.astype(np.float64) / (kh * kw)
    return conv.replace(out_shape=pool.out_shape, weight=w.astype(np.float32), stride=(kh, kw),
                        meta={**conv.meta, "folded_avgpool": pool.name})


def _pool_synapse(pool: AvgPool2d) -> Conv2d:
    """The pool as a synapse: a depthwise conv of its geometry with every tap ``1/(kh*kw)`` (zero padding
    counted, as torch's ``count_include_pad=True``)."""
    C = int(pool.in_shape[0])
    kh, kw = pool.kernel
    return Conv2d(name=pool.name, in_shape=tuple(pool.in_shape), out_shape=tuple(pool.out_shape),
                  weight=np.full((C, 1, kh, kw), 1.0 / (kh * kw), np.float32), bias=None, stride=tuple(pool.stride),
                  padding=tuple(pool.padding), dilation=(1, 1), groups=C, meta={**pool.meta, "avgpool_as_synapse": True})


def _pools_in_adds(graph):
    """``(graph, records)`` with every average pool that is an addend of an Add lowered (module docstring)."""
    if graph.is_chain():
        return graph, []
    nodes, inputs = {n.name: n for n in graph}, {k: tuple(v) for k, v in graph.inputs.items()}
    records = []
    for pool in [n for n in graph if isinstance(n, AvgPool2d)]:
        readers = graph.consumers(pool.name)
        if len(readers) != 1 or not isinstance(graph[readers[0]], Add):
            continue
        add = graph[readers[0]]
        after = [graph[c] for c in graph.consumers(add.name)]
        if any(c.is_neuron for c in after) or any(_current(graph, s) for s in graph.inputs[add.name]):
            nodes[pool.name] = _pool_synapse(pool)
            records.append({"pool": pool.name, "into": add.name, "rule": "pool as a depthwise synapse group"})
            continue
        if not after or not all(isinstance(c, Conv2d) for c in after):
            bad = next((c for c in after if not isinstance(c, Conv2d)), None)
            raise UnsupportedLayer(f"an average pool added to spikes ('{add.name}') is read by "
                                   f"{repr(bad.name) + ' (' + bad.kind + ')' if bad else 'nothing'}, not by convs only",
                                   where=f"layer '{pool.name}'",
                                   hint="feed a pooled shortcut's sum to a conv, or put a 1x1 conv + BN after the pool")
        rest = tuple(s for s in graph.inputs[add.name] if s != pool.name)
        if len(rest) == 1:
            rest_src = rest[0]
        else:
            rest_src = f"{add.name}.rest"
            nodes[rest_src] = add.replace(name=rest_src)
            inputs[rest_src] = rest
        for syn in after:
            folded = _pool_then_conv(pool, syn).replace(name=f"{syn.name}.pool", bias=None)
            nodes[folded.name] = folded
            inputs[folded.name] = graph.inputs[pool.name]
            inputs[syn.name] = (rest_src,)
            total = f"{syn.name}.sum"
            nodes[total] = Add(name=total, in_shape=tuple(syn.out_shape), out_shape=tuple(syn.out_shape))
            inputs[total] = (syn.name, folded.name)
            for c in graph.consumers(syn.name):
                inputs[c] = tuple(total if s == syn.name else s for s in inputs[c])
            records.append({"pool": pool.name, "into": syn.name, "rule": "pool->conv composed per addend (linearity)"})
        del nodes[pool.name], nodes[add.name], inputs[pool.name], inputs[add.name]
    if not records:
        return graph, []
    return Graph.build(list(nodes.values()), inputs, graph.meta), records


def _current(graph, name) -> bool:
    n = graph[name]
    return n.is_synapse or isinstance(n, Add) and any(_current(graph, s) for s in graph.inputs[name])


def fold_avgpool(graph):
    graph, records = _pools_in_adds(graph)
    nodes = list(graph.nodes)
    i = 0
    while i < len(nodes):
        node = nodes[i]
        if not isinstance(node, AvgPool2d):
            i += 1
            continue
        prev = nodes[i - 1]
        nxt = nodes[i + 1] if i + 1 < len(nodes) else None
        if not feeds_only(graph, prev, node):       # in a graph with branches only edge neighbours merge
            prev = None
        if nxt is not None and not feeds_only(graph, node, nxt):
            nxt = None
        if isinstance(prev, Conv2d):
            nodes[i - 1:i + 1] = [_conv_then_pool(prev, node)]
            records.append({"pool": node.name, "into": prev.name, "rule": "conv->pool composed"})
            continue
        if isinstance(nxt, Dense):
            w = _times_pooling(nxt.weight, node)
            nodes[i:i + 2] = [nxt.replace(in_shape=node.in_shape, weight=w.astype(np.float32),
                                          meta={**nxt.meta, "folded_avgpool": node.name})]
            records.append({"pool": node.name, "into": nxt.name, "rule": "pool->dense matrix"})
            continue
        if isinstance(nxt, Conv2d):
            nodes[i:i + 2] = [_pool_then_conv(node, nxt)]
            records.append({"pool": node.name, "into": nxt.name, "rule": "pool->conv composed"})
            continue
        after = nodes[i + 2] if isinstance(nxt, Flatten) and i + 2 < len(nodes) else None
        if isinstance(after, Linear):
            w = _times_pooling(after.weight, node)
            flat = Flatten(name=nxt.name, in_shape=node.in_shape, out_shape=(int(np.prod(node.in_shape)),))
            lin = after.replace(in_shape=flat.out_shape, weight=w.astype(np.float32),
                                meta={**after.meta, "folded_avgpool": node.name})
            nodes[i:i + 3] = [flat, lin]
            records.append({"pool": node.name, "into": after.name, "rule": "pool->linear matrix"})
            continue
        raise UnsupportedLayer("AvgPool2d is neither preceded by a conv nor followed by a conv/linear layer",
                               where=f"layer '{node.name}'", hint="pooling must sit between synaptic layers")
    return with_record(graph, "fold_avgpool", {"folded": records}, nodes)
