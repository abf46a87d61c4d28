"""Identity shortcuts as synapses: spikes added to a current reach the neuron through a synapse.

Spiking-ResNet's ``sn(bn(conv(x)) + x)`` adds the block's input spikes ``x`` to a current. A Loihi
neuron only receives synaptic input, so every spike-carrying addend of an Add whose value goes into a
neuron (an Add of currents, or of spikes straight into a neuron) gets an identity synapse of its own:
a depthwise 1x1 convolution of ones (``(C, H, W)`` tensors) or a Linear identity (vectors). In float
it is exact (``x * 1``); the quantizer then puts the shortcut at the neuron's one scale like any other
synapse group.

Then every neuron gets synapse groups of its own. MS-ResNet adds *currents*: a block's sum feeds the
next block's neuron and, as its shortcut, the next sum, so one synapse's current reaches several
neurons -- which may need different scales and delays. By linearity each further neuron gets a copy of
that synapse (same weights, same input spikes; ``name@neuron``) summed by an Add of its own
(``neuron.sum``); the shared Adds left unread are dropped. A graph without such an Add (every chain) is
returned unchanged.
"""
from __future__ import annotations


from neurocomp.ir import Add, Graph
from neurocomp.ir.nodes import identity_synapse
from neurocomp.ir.rules import carries_current, current_groups


def lower_shortcuts(graph):
    if graph.is_chain():
        return graph
    nodes, inputs, added = list(graph.nodes), dict(graph.inputs), []
    names = {n.name for n in nodes}
    for n in graph:
        if not isinstance(n, Add):
            continue
        srcs = graph.inputs[n.name]
        into_neuron = any(graph[c].is_neuron for c in graph.consumers(n.name))
        mixed = any(carries_current(graph, s) for s in srcs)
        if not (mixed or into_neuron):
            continue                    # an Add of spikes into a synapse (SEW): realised by linearity
        new_srcs = []
        for k, s in enumerate(srcs):
            if carries_current(graph, s):
                new_srcs.append(s)
                continue
            name = f"{n.name}.shortcut{k}"
            while name in names:
                name += "_"
            names.add(name)
            nodes.append(identity_synapse(name, tuple(graph[s].out_shape), meta={"shortcut_of": s}))
            inputs[name] = (s,)
            new_srcs.append(name)
            added.append({"add": n.name, "from": s, "synapse": name})
        inputs[n.name] = tuple(new_srcs)
    g = Graph.build(nodes, inputs, graph.meta) if added else graph
    g, copies = _own_groups(g)
    if not added and not copies:
        return graph
    meta = dict(graph.meta)
    meta["passes"] = list(meta.get("passes", [])) + [{"pass": "lower_shortcuts", "identity_synapses": added,
                                                       "synapse_copies": copies}]
    return Graph.build(g.nodes, g.inputs, meta)


def _own_groups(graph):
    """Every neuron's synapse groups its own (copies where a current reaches several neurons)."""
    nodes, inputs, copies = list(graph.nodes), dict(graph.inputs), []
    names = {n.name for n in nodes}
    owner, readers = {}, {}
    for n in graph:
        for s in graph.inputs.get(n.name, ()):
            readers.setdefault(s, []).append(n.name)
    for n in graph:
        if not n.is_neuron:
            continue
        (src,) = graph.inputs[n.name]
        if not carries_current(graph, src):
            continue
        groups = current_groups(graph, src)
        shared = [o for o in groups if o.name in owner]
        if not shared and (len(readers.get(src, ())) == 1 or graph[src].is_synapse):
            for o in groups:
                owner[o.name] = n.name
            continue
        own, renamed = [], {}
        for o in groups:
            if o.name not in owner:
                owner[o.name] = n.name
                # a group under dynamic attention enters the neuron's sum through that attention
                att = [r for r in readers.get(o.name, ()) if graph[r].kind == "ma_attention"]
                own.append(att[0] if att else o.name)
                continue
            name = f"{o.name}@{n.name}"
            while name in names:
                name += "_"
            names.add(name)
            nodes.append(o.replace(name=name, meta={**o.meta, "copy_of": o.name}))
            inputs[name] = graph.inputs[o.name]
            own.append(name)
            renamed[o.name] = name
            copies.append({"synapse": o.name, "copy": name, "for": n.name})
        if renamed and getattr(n, "gain_groups", ()):     # a gained group's copy stays the gained group
            k = next(i for i, m in enumerate(nodes) if m.name == n.name)
            nodes[k] = n.replace(gain_groups=tuple(renamed.get(g, g) for g in n.gain_groups),
                                 more_groups=tuple(renamed.get(g, g) for g in n.more_groups))
        if len(own) == 1:
            inputs[n.name] = (own[0],)
        else:
            name = f"{n.name}.sum"
            while name in names:
                name += "_"
            names.add(name)
            nodes.append(Add(name=name, in_shape=tuple(n.in_shape), out_shape=tuple(n.in_shape)))
            inputs[name] = tuple(own)
            inputs[n.name] = (name,)
    if not copies:
        return graph, copies
    out = graph.output_node.name
    used = {out}
    order = {n.name: n for n in nodes}
    stack = [out]
    while stack:                        # drop what no longer reaches the output (shared Adds)
        for s in inputs.get(stack.pop(), ()):
            if s not in used:
                used.add(s)
                stack.append(s)
    kept = [order[k] for k in order if k in used]
    return Graph.build(kept, {k: v for k, v in inputs.items() if k in used}, graph.meta), copies
