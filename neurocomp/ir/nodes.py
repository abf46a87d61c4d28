"""IR node types: small frozen dataclasses.

Every node has a unique ``name`` (the one name a layer keeps from frontend to report) and
known ``in_shape``/``out_shape`` (batch- and time-free, torch layout: ``(C, H, W)`` or ``(N,)``).

Float semantics follow the source framework exactly (the reference simulator's float mode
reproduces the torch model spike for spike). Fixed-point parameters are attached by the
``quantize`` pass: synapses get ``qweight`` (int8 values), neurons get ``fixed``
(:class:`LoihiNeuron`, in Lava's units).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

Shape = tuple


@dataclass(frozen=True, eq=False)
class Node:
    name: str
    in_shape: Shape
    out_shape: Shape
    # Free-form, JSON-serialisable facts (e.g. the source module path, neurocomp.* NIR metadata).
    meta: dict = field(default_factory=dict)

    kind = "node"          # overridden per class; used in tables and serialisation
    is_synapse = False     # a Dense/Conv-like op that Lava runs with a one-step delay
    is_neuron = False      # a stateful or thresholding op emitting spikes (or, when not spiking, values)

    @property
    def graded_output(self) -> bool:
        """Whether this layer outputs values rather than spikes (a non-spiking readout head)."""
        return self.is_neuron and not getattr(self, "spiking", True)

    def replace(self, **changes) -> "Node":
        return dataclasses.replace(self, **changes)

    def arrays(self) -> dict[str, np.ndarray]:
        """Named array-valued fields (for serialisation and hashing)."""
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                out[f.name] = v
        return out

    def params(self) -> int:
        return int(sum(a.size for k, a in self.arrays().items() if k in ("weight", "bias")))


@dataclass(frozen=True, eq=False)
class Input(Node):
    kind = "input"


@dataclass(frozen=True, eq=False)
class Linear(Node):
    weight: np.ndarray = None           # (out, in)
    bias: Optional[np.ndarray] = None   # (out,)
    qweight: Optional[np.ndarray] = None  # int, same shape as weight, after quantize
    kind = "linear"
    is_synapse = True


@dataclass(frozen=True, eq=False)
class Dense(Node):
    """A linear map between tensors of any shape: ``y = W @ x.flatten() + b`` reshaped to
    ``out_shape`` (torch flatten order). An unrolled convolution: the fallback where per-input-position
    factors (a spatial attention map) must be folded into a convolution's weights and cannot be sent
    as graded payloads (an overlapping pool in between, portable mode); refused beyond 2 GiB."""
    weight: np.ndarray = None           # (prod(out_shape), prod(in_shape))
    bias: Optional[np.ndarray] = None   # (prod(out_shape),)
    qweight: Optional[np.ndarray] = None
    kind = "dense"
    is_synapse = True


@dataclass(frozen=True, eq=False)
class Conv2d(Node):
    weight: np.ndarray = None           # (C_out, C_in/groups, kH, kW), torch cross-correlation
    bias: Optional[np.ndarray] = None
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    dilation: tuple = (1, 1)
    groups: int = 1
    qweight: Optional[np.ndarray] = None
    kind = "conv2d"
    is_synapse = True


@dataclass(frozen=True, eq=False)
class SumPool2d(Node):
    """Sum over windows, per channel. Lowered to a depthwise convolution of ones."""
    kernel: tuple = (2, 2)
    stride: tuple = (2, 2)
    padding: tuple = (0, 0)
    qweight: Optional[np.ndarray] = None  # int scalar weight of the window, after quantize
    kind = "sumpool2d"
    is_synapse = True


@dataclass(frozen=True, eq=False)
class AvgPool2d(Node):
    """torch AvgPool2d (count_include_pad=True). Folded into the next synapse by a pass."""
    kernel: tuple = (2, 2)
    stride: tuple = (2, 2)
    padding: tuple = (0, 0)
    kind = "avgpool2d"


@dataclass(frozen=True, eq=False)
class BatchNorm(Node):
    """Eval-mode batch norm over axis 0 of the per-sample shape (channels or features)."""
    mean: np.ndarray = None
    var: np.ndarray = None
    weight: Optional[np.ndarray] = None
    bias: Optional[np.ndarray] = None
    eps: float = 1e-5
    kind = "batchnorm"


@dataclass(frozen=True, eq=False)
class Flatten(Node):
    kind = "flatten"


@dataclass(frozen=True, eq=False)
class LoihiNeuron:
    """A Loihi CUBA compartment in Lava's integer units (see neurocomp.fixedpoint)."""
    du: int
    dv: int
    vth: int
    bias_mant: np.ndarray   # int, per neuron
    bias_exp: np.ndarray    # int, per neuron
    # Gain-scheduled neurons (attention folded into membrane-potential scaling), see
    # neurocomp.fixedpoint.gain_lif_step; absent on stock Lava LIF neurons.
    gain_mant: Optional[np.ndarray] = None   # int [T, *shape]: input gain mantissa per step and neuron
    gain_shift: int = 0                      # gain = gain_mant / 2**gain_shift
    gain_on_bias: bool = False               # the gain scales synaptic input + bias (current maps)
    rectify: bool = False                    # ReLU on the input current before the gain
    offset: Optional[np.ndarray] = None      # int [T, *shape]: per-step voltage offset added before the ReLU
    v_reset: int = 0                         # voltage after a spike (MA-SNN: the threshold)
    dynamic_gain: bool = False               # gains come per sample from an attention process
    step_bias: Optional[np.ndarray] = None   # int per neuron: added after the decay at every step but a
    #                                          window's first (MA-SNN's beta; fixedpoint.window_step_bias)
    plain_bias: Optional[np.ndarray] = None  # int per neuron (voltage units): the bias of the synapse groups the
    #                                          gain does not cover (a neuron with ``gain_groups``), added ungained
    # Further gained groups, each with its own map (stacked CSA-MS-ResNet blocks: every block's branch reaches
    # the later neurons), see fixedpoint.group_gain_input: mantissas [K, T, *shape], one shift and one
    # rectification per group, each group's bias (voltage units) [K, *shape], gained with it.
    more_gain_mant: Optional[np.ndarray] = None
    more_gain_shift: tuple = ()
    more_rectify: tuple = ()
    more_bias: Optional[np.ndarray] = None

    @property
    def gain_scheduled(self) -> bool:
        return (self.gain_mant is not None or self.v_reset != 0 or self.rectify or self.dynamic_gain
                or self.offset is not None or self.step_bias is not None or self.plain_bias is not None)


