"""Batched reference interpreter over the IR, with two arithmetics.

- ``run_float``: the source framework's float32 arithmetic, op for op (SpikingJelly's LIF update
  ``v + (x - v) / tau`` etc., eval-mode BatchNorm, torch pooling), so on the unfolded graph it
  reproduces the torch model's spikes exactly. On a folded graph it is the "folded float model".
- ``run_fixed``: Loihi fixed point from ``neurocomp.fixedpoint`` on a quantized graph; it
  reproduces Lava's ``fixed_pt`` models bit for bit.

Tensors are time-major ``[T, B, *shape]``. Results are *time-aligned*: ``spikes[name][t]`` is the
layer's output for input frame ``t`` (Lava shows it ``delay`` steps later; see passes.timing).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from neurocomp import fixedpoint as fx
from neurocomp.errors import BadInput
from neurocomp.ir import (Dense, GradedSpikes, MAAttention, MALIF, Scale, SpikeAttention, AvgPool2d, BatchNorm, Conv2d, CubaLIF, Flatten, Input, LIF, Linear, SumPool2d, Threshold)
from neurocomp.results import SimResult
from neurocomp.sim.cuba import run_fixed_cuba, run_float_cuba


# ---- float arithmetic (SpikingJelly's expressions, same operation order) -------------------
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
def _malif(x_seq: torch.Tensor, v_threshold: float, alpha: float, beta: float):
    """MA-SNN's cell, op for op as neurocomp.nn.MALIFNode (eval): reset to threshold, then leak."""
    spikes = torch.zeros_like(x_seq)
    h = torch.zeros_like(x_seq[0])
    for t in range(x_seq.shape[0]):
        u = h + x_seq[t]
        spike = (u - v_threshold >= 0).to(x_seq)
        h_hat = spike * v_threshold + (1.0 - spike) * u
        h = alpha * h_hat + beta
        spikes[t] = spike
    return spikes


def _apply_gain(node, x_seq: torch.Tensor, deferred_bias):
    """Folded attention: ``x * gain[t]`` (ReLU'd if asked), the bias added after when not gained."""
    if node.input_gain is not None:
        x_seq = x_seq * torch.as_tensor(node.input_gain, dtype=torch.float32).unsqueeze(1)
    if node.rectify_input:
        x_seq = torch.relu(x_seq)
    if deferred_bias is not None:
        x_seq = x_seq + deferred_bias
    return x_seq


def _defers_bias(neuron) -> bool:
    return getattr(neuron, "input_gain", None) is not None and not getattr(neuron, "gain_on_bias", True)


def _t(a, dtype=torch.float32):
    return None if a is None else torch.as_tensor(a, dtype=dtype)


def _stateless_float(node, x: torch.Tensor) -> torch.Tensor:
    """Apply a per-step node to ``x`` of shape [T*B, *shape]."""
    if isinstance(node, Conv2d):
        return F.conv2d(x, _t(node.weight), _t(node.bias), tuple(node.stride), tuple(node.padding),
                        tuple(node.dilation), int(node.groups))
    if isinstance(node, Linear):
        return F.linear(x, _t(node.weight), _t(node.bias))
    if isinstance(node, Dense):
        return F.linear(x.flatten(1), _t(node.weight), _t(node.bias)).reshape((-1,) + tuple(node.out_shape))
    if isinstance(node, BatchNorm):
        return F.batch_norm(x, _t(node.mean), _t(node.var), _t(node.weight), _t(node.bias), False, 0.0, node.eps)
    if isinstance(node, AvgPool2d):
        return F.avg_pool2d(x, tuple(node.kernel), tuple(node.stride), tuple(node.padding))
    if isinstance(node, SumPool2d):
        return F.avg_pool2d(x, tuple(node.kernel), tuple(node.stride), tuple(node.padding), divisor_override=1)
    if isinstance(node, Threshold):
        return (x > node.threshold).to(x.dtype)
    if isinstance(node, Flatten):
        return x.flatten(1)
    raise NotImplementedError(node.kind)


def _ma_module(node):
    """The neurocomp.nn module an MAAttention node stands for, with its weights (cached per node)."""
    mod = getattr(node, "_module_cache", None)
    if mod is None:
        from neurocomp.nn import REGISTRY
        mod = REGISTRY[node.meta["module"]](**node.meta["config"]).eval()
        mod.load_state_dict({k: torch.as_tensor(v) for k, v in node.state().items()})
        object.__setattr__(node, "_module_cache", mod)
    return mod


