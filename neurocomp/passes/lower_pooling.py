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

MaxPool over spikes is not handled here: the frontend already made it ``SumPool2d -> Threshold``.
"""
from __future__ import annotations

import numpy as np

from neurocomp.errors import UnsupportedLayer
from neurocomp.ir import AvgPool2d, Conv2d, Dense, Flatten, Linear
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


def fold_avgpool(graph):
    nodes = list(graph.nodes)
    records = []
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
            w = nxt.weight.astype(np.float64) @ pooling_matrix(node)
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
            w = after.weight.astype(np.float64) @ pooling_matrix(node)
            flat = Flatten(name=nxt.name, in_shape=node.in_shape, out_shape=(int(np.prod(node.in_shape)),))
            lin = after.replace(in_shape=flat.out_shape, weight=w.astype(np.float32),
                                meta={**after.meta, "folded_avgpool": node.name})
            nodes[i:i + 3] = [flat, lin]
            records.append({"pool": node.name, "into": after.name, "rule": "pool->linear matrix"})
            continue
        raise UnsupportedLayer("AvgPool2d is neither preceded by a conv nor followed by a conv/linear layer",
                               where=f"layer '{node.name}'", hint="pooling must sit between synaptic layers")
    return with_record(graph, "fold_avgpool", {"folded": records}, nodes)
