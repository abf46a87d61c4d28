"""Fold static attention maps (IR ``Scale`` nodes) into weights and gain-scheduled neurons.

Rules (each exact for the static map it realises, or with its error recorded):

- **Map on input current** (MA-SNN: ``Scale`` right before a neuron): the whole map
  ``M[t, c, h, w]`` becomes the neuron's input gain table (membrane-potential scaling of the
  increment, bias included, with MA's ReLU as input rectification). Exact.
- **Map on spikes** (TCJA, PFA: ``Scale`` before the next synapse): ``M[t, ...] ~ g[t] * B[...]``
  (best rank-1 factorisation, error ``sqrt(sum_{i>=2} s_i^2) / ||M||``, 0 when the map factorises).
  ``B`` folds into the next synapse's input weights (per input feature for a Linear, exact; per
  input channel for a convolution, exact when ``B`` is constant over space, else the spatial
  residual is recorded), through average pooling where it commutes (per channel). When ``B``
  varies over space and the map sits right before a convolution (PFA), ``B`` becomes **graded
  spike payloads** of the producing neuron or input (a ``GradedSpikes`` node right after it; a
  factor on the output of non-overlapping average pools in between is the same factor repeated
  over each pooling window of their input), exactly, and the convolution keeps its shared
  weights: the cost is one payload per producing neuron, not a dense matrix that grows with the
  square of the layer. Only an overlapping pool in between still unrolls the conv into a Dense (no
  proportional form exists there: a pool output mixes neighbouring spikes), checked against the memory
  budget (:mod:`neurocomp.memory`) before anything is allocated.
  ``g[t]`` becomes the consuming neuron's input gain on its synaptic input (the bias is not scaled).
  Two static spike maps in a row (a fine-tuned model's payload and gain maps) multiply into one.
- **Additive map on input current** (PFA's FMNIST variant, ``relu(x + A)`` right before a neuron):
  the map becomes the neuron's per-step, per-neuron input offset (bias included), the ReLU its input
  rectification. Exact.
- **In a graph with branches** (:func:`_fold_branch_maps`): a map on one synapse's current before an add
  (MA-SNN's CSA-MS-ResNet: the residual branch's current, not the shortcut's) becomes a gain table on that
  synapse group only of every neuron the current reaches (``gain_groups``; a neuron reached by several
  such branches -- stacked blocks -- gets one table per group, ``more_groups``); a map on spikes (TCJA, PFA)
  folds ``B`` into the synapses reading them (a per-position ``B`` in front of convs: graded payloads of
  the producer on the edge into each conv, the neurons' other groups plain; two readers into one neuron:
  the conv unrolled, guarded) and ``g[t]`` onto those groups only; dynamic attention on one group stays a node and
  the neuron gains only that group. Exact.
- ``mode="portable"`` keeps only what stock Lava LIF/Dense/Conv run: spike maps fold ``mean_t g``
  into the weights; current maps fold their per-channel time/space mean into the producing
  synapse's output channel; what is dropped is recorded as a relative error.
"""
from __future__ import annotations

import numpy as np

from neurocomp import memory
from neurocomp.errors import UnsupportedLayer
from neurocomp.ir import (Add, AvgPool2d, Conv2d, Dense, Flatten, Graph, GradedSpikes, Input, LIF, Linear, MAAttention, MALIF,
                          Scale, SpikeAttention)
from neurocomp.ir.rules import carries_current, current_groups
from neurocomp.passes._util import with_record
from neurocomp.passes.lower_pooling import _square_pool


def rank1(M: np.ndarray):
    """Best rank-1 ``g[t] * B[...]`` of ``M[t, ...]`` with ``mean(g) = 1``; returns (g, B, rel_error)."""
    T = M.shape[0]
    A = M.reshape(T, -1).astype(np.float64)
    U, S, Vt = np.linalg.svd(A, full_matrices=False)
    g, B = U[:, 0] * S[0], Vt[0]
    if g.sum() < 0:
        g, B = -g, -B
    c = g.mean() if g.mean() != 0 else 1.0
    g, B = g / c, B * c
    total = float(np.sqrt((S ** 2).sum()))
    err = float(np.sqrt((S[1:] ** 2).sum()) / total) if total > 0 else 0.0
    return g, B.reshape(M.shape[1:]), err


def _full(scale: np.ndarray, shape) -> np.ndarray:
    """Broadcast a ``[T, *b]`` map to ``[T, *shape]``."""
    return np.broadcast_to(scale.reshape(scale.shape + (1,) * (1 + len(shape) - scale.ndim)),
                           (scale.shape[0],) + tuple(shape)).astype(np.float64)


