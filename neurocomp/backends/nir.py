"""IR -> NIR graph (``nir`` 1.0.8 node types), the one place where neurocomp's NIR convention lives.

Every node is a standard NIR node that a foreign consumer can run; what NIR cannot say exactly is
carried in node metadata under the ``neurocomp.`` prefix, so that re-importing with
``neurocomp.frontends.nir`` gives back the same IR:

| IR node | NIR node | ``neurocomp.*`` metadata |
|---|---|---|
| Conv2d / Linear | Conv2d / Affine (Linear when bias-free) | ``has_bias`` |
| BatchNorm (C,H,W) | 1x1 Conv2d with a diagonal kernel: the folded scale, and the shift as bias | ``op=batchnorm``, mean, var, weight, bias, eps |
| BatchNorm (N,) | Affine with a diagonal weight | same |
| LIF (SpikingJelly) | LIF with ``tau = tau_steps * dt``, ``r`` (1, or tau for undecayed input), ``v_leak = v_reset`` | ``tau_steps``, ``decay_input``, ``reset`` (hard/soft), ``threshold_rule`` (``>=``) |
| IF | IF(r=1) | ``reset``, ``threshold_rule`` |
| SumPool2d, AvgPool2d, Flatten, Threshold | the same NIR node | ``lowered_from`` where a MaxPool became SumPool -> Threshold |
| Scale (static attention map) | Scale with the map's mean over time (an additive map: Scale 1, NIR has no elementwise offset) | ``op=attention``, ``scale_map`` (the full calibrated ``[T, ...]`` map), ``rectify``, ``additive`` (only when set), ``meta`` (module type) |
| MALIF (MA-SNN cell) | LIF with the same per-step leak, ``v_reset = v_threshold`` | ``reset=to_threshold``, ``alpha``, ``beta``, ``threshold_rule`` |
| Voting (VotingLayer) | Linear with the group-mean matrix (``1/k`` per group member) | ``op=voting``, ``voting_size`` |
| Readout (non-spiking head) | I (integrator) with ``r = 1/dt``: its state at the end of the window is the summed current | ``kind=readout`` |
| Add (of currents or spikes) | Scale of ones; its inputs are its edges (NIR sums the edges into a node) | ``kind=add``, ``inputs`` (the IR's order, JSON) |
| Concat (channels or features) | Scale of ones over the output, fed by one placement part per input (below) | ``kind=concat`` |
| (a Concat's part ``CAT.partK``) | 1x1 Conv2d of a selection kernel (``(C, H, W)``) or Linear of a selection matrix (vectors): input ``K``'s channels at their offset, zeros elsewhere | ``op=concat_part``, ``concat`` (the join's name), ``part`` (K) |

A graph with branches is written edge for edge: a layer read by several others has one edge to each,
and every node name is the IR layer's. NIR has no concatenation node; the placement parts above
express one in standard nodes exactly (a foreign consumer runs it as written: each part copies its
input's values into its channels, the Scale's summed edges join them), and neurocomp reads the parts
back as the one Concat.

Graph metadata: ``neurocomp.dt`` (seconds per step), ``neurocomp.timesteps``, ``neurocomp.encoding``.
NIR fires on ``v > threshold``; SpikingJelly on ``v >= threshold``: the ``threshold_rule`` key
says which one the numbers mean.
"""
from __future__ import annotations

import json

import nir
import numpy as np

from neurocomp.errors import UnsupportedLayer
from neurocomp.ir import (Add, Concat, MAAttention, MALIF, Scale, SpikeAttention, AvgPool2d, BatchNorm, Conv2d, Flatten, Input, LIF, Linear,
                          Readout, SumPool2d, Threshold, Voting)

from neurocomp.ir import DEFAULT_DT
PREFIX = "neurocomp."


def _bn_affine(node: BatchNorm):
    k = (node.weight if node.weight is not None else 1.0) / np.sqrt(node.var.astype(np.float64) + node.eps)
    shift = (node.bias if node.bias is not None else 0.0) - node.mean * k
    return k.astype(np.float32), np.asarray(shift, dtype=np.float32)


def _full(shape, value):
    return np.full(tuple(shape), float(value), dtype=np.float64)   # float64: thresholds round-trip exactly


def _time_mean_scale(static_map, shape, md) -> nir.Scale:
    """A dynamic attention module for foreign consumers: its calibrated map's mean over time (ones
    without a calibration); the full map travels in the metadata."""
    if static_map is None:
        return nir.Scale(scale=np.ones(shape, dtype=np.float64), metadata=md)
    md[PREFIX + "static_map"] = np.asarray(static_map)
    sm = np.asarray(static_map, np.float64).mean(axis=0)
    mean_t = np.broadcast_to(sm.reshape(sm.shape + (1,) * (len(shape) - sm.ndim)), shape)
    return nir.Scale(scale=np.ascontiguousarray(mean_t, dtype=np.float64), metadata=md)


