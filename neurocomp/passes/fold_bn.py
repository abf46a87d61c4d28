"""Fold eval-mode BatchNorm into the preceding convolution or linear layer.

BN(y) = gamma * (y - mean) / sqrt(var + eps) + beta is affine per output channel, so
W' = W * k and b' = (b - mean) * k + beta with k = gamma / sqrt(var + eps). Exact in real
arithmetic; float rounding differs from running conv then BN, which is why the float reference
of the unfolded graph (not this one) is the one compared with torch spike for spike.
"""
from __future__ import annotations

import numpy as np

from neurocomp.errors import UnsupportedLayer
from neurocomp.ir import BatchNorm, Conv2d, Linear
from neurocomp.passes._util import with_record


def fold_batchnorm(graph):
    """Each BatchNorm folded into the conv/linear it reads (per branch in a DAG: consumers of the BN then
    read that conv, ``Graph.rewrite``); the conv must feed only that BN."""
    out, folded = [], []
    at = {}                                    # layer name -> index in `out` of what carries its value
    readers = {}
    for n in graph:
        for src in graph.inputs.get(n.name, ()):
            readers.setdefault(src, []).append(n.name)
    for node in graph:
        if isinstance(node, BatchNorm):
            srcs = graph.inputs.get(node.name, ())
            k_prev = at.get(srcs[0]) if len(srcs) == 1 else None
            prev = out[k_prev] if k_prev is not None else None
            others = [c for c in readers.get(srcs[0], ()) if c != node.name] if srcs else []
            if prev is not None and others:
                raise UnsupportedLayer(f"BatchNorm reads '{srcs[0]}', whose output also feeds "
                                       f"{', '.join(repr(c) for c in others)}",
                                       where=f"layer '{node.name}'",
                                       hint="give each branch its own conv (a BN can only fold into a conv it alone reads)")
            if not isinstance(prev, (Conv2d, Linear)):
                raise UnsupportedLayer(f"BatchNorm follows '{prev.name if prev else None}' "
                                       f"({prev.kind if prev else 'nothing'}), not a conv/linear layer",
                                       where=f"layer '{node.name}'", hint="place BatchNorm right after Conv2d/Linear")
            k = (node.weight if node.weight is not None else 1.0) / np.sqrt(node.var.astype(np.float64) + node.eps)
            beta = node.bias if node.bias is not None else 0.0
            b = prev.bias if prev.bias is not None else 0.0
            shape = (-1,) + (1,) * (prev.weight.ndim - 1)
            w = prev.weight.astype(np.float64) * np.reshape(k, shape)
            bias = (b - node.mean.astype(np.float64)) * k + beta
            out[k_prev] = prev.replace(weight=w.astype(np.float32), bias=np.asarray(bias, dtype=np.float32),
                                   meta={**prev.meta, "folded_bn": node.name})
            folded.append({"bn": node.name, "into": prev.name})
            at[node.name] = k_prev
        else:
            at[node.name] = len(out)
            out.append(node)
    return with_record(graph, "fold_batchnorm", {"folded": folded}, out)