def _combine_gain(neuron, gain: np.ndarray, on_bias: bool, rectify: bool):
    if getattr(neuron, "input_offset", None) is not None:
        raise UnsupportedLayer("an attention gain and an additive attention map meet at one neuron",
                               where=f"layer '{neuron.name}'", hint="one map per neuron is supported")
    if neuron.input_gain is not None:
        if bool(neuron.gain_on_bias) != on_bias:
            raise UnsupportedLayer("two attention maps of different kinds meet at one neuron",
                                   where=f"layer '{neuron.name}'", hint="one map per neuron is supported")
        gain = gain * neuron.input_gain
    return neuron.replace(input_gain=gain.astype(np.float32), gain_on_bias=on_bias,
                          rectify_input=bool(neuron.rectify_input or rectify))


def conv_to_dense(conv: Conv2d, why: str = "") -> Dense:
    """The convolution as an explicit matrix (torch flatten order on both sides): quadratic in the layer,
    the fallback where no proportional fold exists (an overlapping pool between a per-position spike map
    and its conv; portable mode), so its size is checked against the memory budget first."""
    if conv.groups != 1:
        raise UnsupportedLayer("cannot unroll a grouped convolution", where=f"layer '{conv.name}'")
    Ci, H, W = conv.in_shape
    Co, Ho, Wo = conv.out_shape
    memory.check(Co * Ho * Wo * Ci * H * W * 16,        # float64 build + float32 matrix + its scaled copy
                 what=f"unrolling the convolution into a dense {Co * Ho * Wo}x{Ci * H * W} matrix{why}",
                 where=f"layer '{conv.name}'",
                 hint="use non-overlapping pools in front of the map's conv (graded payloads, no unrolling), "
                      "or --attention dynamic; or raise NEUROCOMP_MAX_MEMORY if the machine has the memory")
    kh, kw = conv.weight.shape[2:]
    (sh, sw), (ph, pw), (dh, dw) = conv.stride, conv.padding, conv.dilation
    mat = np.zeros((Co, Ho, Wo, Ci, H, W), dtype=np.float64)
    wt = conv.weight.astype(np.float64)
    for oy in range(Ho):
        for ox in range(Wo):
            for a in range(kh):
                for b in range(kw):
                    iy, ix = oy * sh - ph + a * dh, ox * sw - pw + b * dw
                    if 0 <= iy < H and 0 <= ix < W:
                        mat[:, oy, ox, :, iy, ix] += wt[:, :, a, b]
    bias = None if conv.bias is None else np.repeat(conv.bias.astype(np.float64), Ho * Wo).astype(np.float32)
    return Dense(name=conv.name, in_shape=conv.in_shape, out_shape=conv.out_shape,
                 weight=mat.reshape(Co * Ho * Wo, Ci * H * W).astype(np.float32), bias=bias,
                 meta={**conv.meta, "unrolled_from": "conv2d"})