@dataclass(frozen=True, eq=False)
class LIF(Node):
    """SpikingJelly-style LIF/IF neuron, hard or soft reset, fires on v >= v_threshold.

    tau=None means IF (no leak). v_reset=None means soft reset (subtract threshold).
    """
    tau: Optional[float] = 2.0
    decay_input: bool = True
    v_threshold: float = 1.0
    v_reset: Optional[float] = 0.0
    # Static attention folded into membrane-potential scaling (set by passes.fold_attention):
    # the input current x_t becomes gain[t] * x_t (rectified first when rectify_input).
    input_gain: Optional[np.ndarray] = None   # float [T, *shape]
    gain_on_bias: bool = False                # the gain scales the bias too (map on input current)
    rectify_input: bool = False
    # A static additive map on the input current (PFA's additive variant): x_t becomes
    # x_t + input_offset[t] (bias included), then the ReLU when rectify_input.
    input_offset: Optional[np.ndarray] = None  # float [T, *shape]
    # In a graph: the synapse groups (names) the gain and rectification apply to (MA-SNN's CSA on the
    # residual branch's current: one gained and one plain group); () = the whole input.
    gain_groups: tuple = ()
    # Further synapse groups with maps of their own (one synapse each): names, gains [K, T, *shape] (bias
    # included) and whether each is rectified; added after the first group's gain, like the plain groups.
    more_groups: tuple = ()
    more_gains: Optional[np.ndarray] = None
    more_rectify: tuple = ()
    fixed: Optional[LoihiNeuron] = None
    kind = "lif"
    is_neuron = True


