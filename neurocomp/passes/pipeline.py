"""The pass pipelines: which passes run, in which order, from the float IR to what a backend runs.

There is one folding sequence and two ways to finish it:

- :func:`fold`: ``fold_batchnorm -> fold_attention -> fold_avgpool -> fold_voting -> lower_shortcuts``
  (the last only in a graph with branches: spike addends of a current get an identity synapse). The float IR with
  BatchNorm, static attention maps, average pooling and a vote over a Linear's current folded into weights
  and gain tables; still float
  (fine-tuning rebuilds this graph as a torch model and trains it against the quantizer).
- :func:`lower`: ``fold`` then ``quantize`` (and ``map_cores`` with a target): what ``neurocomp
  compile MODEL.pt`` stores as the fixed graph.
- :func:`lower_nir`: ``fold`` then ``fuse_sumpool`` then ``quantize``: what ``neurocomp compile
  FILE.nir`` stores. A NIR graph from another framework can put a sum pool straight in front of
  a synapse, which is fused into it (exactly); the torch frontend never does (its sum pools come
  from max pooling and feed a threshold). The folds are no-ops on a foreign graph, and they let a
  NIR file written by neurocomp (BatchNorm and attention nodes included) compile through this door.

Every pass is a function ``Graph -> Graph`` that appends its record to ``graph.meta['passes']``.
"""
from __future__ import annotations

from neurocomp.passes.fold_attention import fold_attention
from neurocomp.passes.fold_bn import fold_batchnorm
from neurocomp.passes.fold_voting import fold_voting
from neurocomp.passes.fuse_sumpool import fuse_sumpool
from neurocomp.passes.lower_pooling import fold_avgpool
from neurocomp.passes.map_cores import map_cores
from neurocomp.passes.quantize import quantize
from neurocomp.passes.shortcuts import lower_shortcuts

ATTENTION_MODES = ("static", "portable", "dynamic")


def fold(float_graph, attention: str = "static"):
    """The float IR after every folding pass (BatchNorm, attention as ``attention`` says, average
    pooling): :func:`lower` without ``quantize``."""
    return lower_shortcuts(fold_voting(fold_avgpool(fold_attention(fold_batchnorm(float_graph), mode=attention))))


def lower(float_graph, weight_bits: int = 8, target=None, attention: str = "static", max_chips: int | None = None):
    """The checkpoint pipeline, float IR -> quantized, Lava-ready IR. With a ``target`` (a
    :class:`neurocomp.targets.Target` or its name) the layers are also mapped onto its cores.
    ``attention`` says how static attention maps are folded (see passes.fold_attention); ``max_chips``
    bounds the chips of the mapping (``passes.map_cores``)."""
    g = quantize(fold(float_graph, attention), weight_bits=weight_bits)
    return g if target is None else map_cores(g, target, max_chips=max_chips)


def lower_nir(float_graph, weight_bits: int = 8, attention: str = "static"):
    """The NIR-file pipeline: :func:`fold`, sum pools in front of a synapse fused into it, quantize."""
    return quantize(fuse_sumpool(fold(float_graph, attention)), weight_bits=weight_bits)
