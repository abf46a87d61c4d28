"""Float arithmetic of the reference walk: one entry per IR node class (``FLOAT_OPS``).

The source framework's float32 arithmetic, op for op: SpikingJelly's LIF update
``v + (x - v) / tau`` etc. in the same operation order, eval-mode BatchNorm, torch pooling, the
neurocomp.nn attention modules themselves, so on the unfolded graph the walk reproduces the torch
model's spikes exactly; on a folded graph it is the "folded float model". Values are float32
``[T, B, *shape]``; a synapse whose consumers all apply a folded gain before its bias hands them a
:class:`Deferred` (the current without bias, and the bias) instead.
"""
from __future__ import annotations

import functools
import json
import warnings
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from neurocomp.errors import UnsupportedLayer
from neurocomp.ir import (Add, Concat, AvgPool2d, BatchNorm, Conv2d, CubaLIF, Dense, Flatten, GradedSpikes, Input, LIF, Linear,
                          MAAttention, MALIF, Readout, Scale, SpikeAttention, SumPool2d, Threshold, Voting)
from neurocomp.sim.cuba import run_float_cuba
from neurocomp.sim.walk import Split, split_sum


# ---- neuron kernels (SpikingJelly's expressions, same operation order) -------------------------
@torch.jit.script
def _lif_decay_input_reset0(x_seq: torch.Tensor, v: torch.Tensor, v_threshold: float, tau: float):
    spikes = torch.zeros_like(x_seq)
    for t in range(x_seq.shape[0]):
        v = v + (x_seq[t] - v) / tau
        spike = (v >= v_threshold).to(x_seq)
        v = 0. * spike + (1. - spike) * v
        spikes[t] = spike
    return spikes


@torch.jit.script
def _lif_decay_input(x_seq: torch.Tensor, v: torch.Tensor, v_threshold: float, v_reset: float, tau: float):
    spikes = torch.zeros_like(x_seq)
    for t in range(x_seq.shape[0]):
        v = v + (x_seq[t] - (v - v_reset)) / tau
        spike = (v >= v_threshold).to(x_seq)
        v = v_reset * spike + (1. - spike) * v
        spikes[t] = spike
    return spikes


@torch.jit.script
def _lif_no_decay_input_reset0(x_seq: torch.Tensor, v: torch.Tensor, v_threshold: float, tau: float):
    spikes = torch.zeros_like(x_seq)
    for t in range(x_seq.shape[0]):
        v = v * (1. - 1. / tau) + x_seq[t]
        spike = (v >= v_threshold).to(x_seq)
        v = 0. * spike + (1. - spike) * v
        spikes[t] = spike
    return spikes


@torch.jit.script
def _lif_no_decay_input(x_seq: torch.Tensor, v: torch.Tensor, v_threshold: float, v_reset: float, tau: float):
    spikes = torch.zeros_like(x_seq)
    for t in range(x_seq.shape[0]):
        v = v - (v - v_reset) / tau + x_seq[t]
        spike = (v >= v_threshold).to(x_seq)
        v = v_reset * spike + (1. - spike) * v
        spikes[t] = spike
    return spikes


@torch.jit.script
def _if_hard(x_seq: torch.Tensor, v: torch.Tensor, v_threshold: float, v_reset: float):
    spikes = torch.zeros_like(x_seq)
    for t in range(x_seq.shape[0]):
        v = v + x_seq[t]
        spike = (v >= v_threshold).to(x_seq)
        v = v_reset * spike + (1. - spike) * v
        spikes[t] = spike
    return spikes


@torch.jit.script
def _if_soft(x_seq: torch.Tensor, v: torch.Tensor, v_threshold: float):
    spikes = torch.zeros_like(x_seq)
    for t in range(x_seq.shape[0]):
        v = v + x_seq[t]
        spike = (v >= v_threshold).to(x_seq)
        v = v - spike * v_threshold
        spikes[t] = spike
    return spikes


