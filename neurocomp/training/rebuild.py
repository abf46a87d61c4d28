"""The folded graph as a torch model: :func:`graph_to_module` rebuilds the float IR after every
pass but ``quantize`` (:func:`neurocomp.passes.pipeline.fold`) as a SpikingJelly ``Sequential``.

One Conv2d/Linear per neuron layer with BatchNorm and pooling already folded in (MA-SNN's
Conv→AvgPool becomes one stride-2 conv, PFA's AvgPool→Conv one stride-2 conv of a k·K kernel),
MaxPool over spikes, LIF / MALIF neurons, and the gain tables as ``StaticMap`` modules: a gain on the
input current (MA-SNN: ``[T, C, H, W]``, with MA's ReLU) sits right before its neuron, a per-step gain
on spikes (TCJA, PFA: ``g[t]`` of the rank-1 fold, whose other factor ``B`` is already in the next
layer's weights, or for PFA's spatial ``B`` a fixed ``StaticMap`` of the quantizer's graded payload
values) right before the consuming synapse. This model compiles back to the same folded graph: BN is
**folded** (not frozen) and the rank-1 spike maps are exact by construction, so no folding error is
left. Each layer also carries the quantizer's inputs (``theta``, the input weight gain), computed by
the quantizer's own rules (:func:`neurocomp.fixedpoint.lif_theta`, :func:`~neurocomp.fixedpoint.input_weight_gain`).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from neurocomp import fixedpoint as fx
from neurocomp.errors import UnsupportedLayer


def _lif(node, surrogate_alpha: float = 2.0):
    from spikingjelly.activation_based import neuron, surrogate
    kw = dict(v_threshold=float(node.v_threshold), v_reset=None if node.v_reset is None else float(node.v_reset),
              surrogate_function=surrogate.ATan(alpha=surrogate_alpha), detach_reset=True,
              step_mode="m")   # the torch backend: the default of every SpikingJelly
    if node.tau is None:
        return neuron.IFNode(**kw)
    return neuron.LIFNode(tau=float(node.tau), decay_input=bool(node.decay_input), **kw)


def graph_to_module(graph, lens: float = 0.25):
    """Rebuild a folded float IR graph as a SpikingJelly ``nn.Sequential``.

    Returns ``(model, layers)``; ``layers`` lists, per neuron layer, the indices (in ``model``) of
    its synapse, its neuron and its gain ``StaticMap`` (or None), the gain kind and the quantizer's
    inputs (``theta``, ``gain`` = 1/tau for decay-input LIFs). Surrogates: ATan(2) for LIF (the
    zoo's), MA's rectangle with ``lens`` for MALIF (the IR does not store surrogates)."""
    from spikingjelly.activation_based import layer
    from neurocomp.ir import Conv2d, Dense, Flatten, GradedSpikes, Input, LIF, Linear, MALIF, SumPool2d, Threshold
    from neurocomp.nn import MALIFNode, StaticMap
    T = int(graph.meta["timesteps"])
    nodes = list(graph.nodes)
    mods, layers, syn_at = [], [], None
    flat = False          # the torch tensor is already 1-D (after a Dense rebuilt as Flatten + Linear)
    i = 0
    while i < len(nodes):
        n = nodes[i]
        where = f"layer '{n.name}'"
        if isinstance(n, Input):
            pass
        elif isinstance(n, Conv2d):
            if flat:
                raise UnsupportedLayer("a convolution after an unrolled (Dense) layer cannot be rebuilt", where=where)
            m = layer.Conv2d(n.in_shape[0], n.weight.shape[0], tuple(n.weight.shape[2:]), stride=tuple(n.stride),
                             padding=tuple(n.padding), dilation=tuple(n.dilation), groups=int(n.groups),
                             bias=n.bias is not None, step_mode="m")
            _set(m, n)
            syn_at, syn_node = len(mods), n
            mods.append(m)
        elif isinstance(n, (Linear, Dense)):
            if isinstance(n, Dense) and len(n.in_shape) > 1 and not flat:
                mods.append(layer.Flatten(step_mode="m"))     # a Dense (unrolled conv) = Flatten + Linear
            flat = flat or isinstance(n, Dense)
            m = layer.Linear(n.weight.shape[1], n.weight.shape[0], bias=n.bias is not None, step_mode="m")
            _set(m, n)
            syn_at, syn_node = len(mods), n
            mods.append(m)
        elif isinstance(n, GradedSpikes):      # payload factor B: a fixed StaticMap, as the quantizer rounds it
            got = fx.quantize_payload(n.scale)
            if got is None:
                raise UnsupportedLayer("graded spike payloads must be non-negative", where=where)
            b = np.broadcast_to(got[0] / float(1 << got[1]), (T,) + tuple(n.out_shape)).astype(np.float32)
            sm = StaticMap(shape=list(b.shape), source="finetune:payload")
            sm.map.copy_(torch.as_tensor(b))
            mods.append(sm)
        elif isinstance(n, Flatten):
            if not flat:
                mods.append(layer.Flatten(step_mode="m"))
            flat = True
        elif isinstance(n, SumPool2d):
            if flat:
                raise UnsupportedLayer("pooling after an unrolled (Dense) layer cannot be rebuilt", where=where)
            nxt = nodes[i + 1] if i + 1 < len(nodes) else None
            if not (isinstance(nxt, Threshold) and float(nxt.threshold) == 0.0):
                raise UnsupportedLayer("sum pooling that is not a MaxPool over spikes cannot be fine-tuned",
                                       where=where)
            mods.append(layer.MaxPool2d(tuple(n.kernel), tuple(n.stride), tuple(n.padding), step_mode="m"))
            i += 2
            continue
        elif isinstance(n, (LIF, MALIF)):
            if syn_at is None:
                raise UnsupportedLayer("neuron without a synapse in front", where=where)
            gain_at, gain_kind, theta, w_gain = None, None, None, 1.0
            if getattr(n, "input_offset", None) is not None:
                raise UnsupportedLayer("an additive attention map (PFA's relu(A + x)) cannot be fine-tuned",
                                       where=where, hint="use the artifact as compiled")
            G = getattr(n, "input_gain", None)
            if G is not None:
                G = np.asarray(G, np.float32)
                if n.gain_on_bias:             # current map: StaticMap right before the neuron
                    gain_at, gain_kind = len(mods), "current"
                    sm = StaticMap(shape=list(G.shape), rectify=bool(n.rectify_input), source="finetune:current")
                    sm.map.copy_(torch.as_tensor(G))
                    mods.append(sm)
                else:                          # per-step spike gain g[t]: StaticMap before the synapse
                    rows = G.reshape(G.shape[0], -1)
                    if not np.all(rows == rows[:, :1]) or n.rectify_input:
                        raise UnsupportedLayer("a spike gain that varies across neurons cannot be rebuilt",
                                               where=where)
                    g = rows[:, 0]
                    nd = 1 if flat else len(syn_node.in_shape)
                    sm = StaticMap(shape=[T] + [1] * nd, source="finetune:spikes")
                    sm.map.copy_(torch.as_tensor(g.reshape([T] + [1] * nd)))
                    mods.insert(syn_at, sm)
                    gain_at, gain_kind = syn_at, "spikes"
                    syn_at += 1
            if isinstance(n, MALIF):
                if n.per_channel:
                    raise UnsupportedLayer("an MA-SNN cell with per-channel parameters cannot be fine-tuned",
                                           where=where, hint="use the artifact as compiled")
                if n.beta != 0:
                    raise UnsupportedLayer(f"MA-SNN cell with beta={n.beta}", where=where)
                mods.append(MALIFNode(v_threshold=float(n.v_threshold), alpha=float(n.alpha), beta=float(n.beta),
                                      lens=lens))
                theta = fx.lif_theta(n.v_threshold, 0.0)      # the quantizer's inputs, by its own rules
            else:
                if n.v_reset is None:
                    raise UnsupportedLayer("soft reset has no Loihi equivalent", where=where)
                mods.append(_lif(n))
                theta = fx.lif_theta(n.v_threshold, n.v_reset)
                w_gain = fx.input_weight_gain(n.tau, n.decay_input)
            layers.append({"name": n.name, "synapse": syn_at, "sparse": isinstance(syn_node, Dense), "neuron": len(mods) - 1, "gain": gain_at,
                           "gain_kind": gain_kind, "theta": theta, "w_gain": w_gain})
            syn_at = None
        else:
            raise UnsupportedLayer(f"'{n.kind}' cannot be fine-tuned", where=where,
                                   hint="finetune supports Conv2d/Linear, MaxPool over spikes, LIF/IF and MA-SNN cells")
        i += 1
    return nn.Sequential(*mods), layers


def _set(m, n):
    with torch.no_grad():
        m.weight.copy_(torch.as_tensor(np.asarray(n.weight, np.float32)))
        if n.bias is not None:
            m.bias.copy_(torch.as_tensor(np.asarray(n.bias, np.float32)))
