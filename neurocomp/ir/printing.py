"""The graph as a readable table (``neurocomp inspect``, ``print(graph)``)."""
from __future__ import annotations

import numpy as np

from neurocomp.errors import NeurocompError, escape
from neurocomp.ir.graph import Graph
from neurocomp.ir.nodes import Conv2d, LIF, Linear, SumPool2d, AvgPool2d, Threshold, BatchNorm, Readout, Voting
from neurocomp.ir.rules import spike_pieces
from neurocomp.ir.timing import time_alignment


def _fmt_shape(s) -> str:
    return "x".join(str(int(v)) for v in s)


def describe(node) -> str:
    """Short description of a node's parameters (float and, when present, fixed point)."""
    if isinstance(node, Conv2d):
        d = (f"{node.weight.shape[2]}x{node.weight.shape[3]} s{tuple(node.stride)} p{tuple(node.padding)}"
             + (f" g{node.groups}" if node.groups != 1 else "") + (" +bias" if node.bias is not None else ""))
    elif isinstance(node, Linear):
        d = f"{node.weight.shape[1]}->{node.weight.shape[0]}" + (" +bias" if node.bias is not None else "")
    elif isinstance(node, (SumPool2d, AvgPool2d)):
        d = f"k{tuple(node.kernel)} s{tuple(node.stride)}"
    elif isinstance(node, BatchNorm):
        d = f"eps={node.eps:g}"
    elif isinstance(node, LIF):
        kind = "IF" if node.tau is None else f"tau={node.tau:g}"
        reset = "soft" if node.v_reset is None else f"reset={node.v_reset:g}"
        d = f"{kind} th={node.v_threshold:g} {reset}" + ("" if node.decay_input or node.tau is None else " no-decay-input")
    elif isinstance(node, Threshold) and node.meta.get("logic"):
        d = f"{node.meta['logic']}({', '.join(map(str, node.meta.get('of', ())))}): fires iff x>{node.threshold:g}"
    elif isinstance(node, Threshold):
        d = f"x>{node.threshold:g}"
    elif isinstance(node, Voting):
        d = f"mean of groups of {node.voting_size}"
    elif isinstance(node, Readout):
        d = "readout: current summed over T, class = argmax"
    elif node.kind == "graded_spikes" and getattr(node, "qscale", None) is not None:
        d = f"payload int[{int(node.qscale.min())},{int(node.qscale.max())}] / 2^{node.shift}"
    else:
        d = ""
    q = getattr(node, "qweight", None)
    if q is not None:
        d += f" | w int[{int(q.min())},{int(q.max())}]"
    fx = getattr(node, "fixed", None)
    if fx is not None:
        dv = f"{int(np.min(fx.dv))}..{int(np.max(fx.dv))}" if np.ndim(fx.dv) else f"{fx.dv}"   # per neuron: range
        d += f" | du={fx.du} dv={dv} vth={fx.vth}"
    return d


def format_rows(rows) -> list:
    """Align rows of strings in columns (the first row is the header); the last column is free text.
    Every cell is escaped: layer names come from files and may hold newlines or escape sequences."""
    rows = [[escape(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1])
        if i == 0:
            lines.append("-" * (sum(widths) + 2 * len(widths) + 7))
    return lines


def reads(graph: Graph, i: int) -> str:
    """``'<- a, b  '`` where a node of a graph with branches does not just read the row above it."""
    n, srcs = graph.nodes[i], tuple(graph.inputs.get(graph.nodes[i].name, ()))
    if not srcs or (i and srcs == (graph.nodes[i - 1].name,)):
        return ""
    join = " + " if n.kind == "add" else " | " if n.kind == "concat" else ", "
    return "<- " + join.join(srcs) + "  "


def table(graph: Graph) -> str:
    """One row per layer; in a graph with branches each row also says what it reads when that is not
    the row above it (``<- a + b`` for an add, ``<- a | b`` for a concat)."""
    rows = [("layer", "kind", "in", "out", "params", "details")]
    branching = not graph.is_chain()
    for i, n in enumerate(graph):
        rows.append((n.name, n.kind, _fmt_shape(n.in_shape), _fmt_shape(n.out_shape), str(n.params()),
                     (reads(graph, i) if branching else "") + describe(n)))
    return "\n".join(format_rows(rows))


def _timing(graph):
    """The graph's time alignment, or None where it cannot be computed yet (a float graph before the
    folds: BatchNorm and pooling between synapses and neurons)."""
    try:
        return time_alignment(graph)
    except (NeurocompError, KeyError, IndexError, ValueError):
        return None


def branches(graph: Graph) -> str:
    """Where a graph with branches forks and joins, and the delay of every edge into a join (empty for a
    chain): ``fork  a -> b, c`` for an output read by several layers; ``join  j (add) <- x @d, y @d +k``
    for each Add / Concat, ``@d`` the step at which the spikes an input carries left their neuron (its
    ``layer_delay``; a synapse adds one step) and ``+k`` the extra synaptic delay (``DelayDense``) that
    aligns a shorter branch (``ir.timing``'s ``added_delay``)."""
    if graph.is_chain():
        return ""
    tm = _timing(graph)
    delay = {} if tm is None else {graph.input_node.name: 0, **tm["layer_delay"]}
    added = {} if tm is None else tm.get("added_delay", {})

    def edge(src):
        node = graph[src]
        if tm is None:
            return src
        if node.is_synapse:
            try:
                pieces = spike_pieces(graph, graph.inputs[src][0])
            except NeurocompError:
                return src
            parts = [f"{p}@{delay.get(p, '?')}" + (f" +{added[f'{p}->{src}']}" if added.get(f"{p}->{src}") else "")
                     for p, _, _ in pieces]
            return f"{src} ({', '.join(parts)})"
        return f"{src} @{delay[src]}" if src in delay else src

    forks = [(n.name, graph.consumers(n.name)) for n in graph if len(graph.consumers(n.name)) > 1]
    joins = [n for n in graph if len(graph.inputs.get(n.name, ())) > 1]
    lines = [f"branches: {len(forks)} fork(s), {len(joins)} join(s)" + (
        "" if tm is None else f"; depth {tm['depth']} steps, {len(added)} edge(s) delayed by "
                              f"{sum(added.values())} step(s) in all (@d: step the spikes left their neuron, "
                              "+k: extra synaptic delay)")]
    rows = [("", "layer", "kind", "edges")]
    rows += [("fork", name, graph[name].kind, "-> " + ", ".join(c)) for name, c in forks]
    rows += [("join", n.name, n.kind, "<- " + (" + " if n.kind == "add" else " | ").join(
        edge(s) for s in graph.inputs[n.name])) for n in joins]
    return "\n".join(lines + format_rows(rows))