def _input(node, shape, md, dt):
    return nir.Input(input_type={"input": np.array(shape)}, metadata=md)


def ungroup(weight: np.ndarray, groups: int) -> np.ndarray:
    """A grouped conv's ``(C_out, C_in/groups, kH, kW)`` weight as the block-diagonal ``(C_out, C_in, kH, kW)``
    weight of the same convolution with ``groups=1`` (zeros between the groups)."""
    if groups == 1:
        return weight
    co, ci_g = weight.shape[:2]
    full = np.zeros((co, ci_g * groups) + weight.shape[2:], weight.dtype)
    per = co // groups
    for g in range(groups):
        full[g * per:(g + 1) * per, g * ci_g:(g + 1) * ci_g] = weight[g * per:(g + 1) * per]
    return full


def _conv2d(node, shape, md, dt):
    """A grouped conv is written block-diagonal with ``groups=1`` (the nir library's type inference
    ignores ``groups``); ``groups`` in the metadata lets neurocomp's reader take the blocks back."""
    md[PREFIX + "has_bias"] = node.bias is not None
    if int(node.groups) != 1:
        md[PREFIX + "groups"] = int(node.groups)
    bias = node.bias if node.bias is not None else np.zeros(node.weight.shape[0], np.float32)
    return nir.Conv2d(input_shape=tuple(shape[1:]), weight=ungroup(node.weight, int(node.groups)),
                      stride=tuple(node.stride), padding=tuple(node.padding), dilation=tuple(node.dilation),
                      groups=1, bias=bias, metadata=md)


def _linear(node, shape, md, dt):
    if node.bias is None:
        return nir.Linear(weight=node.weight, metadata=md)
    return nir.Affine(weight=node.weight, bias=node.bias, metadata=md)


def _batchnorm(node, shape, md, dt):
    md.update({PREFIX + "op": "batchnorm", PREFIX + "mean": node.mean, PREFIX + "var": node.var,
               PREFIX + "eps": float(node.eps)})
    if node.weight is not None:
        md[PREFIX + "weight"] = node.weight
    if node.bias is not None:
        md[PREFIX + "bias"] = node.bias
    k, shift = _bn_affine(node)
    if len(shape) == 3:
        # a 1x1 conv with a diagonal kernel (NIR's type inference ignores groups)
        return nir.Conv2d(input_shape=tuple(shape[1:]), weight=np.diag(k)[:, :, None, None], stride=1,
                          padding=0, dilation=1, groups=1, bias=shift, metadata=md)
    return nir.Affine(weight=np.diag(k), bias=shift, metadata=md)


def _sumpool2d(node, shape, md, dt):
    return nir.SumPool2d(kernel_size=np.array(node.kernel), stride=np.array(node.stride),
                         padding=np.array(node.padding), metadata=md)


def _avgpool2d(node, shape, md, dt):
    return nir.AvgPool2d(kernel_size=np.array(node.kernel), stride=np.array(node.stride),
                         padding=np.array(node.padding), metadata=md)


def _threshold(node, shape, md, dt):
    return nir.Threshold(threshold=_full(shape, node.threshold), metadata=md)


def _flatten(node, shape, md, dt):
    return nir.Flatten(input_type={"input": np.array(shape)}, start_dim=0, end_dim=-1, metadata=md)


def _scale(node, shape, md, dt):
    # A foreign consumer runs the time-invariant gains (the map's mean over time); neurocomp
    # reads back the full calibrated map [T, ...] from the metadata.
    md.update({PREFIX + "op": "attention", PREFIX + "scale_map": np.asarray(node.scale),
               PREFIX + "rectify": bool(node.rectify)})
    if node.additive:     # relu(x + map): no NIR node adds an elementwise offset; a foreign consumer gets 1
        md[PREFIX + "additive"] = True
        return nir.Scale(scale=np.ones(shape, dtype=np.float64), metadata=md)
    mean_t = np.broadcast_to(np.asarray(node.scale).mean(axis=0).reshape(
        np.asarray(node.scale).shape[1:] + (1,) * (len(shape) - (node.scale.ndim - 1))), shape)
    return nir.Scale(scale=np.ascontiguousarray(mean_t, dtype=np.float64), metadata=md)