def _spike_attention_float(node: SpikeAttention, x_seq: torch.Tensor, outputs: dict) -> torch.Tensor:
    """``x * A(source)`` with the module's own float map (TCJA: per (t, c); PFA: per (t, c, h, w))."""
    import warnings
    mod = _ma_module(node)
    src = x_seq if node.source is None else outputs[node.source]
    warnings.filterwarnings("ignore", message="Using padding='same'")
    pool = tuple(node.pool)
    if pool != (1, 1):
        T, B = src.shape[:2]
        y = F.avg_pool2d(src.flatten(0, 1), pool, pool)
        pooled = y.reshape((T, B) + tuple(y.shape[1:]))
        a = mod.attention(pooled)
        a = a.repeat_interleave(pool[0], dim=3).repeat_interleave(pool[1], dim=4)
        out = torch.zeros_like(x_seq)
        out[..., :a.shape[3], :a.shape[4]] = x_seq[..., :a.shape[3], :a.shape[4]] * a
        return out
    a = mod.attention(src)
    while a.dim() < x_seq.dim():
        a = a.unsqueeze(-1)
    return x_seq * a


def _scale_float(node: Scale, x_seq: torch.Tensor) -> torch.Tensor:
    """``x[t] * scale[t]`` broadcast over the batch, as neurocomp.nn.StaticMap computes it."""
    y = x_seq * torch.as_tensor(node.scale, dtype=torch.float32).unsqueeze(1)
    return torch.relu(y) if node.rectify else y


def _check_input(graph, x_seq) -> torch.Tensor:
    x_seq = torch.as_tensor(x_seq)
    shape = tuple(graph.input_node.out_shape)
    if x_seq.dim() != len(shape) + 2 or tuple(x_seq.shape[2:]) != shape:
        raise BadInput(f"inputs have shape {tuple(x_seq.shape)}, expected [T, B, {', '.join(map(str, shape))}]",
                       where="inputs", hint="time-major [T, batch, *input_shape]")
    return x_seq


def run_float(graph, x_seq, record=None) -> SimResult:
    """Float reference over any float graph. ``record`` limits which neuron outputs are kept."""
    x = _check_input(graph, x_seq).to(torch.float32)
    T, B = x.shape[:2]
    spikes = {}
    outputs = {}      # every neuron's output (attention maps may read an earlier layer)
    nodes = list(graph.nodes)
    deferred = None   # a synapse bias that a gain-scheduled neuron adds after its gain
    with torch.no_grad():
        for i, node in enumerate(nodes):
            if isinstance(node, Input):
                continue
            if isinstance(node, (LIF, MALIF)):
                if node.input_gain is not None or node.rectify_input:
                    x = _apply_gain(node, x, deferred)
                    deferred = None
                x = _float_lif(node, x) if isinstance(node, LIF) else _malif(
                    x, float(node.v_threshold), float(node.alpha), float(node.beta))
            elif isinstance(node, CubaLIF):
                x = run_float_cuba(node, x)
            elif isinstance(node, Scale):
                x = _scale_float(node, x)
            elif isinstance(node, GradedSpikes):
                x = x * torch.as_tensor(node.scale, dtype=torch.float32)
            elif isinstance(node, MAAttention):
                x = _ma_module(node)(x)
            elif isinstance(node, SpikeAttention):
                x = _spike_attention_float(node, x, outputs)
            elif node.is_synapse and i + 1 < len(nodes) and _defers_bias(nodes[i + 1]) and node.bias is not None:
                bias = torch.as_tensor(node.bias, dtype=torch.float32)
                y = _stateless_float(node.replace(bias=None), x.flatten(0, 1))
                deferred = (bias.reshape(tuple(node.out_shape)) if isinstance(node, Dense)
                            else bias.reshape((-1,) + (1,) * (y.dim() - 2)))
                x = y.reshape((T, B) + tuple(y.shape[1:]))
            else:
                y = _stateless_float(node, x.flatten(0, 1))
                x = y.reshape((T, B) + tuple(y.shape[1:]))
            if node.is_neuron:
                outputs[node.name] = x
                if record is None or node.name in record:
                    spikes[node.name] = x
    return SimResult(spikes=spikes, output=x)


# ---- fixed point ------------------------------------------------------------------------------
def _exact_float(node, s: torch.Tensor):
    """float32 when every possible sum is an integer below 2**24 (exact), else float64."""
    q = np.abs(np.asarray(node.qweight, dtype=np.float64))
    fan = q.reshape(q.shape[0], -1).sum(1).max() if q.ndim > 1 else float(q) * np.prod(getattr(node, "kernel", (1,)))
    in_max = 1.0 if s.dtype == torch.bool else float(s.abs().max()) if s.numel() else 0.0
    return torch.float32 if fan * in_max < (1 << 24) else torch.float64


def _synapse_fixed(node, s: torch.Tensor) -> torch.Tensor:
    """Integer synaptic input from spikes ``s`` [T*B, *shape] (in float32 or float64, whichever is exact)."""
    dt = _exact_float(node, s)
    x = s.to(dt)
    if isinstance(node, Conv2d):
        y = F.conv2d(x, torch.as_tensor(node.qweight, dtype=dt), None, tuple(node.stride),
                     tuple(node.padding), tuple(node.dilation), int(node.groups))
        return fx.wrap_synaptic(torch.round(y).to(torch.int64))
    if isinstance(node, Linear):
        y = F.linear(x, torch.as_tensor(node.qweight, dtype=dt))
        return torch.round(y).to(torch.int64)
    if isinstance(node, Dense):
        y = F.linear(x.flatten(1), torch.as_tensor(node.qweight, dtype=dt))
        return torch.round(y).to(torch.int64).reshape((-1,) + tuple(node.out_shape))
    if isinstance(node, SumPool2d):
        y = F.avg_pool2d(x, tuple(node.kernel), tuple(node.stride), tuple(node.padding), divisor_override=1)
        return fx.wrap_synaptic(torch.round(y).to(torch.int64) * int(node.qweight))
    raise NotImplementedError(node.kind)