@torch.jit.script
def _lif_soft(x_seq: torch.Tensor, v: torch.Tensor, v_threshold: float, tau: float, decay_input: bool):
    spikes = torch.zeros_like(x_seq)
    for t in range(x_seq.shape[0]):
        if decay_input:
            v = v + (x_seq[t] - v) / tau
        else:
            v = v * (1. - 1. / tau) + x_seq[t]
        spike = (v >= v_threshold).to(x_seq)
        v = v - spike * v_threshold
        spikes[t] = spike
    return spikes


def _float_lif(node: LIF, x_seq: torch.Tensor) -> torch.Tensor:
    th = float(node.v_threshold)
    v0 = torch.full_like(x_seq[0], 0.0 if node.v_reset is None else float(node.v_reset))
    if node.tau is None:
        if node.v_reset is None:
            return _if_soft(x_seq, v0, th)
        return _if_hard(x_seq, v0, th, float(node.v_reset))
    tau = float(node.tau)
    if node.v_reset is None:
        return _lif_soft(x_seq, v0, th, tau, bool(node.decay_input))
    vr = float(node.v_reset)
    if node.decay_input:
        return _lif_decay_input_reset0(x_seq, v0, th, tau) if vr == 0.0 else _lif_decay_input(x_seq, v0, th, vr, tau)
    return _lif_no_decay_input_reset0(x_seq, v0, th, tau) if vr == 0.0 else _lif_no_decay_input(x_seq, v0, th, vr, tau)


@torch.jit.script
def _malif(x_seq: torch.Tensor, v_threshold: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor):
    """MA-SNN's cell, op for op as neurocomp.nn.MALIFNode (eval): reset to threshold, then leak;
    ``v_threshold``, ``alpha`` and ``beta`` per layer (0-d) or per neuron (float32, broadcasting over a step)."""
    spikes = torch.zeros_like(x_seq)
    h = torch.zeros_like(x_seq[0])
    for t in range(x_seq.shape[0]):
        u = h + x_seq[t]
        spike = (u - v_threshold >= 0).to(x_seq)
        h_hat = spike * v_threshold + (1.0 - spike) * u
        h = alpha * h_hat + beta
        spikes[t] = spike
    return spikes


# ---- helpers -------------------------------------------------------------------------------------
class Deferred(NamedTuple):
    """A synapse's output without its bias, for a consumer that adds the bias after its gain."""
    current: torch.Tensor     # [T, B, *shape]
    bias: torch.Tensor        # broadcasts against ``current``


def _t(a, like: torch.Tensor, dtype=torch.float32):
    """A node's array as a tensor on ``like``'s device."""
    return None if a is None else torch.as_tensor(np.asarray(a), dtype=dtype, device=like.device)


def _per_step(fn, x: torch.Tensor) -> torch.Tensor:
    """``fn`` applied to every step of ``x`` [T, B, *shape] at once (as a batch of T*B)."""
    T, B = x.shape[:2]
    y = fn(x.flatten(0, 1))
    return y.reshape((T, B) + tuple(y.shape[1:]))


def _defers_bias(neuron) -> bool:
    return getattr(neuron, "input_gain", None) is not None and not getattr(neuron, "gain_on_bias", True)


def _defers(run, node, consumer) -> bool:
    """Whether ``consumer`` gains ``node``'s current before its bias: a neuron with a spike map's gain, or
    an Add into a neuron that gains ``node``'s group that way (``gain_groups``)."""
    if not isinstance(consumer, Add):
        return _defers_bias(consumer)
    c = consumer
    while not c.is_neuron:
        cons = run.consumers(c)
        if len(cons) != 1:
            return False
        c = cons[0]
    return _defers_bias(c) and node.name in (getattr(c, "gain_groups", ()) or ())


def _synapse(run, node, x, fn, bias_shape=None):
    """``fn(x, bias)`` per step; the bias handed on separately when every consumer gains the current first."""
    consumers = run.consumers(node)
    if node.bias is not None and consumers and all(_defers(run, node, c) for c in consumers):
        y = _per_step(lambda v: fn(v, None), x)
        shape = (-1,) + (1,) * (len(node.out_shape) - 1) if bias_shape is None else bias_shape
        return Deferred(y, _t(node.bias, x).reshape(shape))
    return _per_step(lambda v: fn(v, _t(node.bias, x)), x)