def _ma_attention(node, shape, md, dt):
    # dynamic MA attention: foreign consumers get the calibrated time-mean map as a Scale;
    # neurocomp reads the module back from the metadata (weights under neurocomp.state.*)
    md.update({PREFIX + "op": "dynamic_attention", PREFIX + "parts": node.parts,
               PREFIX + "module": node.meta.get("module", ""),
               PREFIX + "config": json.dumps(node.meta.get("config", {}), sort_keys=True)})
    for f in MAAttention.STATE_NAMES:
        if getattr(node, f) is not None:
            md[PREFIX + "state." + f] = np.asarray(getattr(node, f))
    if node.state_flat is not None:   # PFA's additive variant: its weights packed; a foreign consumer gets 1
        md.update({PREFIX + "state_flat": np.asarray(node.state_flat),
                   PREFIX + "state_spec": json.dumps([[k, list(v)] for k, v in node.state_spec])})
        if node.static_map is not None:
            md[PREFIX + "static_map"] = np.asarray(node.static_map)
        return nir.Scale(scale=np.ones(shape, dtype=np.float64), metadata=md)
    return _time_mean_scale(node.static_map, shape, md)


def _spike_attention(node, shape, md, dt):
    # dynamic TCJA/PFA: foreign consumers get the calibrated time-mean map as a Scale
    md.update({PREFIX + "op": "dynamic_spike_attention", PREFIX + "module": node.meta.get("module", ""),
               PREFIX + "config": json.dumps(node.meta.get("config", {}), sort_keys=True),
               PREFIX + "state_flat": np.asarray(node.state_flat),
               PREFIX + "state_spec": json.dumps([[k, list(v)] for k, v in node.state_spec]),
               PREFIX + "source": node.source or "", PREFIX + "pool": np.asarray(node.pool)})
    return _time_mean_scale(node.static_map, shape, md)


def _malif(node, shape, md, dt):
    # MA-SNN's cell (reset to threshold, then leak alpha) has no NIR node: the closest standard
    # one is a LIF with the same per-step leak; the exact cell is described in the metadata.
    # Per-channel v_threshold / alpha (learned per channel) are per-neuron NIR parameters, and the
    # per-channel alpha is the metadata's array.
    md.update({PREFIX + "threshold_rule": ">=", PREFIX + "reset": "to_threshold",
               PREFIX + "alpha": (np.asarray(node.alpha, np.float64) if isinstance(node.alpha, np.ndarray)
                                  else float(node.alpha)), PREFIX + "beta": (np.asarray(node.beta, np.float64) if isinstance(node.beta, np.ndarray)
                                                                    else float(node.beta))})
    if not node.per_channel:
        tau = dt / max(1e-12, 1.0 - float(node.alpha))
        return nir.LIF(tau=_full(shape, tau), r=_full(shape, tau / dt), v_leak=_full(shape, 0.0),
                       v_threshold=_full(shape, node.v_threshold), v_reset=_full(shape, node.v_threshold),
                       metadata=md)
    tau = dt / np.maximum(1e-12, 1.0 - np.array(node.channel_values("alpha")))
    vth = np.ascontiguousarray(node.channel_values("v_threshold"), np.float64)
    return nir.LIF(tau=tau, r=tau / dt, v_leak=_full(shape, 0.0), v_threshold=vth, v_reset=vth.copy(), metadata=md)


def _lif(node, shape, md, dt):
    md[PREFIX + "threshold_rule"] = ">="
    md[PREFIX + "reset"] = "soft" if node.v_reset is None else "hard"
    v_reset = 0.0 if node.v_reset is None else float(node.v_reset)
    if node.tau is None:
        return nir.IF(r=_full(shape, 1.0), v_threshold=_full(shape, node.v_threshold),
                      v_reset=_full(shape, v_reset), metadata=md)
    md[PREFIX + "tau_steps"] = float(node.tau)
    md[PREFIX + "decay_input"] = bool(node.decay_input)
    r = 1.0 if node.decay_input else float(node.tau)
    return nir.LIF(tau=_full(shape, node.tau * dt), r=_full(shape, r), v_leak=_full(shape, v_reset),
                   v_threshold=_full(shape, node.v_threshold), v_reset=_full(shape, v_reset), metadata=md)


def _voting(node, shape, md, dt):
    # the vote is linear: a foreign consumer runs the group-mean matrix; neurocomp reads the vote back
    k, n_out = int(node.voting_size), int(node.out_shape[0])
    md.update({PREFIX + "op": "voting", PREFIX + "voting_size": k})
    return nir.Linear(weight=np.kron(np.eye(n_out), np.full((1, k), 1.0 / k)).astype(np.float32), metadata=md)


def _readout(node, shape, md, dt):
    # NIR's integrator (dv/dt = r * input) with r = 1/dt adds one step's current per step: its state at the
    # end of a window is the summed current whose argmax is the class
    return nir.I(r=_full(shape, 1.0 / dt), metadata=md)


def _add(node, shape, md, dt):
    # NIR sums every edge into a node, so an add is a unit scale of its summed edges (their IR order kept)
    return nir.Scale(scale=np.ones(shape, np.float32), metadata=md)