def dynamic_gains(att: MAAttention, a_seq: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-sample gain mantissas ``[T, B, *shape]`` the attention process computes from a window."""
    from neurocomp.fixedpoint.attention import ma_gains, ma_program
    x = (a_seq.to(torch.int64) * (1 << fx.ACT_SHIFT) + bias).numpy()
    g = ma_gains(x.swapaxes(0, 1), ma_program(att.state(), att.parts, float(att.x_scale)))
    return torch.as_tensor(g.swapaxes(0, 1))


def _gain_neuron_fixed(node, a_seq: torch.Tensor, bias: torch.Tensor, stats: dict, dyn_att=None):
    p = node.fixed
    v = torch.zeros_like(a_seq[0])
    out = torch.zeros(a_seq.shape, dtype=torch.bool)
    gains = None if p.gain_mant is None else torch.as_tensor(p.gain_mant.astype("int64"))
    if dyn_att is not None:
        gains = dynamic_gains(dyn_att, a_seq, bias)
    for t in range(a_seq.shape[0]):
        v, s = fx.gain_lif_step(v, a_seq[t], bias, None if gains is None else gains[t], int(p.gain_shift),
                                int(p.dv), int(p.vth), int(p.v_reset), bool(p.rectify), bool(p.gain_on_bias),
                                torch.clamp)
        out[t] = s
    stats[node.name] = {"voltage_saturations": None, "current_wraps": 0}
    return out


def _neuron_fixed(node, a_seq: torch.Tensor, stats: dict, dyn_att=None):
    p = node.fixed
    bias = torch.as_tensor(fx.effective_bias(p.bias_mant.astype("int64"), p.bias_exp.astype("int64")),
                           dtype=torch.int64)
    if p.gain_scheduled:
        return _gain_neuron_fixed(node, a_seq, bias, stats, dyn_att)
    u = torch.zeros_like(a_seq[0])
    v = torch.zeros_like(a_seq[0])
    out = torch.zeros(a_seq.shape, dtype=torch.bool)
    counts = {"voltage_saturations": 0, "current_wraps": 0}
    for t in range(a_seq.shape[0]):
        u, v, s = fx.lif_step(u, v, a_seq[t], p.du, p.dv, bias, int(p.vth), torch.clamp, counts)
        out[t] = s
    stats[node.name] = counts
    return out


def run_fixed(graph, x_seq, record=None) -> SimResult:
    """Fixed-point reference over a quantized graph; inputs must be binary spikes."""
    x = _check_input(graph, x_seq)
    if not bool(((x == 0) | (x == 1)).all()):
        raise BadInput("fixed-point inputs must be binary spikes (0/1)", where="inputs",
                       hint="encode inputs as spikes (bernoulli/events encodings)")
    T, B = x.shape[:2]
    s = x.to(torch.bool)
    spikes, stats, outputs = {}, {}, {}
    a = None
    dyn_att = None
    with torch.no_grad():
        for node in graph:
            if isinstance(node, Input):
                continue
            if isinstance(node, MAAttention):
                dyn_att = node
                continue
            if isinstance(node, SpikeAttention):
                from neurocomp.fixedpoint.attention import spike_payload, spike_program
                src = s if node.source is None else outputs[node.source]
                prog = spike_program(node.meta["module"], node.state(), tuple(src.shape[2:]), tuple(node.pool))
                pay = spike_payload(prog, src.numpy().swapaxes(0, 1))
                s = s.to(torch.int64) * torch.as_tensor(pay.swapaxes(0, 1))
                continue
            if isinstance(node, GradedSpikes):   # the producer's graded payloads
                s = s.to(torch.int64) * torch.as_tensor(np.asarray(node.qscale, np.int64))
                continue
            if isinstance(node, Flatten):
                s = s.flatten(2)
            elif node.is_synapse:
                y = _synapse_fixed(node, s.flatten(0, 1))
                a = y.reshape((T, B) + tuple(y.shape[1:]))
            elif node.is_neuron:
                s = run_fixed_cuba(node, a, stats) if isinstance(node, CubaLIF) else \
                    _neuron_fixed(node, a, stats, dyn_att)
                dyn_att = None
                outputs[node.name] = s
                if record is None or node.name in record:
                    spikes[node.name] = s
            else:
                raise NotImplementedError(f"layer '{node.name}' ({node.kind}) in a fixed-point graph")
    return SimResult(spikes=spikes, output=s, stats=stats)
