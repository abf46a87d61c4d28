"""Busy networks for exactness tests: every spiking layer set, from data, to fire at a chosen rate.

Trained nets of realistic size keep most layers at 10-30 % activity; random nets with random
BatchNorm statistics are nearly silent after the first layer, so they never exercise large
synaptic sums, long pooling windows or saturated neurons. :func:`make_busy` walks a (multi-step
SpikingJelly) model in forward order and, for every spiking layer, tunes what feeds it:

- a ``BatchNorm`` in front of the neuron gets its input's per-channel mean and variance as running
  statistics (so its output is normalised on this data) and an affine ``gamma`` drawn in
  ``gamma_range`` and a ``beta`` found by bisection so that channel ``c`` fires at ``rate[c]``
  (drawn uniformly in ``rate``);
- a Conv/Linear with a bias and no BatchNorm gets the same treatment folded into its weights and
  bias (normalise, then scale and shift).

Layers are tuned in order, each on the spikes of the already tuned layers before it. The rate is
the float model's (the compiled net fires at nearly the same rate).
"""
from __future__ import annotations

import warnings

import torch
from spikingjelly.activation_based import functional, neuron

from neurocomp.frontends.torch import run_torch_model
from neurocomp.frontends.torch import iter_leaves

NEURONS = (neuron.LIFNode, neuron.IFNode)


class _Stop(Exception):
    pass


def _is_neuron(m) -> bool:
    return isinstance(m, NEURONS) or type(m).__name__ == "MALIFNode"


def _is_bn(m) -> bool:
    return isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))


def _is_syn(m) -> bool:
    return isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))


def _multi_step(m) -> bool:
    return getattr(m, "step_mode", None) == "m" or type(m).__module__.startswith("neurocomp.nn") or _is_neuron(m)


def _apply(m, x):
    """One leaf on a multi-step tensor ``[T, B, ...]`` (plain torch layers get the time axis folded)."""
    if _multi_step(m):
        return m(x)
    y = m(x.flatten(0, 1))
    return y.reshape(x.shape[:2] + y.shape[1:])


def _capture_input(model, x, target):
    """The input of leaf ``target`` when the model runs on ``x`` (the forward is stopped there)."""
    box = {}

    def hook(mod, inputs):
        box["x"] = inputs[0].detach().clone()
        raise _Stop

    h = target.register_forward_pre_hook(hook)
    try:
        run_torch_model(model, x)
    except _Stop:
        pass
    finally:
        h.remove()
        functional.reset_net(model)
    xin = box["x"]
    if not _multi_step(target):   # a plain torch layer inside SeqToANNContainer sees [T*B, ...]
        xin = xin.reshape(tuple(x.shape[:2]) + tuple(xin.shape[1:]))
    return xin


def _run_segment(seg, x):
    for m in seg:
        functional.reset_net(m) if _is_neuron(m) else None
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in seg:
            x = _apply(m, x)
    for m in seg:
        functional.reset_net(m) if _is_neuron(m) else None
    return x


def _channel_rates(s):
    """Firing rate per channel (axis 2) of spikes ``[T, B, C, ...]``."""
    return s.float().transpose(0, 2).reshape(s.shape[2], -1).mean(1)


def _tunables(model):
    """``[(tuned leaf, [leaves from it to the neuron inclusive])]`` in forward order."""
    leaves = [m for _, m in iter_leaves(model)]
    out = []
    for i, m in enumerate(leaves):
        if not _is_neuron(m):
            continue
        j = i - 1
        while j >= 0 and not (_is_bn(leaves[j]) or _is_syn(leaves[j]) or _is_neuron(leaves[j])):
            j -= 1
        if j < 0 or _is_neuron(leaves[j]):
            continue
        if _is_syn(leaves[j]) and leaves[j].bias is None:
            continue
        out.append((leaves[j], leaves[j:i + 1]))
    return out