def _split_sum(run, node, xs):
    """``xs`` summed left to right into gained and plain parts (:meth:`Run.gained_inputs`), or None when
    the Add's neuron gains its whole input."""
    flags = run.gained_inputs(node)

    def acc(a, b):
        if a is None or b is None:
            return b if a is None else a
        if isinstance(a, Deferred) or isinstance(b, Deferred):     # gained currents whose bias is not gained
            a, b = (x if isinstance(x, Deferred) else Deferred(x, 0.0) for x in (a, b))
            return Deferred(a.current + b.current, a.bias + b.bias)
        return a + b
    return split_sum(flags, xs, acc)


def _neuron_input(node, x):
    """Folded attention: ``x * gain[t]`` or ``x + offset[t]`` (ReLU'd if asked), a deferred bias added
    after the gain; of a :class:`Split` input only the gained part, the plain part added after it."""
    offset = getattr(node, "input_offset", None)
    if isinstance(x, Split):
        y = x.plain if x.gained is None else _neuron_input(node, x.gained)
        if x.gained is not None and x.plain is not None:
            y = y + x.plain
        for k, v in x.more:                       # further groups, each with its own map (bias included)
            g = v * _t(node.more_gains[k], v).unsqueeze(1)
            y = y + (torch.relu(g) if node.more_rectify[k] else g)
        return y
    if node.input_gain is None and not node.rectify_input and offset is None:
        return x
    x, bias = (x.current, x.bias) if isinstance(x, Deferred) else (x, None)
    if offset is not None:
        x = x + _t(offset, x).unsqueeze(1)
    if node.input_gain is not None:
        x = x * _t(node.input_gain, x).unsqueeze(1)
    if node.rectify_input:
        x = torch.relu(x)
    if bias is not None:
        x = x + bias
    return x


def _attention_module(node, device: torch.device):
    """The neurocomp.nn module an attention node stands for, with its weights, on ``device``.

    Built once per distinct (module, config, weights, device): a functools cache keyed by their bytes, so
    nothing is stored on the frozen node and an equal node reuses the module (they hold no state)."""
    state = tuple((k, str(a.dtype), a.shape, a.tobytes())
                  for k, a in ((k, np.ascontiguousarray(v)) for k, v in node.state().items()))
    return _build_module(node.meta["module"], json.dumps(node.meta["config"], sort_keys=True), state, str(device))


@functools.lru_cache(maxsize=32)
def _build_module(name: str, config: str, state: tuple, device: str):
    from neurocomp.nn import REGISTRY
    mod = REGISTRY[name](**json.loads(config)).eval()
    mod.load_state_dict({k: torch.as_tensor(np.frombuffer(b, dtype=dt).reshape(shape).copy()) for k, dt, shape, b in state})
    return mod.to(device)


