"""Loihi fixed-point arithmetic of the reference walk: one entry per IR node class (``FIXED_OPS``).

On a quantized graph it reproduces Lava's ``fixed_pt`` models bit for bit, with the arithmetic of
``neurocomp.fixedpoint``. Values along the edges: spikes (bool ``[T, B, *shape]``; int64 when they
carry graded payloads) out of neurons, integer synaptic input (weight units) out of synapses: float32
holding exact integers where every sum is provably below 2**23 (:func:`stays_float`), else int64;
a dynamic MA attention hands its consumer the current together with itself (:class:`Gained`), and
that neuron takes its per-sample gains from it. Neurons run over the whole window in exact floats
(:mod:`neurocomp.sim.voltage`) where the bounds allow, else step by step through fixedpoint's integer
expression (``WINDOW = False`` forces the latter; ``tests/test_voltage.py`` checks both agree). Float-only
layers (BatchNorm, AvgPool2d, Scale) are refused: the passes fold them before ``quantize``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from neurocomp import fixedpoint as fx
from neurocomp.errors import BadGraph, UnsupportedLayer
from neurocomp.memory import product
from neurocomp.ir import (Add, Concat, AvgPool2d, BatchNorm, Conv2d, CubaLIF, Dense, Flatten, GradedSpikes, Input, LIF, Linear,
                          MAAttention, MALIF, Readout, Scale, SpikeAttention, SumPool2d, Threshold, Voting)
from neurocomp.sim import voltage
from neurocomp.sim.cuba import run_fixed_cuba
from neurocomp.sim.walk import Split, refusal, split_sum


class Gained(NamedTuple):
    """A synaptic input with the dynamic MA attention whose per-sample gains its neuron applies."""
    current: torch.Tensor     # int64 [T, B, *shape]
    attention: MAAttention


# ---- helpers -------------------------------------------------------------------------------------
FLOAT32_EXACT, FLOAT64_EXACT = 1 << 24, 1 << 53     # every integer of magnitude up to these is a float32 / float64


def weight_fan(node) -> float:
    """The largest sum of |weights| into one output of a synapse (a sum pool: kernel size times |weight|);
    computed in float64 from the weights, so itself exact or rounded up by < 2**-50."""
    q = np.abs(np.asarray(node.qweight, dtype=np.float64))
    return float(q.reshape(q.shape[0], -1).sum(1).max() if q.ndim > 1
                 else float(q) * np.prod(getattr(node, "kernel", (1,))))


def sum_bound(node, s: torch.Tensor) -> float:
    """An upper bound on the magnitude of every partial sum a synapse forms from inputs ``s``:
    :func:`weight_fan` times the largest |input|."""
    in_max = 1.0 if s.dtype == torch.bool else float(s.abs().max()) if s.numel() else 0.0
    return weight_fan(node) * in_max


def exact_float(node, s: torch.Tensor):
    """The float dtype in which every partial sum of ``node`` over ``s`` is an exact integer, whatever the
    summation order (so the CPU and CUDA kernels give the same integers): float32 below 2**24, float64
    below 2**53; a layer whose sums could reach 2**53 is refused."""
    return _exact_dtype(node, sum_bound(node, s))


def _exact_dtype(node, bound: float):
    if bound < FLOAT32_EXACT:
        return torch.float32
    if bound < FLOAT64_EXACT:
        return torch.float64
    raise UnsupportedLayer(f"its synaptic sums could reach {bound:.3g}, beyond 2**53, the largest integer float64 "
                           f"holds exactly", where=f"layer '{node.name}'",
                           hint="quantize the graph with neurocomp (8-bit weights) or reduce the layer's fan-in")


CHUNK_BYTES = 1 << 25       # a synapse's float64 product per chunk of frames (sim.footprint counts it)


def stays_float(bound: float) -> bool:
    """Whether a synapse whose partial sums are bounded by ``bound`` hands its sums on as float32: every
    sum is then an exact integer below 2**23, where Lava's 24-bit wrap and its int32 casts are the identity."""
    return bound < fx.MAX_STATE