def make_busy(model, x, rate=(0.1, 0.3), seed: int = 0, gamma_range=(0.5, 1.5), iters: int = 24):
    """Tune ``model`` in place (see the module doc) on inputs ``x`` ``[T, B, ...]``; returns
    ``{neuron path: measured mean rate}``. ``rate`` is a ``(low, high)`` range or one number."""
    lo, hi = (float(rate), float(rate)) if isinstance(rate, (int, float)) else map(float, rate)
    gen = torch.Generator().manual_seed(seed)
    names = {id(m): p for p, m in iter_leaves(model)}
    model.eval()
    measured = {}
    for tuned, seg in _tunables(model):
        xin = _capture_input(model, x, tuned)
        with torch.no_grad():
            if _is_bn(tuned):
                C = tuned.num_features
                dims = [d for d in range(xin.dim()) if d != 2]
                tuned.running_mean.copy_(xin.mean(dims))
                tuned.running_var.copy_(xin.var(dims, unbiased=False) + 1e-3)
            else:
                C = tuned.out_features if isinstance(tuned, torch.nn.Linear) else tuned.out_channels
                tuned.bias.zero_()
                y = _apply(tuned, xin)
                dims = [d for d in range(y.dim()) if d != 2]
                mean, std = y.mean(dims), (y.var(dims, unbiased=False) + 1e-3).sqrt()
                shape_w = (-1,) + (1,) * (tuned.weight.dim() - 1)
                tuned.weight.div_(std.reshape(shape_w))
                base = -mean / std
            gamma = torch.rand(C, generator=gen) * (gamma_range[1] - gamma_range[0]) + gamma_range[0]
            target = torch.rand(C, generator=gen) * (hi - lo) + lo
            lo_b, hi_b = torch.full((C,), -16.0), torch.full((C,), 16.0)

            def set_beta(beta):
                if _is_bn(tuned):
                    tuned.weight.data.copy_(gamma)
                    tuned.bias.data.copy_(beta)
                else:
                    tuned.weight.mul_((gamma / set_beta.g).reshape(shape_w))
                    set_beta.g = gamma.clone()
                    tuned.bias.copy_(base * gamma + beta)
            set_beta.g = torch.ones(C)

            for _ in range(iters):
                beta = (lo_b + hi_b) / 2
                set_beta(beta)
                r = _channel_rates(_run_segment(seg, xin))
                up = r < target
                lo_b = torch.where(up, beta, lo_b)
                hi_b = torch.where(up, hi_b, beta)
            set_beta((lo_b + hi_b) / 2)
            measured[names[id(seg[-1])]] = float(_run_segment(seg, xin).float().mean())
    functional.reset_net(model)
    return measured


def bernoulli(T, B, shape, p=0.15, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand((T, B) + tuple(shape), generator=gen) < p).float()


def lower_for(model, shape, T, mode: str = "static", calib=None, encoding: str = "bernoulli"):
    """The quantized graph of ``model`` as ``neurocomp compile --attention mode`` builds it
    (attention calibrated on ``calib`` ``[T, N, ...]`` unless kept dynamic)."""
    from neurocomp.passes.pipeline import lower
    from neurocomp.frontends.attention import attention_modules, calibrate, make_static
    from neurocomp.frontends.torch import module_to_graph
    if attention_modules(model) and mode != "dynamic":
        model = make_static(model, calibrate(model, calib))
    g = module_to_graph(model, shape, T, encoding,
                        attention_mode="dynamic" if mode == "dynamic" and attention_modules(model) else None)
    return lower(g, attention=mode)


def lava_mismatches(q, x):
    """Run ``x`` through the fixed-point reference and Lava; returns ``(reference result,
    {layer: (mismatching spikes, reference-only, Lava-only)})`` over every layer and step."""
    from neurocomp.backends.lava import run_lava
    from neurocomp.sim import run_fixed
    ref, lava = run_fixed(q, x), run_lava(q, x)
    assert set(ref.spikes) == set(lava.spikes)
    out = {}
    for name, a in ref.spikes.items():
        b = lava.spikes[name].bool()
        a = a.bool()
        out[name] = (int((a != b).sum()), int((a & ~b).sum()), int((~a & b).sum()))
    return ref, out


def layer_rates(result):
    return {k: float(v.float().mean()) for k, v in result.spikes.items()}
