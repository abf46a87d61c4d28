"""Time alignment: how many steps each layer lags its input in Lava, computed once.

Every synapse (Dense/Conv) in Lava sends at step t what it computed at t-1, so a neuron behind
``d`` synapses sees input frame ``t`` at step ``t + d``. Neurons and the RingBuffer source add no
delay; dynamic attention delays its layer by ``T`` (the attention process needs the whole window
before the first gain). A sample therefore needs ``T + depth`` steps alone, and ``T`` steps per sample when
samples run back to back (each layer resets at its own phase: ``(1 + d) mod T``).

In a graph with branches (:func:`dag_alignment`) a layer's delay is the longest path to it: a neuron
fed by synapse groups of unequal depth, or a synapse reading spikes of unequal delay (an Add of
spikes, a Concat), would see them at different steps, so each shorter input is delayed by the
difference on its synapse (Lava's ``DelayDense``: per-synapse delays, 0..63 extra steps). The added
delays are recorded per edge (``added_delay``, keys ``'source->synapse'``) with their cost.

A pure function of the graph's structure (node order, kinds and ``meta['timesteps']``): it sits
beside the IR so the backends read it off the graph they run, and ``compile`` stores it in the
manifest (``alignment``) for readers of an artifact.
"""
from __future__ import annotations


MAX_ADDED_DELAY = 63          # Loihi 2 / Lava DelayDense: 6 bits of synaptic delay


def time_alignment(graph) -> dict:
    if not graph.is_chain():
        return dag_alignment(graph)
    delays, d = {}, 0
    T = int(graph.meta["timesteps"])
    for node in graph:
        if node.is_synapse:
            d += 1
        if node.kind in ("ma_attention", "spike_attention"):   # dynamic attention waits one window
            d += T
        if node.is_neuron:
            delays[node.name] = d
    return {
        "timesteps": T,
        "layer_delay": delays,                 # steps between input frame t and layer output t
        "depth": d,                            # = delay of the output layer
        "steps_single_sample": T + d,
        "steps_back_to_back": "N*T + depth",
        "reset_offset": {k: (1 + v) % T for k, v in delays.items()},  # LIFReset offset (time_step starts at 1)
        "convention": "layer output for input frame t (0-based) of sample k appears at Lava time step "
                      "k*T + t + 1 + delay (1-based)",
    }


def _upstream_of(graph, name: str) -> list:
    """The nodes between a neuron and its synapse groups (Adds of currents, dynamic attention)."""
    out, todo = [], [graph.inputs[name][0]]
    while todo:
        n = graph[todo.pop()]
        if n.kind in ("add", "ma_attention"):
            out.append(n)
            todo += list(graph.inputs[n.name])
    return out


def dag_alignment(graph) -> dict:
    """:func:`time_alignment` of a graph with branches (longest paths, equalised per edge)."""
    from neurocomp.errors import UnsupportedLayer
    from neurocomp.ir.rules import current_groups, spike_pieces
    T = int(graph.meta["timesteps"])
    delay = {}                          # neuron / input name -> steps its spikes lag input frame t
    syn_in = {}                         # synapse -> (pieces, delay its output would have unaligned)
    gated = {}                          # synapse -> extra steps of the attention gate in front of it
    added = {}
    for node in graph:
        if node.kind == "input":
            delay[node.name] = 0
        elif node.is_synapse:
            pieces = spike_pieces(graph, graph.inputs[node.name][0])
            syn_in[node.name] = pieces
            # spikes through a dynamic attention gate arrive one window late
            gated[node.name] = T if graph[graph.inputs[node.name][0]].kind == "spike_attention" else 0
        elif node.is_neuron:
            groups = current_groups(graph, graph.inputs[node.name][0])
            # dynamic attention on one group delays the neuron's whole input by a window (its plain
            # groups through a delay line of T beside the attention's)
            late = T if any(n.kind == "ma_attention" for n in _upstream_of(graph, node.name)) else 0
            arrive = {}
            for syn in groups:
                for src, _, _ in syn_in[syn.name]:
                    arrive[(src, syn.name)] = delay[src] + 1 + late + gated[syn.name]
            d = max(arrive.values())
            for (src, syn), a in arrive.items():
                if d - a > 0:
                    if d - a > MAX_ADDED_DELAY:
                        raise UnsupportedLayer(f"edge '{src}' -> '{syn}' needs {d - a} steps of delay, more than "
                                               f"Lava's {MAX_ADDED_DELAY}", where=f"layer '{node.name}'",
                                               hint="shorten the longer branch")
                    added[f"{src}->{syn}"] = d - a
            delay[node.name] = d
    delays = {n.name: delay[n.name] for n in graph if n.is_neuron}
    depth = delay[graph.output_node.name]
    return {
        "timesteps": T,
        "layer_delay": delays,
        "depth": depth,
        "steps_single_sample": T + depth,
        "steps_back_to_back": "N*T + depth",
        "reset_offset": {k: (1 + v) % T for k, v in delays.items()},
        "added_delay": added,
        "added_delay_cost": {"delayed_synapses": len(added), "extra_steps": int(sum(added.values())),
                             "how": "the shorter input's synapse as a DelayDense with that many extra steps "
                                    "(synaptic delay; the buffer holds max delay + 1 activations per neuron)"},
        "convention": "layer output for input frame t (0-based) of sample k appears at Lava time step "
                      "k*T + t + 1 + delay (1-based)",
    }