def _fold_into_synapse_inputs(syn, B: np.ndarray, through_pool: bool, through_flatten_shape, why: str = ""):
    """Scale the synapse's input weights by B; returns (new synapse, spatial residual error)."""
    if isinstance(syn, Conv2d) and not through_pool and B.ndim == 3 and B.shape[1:] != (1, 1):
        # a per-position factor cannot share conv weights: unroll the conv (exact; quadratic, guarded)
        dense = conv_to_dense(syn, why)
        b = np.broadcast_to(B, syn.in_shape).reshape(-1)
        return dense.replace(weight=(dense.weight.astype(np.float64) * b[None, :]).astype(np.float32)), 0.0
    w = syn.weight.astype(np.float64)
    if isinstance(syn, Linear):
        if through_flatten_shape is not None and not through_pool:
            b = np.broadcast_to(B.reshape(B.shape + (1,) * (len(through_flatten_shape) - B.ndim)),
                                through_flatten_shape).reshape(-1)
            return syn.replace(weight=(w * b[None, :]).astype(np.float32)), 0.0
        if through_flatten_shape is None:
            b = np.broadcast_to(B, syn.in_shape).reshape(-1)
            return syn.replace(weight=(w * b[None, :]).astype(np.float32)), 0.0
    per_c = B.reshape(B.shape[0], -1).mean(axis=1) if B.ndim >= 1 else np.array([float(B)])
    full = B.reshape(B.shape[0], -1) if B.ndim >= 1 else per_c[:, None]
    resid = float(np.linalg.norm(full - per_c[:, None]) / max(np.linalg.norm(full), 1e-30))
    if isinstance(syn, Conv2d):
        if syn.groups != 1:
            raise UnsupportedLayer("attention before a grouped convolution", where=f"layer '{syn.name}'")
        return syn.replace(weight=(w * per_c[None, :, None, None]).astype(np.float32)), resid
    # Linear after pooling + flatten: per channel, repeated over the flattened positions
    C = per_c.shape[0]
    b = np.repeat(per_c, syn.weight.shape[1] // C)
    return syn.replace(weight=(w * b[None, :]).astype(np.float32)), resid


def _payload_site(nodes, i):
    """Where a per-position factor on the spikes entering ``nodes[i]`` can be sent as graded payloads:
    ``(index of the producing neuron or input, [the average pools in between, nearest first])``, or
    None when a pool in between overlaps or the producer sends no spikes."""
    k, pools = i - 1, []
    while k >= 0 and isinstance(nodes[k], AvgPool2d):
        if not _square_pool(nodes[k]):
            return None
        pools.append(nodes[k])
        k -= 1
    if k < 0 or not (nodes[k].is_neuron or isinstance(nodes[k], Input)):
        return None
    return k, pools


def _through_pools(B: np.ndarray, pools) -> np.ndarray:
    """A factor on the output of non-overlapping pools as the same factor on their inputs (each value
    repeated over its window; positions no window reads get 0)."""
    for pool in pools:
        kh, kw = pool.kernel
        C, Ho, Wo = pool.out_shape
        up = np.zeros(tuple(pool.in_shape), dtype=np.float64)
        up[:, :Ho * kh, :Wo * kw] = np.repeat(np.repeat(B, kh, axis=1), kw, axis=2)
        B = up
    return B


def _merge_spike_maps(nodes, records, mode):
    """Two static maps in a row multiply into one (exact); returns the new node list."""
    out = []
    for n in nodes:
        prev = out[-1] if out else None
        if isinstance(n, Scale) and isinstance(prev, Scale) and not (n.additive or prev.additive) \
                and (not prev.rectify or not np.any(n.scale < 0)):
            a, b = prev.scale.astype(np.float64), n.scale.astype(np.float64)
            nd = len(n.in_shape) + 1
            a = a.reshape(a.shape + (1,) * (nd - a.ndim))
            b = b.reshape(b.shape + (1,) * (nd - b.ndim))
            out[-1] = prev.replace(scale=(a * b).astype(np.float32), rectify=bool(prev.rectify or n.rectify),
                                   meta={**prev.meta, "merged": n.name})
            records.append({"layer": n.name, "module": n.meta.get("attention", ""), "mode": mode,
                            "acts_on": "spikes", "rule": f"multiplied into the map '{prev.name}' before it",
                            "error": 0.0})
            continue
        out.append(n)
    return out


def _fold_offset(nodes, i, node, nxt, mode, rec):
    """An additive map on the input current (PFA's additive variant, ``relu(x + A[t])`` right before a
    neuron). Static: the neuron's per-step, per-neuron input offset, with the ReLU as input
    rectification (exact). Portable: the per-channel mean of ``A`` added to the producing synapse's
    bias, the ReLU dropped (the rest recorded as the error)."""
    if not isinstance(nxt, (LIF, MALIF)):
        raise UnsupportedLayer("an additive attention map (PFA's relu(A + x)) must feed a neuron directly",
                               where=f"layer '{node.name}'", hint="place the module between the Conv/BatchNorm "
                                                                  "and its LIF, as PFA's FMNIST model does")
    full = _full(node.scale.astype(np.float64), nxt.in_shape)
    if mode == "static":
        if nxt.input_gain is not None or nxt.input_offset is not None:
            raise UnsupportedLayer("two attention maps meet at one neuron", where=f"layer '{nxt.name}'",
                                   hint="one map per neuron is supported")
        nodes[i + 1] = nxt.replace(input_offset=full.astype(np.float32),
                                   rectify_input=bool(nxt.rectify_input or node.rectify))
        rec.update(acts_on="input current", rule="additive: per-step offset on the neuron input (bias included)"
                   + (", then the ReLU" if node.rectify else ""), consumer=nxt.name, error=0.0)
        return
    prev = nodes[i - 1]
    syn_idx = i - 1 if prev.is_synapse else (i - 2 if isinstance(prev, AvgPool2d) else None)
    if syn_idx is None or not nodes[syn_idx].is_synapse or isinstance(nodes[syn_idx], Dense):
        raise UnsupportedLayer("no conv/linear synapse to fold the additive map into", where=f"layer '{node.name}'",
                               hint="compile with --attention static")
    syn = nodes[syn_idx]
    per_c = full.reshape(full.shape[0], full.shape[1], -1).mean(axis=(0, 2)) if full.ndim > 2 else full.mean(axis=0)
    bias = np.zeros(per_c.shape) if syn.bias is None else syn.bias.astype(np.float64)
    nodes[syn_idx] = syn.replace(bias=(bias + per_c).astype(np.float32))
    approx = np.broadcast_to(per_c.reshape((1, -1) + (1,) * (full.ndim - 2)), full.shape)
    err = float(np.linalg.norm(full - approx) / max(np.linalg.norm(full), 1e-30))
    rec.update(acts_on="input current", rule="additive: per-channel mean added to the producing synapse's bias"
               + ("; ReLU dropped" if node.rectify else ""), consumer=nxt.name, error=err)


def _neurons_reached(graph, name: str) -> list:
    """The neurons a current reaches through Adds of currents (MS-ResNet: the block's sum feeds the next
    block's neuron and, as its shortcut, the next sum); anything else on the way is refused."""
    out, todo = [], list(graph.consumers(name))
    while todo:
        c = graph[todo.pop(0)]
        if isinstance(c, Add):
            todo += list(graph.consumers(c.name))
        elif isinstance(c, (LIF, MALIF)):
            out.append(c)
        else:
            raise UnsupportedLayer(f"an attention map on a current that reaches '{c.name}' ({c.kind})",
                                   where=f"layer '{name}'", hint="a map on a current must reach LIF/MA-SNN neurons "
                                                                 "through adds only")
    return out


def _branch_payloads(graph, n, prod, cons, B, nodes, mode) -> dict:
    """``{conv name: GradedSpikes}``: the convs that a per-position ``B`` on spikes in a branching graph reaches
    as graded payloads of the producer, one payload node per conv (on that edge only), or ``{}``. Static mode;
    each conv reading the scaled spikes reaches one LIF/MA-SNN neuron of its own that carries no other map
    (its other synapse groups -- a shortcut -- stay plain); a neuron two readers of the map reach keeps the
    unrolled fold (its gain would cover two groups)."""
    if mode != "static" or B.ndim != 3 or B.shape[1:] == (1, 1):
        return {}
    reach = {c.name: [x.name for x in _neurons_reached(graph, c.name)] for c in cons}
    convs = [c for c in cons if isinstance(c, Conv2d)]
    if not convs or any(len(reach[c.name]) != 1 for c in convs):
        return {}
    targets = [reach[c.name][0] for c in convs]
    others = {x for c in cons if not isinstance(c, Conv2d) for x in reach[c.name]}
    if len(set(targets)) != len(targets) or set(targets) & others:
        return {}
    for t in targets:
        neu = nodes[t]
        if neu.input_gain is not None or neu.input_offset is not None or neu.gain_groups or neu.more_groups:
            return {}
    scale = np.broadcast_to(B, tuple(n.in_shape)).astype(np.float32)
    return {c.name: GradedSpikes(name=n.name if k == 0 else f"{n.name}@{c.name}", in_shape=tuple(prod.out_shape),
                                 out_shape=tuple(prod.out_shape), scale=scale,
                                 meta={"attention": n.meta.get("attention", ""), "through_pools": []})
            for k, c in enumerate(convs)}


def _with_payload_edges(graph, edges: dict):
    """``graph`` with each ``GradedSpikes`` of ``edges`` (``{synapse name: payload node}``) inserted on the
    edge into its synapse only: the producer's other readers keep its plain spikes."""
    nodes, inputs = [], dict(graph.inputs)
    for n in graph:
        pay = edges.get(n.name)
        if pay is not None:
            inputs[pay.name], inputs[n.name] = tuple(graph.inputs[n.name]), (pay.name,)
            nodes.append(pay)
        nodes.append(n)
    out = Graph(tuple(nodes), inputs, dict(graph.meta))
    out.validate()
    return out


def _fold_branch_spike_map(graph, n, nodes, mode, records, gained_by) -> dict:
    """A static map on spikes in a graph (TCJA under an MS-ResNet block, PFA in a ResNet): ``M ~ g[t] B``;
    ``B`` into the input weights of every synapse reading the scaled spikes, or -- a per-position ``B`` in
    front of convs (PFA) -- as graded spike payloads of the producer on the edge into each conv
    (:func:`_branch_payloads`; the convs keep their shared weights), ``g[t]`` a gain on exactly those synapse
    groups of the neurons their currents reach (``gain_groups``; the bias and the other groups -- the
    shortcut -- not scaled). Only where neither fits (two readers of the map into one neuron) is a conv
    unrolled into a Dense, behind the memory guard. Returns the payload edges ``{conv name: GradedSpikes}``."""
    prod = graph[graph.inputs[n.name][0]]
    if not (prod.is_neuron or isinstance(prod, Input)):
        raise UnsupportedLayer(f"an attention map on spikes after '{prod.name}' ({prod.kind}) in a branching graph",
                               where=f"layer '{n.name}'", hint="put the map right after a spiking layer, in front "
                                                               "of a conv/linear layer")
    cons = [nodes[c] for c in graph.consumers(n.name)]
    bad = next((c for c in cons if not isinstance(c, (Conv2d, Linear, Dense))), None)
    if bad is not None:
        raise UnsupportedLayer(f"an attention map on spikes read by '{bad.name}' ({bad.kind}) in a branching graph",
                               where=f"layer '{n.name}'", hint="feed the scaled spikes to conv/linear layers only")
    g, B, err = rank1(n.scale.astype(np.float64))
    if mode == "portable":
        B, g = B * g.mean(), None
    payloads = _branch_payloads(graph, n, prod, cons, B, nodes, mode)
    resid_max, consumers = 0.0, []
    for syn in cons:
        if syn.name not in payloads:
            new, resid = _fold_into_synapse_inputs(syn, B, False, None, why=f" for the spatial map '{n.name}' "
                                                   "whose readers reach one neuron")
            nodes[syn.name] = new
            resid_max = max(resid_max, resid)
        if g is None:
            continue
        for neu in _neurons_reached(graph, syn.name):
            neu = nodes[neu.name]
            if neu.input_gain is not None or neu.input_offset is not None:
                if gained_by.get(neu.name) != n.name:
                    raise UnsupportedLayer("two attention maps on different synapse groups of one neuron",
                                           where=f"layer '{neu.name}'",
                                           hint="one map per neuron is supported: put a neuron between the maps")
                nodes[neu.name] = neu.replace(gain_groups=tuple(neu.gain_groups) + (syn.name,))
                continue
            gained_by[neu.name] = n.name
            nodes[neu.name] = neu.replace(input_gain=_full(g, neu.in_shape).astype(np.float32), gain_on_bias=False,
                                          rectify_input=False, gain_groups=(syn.name,))
            consumers.append(neu.name)
    rec = {"layer": n.name, "module": n.meta.get("attention", ""), "mode": mode, "acts_on": "spikes",
           "consumer": consumers, "gained_groups": [c.name for c in cons]}
    if mode == "portable":
        M = n.scale.astype(np.float64)
        full_err = float(np.linalg.norm(M - np.broadcast_to(M.mean(axis=0, keepdims=True), M.shape))
                         / max(np.linalg.norm(M), 1e-30))
        rec.update(rule="time-mean folded into the next synapses", error=float(np.hypot(full_err, resid_max)))
    else:
        where = (f"graded spike payloads of '{prod.name}' into {', '.join(repr(c) for c in payloads)} (on those "
                 "edges only; the convs keep their shared weights)" if payloads else
                 f"{', '.join(repr(c.name) for c in cons)} input weights"
                 + (" (a per-position B read by several layers: the conv unrolled into a Dense)"
                    if any(isinstance(nodes[c.name], Dense) and not isinstance(c, Dense) for c in cons) else ""))
        rec.update(rule="rank-1: g[t] gain on the consuming synapse groups only (not their bias, not the other "
                        f"groups), B folded into {where}",
                   rank1_error=err, spatial_error=resid_max, error=float(np.hypot(err, resid_max)))
    records.append(rec)
    return payloads


def _fold_sum_map(graph, n, add, neu, nodes, mode, rec):
    """A current map on an Add of currents right before its neuron (the map after the membrane-level add):
    static, the neuron's gain on its whole input, as in a chain; portable, the per-channel mean folded into
    every synapse group of the sum."""
    full = _full(n.scale.astype(np.float64), neu.in_shape)
    if mode == "static":
        nodes[neu.name] = _combine_gain(neu, full, on_bias=True, rectify=n.rectify)
        rec.update(acts_on="input current", rule="gain table on the neuron input (every group, bias included)",
                   consumer=neu.name, error=0.0)
        return
    if not carries_current(graph, add.name):
        raise UnsupportedLayer("a map on a sum of a current and spikes has no portable form", where=f"layer '{n.name}'",
                               hint="compile with --attention static")
    per_c = full.reshape(full.shape[0], full.shape[1], -1).mean(axis=(0, 2)) if full.ndim > 2 else full.mean(axis=0)
    for syn in current_groups(graph, add.name):
        if len(graph.consumers(syn.name)) > 1:
            raise UnsupportedLayer(f"the map's portable form would scale '{syn.name}', whose current also feeds "
                                   f"{len(graph.consumers(syn.name)) - 1} other layer(s)", where=f"layer '{n.name}'",
                                   hint="compile with --attention static")
        syn = nodes[syn.name]
        shape_w = (-1,) + (1,) * (syn.weight.ndim - 1)
        nodes[syn.name] = syn.replace(weight=(syn.weight * per_c.reshape(shape_w)).astype(np.float32),
                                      bias=None if syn.bias is None else (syn.bias * per_c).astype(np.float32))
    approx = np.broadcast_to(per_c.reshape((1, -1) + (1,) * (full.ndim - 2)), full.shape)
    rec.update(acts_on="input current", consumer=neu.name, rule="per-channel mean folded into every synapse group"
               + ("; ReLU dropped" if n.rectify else ""),
               error=float(np.linalg.norm(full - approx) / max(np.linalg.norm(full), 1e-30)))


def _fold_branch_maps(graph, mode, records):
    """Attention maps in a graph with branches. A map on one synapse group's current (MA-SNN's CSA on the
    residual branch before the membrane-level add) becomes, on every neuron that current reaches, a gain
    table on that group only (``gain_groups``; the shortcut's current stays plain): exact in static mode;
    portable folds its per-channel mean into the synapse, as in a chain. A map on a neuron's whole input
    is a chain's rule. Dynamic MA attention on one group stays a node (the quantizer wires it). Maps on
    spikes: :func:`_fold_branch_spike_map`."""
    nodes = {n.name: n for n in graph}
    drop, changed, gained_by, payload_edges = [], False, {}, {}
    for n in graph:
        if isinstance(n, SpikeAttention):       # dynamic TCJA/PFA: the gate's payloads into one synapse group
            prod = graph[graph.inputs[n.name][0]]
            cons = [graph[c] for c in graph.consumers(n.name)]
            if n.source not in (None, prod.name) or not (prod.is_neuron or isinstance(prod, Input)) or len(cons) != 1 \
                    or not isinstance(cons[0], (Conv2d, Linear, Dense)):
                raise UnsupportedLayer("dynamic attention on spikes in a branching graph must sit right after a "
                                       "spiking layer and feed one conv/linear layer", where=f"layer '{n.name}'",
                                       hint="compile with --attention static")
            reached = _neurons_reached(graph, cons[0].name)
            neu = nodes[reached[0].name]
            if len(reached) != 1 or neu.gain_groups or neu.input_gain is not None:
                raise UnsupportedLayer(f"dynamic attention on spikes whose synapse '{cons[0].name}' reaches "
                                       f"{', '.join(x.name for x in reached)}", where=f"layer '{n.name}'",
                                       hint="one neuron with no other attention map per dynamic map; or compile "
                                            "with --attention static")
            nodes[neu.name] = neu.replace(gain_groups=(cons[0].name,))
            records.append({"layer": n.name, "module": n.meta.get("module", ""), "mode": mode, "acts_on": "spikes",
                            "consumer": [neu.name], "gained_groups": [cons[0].name], "error": 0.0,
                            "rule": f"dynamic: graded payloads into '{cons[0].name}' only; the neuron divides that "
                                    "group's input by 2**8, the other groups plain, delayed by the same window"})
            changed = True
            continue
        if isinstance(n, Scale) and not n.additive and not carries_current(graph, graph.inputs[n.name][0]):
            payload_edges.update(_fold_branch_spike_map(graph, n, nodes, mode, records, gained_by))
            drop.append(n.name)
            continue
        if isinstance(n, MAAttention):
            src = graph[graph.inputs[n.name][0]]
            if n.additive or not src.is_synapse or len(graph.consumers(n.name)) != 1:
                raise UnsupportedLayer("dynamic attention in a branching graph must scale one synapse's current "
                                       "into an add or a neuron", where=f"layer '{n.name}'",
                                       hint="compile with --attention static")
            reached = _neurons_reached(graph, n.name)
            if len(reached) != 1:
                raise UnsupportedLayer(f"dynamic attention on a current that reaches {len(reached)} neurons "
                                       f"({', '.join(x.name for x in reached)}; stacked MS-ResNet blocks)",
                                       where=f"layer '{n.name}'", hint="put a neuron after the block's add, or "
                                                                       "compile with --attention static")
            neu = nodes[reached[0].name]
            if neu.gain_groups or neu.input_gain is not None:
                raise UnsupportedLayer("two attention maps on different synapse groups of one neuron",
                                       where=f"layer '{neu.name}'", hint="one map per neuron is supported")
            nodes[neu.name] = neu.replace(gain_groups=(src.name,))
            records.append({"layer": n.name, "module": n.meta.get("module", ""), "mode": mode,
                            "acts_on": "input current", "consumer": [neu.name], "gained_groups": [src.name],
                            "error": 0.0,
                            "rule": f"dynamic: per-sample gains on the synapse group '{src.name}' only; the other "
                                    "groups plain, delayed by the same window"})
            changed = True
            continue
        if not isinstance(n, Scale):
            continue
        src = graph[graph.inputs[n.name][0]]
        cons = [graph[c] for c in graph.consumers(n.name)]
        rec = {"layer": n.name, "module": n.meta.get("attention", ""), "mode": mode, "acts_on": "input current"}
        if isinstance(src, Add) and not n.additive and len(cons) == 1 and isinstance(cons[0], (LIF, MALIF)):
            _fold_sum_map(graph, n, src, nodes[cons[0].name], nodes, mode, rec)   # a map on the whole sum
            records.append(rec)
            drop.append(n.name)
            continue
        if n.additive or not src.is_synapse or not all(isinstance(c, (Add, LIF, MALIF)) for c in cons):
            raise UnsupportedLayer("this attention map in a branching graph is not folded yet (only maps on one "
                                   "conv/linear layer's current into an add or a neuron)",
                                   where=f"layer '{n.name}'", hint="put the map right after the branch's "
                                   "conv/BatchNorm, or compile the model without it")
        reached = _neurons_reached(graph, n.name)
        full = _full(n.scale.astype(np.float64), src.out_shape)
        if mode == "static":
            for neu in reached:
                neu = nodes[neu.name]
                if neu.input_gain is not None and neu.gain_groups and neu.gain_on_bias:
                    # a further branch map at this neuron (stacked CSA-MS blocks): a group gain of its own
                    more = full.astype(np.float32)[None]
                    nodes[neu.name] = neu.replace(
                        more_groups=tuple(neu.more_groups) + (src.name,), more_rectify=tuple(neu.more_rectify)
                        + (bool(n.rectify),), more_gains=more if neu.more_gains is None
                        else np.concatenate([neu.more_gains, more]))
                    continue
                if neu.input_gain is not None or neu.input_offset is not None:
                    raise UnsupportedLayer("two attention maps of different kinds on synapse groups of one neuron",
                                           where=f"layer '{neu.name}'",
                                           hint="one map per neuron is supported: put a neuron after each "
                                                "attention branch's add")
                nodes[neu.name] = neu.replace(input_gain=full.astype(np.float32), gain_on_bias=True,
                                              rectify_input=bool(n.rectify), gain_groups=(src.name,))
            rec.update(rule=f"gain table on the synapse group '{src.name}' only (bias included); the other "
                            "groups (the shortcut) plain", consumer=[x.name for x in reached], gained_groups=[src.name],
                       error=0.0)
        else:
            if len(graph.consumers(src.name)) > 1:
                raise UnsupportedLayer(f"the map's portable form would scale '{src.name}', whose current also feeds "
                                       "other layers", where=f"layer '{n.name}'",
                                       hint="compile with --attention static")
            per_c = full.reshape(full.shape[0], full.shape[1], -1).mean(axis=(0, 2)) if full.ndim > 2 \
                else full.mean(axis=0)
            approx = np.broadcast_to(per_c.reshape((1, -1) + (1,) * (full.ndim - 2)), full.shape)
            shape_w = (-1,) + (1,) * (src.weight.ndim - 1)
            nodes[src.name] = src.replace(weight=(src.weight * per_c.reshape(shape_w)).astype(np.float32),
                                          bias=None if src.bias is None else (src.bias * per_c).astype(np.float32))
            rec.update(rule=f"per-channel mean folded into the synapse group '{src.name}'"
                            + ("; ReLU dropped" if n.rectify else ""), consumer=[x.name for x in reached],
                       error=float(np.linalg.norm(full - approx) / max(np.linalg.norm(full), 1e-30)))
        records.append(rec)
        drop.append(n.name)
    if not drop and not changed:
        return graph
    out = graph.rewrite([nodes[n.name] for n in graph if n.name not in drop])
    return _with_payload_edges(out, payload_edges) if payload_edges else out


def fold_attention(graph, mode: str = "static"):
    if mode not in ("static", "portable", "dynamic"):
        raise UnsupportedLayer(f"attention mode {mode!r}", where="--attention", hint="use static, portable or dynamic")
    records = []
    if not graph.is_chain():
        graph = _fold_branch_maps(graph, mode, records)
    nodes = list(graph.nodes)
    for k, node in enumerate(nodes):   # dynamic PFA after an average pool: scale the pre-pool spikes
        if isinstance(node, SpikeAttention) and node.source is None and k > 0 and isinstance(nodes[k - 1], AvgPool2d):
            pool = nodes[k - 1]
            if _square_pool(pool):
                nodes[k - 1:k + 1] = [node.replace(in_shape=pool.in_shape, out_shape=pool.in_shape,
                                                   pool=tuple(pool.kernel)), pool]
                records.append({"layer": node.name, "module": node.meta.get("module"), "mode": mode,
                                "acts_on": "spikes", "rule": "dynamic: graded-spike payloads on the pre-pool spikes "
                                "(the map repeated over each pooling window)", "error": 0.0})
    nodes = _merge_spike_maps(nodes, records, mode)
    i = 0
    while i < len(nodes):
        node = nodes[i]
        if not isinstance(node, Scale):
            i += 1
            continue
        nxt = nodes[i + 1] if i + 1 < len(nodes) else None
        M = node.scale.astype(np.float64)
        rec = {"layer": node.name, "module": node.meta.get("attention", ""), "mode": mode}
        if node.additive:                                       # relu(x + A) on the input current
            _fold_offset(nodes, i, node, nxt, mode, rec)
            del nodes[i]
            records.append(rec)
            continue
        if isinstance(nxt, (LIF, MALIF)):                       # map on input current
            full = _full(M, nxt.in_shape)
            if mode == "static":
                nodes[i + 1] = _combine_gain(nxt, full, on_bias=True, rectify=node.rectify)
                rec.update(acts_on="input current", rule="gain table on the neuron input (bias included)",
                           consumer=nxt.name, error=0.0)
            else:
                prev = nodes[i - 1]
                syn_idx = i - 1 if prev.is_synapse else (i - 2 if isinstance(prev, AvgPool2d) else None)
                if syn_idx is None or not nodes[syn_idx].is_synapse:
                    raise UnsupportedLayer("no synapse to fold the map into", where=f"layer '{node.name}'")
                syn = nodes[syn_idx]
                per_c = full.reshape(full.shape[0], full.shape[1], -1).mean(axis=(0, 2)) if full.ndim > 2 \
                    else full.mean(axis=0)
                approx = np.broadcast_to(per_c.reshape((1, -1) + (1,) * (full.ndim - 2)), full.shape)
                shape_w = (-1,) + (1,) * (syn.weight.ndim - 1)
                nodes[syn_idx] = syn.replace(weight=(syn.weight * per_c.reshape(shape_w)).astype(np.float32),
                                             bias=None if syn.bias is None else (syn.bias * per_c).astype(np.float32))
                err = float(np.linalg.norm(full - approx) / max(np.linalg.norm(full), 1e-30))
                rec.update(acts_on="input current", rule="per-channel mean folded into the producing synapse"
                           + ("; ReLU dropped" if node.rectify else ""), consumer=nxt.name, error=err)
            del nodes[i]
            records.append(rec)
            continue
        # map on spikes: find the consuming synapse and its neuron
        j, through_pool, flat_shape = i + 1, False, None
        while j < len(nodes) and isinstance(nodes[j], (AvgPool2d, Flatten)):
            if isinstance(nodes[j], AvgPool2d):
                through_pool = True
            else:
                flat_shape = tuple(nodes[j].in_shape)
            j += 1
        if j >= len(nodes) or not nodes[j].is_synapse or j + 1 >= len(nodes) or \
                not isinstance(nodes[j + 1], (LIF, MALIF)):
            raise UnsupportedLayer("an attention map on spikes must feed a conv/linear layer and its neuron",
                                   where=f"layer '{node.name}'", hint="place attention before a synaptic layer")
        g, B, err = rank1(M)
        if mode == "portable":
            B, g = B * g.mean(), None
        site = None
        if isinstance(nodes[j], Conv2d) and j == i + 1 and B.ndim == 3 and B.shape[1:] != (1, 1) \
                and mode == "static":
            site = _payload_site(nodes, i)
        if site is not None:          # B as graded payloads of the producer: the conv stays a conv
            k, pools = site
            Bp = _through_pools(np.broadcast_to(B, tuple(node.in_shape)).astype(np.float64), pools)
            producer = nodes[k]
            nodes.insert(k + 1, GradedSpikes(name=node.name, in_shape=tuple(producer.out_shape),
                                             out_shape=tuple(producer.out_shape), scale=Bp.astype(np.float32),
                                             meta={"attention": node.meta.get("attention", ""),
                                                   "through_pools": [p.name for p in pools]}))
            i, j = i + 1, j + 1
            syn, resid = nodes[j], 0.0
            where = (f"graded spike payloads of '{producer.name}'"
                     + (" (repeated over each pooling window)" if pools else "") + f" into '{syn.name}'")
        else:
            syn, resid = _fold_into_synapse_inputs(nodes[j], B, through_pool, flat_shape)
            nodes[j] = syn
            where = f"'{syn.name}' input weights"
        if g is not None:
            nodes[j + 1] = _combine_gain(nodes[j + 1], _full(g, nodes[j + 1].in_shape), on_bias=False,
                                         rectify=False)
        if mode == "portable":
            full_err = float(np.linalg.norm(M - np.broadcast_to(M.mean(axis=0, keepdims=True), M.shape))
                             / max(np.linalg.norm(M), 1e-30))
            rec.update(acts_on="spikes", rule="time-mean folded into the next synapse", consumer=nodes[j + 1].name,
                       error=float(np.hypot(full_err, resid)))
        else:
            rec.update(acts_on="spikes", rule=f"rank-1: g[t] gain on the consuming neuron, B folded into {where}",
                       consumer=nodes[j + 1].name,
                       rank1_error=err, spatial_error=resid, error=float(np.hypot(err, resid)))
        del nodes[i]
        records.append(rec)
    if mode == "portable":   # MA-SNN's reset-to-threshold cell has no stock Lava equivalent
        for k, n in enumerate(nodes):
            if isinstance(n, MALIF) and n.per_channel:
                raise UnsupportedLayer("an MA-SNN cell with per-channel parameters has no stock Lava LIF form",
                                       where=f"layer '{n.name}'", hint="compile with --attention static or dynamic")
            if isinstance(n, MALIF) and n.beta != 0:
                raise UnsupportedLayer(f"an MA-SNN cell with beta={n.beta:g} has no stock Lava LIF form",
                                       where=f"layer '{n.name}'", hint="compile with --attention static or dynamic")
            if isinstance(n, MALIF):
                nodes[k] = LIF(name=n.name, in_shape=n.in_shape, out_shape=n.out_shape,
                               tau=1.0 / (1.0 - n.alpha), decay_input=False, v_threshold=n.v_threshold,
                               v_reset=0.0, meta={**n.meta, "portable": "MA cell: reset to 0 instead of to threshold"})
                records.append({"layer": n.name, "module": "MALIFNode", "mode": mode, "acts_on": "neuron",
                                "rule": "stock LIF with the same leak; reset to 0 instead of to the threshold "
                                        "(drops the alpha*V_th carried after a spike)", "error": None})
    return with_record(graph, "fold_attention", {"mode": mode, "maps": records}, nodes)
