"""Fold a vote over a Linear layer's current into that Linear.

A ``VotingLayer`` after a Linear read out (``Linear -> Voting -> Readout``) averages groups of the
Linear's outputs: ``mean_j (W_j x + b_j)`` over each group is one Linear whose rows are the group means of
``W`` and ``b``. Exact in real arithmetic; float rounding differs from running the Linear then the vote,
which is why the float reference of the unfolded graph (not this one) is compared with torch. A vote over
spikes (after a spiking layer) stays: it is the head's synapse (a Dense of one weight per group member).
"""
from __future__ import annotations

import numpy as np

from neurocomp.ir import Linear, Voting
from neurocomp.passes._util import feeds_only, with_record


def _group_mean(a: np.ndarray, k: int) -> np.ndarray:
    a = a.astype(np.float64)
    return a.reshape((a.shape[0] // k, k) + a.shape[1:]).mean(axis=1).astype(np.float32)


def fold_voting(graph):
    """The graph with every vote that follows a Linear folded into it (unchanged, no record, when none does)."""
    out, folded = [], []
    for node in graph:
        prev = out[-1] if out else None
        if isinstance(node, Voting) and isinstance(prev, Linear) and feeds_only(graph, prev, node):
            k = int(node.voting_size)
            out[-1] = prev.replace(out_shape=tuple(node.out_shape), weight=_group_mean(prev.weight, k),
                                   bias=None if prev.bias is None else _group_mean(prev.bias, k),
                                   meta={**prev.meta, "folded_voting": node.name})
            folded.append({"voting": node.name, "into": prev.name, "voting_size": k})
        else:
            out.append(node)
    if not folded:
        return graph
    return with_record(graph, "fold_voting", {"folded": folded}, out)