def _attention_map(mod, x: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():      # torch warns about TCJA's 'same' padding with even kernels
        warnings.filterwarnings("ignore", message="Using padding='same'")
        return mod.attention(x)


# ---- one entry per node class: op(run, node, *inputs) -----------------------------------------------
def _input(run, node):
    return run.inputs


def _linear(run, node, x):
    return _synapse(run, node, x, lambda v, b: F.linear(v, _t(node.weight, v), b))


def _dense(run, node, x):
    shape = tuple(node.out_shape)
    return _synapse(run, node, x, lambda v, b: F.linear(v.flatten(1), _t(node.weight, v), b).reshape((-1,) + shape),
                    bias_shape=shape)


def _conv2d(run, node, x):
    return _synapse(run, node, x, lambda v, b: F.conv2d(v, _t(node.weight, v), b, tuple(node.stride),
                                                        tuple(node.padding), tuple(node.dilation), int(node.groups)))


def _sumpool2d(run, node, x):
    return _per_step(lambda v: F.avg_pool2d(v, tuple(node.kernel), tuple(node.stride), tuple(node.padding),
                                            divisor_override=1), x)


def _avgpool2d(run, node, x):
    return _per_step(lambda v: F.avg_pool2d(v, tuple(node.kernel), tuple(node.stride), tuple(node.padding)), x)


def _batchnorm(run, node, x):
    return _per_step(lambda v: F.batch_norm(v, _t(node.mean, v), _t(node.var, v), _t(node.weight, v), _t(node.bias, v),
                                            False, 0.0, node.eps), x)


def _flatten(run, node, x):
    return x.flatten(2)


def _threshold(run, node, x):
    return (x > node.threshold).to(x.dtype)


def _lif(run, node, x):
    return _float_lif(node, _neuron_input(node, x))


def _malif_op(run, node, x):
    keys = ("v_threshold", "alpha", "beta")
    if node.per_channel:
        vth, alpha, beta = (run.tensor(node.channel_values(k), torch.float32) for k in keys)
    else:
        vth, alpha, beta = (run.tensor(float(getattr(node, k)), torch.float32) for k in keys)
    return _malif(_neuron_input(node, x), vth, alpha, beta)


def _cuba_lif(run, node, x):
    return run_float_cuba(node, x)


def _scale(run, node, x):
    """``x[t] * scale[t]`` (additive: ``x[t] + scale[t]``) broadcast over the batch, as
    neurocomp.nn.StaticMap computes it."""
    m = run.tensor(node.scale, torch.float32).unsqueeze(1)
    y = x + m if node.additive else x * m
    return torch.relu(y) if node.rectify else y


def _graded_spikes(run, node, x):
    return x * run.tensor(node.scale, torch.float32)


def _ma_attention(run, node, x):
    return _attention_module(node, run.device)(x)


def _spike_attention(run, node, x):
    """``x * A(source)`` with the module's own float map (TCJA: per (t, c); PFA: per (t, c, h, w))."""
    mod = _attention_module(node, run.device)
    src = x if node.source is None else run.value(node.source)
    pool = tuple(node.pool)
    if pool != (1, 1):
        T, B = src.shape[:2]
        y = F.avg_pool2d(src.flatten(0, 1), pool, pool)
        a = _attention_map(mod, y.reshape((T, B) + tuple(y.shape[1:])))
        a = a.repeat_interleave(pool[0], dim=3).repeat_interleave(pool[1], dim=4)
        out = torch.zeros_like(x)
        out[..., :a.shape[3], :a.shape[4]] = x[..., :a.shape[3], :a.shape[4]] * a
        return out
    a = _attention_map(mod, src)
    while a.dim() < x.dim():
        a = a.unsqueeze(-1)
    return x * a


def _voting(run, node, x):
    """SpikingJelly's VotingLayer, op for op: ``avg_pool1d`` of each step over the last dim."""
    k = int(node.voting_size)
    return _per_step(lambda v: F.avg_pool1d(v.unsqueeze(1), k, k).squeeze(1), x)


def _plain(node, xs):
    for x in xs:
        if isinstance(x, Deferred):
            raise UnsupportedLayer("a gained neuron (folded attention without its bias) behind an add/concat",
                                   where=f"layer '{node.name}'", hint="put the attention map after the add")
    return xs


def _add(run, node, *xs):
    """The element-wise sum of its inputs, as torch's ``a + b + ...`` (left to right)."""
    split = _split_sum(run, node, [x.to(torch.float32) if isinstance(x, torch.Tensor) else x for x in xs])
    if split is not None:
        return split
    xs = _plain(node, xs)
    out = xs[0].to(torch.float32)
    for x in xs[1:]:
        out = out + x.to(torch.float32)
    return out


def _concat(run, node, *xs):
    """``torch.cat`` along the channel axis (axis 0 of a sample, 2 of ``[T, B, ...]``)."""
    return torch.cat([x.to(torch.float32) for x in _plain(node, xs)], dim=2)


def _readout(run, node, x):
    """The head's value per step is its input current (the class: argmax of the sum over T)."""
    return x


FLOAT_OPS = {Add: _add, Concat: _concat, Input: _input, Linear: _linear, Dense: _dense, Conv2d: _conv2d, SumPool2d: _sumpool2d,
             AvgPool2d: _avgpool2d, BatchNorm: _batchnorm, Flatten: _flatten, Threshold: _threshold, LIF: _lif,
             MALIF: _malif_op, CubaLIF: _cuba_lif, Scale: _scale, GradedSpikes: _graded_spikes,
             MAAttention: _ma_attention, SpikeAttention: _spike_attention, Voting: _voting, Readout: _readout}
