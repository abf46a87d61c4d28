"""Identity shortcuts as synapses: spikes added to a current reach the neuron through a synapse.

Spiking-ResNet's ``sn(bn(conv(x)) + x)`` adds the block's input spikes ``x`` to a current. A Loihi
neuron only receives synaptic input, so every spike-carrying addend of an Add whose value goes into a
neuron (an Add of currents, or of spikes straight into a neuron) gets an identity synapse of its own:
a depthwise 1x1 convolution of ones (``(C, H, W)`` tensors) or a Linear identity (vectors). In float
it is exact (``x * 1``); the quantizer then puts the shortcut at the neuron's one scale like any other
synapse group. A graph without such an Add (every chain) is returned unchanged.
"""
from __future__ import annotations

import numpy as np

from neurocomp.ir import Add, Conv2d, Graph, Linear
from neurocomp.ir.rules import carries_current


def _identity(name: str, shape: tuple, source: str):
    meta = {"shortcut_of": source}
    if len(shape) == 3:
        C = int(shape[0])
        return Conv2d(name=name, in_shape=shape, out_shape=shape, weight=np.ones((C, 1, 1, 1), np.float32),
                      bias=None, groups=C, meta=meta)
    n = int(np.prod(shape))
    return Linear(name=name, in_shape=shape, out_shape=shape, weight=np.eye(n, dtype=np.float32), bias=None, meta=meta)


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
            nodes.append(_identity(name, tuple(graph[s].out_shape), s))
            inputs[name] = (s,)
            new_srcs.append(name)
            added.append({"add": n.name, "from": s, "synapse": name})
        inputs[n.name] = tuple(new_srcs)
    if not added:
        return graph
    meta = dict(graph.meta)
    meta["passes"] = list(meta.get("passes", [])) + [{"pass": "lower_shortcuts", "identity_synapses": added}]
    return Graph.build(nodes, inputs, meta)
