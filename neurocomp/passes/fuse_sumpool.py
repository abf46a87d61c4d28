"""Fuse a SumPool2d that feeds a synapse (no neuron between) into that synapse.

Sum pooling is linear, so ``SumPool(k, stride k) -> Conv(K, stride s, pad p)`` is one convolution of
kernel ``K*k``, stride ``s*k``, padding ``p*k`` whose taps repeat ``W`` over each pooling window,
and ``SumPool -> [Flatten] -> Linear`` is ``Linear(W @ P)`` with ``P`` the (0/1) pooling matrix.
Both are exact in integer arithmetic (the fused weights are the original values, so quantization
gives the same integers); the conv case needs the pooled edges uncut (H, W divisible by k) or no
padding. A SumPool in front of a neuron stays (Lava: a depthwise conv of ones).
"""
from __future__ import annotations

import numpy as np

from neurocomp.errors import UnsupportedLayer
from neurocomp.ir import AvgPool2d, Conv2d, Flatten, Linear, SumPool2d
from neurocomp.passes._util import feeds_only, with_record
from neurocomp.passes.lower_pooling import pooling_matrix


def _pool_conv(pool: SumPool2d, conv: Conv2d) -> Conv2d:
    k = tuple(pool.kernel)
    C, H, W = pool.in_shape
    where = f"layers '{pool.name}' -> '{conv.name}'"
    if tuple(pool.stride) != k or tuple(pool.padding) != (0, 0):
        raise UnsupportedLayer("sum pooling with stride != kernel or padding before a convolution", where=where)
    if tuple(conv.dilation) != (1, 1):
        raise UnsupportedLayer("dilated convolution after sum pooling", where=where)
    if (H % k[0] or W % k[1]) and tuple(conv.padding) != (0, 0):
        raise UnsupportedLayer("sum pooling that cuts the input edge before a padded convolution", where=where)
    w = conv.weight
    w2 = np.repeat(np.repeat(w, k[0], axis=2), k[1], axis=3).astype(w.dtype)
    return Conv2d(name=conv.name, in_shape=pool.in_shape, out_shape=conv.out_shape, weight=w2, bias=conv.bias,
                  stride=(conv.stride[0] * k[0], conv.stride[1] * k[1]),
                  padding=(conv.padding[0] * k[0], conv.padding[1] * k[1]), dilation=(1, 1), groups=conv.groups,
                  meta={**conv.meta, "fused_sumpool": pool.name})


def fuse_sumpool(graph):
    nodes = list(graph.nodes)
    out, fused, i = [], [], 0
    while i < len(nodes):
        n = nodes[i]
        if isinstance(n, SumPool2d) and i + 1 < len(nodes) and feeds_only(graph, n, nodes[i + 1]):
            nxt = nodes[i + 1]
            if isinstance(nxt, Conv2d):
                out.append(_pool_conv(n, nxt))
                fused.append([n.name, nxt.name])
                i += 2
                continue
            if isinstance(nxt, Flatten) and i + 2 < len(nodes) and isinstance(nodes[i + 2], Linear) \
                    and feeds_only(graph, nxt, nodes[i + 2]):
                lin = nodes[i + 2]
                ap = AvgPool2d(name=n.name, in_shape=n.in_shape, out_shape=n.out_shape, kernel=n.kernel,
                               stride=n.stride, padding=n.padding)
                P = pooling_matrix(ap) * (n.kernel[0] * n.kernel[1])
                w = (lin.weight.astype(np.float64) @ P).astype(lin.weight.dtype)
                flat = Flatten(name=nxt.name, in_shape=n.in_shape, out_shape=(int(np.prod(n.in_shape)),),
                               meta=nxt.meta)
                out += [flat, lin.replace(in_shape=flat.out_shape, weight=w, meta={**lin.meta, "fused_sumpool": n.name})]
                fused.append([n.name, lin.name])
                i += 3
                continue
        out.append(n)
        i += 1
    if not fused:
        return graph
    return with_record(graph, "fuse_sumpool", {"fused": fused}, out)