def _concat(node, shape, md, dt):
    # NIR has no concatenation: the join is a unit scale of the summed edges from its placement parts
    # (_concat_parts), each of which puts one input's channels at their offset
    return nir.Scale(scale=np.ones(tuple(node.out_shape), np.float32), metadata=md)


def _concat_parts(node, in_shapes, taken) -> list:
    """``[(name, nir node)]``: per input of a Concat, the standard NIR map placing its channels at their
    offset in the output (zeros elsewhere): a 1x1 Conv2d of a selection kernel on ``(C, H, W)``, a Linear
    of a selection matrix on ``(N,)``. Their outputs sum, in the concat's Scale, to the concatenation."""
    total, parts, off = int(node.out_shape[0]), [], 0
    for i, shape in enumerate(in_shapes):
        c = int(shape[0])
        sel = np.zeros((total, c), np.float32)
        sel[off:off + c] = np.eye(c, dtype=np.float32)
        md = {PREFIX + "op": "concat_part", PREFIX + "concat": node.name, PREFIX + "part": i}
        if len(shape) == 3:
            part = nir.Conv2d(input_shape=tuple(shape[1:]), weight=sel[:, :, None, None], stride=1, padding=0,
                              dilation=1, groups=1, bias=np.zeros(total, np.float32), metadata=md)
        elif len(shape) == 1:
            part = nir.Linear(weight=sel, metadata=md)
        else:
            raise UnsupportedLayer(f"a concat of {len(shape)}-D tensors has no NIR form", where=f"layer '{node.name}'",
                                   hint="concatenate (C, H, W) feature maps or vectors")
        name = f"{node.name}.part{i}"
        while name in taken:
            name += "_"
        taken.add(name)
        parts.append((name, part))
        off += c
    return parts


# One NIR writer per IR node class (looked up along the class's MRO, so MALIF finds its own entry
# before LIF's); the quantized-only nodes (Dense, GradedSpikes, CubaLIF) have no NIR form.
WRITERS = {Add: _add, Concat: _concat, Input: _input, Conv2d: _conv2d, Linear: _linear, BatchNorm: _batchnorm, SumPool2d: _sumpool2d,
           AvgPool2d: _avgpool2d, Threshold: _threshold, Flatten: _flatten, Scale: _scale,
           MAAttention: _ma_attention, SpikeAttention: _spike_attention, MALIF: _malif, LIF: _lif,
           Voting: _voting, Readout: _readout}


def node_to_nir(node, dt: float = DEFAULT_DT):
    md = {PREFIX + "kind": node.kind}
    if node.meta:
        md[PREFIX + "meta"] = json.dumps(node.meta, sort_keys=True)
    for cls in type(node).__mro__:
        write = WRITERS.get(cls)
        if write is not None:
            return write(node, tuple(node.in_shape), md, dt)
    raise NotImplementedError(f"no NIR form for '{node.kind}' (layer '{node.name}')")


def graph_to_nir(graph, dt: float = DEFAULT_DT) -> nir.NIRGraph:
    nodes = {n.name: node_to_nir(n, dt) for n in graph}
    out_shape = np.array(graph.output_node.out_shape)
    nodes["output"] = nir.Output(output_type={"output": out_shape})
    edges, taken = [], set(nodes)
    for n in graph:
        srcs = graph.inputs[n.name]
        if len(set(srcs)) < len(srcs) and not isinstance(n, Concat):
            raise UnsupportedLayer(f"an add of the same tensor '{srcs[0]}' twice has no NIR form (one edge per pair "
                                   "of nodes)", where=f"layer '{n.name}'", hint="scale the tensor by 2 instead")
        if isinstance(n, Add):
            nodes[n.name].metadata[PREFIX + "inputs"] = json.dumps(list(srcs))
        if isinstance(n, Concat):
            for src, (part, pnode) in zip(srcs, _concat_parts(n, [graph[s].out_shape for s in srcs], taken)):
                nodes[part] = pnode
                edges += [(src, part), (part, n.name)]
            continue
        edges += [(src, n.name) for src in srcs]
    edges.append((graph.output_node.name, "output"))
    meta = {PREFIX + "dt": float(dt), PREFIX + "timesteps": int(graph.meta.get("timesteps", 0)),
            PREFIX + "encoding": str(graph.meta.get("encoding", "")), PREFIX + "threshold_rule": ">="}
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)
    except ValueError as e:             # the nir library's type inference (it ignores a conv's groups)
        raise UnsupportedLayer(f"the nir library cannot type this graph: {str(e)[:200]}", where="model.nir",
                               hint="a neurocomp bug in writing model.nir: please report it with the model") from None


def write_nir(graph, path: str, dt: float = DEFAULT_DT) -> None:
    nir.write(path, graph_to_nir(graph, dt))