@dataclass(frozen=True, eq=False)
class MALIF(Node):
    """MA-SNN's neuron: ``u = h + x``; fire ``u >= v_threshold``; reset to the threshold; ``h = alpha*u' + beta``.

    ``v_threshold``, ``alpha`` and ``beta`` are floats, or float32 arrays ``(C,)`` with one value per channel
    (axis 0 of the shape; MA-SNN's cells learned with ``pa_train_self=True``). With ``h_0 = 0``, ``beta`` is
    a constant added after the leak at every step of a sample window but the first."""
    v_threshold: float = 0.3
    alpha: float = 0.3
    beta: float = 0.0            # or float32 (C,)
    input_gain: Optional[np.ndarray] = None
    gain_on_bias: bool = True
    rectify_input: bool = False
    input_offset: Optional[np.ndarray] = None  # as LIF's
    gain_groups: tuple = ()                    # as LIF's
    more_groups: tuple = ()                    # as LIF's
    more_gains: Optional[np.ndarray] = None
    more_rectify: tuple = ()
    fixed: Optional[LoihiNeuron] = None
    kind = "malif"

    @property
    def per_channel(self) -> bool:
        return any(isinstance(getattr(self, k), np.ndarray) for k in ("v_threshold", "alpha", "beta"))

    def channel_values(self, name: str) -> np.ndarray:
        """``v_threshold``, ``alpha`` or ``beta`` per neuron (float64, the layer's shape)."""
        v = np.asarray(getattr(self, name), np.float64)
        return np.broadcast_to(v.reshape(v.shape + (1,) * (len(self.out_shape) - v.ndim)) if v.ndim else v,
                               tuple(self.out_shape))
    is_neuron = True


def _unpack(flat, spec) -> dict:
    """``{name: array}`` from parameters concatenated in ``flat``, split by ``spec`` ((name, shape), ...)."""
    out, i = {}, 0
    for name, shape in spec:
        n = int(np.prod(shape)) if len(shape) else 1
        out[name] = np.asarray(flat[i:i + n]).reshape(tuple(shape))
        i += n
    return out


@dataclass(frozen=True, eq=False)
class MAAttention(Node):
    """MA-SNN's attention kept dynamic (``--attention dynamic``): the module's exact per-sample maps.

    Float semantics: the neurocomp.nn module itself (``meta['module']``, ``meta['config']``) with
    these weights. Fixed point: ``neurocomp.fixedpoint.attention.ma_gains`` on the layer's integer
    current, with the integer program ``ma_program(state, parts, x_scale)`` (``x_scale`` = 64 * s, set
    by quantize; one per channel, a tuple, into an MA-SNN cell with per-channel thresholds), as a per-sample
    gain table of the consuming neuron (rectified, bias included). In Lava it costs T steps of latency.
    """
    parts: str = "TCS"
    ta_w1: Optional[np.ndarray] = None
    ta_w2: Optional[np.ndarray] = None
    ca_w1: Optional[np.ndarray] = None
    ca_w2: Optional[np.ndarray] = None
    sa_w: Optional[np.ndarray] = None
    static_map: Optional[np.ndarray] = None   # calibrated mean map [T, ...] (for NIR consumers, reports)
    x_scale: Optional[float] = None
    # PFA's additive variant (``meta['module'] == 'PFA'``, relu(A + x) on the current): its parameters,
    # packed as SpikeAttention.pack does; its map is a per-sample offset of the neuron's input, not a gain
    state_flat: Optional[np.ndarray] = None
    state_spec: tuple = ()
    kind = "ma_attention"

    STATE_NAMES = {"ta_w1": "ta.sharedMLP.0.weight", "ta_w2": "ta.sharedMLP.2.weight",
                   "ca_w1": "ca.sharedMLP.0.weight", "ca_w2": "ca.sharedMLP.2.weight", "sa_w": "sa.conv.weight"}

    def state(self) -> dict:
        if self.state_flat is not None:
            return _unpack(self.state_flat, self.state_spec)
        return {name: getattr(self, f) for f, name in self.STATE_NAMES.items() if getattr(self, f) is not None}

    @property
    def additive(self) -> bool:
        """PFA's additive variant: the attention process sends per-sample offsets, not gains."""
        return self.meta.get("module") == "PFA"

    @property
    def rectify(self) -> bool:
        """Whether the consuming neuron rectifies its input: MA-SNN's modules end in ReLU; a module
        built with ``relu=False`` (SpikingJelly's TemporalWiseAttention) does not."""
        return bool(self.meta.get("config", {}).get("relu", True))


