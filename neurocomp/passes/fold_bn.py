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
    out, folded = [], []
    for node in graph:
        if isinstance(node, BatchNorm):
            prev = out[-1] if out else None
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
            out[-1] = prev.replace(weight=w.astype(np.float32), bias=np.asarray(bias, dtype=np.float32),
                                   meta={**prev.meta, "folded_bn": node.name})
            folded.append({"bn": node.name, "into": prev.name})
        else:
            out.append(node)
    return with_record(graph, "fold_batchnorm", {"folded": folded}, out)
