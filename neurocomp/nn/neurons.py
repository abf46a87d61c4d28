"""MA-SNN's neuron: reset-to-threshold, then leak (``BICLab/Attention-SNN`` ``MA_SNN/module/LIF.py``).

Per step t, for the whole multi-step input current X[t] (h_0 = 0 at the start of every forward):

1. charge: ``u_t = h_{t-1} + X_t``  (no leak here, input not scaled)
2. fire:   ``s_t = Θ(u_t − V_th)``  (non-strict: fires when ``u_t >= V_th``)
3. reset to threshold: ``ĥ_t = s_t·V_th + (1 − s_t)·u_t``  (a spiking neuron is set to V_th, not 0)
4. leak after the reset: ``h_t = α·ĥ_t + β``

Defaults V_th = 0.3, α = 0.3, β = 0. Backward uses the rectangular surrogate
``ds/du = 1/(2·lens)`` for ``|u − V_th| < lens`` (lens = 0.25 in the DVS Gesture config, 0.5 for
CIFAR10-DVS). The reset is not detached from the gradient, as in the official cell.

``v_threshold`` and ``alpha`` may each be a list, one value per channel (the official cell's learned
per-channel parameters, ``pa_train_self=True``): channel = axis 1 of each step's ``[B, C, ...]``.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import register, store_config


class RectSpike(torch.autograd.Function):
    """Heaviside ``x >= 0`` forward, rectangular surrogate ``1/(2·lens)·[|x| < lens]`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lens: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.lens = lens
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        window = (x.abs() < ctx.lens).to(grad.dtype) / (2.0 * ctx.lens)
        return grad * window, None


def _value(v):
    """A float, or a per-channel tuple of floats."""
    return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else float(v)


def _per_channel(v, x: torch.Tensor):
    """A float as is; per-channel values as a float32 tensor broadcasting over ``x`` ``[B, C, ...]``."""
    if not isinstance(v, tuple):
        return v
    if x.dim() < 2 or x.shape[1] != len(v):
        raise ValueError(f"MALIFNode: {len(v)} per-channel values for an input of shape {tuple(x.shape)}")
    return torch.tensor(v, dtype=x.dtype, device=x.device).reshape((len(v),) + (1,) * (x.dim() - 2))


@register
class MALIFNode(nn.Module):
    """MA-SNN's LIF cell as a multi-step layer: input current ``[T, B, ...]`` -> spikes ``[T, B, ...]``.

    Stateless between calls (the official cell is re-initialised at every forward). After a
    forward, ``self.v_seq`` holds the pre-fire potentials ``u_t`` (detached) for inspection.
    ``v_threshold``, ``alpha`` and ``beta`` are each a float or a list with one value per channel (axis 1
    of ``[T, B, C, ...]``; MA-SNN's cells learned with ``pa_train_self=True``).
    """

    def __init__(self, v_threshold: float | list = 0.3, alpha: float | list = 0.3, beta: float | list = 0.0,
                 lens: float = 0.25):
        super().__init__()
        store_config(self, locals())
        self.v_threshold = _value(v_threshold)
        self.alpha = _value(alpha)
        self.beta = _value(beta)
        self.lens = float(lens)
        self.v_seq = None

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        v_th, alpha, beta = (_per_channel(v, x_seq[0]) for v in (self.v_threshold, self.alpha, self.beta))
        if not torch.is_grad_enabled():
            return self._infer(x_seq, v_th, alpha, beta)
        h = torch.zeros_like(x_seq[0])
        spikes, potentials = [], []
        for x in x_seq:
            u = h + x
            s = RectSpike.apply(u - v_th, self.lens)
            h_hat = s * v_th + (1.0 - s) * u
            h = alpha * h_hat + beta
            spikes.append(s)
            potentials.append(u.detach())
        self.v_seq = torch.stack(potentials)
        return torch.stack(spikes)

    def _infer(self, x_seq, v_th, alpha, beta):
        """The forward without autograd: the same float operations in the same order, in place on
        preallocated tensors (``u`` written straight into ``v_seq``; about half the passes)."""
        u_seq = torch.empty_like(x_seq)
        spikes = torch.empty_like(x_seq)
        h = torch.zeros_like(x_seq[0])
        buf = torch.empty_like(h)
        for t in range(int(x_seq.shape[0])):
            u, s = u_seq[t], spikes[t]
            torch.add(h, x_seq[t], out=u)                  # u = h + x
            torch.sub(u, v_th, out=buf)
            torch.ge(buf, 0.0, out=s)                      # s = (u - v_th) >= 0
            torch.mul(s, v_th, out=h)                      # h_hat = s * v_th + (1 - s) * u
            torch.sub(1.0, s, out=buf)
            buf.mul_(u)
            h.add_(buf)
            h.mul_(alpha).add_(beta)                       # h = alpha * h_hat + beta
        self.v_seq = u_seq
        return spikes

    def extra_repr(self) -> str:
        return (f"v_threshold={self.v_threshold}, alpha={self.alpha}, beta={self.beta}, "
                f"lens={self.lens}")
