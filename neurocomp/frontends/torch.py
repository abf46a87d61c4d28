"""torch / SpikingJelly module -> float IR graph.

The walk visits ``nn.Sequential`` containers depth-first (nesting allowed) and turns each leaf
into IR nodes named after its module path (``"features.3"``), the name it keeps to the report.
Every unsupported module is collected and reported at once, each with its path and a hint.
SpikingJelly's per-step containers (``SeqToANNContainer``, ``MultiStepContainer``, in both the
``activation_based`` and the ``clock_driven`` API) are their children in sequence, each child seeing
one step; a plain ``nn.Flatten(start_dim=2)`` outside them flattens the per-sample dims of
``[T, B, ...]`` (the IR's ``Flatten``). ``clock_driven`` multi-step neurons read as their
``activation_based`` equivalents; a ParametricLIFNode's learned tau is frozen (``1 / sigmoid(w)``).

The model ends in a spiking layer (class: argmax of spike counts) or in a head: ``neurocomp.nn.Readout``
after the last Linear (an IR ``Readout``: the current summed over T), or SpikingJelly's ``VotingLayer``
(an IR ``Voting`` and a ``Readout`` named ``<vote>_readout``; after a Linear read out, the vote comes
before the readout, the readout being the identity per step).

MaxPool over spikes becomes ``SumPool2d -> Threshold(0)`` (an OR, exact for binary spikes); in a
branching model SEW-ResNet's AND / IAND of spikes become identity synapses (+1, -1 when negated) into a
``Threshold`` (:func:`_neuron_logic`);
MaxPool over anything else is refused. Dropout and Identity vanish (inference no-ops). The
``neurocomp.nn`` modules are lowered by :func:`add_attention` (a calibrated ``StaticMap`` becomes a
``Scale``; with ``attention_mode="dynamic"`` the attention modules become attention nodes).

:func:`run_torch_model` runs such a model time-major, the one place that does (calibration, the
cross-check's torch stages, training and fine-tuning), optionally recording per-layer spikes.
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
import torch.nn as tnn


from neurocomp.errors import UnsupportedLayer, UnsupportedLayers, BadCheckpoint
from neurocomp.frontends.graphmodule import GraphModule
from neurocomp.frontends.modules import PER_STEP_CONTAINERS, plif_tau, type_name
from neurocomp.ir import (DEFAULT_DT, Add, Concat, Graph, Input, Linear, Conv2d, SumPool2d, AvgPool2d, BatchNorm, Flatten, LIF,
                          MAAttention, MALIF, Readout, Scale, SpikeAttention, Threshold, Voting)
from neurocomp.ir.nodes import identity_synapse

RECTIFIED = {"TCSA", "TCA", "TSA", "CSA", "TA", "CA", "SA", "PFA"}   # attention modules ending in ReLU
ATTENTION = RECTIFIED | {"TCJA", "TLA", "CLA"}                          # the neurocomp.nn attention modules


def rectifies(module) -> bool:
    """Whether a neurocomp.nn attention module ends in ReLU: MA-SNN's and PFA's do, unless built with
    ``relu=False`` (``TA(..., relu=False)``, SpikingJelly's TemporalWiseAttention)."""
    return type(module).__name__ in RECTIFIED and bool((getattr(module, "config", None) or {}).get("relu", True))


def is_additive(module) -> bool:
    """Whether a neurocomp.nn module adds its map to its input (PFA's additive FMNIST variant)."""
    return type(module).__name__ == "PFA" and bool((getattr(module, "config", None) or {}).get("additive", False))


_CONTAINERS = (tnn.Sequential, *PER_STEP_CONTAINERS)   # SpikingJelly's containers are Sequentials too


def _np(t):
    return None if t is None else t.detach().cpu().double().numpy().astype(np.float32)


def _pair(v):
    return tuple(int(x) for x in v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _pool_out(size, k, s, p, d=1):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def iter_leaves(module, prefix=""):
    """Yield ``(path, module)`` for the leaves of nested sequential containers, in forward order."""
    for path, leaf, _ in walk_leaves(module, prefix):
        yield path, leaf


def walk_leaves(module, prefix="", per_step=False):
    """Yield ``(path, module, per_step)`` for the leaves of nested sequential containers, in forward
    order; ``per_step``: the leaf sits in a per-step container (it sees one step, not ``[T, B, ...]``).
    A :class:`~neurocomp.frontends.graphmodule.GraphModule` yields its layers' leaves in the order of its ops."""
    if isinstance(module, GraphModule):
        for op in module.ops:
            if op["op"] == "module":
                yield from walk_leaves(module.layer(op["name"]), f"{prefix}.{op['name']}" if prefix else op["name"],
                                       per_step)
        return
    if isinstance(module, _CONTAINERS):
        inner = per_step or isinstance(module, PER_STEP_CONTAINERS)
        for name, child in module.named_children():
            yield from walk_leaves(child, f"{prefix}.{name}" if prefix else name, inner)
    else:
        yield prefix or "module", module, per_step


class _Builder:
    def __init__(self, input_shape, timesteps=None):
        self.timesteps = timesteps
        self.per_step = False          # the current leaf sits in a per-step container
        self.nodes = [Input(name="input", in_shape=tuple(input_shape), out_shape=tuple(input_shape))]
        self.problems: list[UnsupportedLayer] = []

    @property
    def shape(self):
        return tuple(self.nodes[-1].out_shape)

    @property
    def carries_spikes(self) -> bool:
        """Whether the current tensor is binary spikes (the output of a neuron or a spike input)."""
        last = self.nodes[-1]
        if last.is_neuron:
            return not last.graded_output
        return isinstance(last, Input) and last.meta.get("binary", False)

    def refuse(self, path, module, message, hint):
        self.problems.append(UnsupportedLayer(f"{type(module).__name__}: {message}", where=f"layer '{path}'",
                                              hint=hint))

    def add(self, node):
        self.nodes.append(node)


def _add_leaf(b: _Builder, path: str, m) -> None:
    kind = type_name(m)
    shape = b.shape
    if kind is None:
        cls = type(m)
        if cls.__module__.startswith("spikingjelly.clock_driven") and cls.__name__ in SINGLE_STEP_NEURONS:
            b.refuse(path, m, "a single-step clock_driven neuron sees the whole [T, B, ...] tensor at once",
                     f"use its multi-step version, clock_driven.neuron.{SINGLE_STEP_NEURONS[cls.__name__]}")
            return
        b.refuse(path, m, "not a supported layer",
                 "use SpikingJelly layers (Conv2d, Linear, BatchNorm, MaxPool2d, AvgPool2d, Flatten, Dropout, "
                 "LIFNode, IFNode, ParametricLIFNode, VotingLayer; clock_driven MultiStepLIFNode, MultiStepIFNode, "
                 "MultiStepParametricLIFNode, in Sequential / SeqToANNContainer / MultiStepContainer) or "
                 "neurocomp.nn modules (Readout for a non-spiking head)")
        return
    short = kind.split(".")[-1]
    if short in VANISH:
        return
    if kind.startswith("neurocomp.nn."):
        add_attention(b, path, m)
        return
    read = LEAF_READERS.get(short)
    if read is None:  # pragma: no cover - modules.MODULES and LEAF_READERS agree
        b.refuse(path, m, "no lowering", "report this")
        return
    read(b, path, m, shape)


def _read_conv2d(b: _Builder, path: str, m, shape) -> None:
    if len(shape) != 3:
        b.refuse(path, m, f"expects a (C, H, W) input but gets shape {shape}", "check the layer order")
        return
    if isinstance(m.padding, str) or m.padding_mode != "zeros":
        b.refuse(path, m, f"padding {m.padding!r} / padding_mode {m.padding_mode!r}",
                 "use integer zero padding")
        return
    k, s, p, d = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding), _pair(m.dilation)
    if shape[0] != m.in_channels:
        b.refuse(path, m, f"expects {m.in_channels} input channels but gets {shape[0]}", "check the model")
        return
    out = (m.out_channels, _pool_out(shape[1], k[0], s[0], p[0], d[0]), _pool_out(shape[2], k[1], s[1], p[1], d[1]))
    b.add(Conv2d(name=path, in_shape=shape, out_shape=out, weight=_np(m.weight), bias=_np(m.bias), stride=s,
                 padding=p, dilation=d, groups=int(m.groups), meta={"module": type(m).__name__}))


def _read_linear(b: _Builder, path: str, m, shape) -> None:
    if len(shape) != 1 or shape[0] != m.in_features:
        b.refuse(path, m, f"expects ({m.in_features},) input but gets {shape}", "add a Flatten before it")
        return
    b.add(Linear(name=path, in_shape=shape, out_shape=(m.out_features,), weight=_np(m.weight),
                 bias=_np(m.bias), meta={"module": type(m).__name__}))


def _read_batchnorm(b: _Builder, path: str, m, shape, one_d: bool = False) -> None:
    if shape[0] != m.num_features or (one_d and len(shape) != 1):
        b.refuse(path, m, f"expects {m.num_features} features but gets shape {shape}", "check the model")
        return
    if not m.track_running_stats or m.running_mean is None:
        b.refuse(path, m, "has no running statistics", "train with track_running_stats=True")
        return
    b.add(BatchNorm(name=path, in_shape=shape, out_shape=shape, mean=_np(m.running_mean),
                    var=_np(m.running_var), weight=_np(m.weight) if m.affine else None,
                    bias=_np(m.bias) if m.affine else None, eps=float(m.eps)))


def _pool_geometry(b: _Builder, path: str, m, shape):
    """(kernel, stride, padding, out shape) of a 2-D pool, or None when refused."""
    if len(shape) != 3:
        b.refuse(path, m, f"expects a (C, H, W) input but gets {shape}", "check the layer order")
        return None
    k = _pair(m.kernel_size)
    s = _pair(m.stride if m.stride is not None else m.kernel_size)
    p = _pair(m.padding)
    if m.ceil_mode:
        b.refuse(path, m, "ceil_mode=True", "use ceil_mode=False")
        return None
    return k, s, p, (shape[0], _pool_out(shape[1], k[0], s[0], p[0]), _pool_out(shape[2], k[1], s[1], p[1]))


def _read_maxpool2d(b: _Builder, path: str, m, shape) -> None:
    geometry = _pool_geometry(b, path, m, shape)
    if geometry is None:
        return
    k, s, p, out = geometry
    if _pair(m.dilation) != (1, 1):
        b.refuse(path, m, "dilation != 1", "use an undilated pool")
        return
    moved = _take_spatially_constant_scale(b)
    if moved is not None:
        # max(a * s) = a * max(s) for a >= 0 constant over the window: pool first, scale after
        _add_leaf(b, path, m)
        b.add(moved.replace(in_shape=b.shape, out_shape=b.shape))
        return
    if not b.carries_spikes:
        b.refuse(path, m, "max pooling of a non-spike tensor (e.g. membrane current) cannot run on "
                 "Loihi-style cores", "place MaxPool2d after the spiking neuron, or use AvgPool2d")
        return
    # Max over binary spikes == (sum over the window > 0), exactly.
    b.add(SumPool2d(name=path, in_shape=shape, out_shape=out, kernel=k, stride=s, padding=p,
                    meta={"lowered_from": "MaxPool2d"}))
    b.add(Threshold(name=f"{path}_or", in_shape=out, out_shape=out, threshold=0.0,
                    meta={"lowered_from": "MaxPool2d"}))


def _read_avgpool2d(b: _Builder, path: str, m, shape) -> None:
    geometry = _pool_geometry(b, path, m, shape)
    if geometry is None:
        return
    k, s, p, out = geometry
    if m.divisor_override is not None or (any(p) and not m.count_include_pad):
        b.refuse(path, m, "divisor_override / count_include_pad=False", "use the default AvgPool2d")
        return
    b.add(AvgPool2d(name=path, in_shape=shape, out_shape=out, kernel=k, stride=s, padding=p))


def _read_flatten(b: _Builder, path: str, m, shape) -> None:
    # a plain nn.Flatten outside a per-step container sees [T, B, ...]: start_dim=2 flattens one sample
    # (start_dim=1 is read as a step's flatten, as before); SpikingJelly's Flatten sees [B, ...] per step
    lead = 2 if type(m) is tnn.Flatten and not b.per_step and m.start_dim % (len(shape) + 2) == 2 else 1
    ndim = len(shape) + lead
    start = m.start_dim % ndim
    end = m.end_dim % ndim
    if start != lead or end != ndim - 1:
        b.refuse(path, m, f"flattens dims {m.start_dim}..{m.end_dim}",
                 "use nn.Flatten(start_dim=2) on [T, B, ...] or SpikingJelly's layer.Flatten()")
        return
    b.add(Flatten(name=path, in_shape=shape, out_shape=(int(np.prod(shape)),)))


def _read_voting(b: _Builder, path: str, m, shape) -> None:
    """SpikingJelly's VotingLayer: a head. On spikes it votes into an implicit readout; after a Linear's
    current (read out or not) the vote comes before the readout (``Readout`` is the identity per step)."""
    k = int(m.voting_size)
    if len(shape) != 1 or k < 1 or shape[0] % k:
        b.refuse(path, m, f"voting_size={k} does not divide its input of shape {shape}",
                 "give the layer before it voting_size x classes outputs (flattened)")
        return
    if isinstance(b.nodes[-1], Readout):        # Linear, Readout, VotingLayer: vote, then read out
        b.nodes.pop()
    out = (shape[0] // k,)
    b.add(Voting(name=path, in_shape=shape, out_shape=out, voting_size=k, meta={"module": type(m).__name__}))
    b.add(Readout(name=f"{path}{READOUT_SUFFIX}", in_shape=out, out_shape=out, meta={"lowered_from": "VotingLayer"}))


def _read_readout(b: _Builder, path: str, m, shape) -> None:
    """neurocomp.nn.Readout: the current of the Linear before it, accumulated over time. After spikes
    (a spiking output layer) or after a vote (which reads out already) it adds nothing."""
    last = b.nodes[-1]
    if b.carries_spikes or isinstance(last, Readout):
        return
    if not isinstance(last, (Linear, BatchNorm)):
        b.refuse(path, m, f"reads out '{last.name}' ({last.kind}), not a Linear layer's current",
                 "put neurocomp.nn.Readout() right after the last Linear layer")
        return
    b.add(Readout(name=path, in_shape=shape, out_shape=shape))


def _read_neuron(b: _Builder, path: str, m, shape, leaky: bool = True, tau=None) -> None:
    tau = (float(m.tau) if tau is None else tau) if leaky else None
    if tau is not None and not tau > 1.0:
        b.refuse(path, m, f"tau={tau} (must be > 1)", "use tau > 1")
        return
    for field_name in ("tau", "v_threshold", "v_reset"):
        value = getattr(m, field_name, None)
        if value is not None and not np.isfinite(float(value)):
            # refused, but the node is still added so that later layers are checked against a neuron
            b.refuse(path, m, f"{field_name}={float(value)} is not a finite number",
                     f"give {field_name} a finite value")
    b.add(LIF(name=path, in_shape=shape, out_shape=shape, tau=tau,
              decay_input=bool(getattr(m, "decay_input", True)), v_threshold=float(m.v_threshold),
              v_reset=None if m.v_reset is None else float(m.v_reset)))


def _read_if(b: _Builder, path: str, m, shape) -> None:
    _read_neuron(b, path, m, shape, leaky=False)


def _read_plif(b: _Builder, path: str, m, shape) -> None:
    """A ParametricLIFNode: its learned tau frozen (``tau = 1 / sigmoid(w)``), then a LIF."""
    _read_neuron(b, path, m, shape, tau=plif_tau(m))


# One reader per supported torch leaf class (its short name, as frontends.modules.MODULES lists it);
# VANISH leaves vanish and neurocomp.nn modules go to add_attention before this table is asked.
LEAF_READERS = {"Conv2d": _read_conv2d, "Linear": _read_linear, "BatchNorm2d": _read_batchnorm,
                "BatchNorm1d": lambda b, path, m, shape: _read_batchnorm(b, path, m, shape, one_d=True),
                "MaxPool2d": _read_maxpool2d, "AvgPool2d": _read_avgpool2d, "Flatten": _read_flatten,
                "LIFNode": _read_neuron, "IFNode": _read_if, "MultiStepLIFNode": _read_neuron,
                "MultiStepIFNode": _read_if, "ParametricLIFNode": _read_plif, "MultiStepParametricLIFNode": _read_plif,
                "VotingLayer": _read_voting}
READOUT_SUFFIX = "_readout"     # a VotingLayer's implicit readout is named after it (its torch output is the vote)
# the heads: their torch output is a value per step, recorded as it is (not as spikes)
GRADED_MODULES = ("Readout", "VotingLayer")
VANISH = {"Dropout", "Identity", "MultiStepDropout"}    # inference no-ops
# clock_driven's single-step neurons, refused with their multi-step version named
SINGLE_STEP_NEURONS = {"LIFNode": "MultiStepLIFNode", "IFNode": "MultiStepIFNode",
                       "ParametricLIFNode": "MultiStepParametricLIFNode"}


def module_timesteps(module):
    """The T a neurocomp.nn attention module was built for, where its weights depend on it (TCJA and
    CLA's T-channel conv, PFA's, MA-SNN's temporal part), else None."""
    cls = type(module)
    if not cls.__module__.startswith("neurocomp.nn") or cls.__name__ not in ATTENTION:
        return None
    if not (cls.__name__ in ("TCJA", "CLA", "PFA") or "T" in getattr(cls, "PARTS", "")):
        return None
    t = (getattr(module, "config", None) or {}).get("T")
    return None if t is None else int(t)


def add_attention(builder, path, module) -> None:
    """Lower a neurocomp.nn module met by the torch frontend."""
    name = type(module).__name__
    shape = builder.shape
    T = module_timesteps(module)
    if T is not None and builder.timesteps is not None and T != builder.timesteps:
        builder.refuse(path, module, f"was built for T={T} time steps, but the graph has T={builder.timesteps}",
                       f"trace the model with timesteps={T} (the T its attention was trained with)")
        return
    if name == "Readout":
        _read_readout(builder, path, module, shape)
        return
    if name == "MALIFNode":
        values = {}
        for attr in ("v_threshold", "alpha", "beta"):   # a float, or one value per channel (axis 0 of the shape)
            v = getattr(module, attr)
            if isinstance(v, tuple) and len(v) != shape[0]:
                builder.refuse(path, module, f"{len(v)} per-channel {attr} values for a layer of {shape[0]} channels",
                               f"give one {attr} per channel, or one for the layer")
                return
            arr = np.asarray(v, np.float32)
            values[attr] = arr if isinstance(v, tuple) and not np.all(arr == arr.flat[0]) else \
                float(v[0] if isinstance(v, tuple) else v)
        builder.add(MALIF(name=path, in_shape=shape, out_shape=shape, **values))
        return
    if name == "StaticMap":
        m = module.map.detach().cpu().numpy().astype(np.float32)
        T = builder.timesteps
        if m.shape[0] != T or m.ndim - 1 > len(shape):
            builder.refuse(path, module, f"map shape {m.shape} does not fit T={T} and tensor shape {shape}",
                           "recalibrate the model")
            return
        builder.add(Scale(name=path, in_shape=shape, out_shape=shape, scale=m, rectify=bool(module.rectify),
                          additive=bool(getattr(module, "additive", False)),
                          meta={"attention": module.config.get("source", "")}))
        return
    if name in ATTENTION and getattr(builder, "attention_mode", None) == "dynamic":
        if is_additive(module):      # relu(A + x) on the current: per-sample offsets into the neuron
            if len(shape) != 3:
                builder.refuse(path, module, f"PFA needs [C, H, W] inputs, got {shape}", "place it after a conv layer")
                return
            flat, spec = SpikeAttention.pack({k: v.detach().cpu().numpy() for k, v in module.state_dict().items()})
            calib = (getattr(builder, "calibration", None) or {}).get(path)
            builder.add(MAAttention(name=path, in_shape=shape, out_shape=shape, parts="", state_flat=flat,
                                    state_spec=spec, static_map=None if calib is None else calib["static_map"],
                                    meta={"module": name, "config": dict(module.config)}))
            return
        if name in RECTIFIED and name != "PFA":
            state = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in module.state_dict().items()}
            fields = {f: state.get(n) for f, n in MAAttention.STATE_NAMES.items()}
            calib = (getattr(builder, "calibration", None) or {}).get(path)
            builder.add(MAAttention(name=path, in_shape=shape, out_shape=shape, parts=type(module).PARTS,
                                    static_map=None if calib is None else calib["static_map"],
                                    meta={"module": name, "config": dict(module.config)}, **fields))
            return
        prev = builder.nodes[-1]
        if not (prev.is_neuron or prev.kind in ("input", "avgpool2d")):
            builder.refuse(path, module, "dynamic TCJA/PFA must act on spikes (after a neuron or its pooling)",
                           "place the module after the LIF / pooling layer")
            return
        state = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
        flat, spec = SpikeAttention.pack(state)
        source = prev.name if name in ("TCJA", "TLA", "CLA") else None
        calib = (getattr(builder, "calibration", None) or {}).get(path)
        builder.add(SpikeAttention(name=path, in_shape=shape, out_shape=shape, state_flat=flat, state_spec=spec,
                                   source=source, static_map=None if calib is None else calib["static_map"],
                                   meta={"module": name, "config": dict(module.config)}))
        return
    if name in ATTENTION:
        builder.refuse(path, module, "computes its map from the whole time window (non-causal)",
                       "compile with --attention static (calibrated map folded into the network)")
        return
    builder.refuse(path, module, "no lowering for this module", "see the README's supported layers")


def _take_spatially_constant_scale(b: _Builder):
    """Pop a trailing static attention Scale on spikes that commutes with max pooling, if any."""
    last = b.nodes[-1]
    if isinstance(last, SpikeAttention) and last.source is not None and len(b.nodes) >= 2 \
            and b.nodes[-2].is_neuron:   # TCJA kept dynamic: its map is per (t, c), >= 0
        b.nodes.pop()
        return last
    if not isinstance(last, Scale) or last.additive or len(b.nodes) < 2 or not b.nodes[-2].is_neuron:
        return None
    sc = last.scale
    spatial = sc.shape[-2:] if sc.ndim >= 4 else (1, 1)
    if tuple(spatial) != (1, 1) or np.any(sc < 0):
        return None
    b.nodes.pop()
    return last


def module_to_graph(model, input_shape, timesteps: int, encoding: str = "bernoulli", meta=None,
                    attention_mode=None, calibration=None) -> Graph:
    """Lower a torch/SpikingJelly model to the float IR graph."""
    if timesteps is None or int(timesteps) < 1:
        raise BadCheckpoint(f"timesteps={timesteps}", where="timesteps", hint="give T >= 1")
    b = _Builder(input_shape, int(timesteps))
    b.attention_mode, b.calibration = attention_mode, calibration
    b.nodes[0] = b.nodes[0].replace(meta={"binary": encoding in ("bernoulli", "events", "spikes")})
    edges = None
    if isinstance(model, GraphModule):
        edges = _read_graph_module(b, model)
    else:
        for path, m, per_step in walk_leaves(model):
            b.per_step = per_step
            _add_leaf(b, path, m)
    if b.problems:
        raise b.problems[0] if len(b.problems) == 1 else UnsupportedLayers(b.problems)
    if not b.nodes[-1].is_neuron:
        last = b.nodes[-1]
        raise UnsupportedLayer(f"the model ends in '{last.name}' ({last.kind}), not in a spiking layer or a readout",
                               where="output", hint="end the model with a LIF/IF layer whose spike counts are the "
                                                    "class scores" + (", or add neurocomp.nn.Readout() after this "
                                                                      "Linear to read its current out"
                                                                      if isinstance(last, Linear) else ""))
    g_meta = {"timesteps": int(timesteps), "encoding": encoding, "input_shape": list(input_shape), "dt": DEFAULT_DT}
    g_meta.update(meta or {})
    if edges is not None:
        return Graph.build(b.nodes, edges, g_meta)
    return Graph.chain(b.nodes, g_meta)


def _read_graph_module(b: _Builder, model) -> dict:
    """A :class:`~neurocomp.frontends.graphmodule.GraphModule`: each layer's leaves read as a chain from
    the value it is applied to, ``add`` an IR ``Add`` (of currents, of spikes, or of both: the passes
    tell them apart by what reads them), ``cat`` an IR ``Concat`` of channels. Leaves the nodes in
    ``b.nodes`` (any order) and returns their input edges for ``Graph.build``."""
    last = {"input": b.nodes[0]}          # value name -> the IR node that produces it
    edges, nodes = {}, [b.nodes[0]]
    negated = {}                          # a ``not`` op's name -> the IR node it negates
    for op in model.ops:
        name = op["name"]
        reads = [op["input"]] if "input" in op else list(op["inputs"])
        if op["op"] != "mul" and any(r in negated for r in reads):
            b.problems.append(UnsupportedLayer(
                f"reads 1. - '{negated[next(r for r in reads if r in negated)].name}' outside a product",
                where=f"layer '{name}'", hint="negate spikes only inside SEW's IAND: (1. - a) * b"))
            return edges
        if op["op"] == "not":
            negated[name] = last[op["input"]]
            continue
        if op["op"] == "mul":
            made = _neuron_logic(b, name, [(negated[s], True) if s in negated else (last[s], False) for s in reads])
            if made is None:
                return edges
            for n, srcs in made:
                edges[n.name] = srcs
                nodes.append(n)
            last[name] = made[-1][0]
            continue
        if op["op"] == "module":
            src = last[op["input"]]
            b.nodes = [src]
            for path, m, per_step in walk_leaves(model.layer(name), name):
                b.per_step = per_step
                _add_leaf(b, path, m)
            if not b.nodes or b.nodes[0] is not src:    # a head reader popped the node before the layer
                b.refuse(name, model.layer(name), "a head that changes the layer before it, inside a branch",
                         "put the head at the end of the model")
                return edges
            made = b.nodes[1:]
            for i, n in enumerate(made):
                edges[n.name] = ((made[i - 1] if i else src).name,)
            nodes.extend(made)
            last[name] = made[-1] if made else src        # Dropout / Identity vanish
            continue
        parts = [last[s] for s in op["inputs"]]
        shapes = [tuple(p.out_shape) for p in parts]
        if op["op"] == "add":
            if len(set(shapes)) != 1:
                b.problems.append(UnsupportedLayer(
                    f"adds values of shapes {', '.join(map(str, shapes))} ({', '.join(p.name for p in parts)})",
                    where=f"layer '{name}'", hint="add tensors of one shape (a 1x1 conv shortcut changes channels)"))
                return edges
            node = Add(name=name, in_shape=shapes[0], out_shape=shapes[0])
        else:
            if len({s[1:] for s in shapes}) != 1 or any(not s for s in shapes):
                b.problems.append(UnsupportedLayer(
                    f"concatenates channels of shapes {', '.join(map(str, shapes))}", where=f"layer '{name}'",
                    hint="concatenate tensors that differ in channels only"))
                return edges
            out = (sum(s[0] for s in shapes),) + shapes[0][1:]
            node = Concat(name=name, in_shape=shapes[0], out_shape=out)
        edges[name] = tuple(p.name for p in parts)
        nodes.append(node)
        last[name] = node
    if model.ops[-1]["name"] in negated:
        b.problems.append(UnsupportedLayer("the model returns 1. - spikes", where=f"layer '{model.ops[-1]['name']}'",
                                           hint="negate spikes only inside SEW's IAND: (1. - a) * b"))
        return edges
    out = last[model.ops[-1]["name"]]
    # the output last (b.nodes[-1] is what module_to_graph checks as the model's end)
    b.nodes = [n for n in nodes if n is not out] + [out]
    return edges


LOGIC_NAMES = {(False, False): "AND", (True, False): "IAND", (False, True): "IAND"}


def _neuron_logic(b: _Builder, name: str, factors):
    """A product of spikes, some negated (``[(node, negated)]``: SEW-ResNet's AND ``a * b``, IAND
    ``(1. - a) * b``), as neuron logic: each factor reaches a memoryless threshold neuron through an
    identity synapse of weight +1 (-1 when negated), and the neuron fires iff the integer sum is at least
    the number of plain factors ``P`` (``Threshold(P - 1)``): exactly when every plain factor spiked and no
    negated one did. Returns ``[(node, input names)]`` in order (the neuron last), or None (refused)."""
    for node, _ in factors:
        spikes = (not node.graded_output) if node.is_neuron else (isinstance(node, Input) and node.meta.get("binary"))
        if not spikes:
            b.problems.append(UnsupportedLayer(
                f"multiplies '{node.name}' ({node.kind}), which is not binary spikes", where=f"layer '{name}'",
                hint="multiply spikes only (SEW's AND / IAND after the neurons); currents and sums are not logic"))
            return None
    shapes = {tuple(n.out_shape) for n, _ in factors}
    if len(shapes) != 1:
        b.problems.append(UnsupportedLayer(f"multiplies values of shapes {', '.join(map(str, sorted(shapes)))}",
                                           where=f"layer '{name}'", hint="multiply spikes of one shape"))
        return None
    plain = sum(1 for _, neg in factors if not neg)
    if plain == 0:
        b.problems.append(UnsupportedLayer("multiplies negations only, which fires without any input spike",
                                           where=f"layer '{name}'", hint="keep one factor plain: (1. - a) * b"))
        return None
    shape = shapes.pop()
    logic = LOGIC_NAMES.get(tuple(neg for _, neg in factors), f"AND of {len(factors)}")
    made, syns = [], []
    for k, (node, neg) in enumerate(factors):
        syn = identity_synapse(f"{name}.in{k}", shape, -1.0 if neg else 1.0,
                               meta={"logic_input": node.name, "negated": neg})
        made.append((syn, (node.name,)))
        syns.append(syn.name)
    made.append((Add(name=f"{name}.sum", in_shape=shape, out_shape=shape), tuple(syns)))
    made.append((Threshold(name=name, in_shape=shape, out_shape=shape, threshold=float(plain - 1),
                           meta={"logic": logic, "of": [("1 - " if neg else "") + n.name for n, neg in factors]}),
                 (f"{name}.sum",)))
    return made


def _device_of(model) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _spike_hooks(model, names, T: int, B: int, got: dict) -> list:
    """Forward hooks filling ``got[name]`` with the module's output as bool ``[T, B, *]`` on the CPU
    (a head's, ``Readout`` or ``VotingLayer``, as its float32 values); ``X_or`` (a max pool lowered to
    sum-pool + threshold) and ``X_readout`` (a vote's readout) are read from module ``X``; a name with no
    module is left out."""
    modules = dict(model.named_modules())

    def hook_for(layer, graded):
        def hook(_m, _inp, out):
            o = out.detach()
            if o.shape[0] == T * B and (o.dim() < 2 or o.shape[1] != B):
                o = o.reshape((T, B) + tuple(o.shape[1:]))
            got[layer] = o.to(torch.float32).cpu() if graded else (o != 0).cpu()
        return hook

    hooks = []
    for name in names:
        mod = modules.get(name)
        for suffix in ("_or", READOUT_SUFFIX):
            if mod is None and name.endswith(suffix):
                mod = modules.get(name[:-len(suffix)])
        if mod is not None and mod is not model:
            hooks.append(mod.register_forward_hook(hook_for(name, type(mod).__name__ in GRADED_MODULES)))
    return hooks


def _set_backend(m, value) -> None:
    # activation_based keeps it in `_backend` behind a setter that checks cupy is installed; clock_driven in `backend`
    setattr(m, "_backend" if "_backend" in vars(m) else "backend", value)


def reset_state(model) -> None:
    """Reset every stateful module (``functional.reset_net``'s rule: each module with a ``reset()``),
    clock_driven ones included, without reset_net's warning for modules of the other API."""
    for m in model.modules():
        if hasattr(m, "reset"):
            m.reset()


def run_torch_model(model, x, record=None, device=None, grad: bool = False, batch_size: int | None = None):
    """Run a SpikingJelly model time-major on ``x`` ``[T, B, ...]`` (tensor or numpy array): the one
    way neurocomp runs a torch SNN over time (calibration, the cross-check's torch stages, training,
    fine-tuning, its teacher and its evaluation).

    The model runs in multi-step mode with its state reset before every batch and after the last;
    without autograd unless ``grad``. ``batch_size``: run at most that many samples at a time and
    concatenate along the batch axis (each batch starts from a reset state). ``device``: None runs
    where the model and ``x`` are and returns the output there; otherwise the model is moved there
    for the run (and back), each batch too, and the output comes back on the CPU. The train/eval mode
    is the caller's. SpikingJelly neurons trained with ``backend='cupy'`` run on the torch backend,
    which computes the same (their flag is restored after the run); clock_driven modules are reset too.

    Returns the output ``[T, B, ...]``; with ``record`` (layer names), ``(output, spikes)`` where
    ``spikes[name]`` is that module's output as bool ``[T, B, *]`` on the CPU, read by forward hooks
    (``X_or`` from module ``X``; names without a module are left out)."""
    from spikingjelly.activation_based import functional
    T, N = int(x.shape[0]), int(x.shape[1])
    # SpikingJelly's cupy kernels compute what its torch backend computes: run the torch one (no CUDA needed)
    cupy = [m for m in model.modules() if getattr(m, "backend", None) == "cupy"]
    step = N if batch_size is None else max(1, int(batch_size))
    home = None
    if device is not None:
        home = _device_of(model)
        model = model.to(device)
    functional.set_step_mode(model, "m")
    for c in model.modules():          # a per-step container's children each run one step
        if isinstance(c, PER_STEP_CONTAINERS):
            for m in c.modules():
                if m is not c and hasattr(m, "step_mode"):
                    m.step_mode = "s"
    outs, recs = [], []
    for m in cupy:
        _set_backend(m, "torch")
    try:
        with (contextlib.nullcontext() if grad else torch.no_grad()), warnings.catch_warnings():
            warnings.simplefilter("ignore")      # torch warns about TCJA's 'same' padding with even kernels
            for i in (range(0, N, step) if 0 < step < N else [0]):
                xb = torch.as_tensor(x[:, i:i + step] if 0 < step < N else x)
                if device is not None:
                    xb = xb.to(device)
                got = {}
                hooks = [] if record is None else _spike_hooks(model, record, T, int(xb.shape[1]), got)
                reset_state(model)
                try:
                    out = model(xb)
                finally:
                    for h in hooks:
                        h.remove()
                outs.append(out if device is None else out.cpu())
                recs.append(got)
    finally:
        reset_state(model)
        for m in cupy:
            _set_backend(m, "cupy")
        if home is not None:
            model.to(home)
    out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
    if record is None:
        return out
    spikes = recs[0] if len(recs) == 1 else {k: torch.cat([r[k] for r in recs], dim=1) for k in recs[0]}
    return out, spikes
