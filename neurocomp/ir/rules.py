"""The lowerable-layer rules: which IR chains a Loihi core can run, as small named rules.

A lowerable graph is ``Input ([attention] [Flatten] synapse [MA attention] neuron)*``, optionally ending in
a head ``(Linear | Voting) Readout`` (a non-firing integrator read out; ``Voting`` after spikes): every neuron has
one synapse (Dense/Conv/sum pool) in front of it and every synapse one neuron after it. Each rule looks
at one node in its place in the chain (:class:`Position`) and returns the typed error it breaks, or
None; :func:`lowering_violations` runs every rule on every node and collects what they find;
:func:`check_lowerable` (called by the quantizer, the core mapper and the backends) returns the
``(synapse, neuron)`` pairs or raises the first violation in chain order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from neurocomp.errors import UnsupportedLayer
from neurocomp.ir.nodes import (CubaLIF, Dense, Flatten, GradedSpikes, Input, LIF, Linear, MAAttention, MALIF, Node,
                                Readout, SpikeAttention, SumPool2d, Threshold, Voting)


@dataclass(frozen=True)
class Position:
    """A node in the chain: the node before and after it, and the synapse still waiting for its neuron."""
    node: Node
    prev: Optional[Node]
    next: Optional[Node]
    pending: Optional[Node]


def _where(node) -> str:
    return f"layer '{node.name}'"


def spike_attention_outside_pair(p: Position):
    """Attention on spikes (dynamic TCJA/PFA, graded payloads) acts on spikes, not on a synapse's current."""
    if isinstance(p.node, (SpikeAttention, GradedSpikes)) and p.pending is not None:
        return UnsupportedLayer("attention on spikes between a synapse and its neuron", where=_where(p.node))


def ma_attention_inside_pair(p: Position):
    """MA-SNN's dynamic attention scales a synapse's current: synapse, attention, LIF/MALIF."""
    if isinstance(p.node, MAAttention) and (p.pending is None or not isinstance(p.next, (LIF, MALIF))):
        return UnsupportedLayer("dynamic attention must sit between a synapse and its neuron",
                                where=_where(p.node), hint="MA-SNN attention acts on input current")


def flatten_outside_pair(p: Position):
    """Flatten reshapes spikes between layers, never a synapse's current."""
    if isinstance(p.node, Flatten) and p.pending is not None:
        return UnsupportedLayer("Flatten between a synapse and its neuron", where=_where(p.node),
                                hint="flatten spikes, not currents")


def one_synapse_per_neuron(p: Position):
    """A synapse's current goes into a neuron before the next synapse."""
    if p.node.is_synapse and p.pending is not None:
        return UnsupportedLayer(f"two synaptic layers in a row ('{p.pending.name}' then '{p.node.name}') without a "
                                "neuron between them", where=_where(p.node),
                                hint="put a spiking neuron after every conv/linear layer")


def synapse_before_neuron(p: Position):
    """Every neuron has a synapse (conv/linear/sum pool) in front of it."""
    if p.node.is_neuron and p.pending is None:
        after = p.prev.name if p.prev is not None else None
        return UnsupportedLayer(f"neuron layer without a synapse in front (after '{after}')",
                                where=_where(p.node), hint="each neuron needs a conv/linear input")


def threshold_after_sumpool(p: Position):
    """A Threshold neuron is the OR of a max pool: it only follows a sum pool."""
    if isinstance(p.node, Threshold) and p.pending is not None and not isinstance(p.pending, SumPool2d):
        return UnsupportedLayer("a Threshold is supported only after a SumPool2d (MaxPool over spikes)",
                                where=_where(p.node), hint="use a LIF/IF neuron")


def sumpool_into_threshold_or_cuba(p: Position):
    """A sum pool feeds a max pool's OR (Threshold) or a CUBA neuron, nothing else yet."""
    if p.node.is_neuron and isinstance(p.pending, SumPool2d) and not isinstance(p.node, (Threshold, CubaLIF)):
        return UnsupportedLayer("sum pooling into a LIF is not lowered yet", where=_where(p.pending),
                                hint="use MaxPool2d or AvgPool2d between spiking layers")


