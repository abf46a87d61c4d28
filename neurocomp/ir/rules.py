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

import numpy as np

from neurocomp.errors import UnsupportedLayer
from neurocomp.ir.nodes import (Add, AvgPool2d, BatchNorm, Concat, Conv2d, CubaLIF, Dense, Flatten, GradedSpikes, Input, LIF, Linear, MAAttention, MALIF, Node,
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


# ---- graphs with branches ------------------------------------------------------------------------
# In a DAG a neuron receives one or more *synapse groups* (synapses summed by Adds of currents), and a
# synapse reads one or more *spike pieces* (neuron or input spikes, joined by Adds of spikes and Concats,
# possibly flattened). Lava realises both by linearity: one synapse process per (synapse, piece), every
# group's a_out connected into the neuron's a_in.

def carries_current(graph, name: str) -> bool:
    """Whether ``name``'s output is a synaptic current (a synapse, a BN/scale on one, an Add of currents)."""
    n = graph[name]
    if n.is_synapse:
        return True
    if isinstance(n, (BatchNorm, MAAttention)):
        return True
    if isinstance(n, Add):
        return all(carries_current(graph, s) for s in graph.inputs[name])
    return False


def current_groups(graph, name: str) -> list:
    """The synapses whose currents reach the neuron reading ``name`` (through Adds of currents)."""
    n = graph[name]
    if n.is_synapse:
        return [n]
    if isinstance(n, Add) and carries_current(graph, name):
        return [g for s in graph.inputs[name] for g in current_groups(graph, s)]
    if isinstance(n, MAAttention):      # dynamic attention on one group's current: that group
        return current_groups(graph, graph.inputs[name][0])
    if isinstance(n, Add):
        raise UnsupportedLayer("an add of a current and spikes reached lowering", where=_where(n),
                               hint="run passes.shortcuts.lower_shortcuts (neurocomp.compile does)")
    raise UnsupportedLayer(f"a neuron reads '{name}' ({n.kind}), not a synapse or an add of synapse currents",
                           where=_where(n), hint="each neuron needs conv/linear inputs")


def spike_pieces(graph, name: str) -> list:
    """What the spikes read from ``name`` are made of: ``[(source, c0, c1)]``, a source (neuron or
    Input) entering channels ``c0:c1`` of the reader's input, once per addend of an Add of spikes."""
    n = graph[name]
    if isinstance(n, Input) or n.is_neuron:
        return [(name, 0, int(n.out_shape[0]))]
    if isinstance(n, SpikeAttention) and n.source in (None, graph.inputs[name][0]) \
            or isinstance(n, GradedSpikes):          # a gate on its input's spikes (dynamic, or static payloads)
        return spike_pieces(graph, graph.inputs[name][0])
    if isinstance(n, Add):
        return [p for s in graph.inputs[name] for p in spike_pieces(graph, s)]
    if isinstance(n, Concat):
        out, off = [], 0
        for s in graph.inputs[name]:
            out += [(src, off + a, off + b) for src, a, b in spike_pieces(graph, s)]
            off += int(graph[s].out_shape[0])
        return out
    if isinstance(n, Flatten):
        (src,) = graph.inputs[name]
        inner = spike_pieces(graph, src)
        if len(inner) != 1 or isinstance(graph[src], (Add, Concat)):
            raise UnsupportedLayer("a Flatten of an add or concat of spikes is not lowered yet", where=_where(n),
                                   hint="flatten each branch, or feed the add/concat to a conv")
        return [(inner[0][0], 0, int(n.out_shape[0]))]
    raise UnsupportedLayer(f"a synapse reads '{name}' ({n.kind}) in a branching graph; only spikes, adds of "
                           "spikes, concats and flattens are lowered there", where=_where(n),
                           hint="compile attention models as chains for now")


def logic_synapse(node) -> bool:
    """Whether ``node`` is an input of neuron logic (SEW's AND / IAND): integer weights, no bias, so the
    threshold neuron after it sums integers (``frontends.torch`` builds them with ``nodes.identity_synapse``)."""
    w = getattr(node, "weight", None)
    return (isinstance(node, (Conv2d, Linear)) and getattr(node, "bias", None) is None and w is not None
            and bool(np.all(w == np.round(w))) and "logic_input" in node.meta)


def dag_pairs(graph) -> list:
    """``(synapse, neuron)`` for every synapse group of every neuron, in graph order; raises the first
    violation of the branching-graph rules (one line naming the layer)."""
    pairs, fed = [], {}
    for n in graph:
        if isinstance(n, Input) or isinstance(n, (Add, Concat, Flatten, SpikeAttention, GradedSpikes)):
            if isinstance(n, Concat) and any(carries_current(graph, s) for s in graph.inputs[n.name]):
                raise UnsupportedLayer("a concat of currents", where=_where(n), hint="concatenate spikes")
            continue
        if isinstance(n, MAAttention):
            src = graph[graph.inputs[n.name][0]]
            if not src.is_synapse:
                raise UnsupportedLayer("dynamic attention must scale a synapse's current", where=_where(n),
                                       hint="MA-SNN attention acts on input current")
            continue
        if isinstance(n, (BatchNorm, AvgPool2d)) or not (n.is_synapse or n.is_neuron):
            raise UnsupportedLayer(f"'{n.kind}' cannot be lowered to Loihi cores in a branching graph", where=_where(n),
                                   hint="run the fold passes first (neurocomp.compile does)")
        if n.is_synapse:
            (src,) = graph.inputs[n.name]
            pieces = spike_pieces(graph, src)
            if len(pieces) > 1 and not isinstance(n, (Conv2d, Linear, Dense)):
                raise UnsupportedLayer(f"a {n.kind} reads an add or concat of spikes", where=_where(n),
                                       hint="feed branches to a conv or linear layer")
            if len(pieces) > 1 and isinstance(n, Conv2d) and n.groups != 1 and isinstance(graph[src], Concat):
                raise UnsupportedLayer("a grouped conv reads a concat", where=_where(n), hint="use groups=1")
            continue
        (src,) = graph.inputs[n.name]
        groups = current_groups(graph, src)
        if isinstance(n, Threshold) and len(groups) > 1 and not all(logic_synapse(s) for s in groups):
            raise UnsupportedLayer(f"a threshold fed by {len(groups)} synapse groups that are not neuron logic",
                                   where=_where(n), hint="sum groups into a LIF/IF, CUBA or MA-SNN neuron")
        for syn in groups:
            if syn.name in fed:
                raise UnsupportedLayer(f"the current of '{syn.name}' feeds two neurons ('{fed[syn.name]}' and "
                                       f"'{n.name}')", where=_where(syn),
                                       hint="give each neuron its own synapse (one scale per neuron layer)")
            fed[syn.name] = n.name
            pairs.append((syn, n))
    orphan = next((n for n in graph if n.is_synapse and n.name not in fed), None)
    if orphan is not None:
        raise UnsupportedLayer("a synapse whose current reaches no neuron", where=_where(orphan),
                               hint="end every branch in a neuron")
    if graph.output_node.is_synapse or not graph.output_node.is_neuron:
        raise UnsupportedLayer("the graph does not end with a neuron", where=_where(graph.output_node),
                               hint="end the model with a spiking layer")
    return pairs


def neuron_groups(pairs) -> dict:
    """``{neuron name: [synapses]}`` from :func:`check_lowerable`'s pairs, in order."""
    out = {}
    for syn, neu in pairs:
        out.setdefault(neu.name, []).append(syn)
    return out


def check_lowerable(graph) -> list:
    """Pairs ``(synapse, neuron)`` in order; raises the first rule violation (an ``UnsupportedLayer``)
    if the chain is not ``Input ([Flatten] synapse neuron)*`` (attention nodes where they may sit).
    A graph with branches: one pair per synapse group of each neuron (:func:`dag_pairs`)."""
    if not graph.is_chain():
        return dag_pairs(graph)
    pairs, found = lowering_violations(graph)
    if found:
        raise found[0]
    return pairs