@dataclass(frozen=True, eq=False)
class SpikeAttention(Node):
    """TCJA or PFA kept dynamic: its exact per-sample map scales the spikes it receives.

    Float semantics: ``y = x * A`` with ``A = module.attention(source)`` (the neurocomp.nn module in
    ``meta['module']``/``meta['config']`` with these weights); ``source`` names the layer whose
    spikes feed the map (None: this node's input; with ``pool`` the input is pre-pool spikes and
    the map is computed on their average pool and repeated over each window). Fixed point / Lava:
    the spikes become 8-bit graded payloads computed in integers (``neurocomp.fixedpoint.attention``:
    ``spike_payload`` on the module's ``spike_program``), sent
    one window late by an attention gate process; the consuming neuron divides its input by 2**8.
    """
    state_flat: np.ndarray = None       # the module's parameters, concatenated
    state_spec: tuple = ()              # ((name, shape), ...) to split state_flat
    source: Optional[str] = None
    pool: tuple = (1, 1)
    static_map: Optional[np.ndarray] = None   # calibrated mean map [T, ...] (for NIR consumers, reports)
    kind = "spike_attention"

    def state(self) -> dict:
        return _unpack(self.state_flat, self.state_spec)

    @staticmethod
    def pack(state: dict):
        spec = tuple((k, tuple(int(d) for d in np.shape(v))) for k, v in state.items())
        flat = np.concatenate([np.asarray(v, np.float32).ravel() for v in state.values()]) if state else \
            np.zeros(0, np.float32)
        return flat, spec


@dataclass(frozen=True, eq=False)
class Scale(Node):
    """A static, time-indexed elementwise map: ``y[t] = x[t] * scale[t]`` (then ReLU if ``rectify``);
    ``additive``: ``y[t] = x[t] + scale[t]`` (PFA's additive variant, a map on the input current).

    ``scale`` has shape ``[T, *b]`` where ``b`` broadcasts against the tensor shape. It is how a
    calibrated attention module enters the IR (``meta['attention']`` names the module type).
    """
    scale: np.ndarray = None
    rectify: bool = False
    additive: bool = False
    kind = "scale"


@dataclass(frozen=True, eq=False)
class GradedSpikes(Node):
    """Per-neuron graded spike payloads: ``y[t] = x[t] * scale`` with a time-invariant ``scale``
    of shape ``in_shape``, on the spikes of the neuron (or input) right before it.

    Set by ``passes.fold_attention`` for a static spike map that varies over space in front of a
    convolution (PFA): the factor ``B[c, h, w]`` of the rank-1 fold is sent by the producing side
    as a graded payload, so the convolution keeps its shared weights. After ``quantize``:
    ``qscale`` (int, ``1..2**payload_bits - 1``, 0 where ``scale`` rounds to 0) and ``shift``
    (``scale ~ qscale / 2**shift``); the consuming neuron divides its synaptic input by
    ``2**shift`` again (its ``gain_shift``). In Lava a zero-delay gate process sends
    ``spike * qscale`` (``backends.lava.payload``); on Loihi 2 it is the neuron's graded payload.
    """
    scale: np.ndarray = None
    qscale: Optional[np.ndarray] = None
    shift: int = 0
    kind = "graded_spikes"


@dataclass(frozen=True, eq=False)
class Threshold(Node):
    """z = 1 iff x > threshold (NIR Threshold). Used for MaxPool over spikes: SumPool2d -> Threshold(0)."""
    threshold: float = 0.0
    fixed: Optional[LoihiNeuron] = None
    kind = "threshold"
    is_neuron = True


@dataclass(frozen=True, eq=False)
class CubaLIF(Node):
    """Discrete-time current-based neuron: NIR IF/LIF/CubaLIF/LI/CubaLI after discretisation with dt
    (see ``neurocomp.frontends.nir_foreign``). Per step, with ``x`` the synaptic input plus
    ``rec_weight @ s(t-1)`` when the layer is recurrent::

        i = alpha * i + w_in * x + i_bias
        v = beta * v + r * i + v_bias
        s = v > v_threshold                 (strict, as NIR; never when spiking=False)
        reset 'zero': v = v_reset where s;  'subtract': v = v - v_threshold where s

    ``w_in``, ``r``, ``i_bias``, ``v_bias`` are per-neuron arrays (None: 1, 1, 0, 0). A non-spiking
    layer (LI readout) outputs ``v``. After ``quantize``: ``fixed`` (du, dv, vth, voltage bias),
    ``rec_qweight`` and ``qi_bias`` (current bias in Lava u units, i.e. 64 x weight units).
    """
    alpha: float = 0.0
    beta: float = 1.0
    w_in: Optional[np.ndarray] = None
    r: Optional[np.ndarray] = None
    i_bias: Optional[np.ndarray] = None
    v_bias: Optional[np.ndarray] = None
    v_threshold: float = 1.0
    v_reset: float = 0.0
    reset: str = "zero"
    spiking: bool = True
    rec_weight: Optional[np.ndarray] = None
    rec_qweight: Optional[np.ndarray] = None
    qi_bias: Optional[np.ndarray] = None
    fixed: Optional[LoihiNeuron] = None
    kind = "cuba_lif"
    is_neuron = True