def readout_is_the_output(p: Position):
    """A non-spiking readout is the head: the last layer, a 1-D current from a Linear or a vote in front."""
    if not isinstance(p.node, Readout):
        return None
    if p.next is not None:
        return UnsupportedLayer(f"a readout head followed by '{p.next.name}' ({p.next.kind})", where=_where(p.node),
                                hint="end the model with neurocomp.nn.Readout() (or a VotingLayer); nothing after it")
    if p.pending is not None and (not isinstance(p.pending, (Linear, Dense, Voting)) or len(p.node.in_shape) != 1):
        return UnsupportedLayer(f"a readout of '{p.pending.name}' ({p.pending.kind}, shape {tuple(p.node.in_shape)})",
                                where=_where(p.node), hint="read out the current of a Linear layer (flatten first)")


def voting_into_readout(p: Position):
    """A vote is the head's synapse: spikes (or, before folding, a Linear's current) in, a readout after it."""
    if isinstance(p.node, Voting) and not isinstance(p.next, Readout):
        nxt = f"'{p.next.name}' ({p.next.kind})" if p.next is not None else "nothing"
        return UnsupportedLayer(f"a VotingLayer followed by {nxt}", where=_where(p.node),
                                hint="a VotingLayer is the model's head: put it last")


def known_to_cores(p: Position):
    """Float-only nodes (batch norm, average pooling, static scales) are folded away before lowering."""
    n = p.node
    if not (isinstance(n, (Input, SpikeAttention, GradedSpikes, MAAttention, Flatten)) or n.is_synapse
            or n.is_neuron):
        return UnsupportedLayer(f"'{n.kind}' cannot be lowered to Loihi cores at this stage", where=_where(n),
                                hint="run fold_batchnorm and fold_avgpool first (neurocomp.compile does)")


def ends_with_neuron(pending) -> Optional[UnsupportedLayer]:
    """Run once after the walk: a synapse left without its neuron."""
    if pending is not None:
        return UnsupportedLayer("the graph ends with a synapse, not a neuron", where=_where(pending),
                                hint="end the model with a spiking layer")


# Every rule a node in the chain must satisfy, in the order their errors are reported for one node.
RULES = (spike_attention_outside_pair, ma_attention_inside_pair, flatten_outside_pair, one_synapse_per_neuron,
         synapse_before_neuron, threshold_after_sumpool, sumpool_into_threshold_or_cuba, readout_is_the_output,
         voting_into_readout, known_to_cores)


def lowering_violations(graph) -> tuple:
    """``(pairs, violations)``: the ``(synapse, neuron)`` pairs in chain order and every rule's error,
    in chain order (empty when the graph is lowerable)."""
    nodes = list(graph.nodes)
    pairs, found, pending = [], [], None
    for i, n in enumerate(nodes):
        if isinstance(n, Input):
            continue
        pos = Position(n, nodes[i - 1] if i else None, nodes[i + 1] if i + 1 < len(nodes) else None, pending)
        found += [e for e in (rule(pos) for rule in RULES) if e is not None]
        if n.is_synapse:
            pending = n              # after 'two synapses in a row', the later one waits for the neuron
        elif n.is_neuron:
            if pending is not None:
                pairs.append((pending, n))
            pending = None
    last = ends_with_neuron(pending)
    return pairs, found + ([last] if last is not None else [])


def check_lowerable(graph) -> list:
    """Pairs ``(synapse, neuron)`` in order; raises the first rule violation (an ``UnsupportedLayer``)
    if the chain is not ``Input ([Flatten] synapse neuron)*`` (attention nodes where they may sit)."""
    pairs, found = lowering_violations(graph)
    if found:
        raise found[0]
    return pairs