def _synapse(node, s: torch.Tensor, fn, finish, on_spikes=None) -> torch.Tensor:
    """Integer synaptic input from spikes ``s`` [T, B, *shape]: ``fn(x, dtype)`` sums each frame in float32
    or float64, whichever is exact (:func:`exact_float`). Sums provably below 2**23 (:func:`stays_float`) come
    back as they are, float32 holding exact integers (from ``on_spikes(x)`` instead, given bool spikes, when
    the entry has a faster sum of spikes); others are rounded into int64 and given Lava's wrap or cast
    (``finish``)."""
    if node.qweight is None:
        raise BadGraph("synapse has no quantized weights", where=f"layer '{node.name}'",
                       hint="run_fixed takes a quantized graph (passes.pipeline.lower)")
    T, B = s.shape[:2]
    x = s.flatten(0, 1)
    bound = sum_bound(node, x)
    dt = _exact_dtype(node, bound)
    direct = dt == torch.float32 and stays_float(bound)
    if direct and on_spikes is not None and x.dtype == torch.bool:
        one = on_spikes
    elif direct:
        def one(xs):
            return fn(xs.to(dt), dt)
    else:
        def one(xs):
            return finish(torch.round(fn(xs.to(dt), dt)).to(torch.int64))
    # frames (steps x samples) in chunks of about CHUNK_BYTES of product: each frame's integer sums are
    # exact and independent of the others, so the result is the same, and the float temporaries stay small
    n = x.shape[0]
    per = max(1, CHUNK_BYTES // max(1, (4 if direct else 8) * product(node.out_shape)))
    if per >= n:
        y = one(x)
    else:
        first = one(x[:per])
        y = torch.empty((n,) + tuple(first.shape[1:]), dtype=first.dtype, device=first.device)
        y[:per] = first
        first = None
        for i in range(per, n, per):
            y[i:i + per] = one(x[i:i + per])
    return y.reshape((T, B) + tuple(y.shape[1:]))


def _int64(x):
    """An integer-valued value (int64, or float32 holding integers: :func:`_synapse`) as int64."""
    return x.to(torch.int64) if x is not None and x.is_floating_point() else x


def _weight(node, dt, like: torch.Tensor, cache: dict) -> torch.Tensor:
    """The node's integer weights as ``dt`` on ``like``'s device, made once per run of the node (``cache``)."""
    w = cache.get(dt)
    if w is None:
        w = cache[dt] = torch.as_tensor(np.asarray(node.qweight), dtype=dt, device=like.device)
    return w


def _ints(a, like: torch.Tensor) -> torch.Tensor:
    """A node's integer array as int64 on ``like``'s device."""
    return torch.as_tensor(np.asarray(a).astype("int64"), device=like.device)


def _compartment(node):
    if node.fixed is None:
        raise BadGraph("neuron has no fixed-point parameters", where=f"layer '{node.name}'",
                       hint="run_fixed takes a quantized graph (passes.pipeline.lower)")
    return node.fixed


def dynamic_gains(att: MAAttention, a_seq: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-sample gain mantissas ``[T, B, *shape]`` the attention process computes from a window
    (offsets in voltage units for PFA's additive variant)."""
    from neurocomp.fixedpoint.attention import current_attention, current_program
    x = (a_seq.to(torch.int64) * (1 << fx.ACT_SHIFT) + bias).cpu().numpy()   # numpy arithmetic (the process's own)
    prog = current_program(att.meta.get("module", ""), att.state(), att.parts, tuple(att.out_shape), att.x_scale)
    g = current_attention(x.swapaxes(0, 1), prog)
    return torch.as_tensor(np.ascontiguousarray(g.swapaxes(0, 1)), device=a_seq.device)




WINDOW = True      # neurons evaluated over the window in exact floats (sim.voltage) where its bounds allow;
#                    False: every neuron steps through fixedpoint's integer expression (the tests compare both)


def _per_step(g):
    """Gain mantissas ``[T, ...]`` (a node's array or a tensor) as one Python int per step when every neuron
    of a step has the same gain, else None."""
    flat = g.reshape(g.shape[0], -1)
    if flat.shape[1] and bool((flat == flat[:, :1]).all()):
        return [int(v) for v in flat[:, 0].tolist()]
    return None


def _gain_window(p, a_seq, bias, gains, offsets, step_bias, plain, plain_bias, more, more_mant, more_bias):
    """``gain_lif_step`` over the window (:mod:`neurocomp.sim.voltage`): the gained input ``x[t]`` in float32
    or float64, exact by the bounds taken here from the data, then the recurrence; None when a bound does not
    fit. A gain is a product and a truncating division by ``2**shift`` (``trunc_shift``). With one gain
    ``g >= 0`` per step on the bare synaptic input, ``trunc(64 a g / 2**shift)`` is split at ``h = shift - 6``:
    ``a (g >> h) + trunc(a (g mod 2**h) / 2**h)`` (both terms have the sign of ``a``), whose products stay
    within float32 where ``64 a g`` would not."""
    T, unit = a_seq.shape[0], 1 << fx.ACT_SHIFT
    shift, on_bias, rect = int(p.gain_shift), bool(p.gain_on_bias), bool(p.rectify)
    am, bmax = voltage.amax(a_seq), voltage.amax(bias)
    x0 = unit * am + (bmax if on_bias else 0) + (0 if offsets is None else voltage.amax(offsets))
    gmax = 1 if gains is None else voltage.amax(gains)
    steps = None if gains is None else _per_step(gains)
    split = steps is not None and not (on_bias or rect or offsets is not None) and min(steps) >= 0
    h = shift - fx.ACT_SHIFT
    if split:
        widest = am * (max((1 << h) - 1, gmax >> h) if h > 0 else gmax << -h)
    else:
        widest = x0 * max(gmax, 1)              # the largest intermediate of the gained input
    wmax = ((x0 * gmax) >> shift if gains is not None else x0) + (0 if on_bias else bmax)
    if plain is not None:
        wmax += unit * voltage.amax(plain) + (voltage.amax(plain_bias) if isinstance(plain_bias, torch.Tensor)
                                              else abs(int(plain_bias)))
    for k, a_k in sorted(more.items()):
        xk = unit * voltage.amax(a_k) + voltage.amax(more_bias[k])
        mk = voltage.amax(more_mant[k])
        widest = max(widest, xk * max(mk, 1))
        wmax += (xk * mk) >> int(p.more_gain_shift[k])
    if step_bias is not None:
        wmax += voltage.amax(step_bias)
    widest = max(widest, wmax)
    xdt = next((d for d in (torch.float32, torch.float64) if widest < voltage.EXACT[d]), None)
    k = voltage.keep(p.dv)
    dt = None if xdt is None else voltage.window_dtype(wmax, k, T, int(p.v_reset), at_least=xdt)
    if dt is None:
        return None

    def in_dt(g):
        return g if g is None or isinstance(g, list) else torch.as_tensor(g, device=a_seq.device).to(dt)
    g = None if gains is None else steps if steps is not None else in_dt(gains)
    b = bias.to(dt)
    pb = None if plain is None or not isinstance(plain_bias, torch.Tensor) else plain_bias.to(dt)
    pb_int = 0 if plain is None or isinstance(plain_bias, torch.Tensor) else int(plain_bias)
    sb = None if step_bias is None else step_bias.to(dt)
    off = None if offsets is None else offsets.to(dt)
    groups = [(a_k, more_bias[k].to(dt), _per_step(more_mant[k]) or in_dt(more_mant[k]),
               1 << int(p.more_gain_shift[k]), bool(p.more_rectify[k])) for k, a_k in sorted(more.items())]
    x = torch.empty(a_seq.shape[1:], dtype=dt, device=a_seq.device)
    y = torch.empty_like(x) if groups else None

    def times(out, a_t, c):                     # out = a_t * c, computed in dt (another type's product could round)
        if a_t.dtype == dt:
            return torch.mul(a_t, c, out=out)
        return out.copy_(a_t).mul_(c)

    def feed(n, t):                             # n -= x[t], the gained input of gain_lif_step
        if split:
            hi, lo = (g[t] >> h, g[t] & ((1 << h) - 1)) if h > 0 else (g[t] << -h, 0)
            if lo:
                times(x, a_seq[t], lo).div_(1 << h, rounding_mode="trunc").add_(a_seq[t], alpha=hi)
            else:
                times(x, a_seq[t], hi)
        else:
            times(x, a_seq[t], unit)
            if on_bias:
                x.add_(b)
            if off is not None:
                x.add_(off[t])
            if rect:
                x.relu_()
            if g is not None:
                x.mul_(g[t]).div_(1 << shift, rounding_mode="trunc")
        if not on_bias:
            x.add_(b)
        if plain is not None:
            x.add_(plain[t], alpha=unit)
            if pb is not None:
                x.add_(pb)
            elif pb_int:
                x.add_(pb_int)
        for a_k, mb, mg, div, mrect in groups:       # fixedpoint.group_gain_input
            times(y, a_k[t], unit).add_(mb)
            if mrect:
                y.relu_()
            x.add_(y.mul_(mg[t]).div_(div, rounding_mode="trunc"))
        if sb is not None and fx.window_step_bias(step_bias, t) is not None:
            x.add_(sb)
        n.sub_(x)
    return voltage.run_window(T, a_seq[0], feed, k, int(p.vth) << fx.VTH_SHIFT, int(p.v_reset), wmax, dt)


def _gain_neuron(node, p, a_seq: torch.Tensor, bias: torch.Tensor, stats: dict, att=None, plain=None, more=()):
    gains = p.gain_mant                          # [T, *shape] ints (a tensor below, where the steps need one)
    offsets = None if p.offset is None else _ints(p.offset, a_seq)
    dv = _ints(p.dv, a_seq) if isinstance(p.dv, np.ndarray) else int(p.dv)   # per neuron, or one
    step_bias = None if p.step_bias is None else _ints(p.step_bias, a_seq)
    if att is not None and att.additive:
        offsets = dynamic_gains(att, a_seq, bias)
    elif att is not None:
        gains = dynamic_gains(att, a_seq, bias)
    plain_bias = None if p.plain_bias is None else _ints(p.plain_bias, a_seq)
    if plain is not None and plain_bias is None:
        plain_bias = 0
    if plain is None and plain_bias is not None:
        plain = torch.zeros_like(a_seq)
    more = dict(more)
    for k in range(len(p.more_gain_shift)):      # a further gained group none of whose synapses reached here
        more.setdefault(k, torch.zeros_like(a_seq))
    more_mant = None if p.more_gain_mant is None else _ints(p.more_gain_mant, a_seq)
    more_bias = None if p.more_bias is None else _ints(p.more_bias, a_seq)
    stats[node.name] = {"voltage_saturations": None, "current_wraps": 0}
    out = None if not WINDOW else _gain_window(p, a_seq, bias, gains, offsets, step_bias, plain, plain_bias, more,
                                               more_mant, more_bias)
    if out is not None:
        return out
    a_seq, plain = _int64(a_seq), _int64(plain)
    if isinstance(gains, np.ndarray):
        gains = _ints(gains, a_seq)
    v = torch.zeros_like(a_seq[0])
    out = torch.zeros(a_seq.shape, dtype=torch.bool, device=a_seq.device)
    for t in range(a_seq.shape[0]):
        gained_t = None
        for k, a_k in sorted(more.items()):
            x_k = fx.group_gain_input(a_k[t].to(torch.int64), more_bias[k], more_mant[k, t], int(p.more_gain_shift[k]),
                                      bool(p.more_rectify[k]))
            gained_t = x_k if gained_t is None else gained_t + x_k
        v, s = fx.gain_lif_step(v, a_seq[t], bias, None if gains is None else gains[t], int(p.gain_shift),
                                dv, int(p.vth), int(p.v_reset), bool(p.rectify), bool(p.gain_on_bias),
                                torch.clamp, None if offsets is None else offsets[t], fx.window_step_bias(step_bias, t),
                                None if plain is None else plain[t], plain_bias, gained_t)
        out[t] = s
    return out


def _lif_window(p, a, bias, counts: dict, own: bool = False):
    """``lif_step`` over the window (:mod:`neurocomp.sim.voltage`) when ``du = 4095`` (the current is ``64 a``,
    no memory) and ``|64 a| < 2**23`` (measured: the 24-bit current wrap and the int32 casts are the identity,
    no current wraps); None otherwise. A voltage without memory (every decay truncates to 0, no clip) fires
    where ``64 a + bias > theta``, i.e. ``a > floor((theta - bias) / 64)``: one comparison for the window.
    ``own``: ``a`` may be overwritten (``Run.owns_input``), with ``64 a + bias``."""
    if int(p.du) != fx.DECAY_MAX:
        return None
    m = voltage.amax(a)
    if (m << fx.ACT_SHIFT) >= fx.MAX_STATE:
        return None
    wmax = (m << fx.ACT_SHIFT) + voltage.amax(bias)
    k, T, theta = voltage.keep(p.dv), a.shape[0], int(p.vth) << fx.VTH_SHIFT
    dt = voltage.window_dtype(wmax, k, T, 0)
    if dt is None:
        return None
    if voltage.memoryless(wmax, k, T, 0) and not voltage.window_bounds(wmax, k, T, 0)[2]:
        cut = torch.div(theta - bias, 1 << fx.ACT_SHIFT, rounding_mode="floor")      # exact integers
        if a.is_floating_point():
            cut = cut.to(a.dtype)
        return torch.gt(a, cut)
    b = bias.to(dt) if bool(bias.any()) else None
    if own and b is not None and a.dtype == dt:
        torch.add(b, a, alpha=1 << fx.ACT_SHIFT, out=a)      # w = 64 a + bias, exact: |w| <= wmax
        def feed(n, t):
            n.sub_(a[t])
    else:
        def feed(n, t):                         # n -= 64 a[t] + bias
            n.sub_(a[t], alpha=1 << fx.ACT_SHIFT)
            if b is not None:
                n.sub_(b)
    return voltage.run_window(T, a[0], feed, k, theta, 0, wmax, dt, counts)


def _loihi_neuron(run, node, a):
    """A Loihi LIF compartment (LIF, MALIF, Threshold after quantize), gain-scheduled when asked."""
    p = _compartment(node)
    a, plain, more = (a.gained, a.plain, a.more) if isinstance(a, Split) else (a, None, ())
    a, att = (a.current, a.attention) if isinstance(a, Gained) else (a, None)
    bias = run.tensor(fx.effective_bias(p.bias_mant.astype("int64"), p.bias_exp.astype("int64")), torch.int64)
    if a is None:                       # only plain groups reached the neuron in this Add
        a = torch.zeros_like(plain if plain is not None else more[0][1])
    if p.gain_scheduled:
        return _gain_neuron(node, p, a, bias, run.stats, att, plain, more)
    if plain is not None:
        a = _int64(a) + _int64(plain)
    counts = {"voltage_saturations": 0, "current_wraps": 0}
    out = _lif_window(p, a, bias, counts, plain is None and run.owns_input(node)) if WINDOW else None
    if out is None:
        a = _int64(a)
        u = torch.zeros_like(a[0])
        v = torch.zeros_like(a[0])
        out = torch.zeros(a.shape, dtype=torch.bool, device=a.device)
        for t in range(a.shape[0]):
            u, v, s = fx.lif_step(u, v, a[t], p.du, p.dv, bias, int(p.vth), torch.clamp, counts)
            out[t] = s
    run.stats[node.name] = counts
    return out


# ---- one entry per node class: op(run, node, *inputs) -----------------------------------------------
def _input(run, node):
    return run.inputs.to(torch.bool)          # on the run's device (Run.run)


def _conv2d(run, node, s):
    w = {}
    return _synapse(node, s, lambda x, dt: F.conv2d(x, _weight(node, dt, x, w), None, tuple(node.stride),
                                                    tuple(node.padding), tuple(node.dilation), int(node.groups)),
                    fx.wrap_synaptic)


def _linear(run, node, s):
    graded, w = s.dtype != torch.bool, {}
    return _synapse(node, s, lambda x, dt: F.linear(x, _weight(node, dt, x, w)),
                    lambda y: fx.dense_lava_sum(y, graded))


def _dense(run, node, s):
    shape, graded, w = tuple(node.out_shape), s.dtype != torch.bool, {}
    return _synapse(node, s, lambda x, dt: F.linear(x.flatten(1), _weight(node, dt, x, w)).reshape((-1,) + shape),
                    lambda y: fx.dense_lava_sum(y, graded))


def _window_counts(x: torch.Tensor, kernel, stride, padding) -> torch.Tensor:
    """Spike counts of bool ``x`` [N, C, H, W] over the pooling windows (``avg_pool2d`` with
    ``divisor_override=1``, zero padding), as float32: the window sum is separable, so strided adds of its
    uint8 view along the columns, then along the rows (the last one written as float32)."""
    (kh, kw), (sh, sw), (ph, pw) = tuple(kernel), tuple(stride), tuple(padding)
    xu = x.view(torch.uint8)
    if kh * kw > 255:
        xu = xu.to(torch.int32)
    if ph or pw:
        xu = F.pad(xu, (pw, pw, ph, ph))
    ho, wo = (xu.shape[-2] - kh) // sh + 1, (xu.shape[-1] - kw) // sw + 1
    cols = [xu[..., j:j + sw * (wo - 1) + 1:sw] for j in range(kw)]
    rows = cols[0] if kw == 1 else torch.add(cols[0], cols[1])
    for c in cols[2:]:
        rows.add_(c)
    taps = [rows[..., i:i + sh * (ho - 1) + 1:sh, :] for i in range(kh)]
    out = torch.empty(taps[0].shape, dtype=torch.float32, device=x.device)
    if kh == 1:
        return out.copy_(taps[0])
    if kh == 2:
        return torch.add(taps[0], taps[1], out=out)
    acc = torch.add(taps[0], taps[1])
    for tap in taps[2:-1]:
        acc.add_(tap)
    return torch.add(acc, taps[-1], out=out)


def _sumpool2d(run, node, s):
    q = int(node.qweight) if node.qweight is not None else None

    def on_spikes(x):
        y = _window_counts(x, node.kernel, node.stride, node.padding)
        return y if q == 1 else y.mul_(q)
    return _synapse(node, s, lambda x, dt: F.avg_pool2d(x, tuple(node.kernel), tuple(node.stride), tuple(node.padding),
                                                        divisor_override=1) * q,
                    fx.wrap_synaptic, on_spikes)


def _flatten(run, node, s):
    return s.flatten(2)


def _cuba_lif(run, node, a):
    if isinstance(a, Gained):
        raise UnsupportedLayer("a dynamic attention in front of a cuba_lif layer", where=f"layer '{node.name}'")
    _compartment(node)
    return run_fixed_cuba(node, _int64(a), run.stats)


def _ma_attention(run, node, a):
    return Gained(a, node)


def _spike_attention(run, node, s):
    """Spikes times the integer map's 8-bit payloads (``spike_payload`` on the module's program)."""
    from neurocomp.fixedpoint.attention import spike_payload, spike_program
    src = s if node.source is None else run.value(node.source)
    prog = spike_program(node.meta["module"], node.state(), tuple(src.shape[2:]), tuple(node.pool))
    pay = spike_payload(prog, src.cpu().numpy().swapaxes(0, 1))     # numpy arithmetic (the process's own)
    return s.to(torch.int64) * run.tensor(np.ascontiguousarray(pay.swapaxes(0, 1)), torch.int64)


def _graded_spikes(run, node, s):
    """The producer's graded payloads: spike times ``qscale``."""
    return s.to(torch.int64) * run.tensor(np.asarray(node.qscale, np.int64), torch.int64)


def _voting(run, node, s):
    """Each group's spike count times the vote's integer weight (a Dense of one weight per group)."""
    if node.qweight is None:
        raise BadGraph("the vote has no quantized weight", where=f"layer '{node.name}'",
                       hint="run_fixed takes a quantized graph (passes.pipeline.lower)")
    if s.dtype != torch.bool:
        raise UnsupportedLayer("a vote over currents has no fixed-point form (fold_voting folds it into the Linear "
                               "before it)", where=f"layer '{node.name}'")
    k = int(node.voting_size)
    counts = s.to(torch.int64).reshape(tuple(s.shape[:-1]) + (-1, k)).sum(-1)
    return counts * int(node.qweight)


def _readout(run, node, a):
    """The non-firing integrator, step by step as Lava's LIF computes it (``fx.lif_step``: 24-bit current
    wrap, voltage saturation, and the firing it is scaled never to reach); the value of step ``t`` is
    ``v[t] - v[t-1]``, so the window's sum is the final ``v``."""
    p = _compartment(node)
    a = _int64(a)
    bias = run.tensor(fx.effective_bias(p.bias_mant.astype("int64"), p.bias_exp.astype("int64")), torch.int64)
    u = torch.zeros_like(a[0])
    v = torch.zeros_like(a[0])
    out = torch.zeros(a.shape, dtype=torch.int64, device=a.device)
    counts = {"voltage_saturations": 0, "current_wraps": 0}
    fired = 0
    for t in range(a.shape[0]):
        prev = v
        u, v, s = fx.lif_step(u, v, a[t], p.du, p.dv, bias, int(p.vth), torch.clamp, counts)
        fired += int(s.sum())
        out[t] = v - prev
    run.stats[node.name] = {**counts, "fired": fired}
    return out


def _split_sum(run, node, xs):
    """``xs`` summed into gained and plain parts (:meth:`Run.gained_inputs`), or None when the Add's neuron
    gains its whole input; at most one dynamic attention (:class:`Gained`) among the gained inputs."""
    flags = run.gained_inputs(node)

    def acc(a, b):
        if a is None or b is None:
            return b if a is None else a
        if isinstance(a, Gained) or isinstance(b, Gained):
            raise UnsupportedLayer("two gained synapse groups under dynamic attention at one neuron",
                                   where=f"layer '{node.name}'", hint="one attention map per neuron is supported")
        return a.to(torch.int64) + b.to(torch.int64)
    return split_sum(flags, xs, acc)


def _integers(node, xs):
    for x in xs:
        if isinstance(x, Gained):
            raise UnsupportedLayer("dynamic attention in front of an add/concat", where=f"layer '{node.name}'",
                                   hint="put the attention between the add and its neuron's synapse group")
    return xs


def _add(run, node, *xs):
    """Integer sum: of synaptic inputs (each group's current as its synapse delivers it; the neuron adds
    them as Lava sums every connection into ``a_in``), or of spikes (graded ``0..k`` into the next synapse)."""
    split = _split_sum(run, node, xs)
    if split is not None:
        return split
    xs = _integers(node, xs)
    out = xs[0].to(torch.int64)
    for x in xs[1:]:
        out = out + x.to(torch.int64)
    return out


def _concat(run, node, *xs):
    """Channels joined; spikes stay spikes (bool) unless one input carries graded values."""
    xs = _integers(node, xs)
    if all(x.dtype == torch.bool for x in xs):
        return torch.cat(xs, dim=2)
    return torch.cat([x.to(torch.int64) for x in xs], dim=2)


_FOLDED = "the passes fold it before quantize (run_fixed takes a quantized graph)"

FIXED_OPS = {Add: _add, Concat: _concat, Input: _input, Linear: _linear, Dense: _dense, Conv2d: _conv2d, SumPool2d: _sumpool2d,
             Flatten: _flatten, Threshold: _loihi_neuron, LIF: _loihi_neuron, MALIF: _loihi_neuron,
             CubaLIF: _cuba_lif, GradedSpikes: _graded_spikes, MAAttention: _ma_attention,
             SpikeAttention: _spike_attention, Voting: _voting, Readout: _readout,
             AvgPool2d: refusal(_FOLDED), BatchNorm: refusal(_FOLDED), Scale: refusal(_FOLDED)}