@dataclass(frozen=True, eq=False)
class Voting(Node):
    """SpikingJelly's ``VotingLayer(voting_size)``: per step, the mean of each group of ``voting_size``
    consecutive features (``avg_pool1d`` over the last dim, ``(N,) -> (N // voting_size,)``).

    A synapse of the head: on spikes it feeds the :class:`Readout` after it as a Dense of one weight per
    group member (``qweight``, an int scalar after ``quantize``); after a Linear's current it is folded
    into that Linear (``passes.fold_voting``)."""
    voting_size: int = 10
    qweight: Optional[np.ndarray] = None
    kind = "voting"
    is_synapse = True


@dataclass(frozen=True, eq=False)
class Readout(Node):
    """A non-spiking output head (``neurocomp.nn.Readout``): the current of the synapse in front of it,
    accumulated over the T steps of a sample; the class is the argmax of the sum.

    Float: ``y[t] = x[t]`` (the current itself, as torch's ``fc(x)`` on ``[T, B, N]``). Fixed point: a
    Loihi compartment that never fires (``fixed``: ``du = 4095`` so ``u = 64 a`` each step, ``dv = 0`` so
    ``v`` accumulates ``u + bias``, ``vth`` out of reach of the scale ``quantize`` chose), whose ``v`` is read
    every step; the value of step ``t`` is ``v[t] - v[t-1]`` (Lava units, ``64 * scale`` per float unit), so
    the sum over the window is the final ``v``. In Lava: Lava's own bit-accurate ``LIFReset`` arithmetic
    (``backends.lava.readout``) sending ``v`` instead of spikes."""
    fixed: Optional[LoihiNeuron] = None
    kind = "readout"
    is_neuron = True
    spiking = False


@dataclass(frozen=True, eq=False)
class Add(Node):
    """The element-wise sum of its inputs (two or more edges of the same shape).

    Of currents (its consumer is a neuron): MS-ResNet / Spiking-ResNet shortcuts; the neuron after it
    receives every addend's synapse group (Lava sums all connections into the neuron's ``a_in``).
    Of spikes (its consumer is a synapse): SEW-ResNet's ADD, a graded value ``0..k`` into the next
    synapse, realised in Lava by linearity (that synapse applied to each addend, summed in the neuron)."""
    kind = "add"


@dataclass(frozen=True, eq=False)
class Concat(Node):
    """Its inputs concatenated along axis 0 of the per-sample shape (channels, or features).
    Realised in Lava by routing: the consumer synapse's weights split along its input axis, one part
    per input, summed in the neuron."""
    kind = "concat"


def identity_synapse(name: str, shape: tuple, weight: float = 1.0, meta=None):
    """A synapse passing spikes of ``shape`` one to one, times ``weight``: a depthwise 1x1 ``Conv2d`` of
    ``(C, H, W)`` tensors, a ``Linear`` (``weight`` times the identity) of vectors. The synapse an identity
    shortcut or a neuron-logic input (SEW's AND / IAND) reaches its neuron through."""
    shape, meta = tuple(int(v) for v in shape), dict(meta or {})
    if len(shape) == 3:
        C = shape[0]
        return Conv2d(name=name, in_shape=shape, out_shape=shape, weight=np.full((C, 1, 1, 1), weight, np.float32),
                      bias=None, groups=C, meta=meta)
    n = int(np.prod(shape))
    return Linear(name=name, in_shape=shape, out_shape=shape, weight=(weight * np.eye(n)).astype(np.float32), bias=None,
                  meta=meta)


NODE_TYPES = {cls.kind: cls for cls in (Add, Concat, Input, Linear, Conv2d, SumPool2d, AvgPool2d, BatchNorm,
                                        Flatten, LIF, Threshold, CubaLIF, MALIF, Scale, Dense, MAAttention, SpikeAttention,
                                        GradedSpikes, Voting, Readout)}
