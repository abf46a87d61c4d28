"""Straight-through fake quantization: the forward pass sees what ``neurocomp.passes.quantize``
stores, dequantized, the backward pass the identity.

Every number goes through the quantizer's own functions in :mod:`neurocomp.fixedpoint` (no rule is
restated here): the scale ``s = (vth + 1/64) / theta`` (:func:`~neurocomp.fixedpoint.lif_scale`) of the
threshold :func:`~neurocomp.fixedpoint.choose_vth` picks for the current weights, weights
``round(s * w_eff)`` clipped to ``weight_bits`` (:func:`~neurocomp.fixedpoint.round_weights`,
``w_eff = w / tau`` for decay-input LIFs), biases as the 13-bit mantissa / 3-bit exponent
(:func:`~neurocomp.fixedpoint.bias_mant_exp`), gains as ``mantissa / 2**shift``
(:func:`~neurocomp.fixedpoint.gain_mantissa`). :func:`qat_model` wraps the synapses
(:class:`QSynapse`) and gain tables (:class:`QGain`) of a rebuilt model (:mod:`neurocomp.training.rebuild`).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from neurocomp import fixedpoint as fx


def layer_scale(weight: torch.Tensor, theta: float, w_gain: float, weight_bits: int) -> float:
    """The quantizer's scale :func:`neurocomp.fixedpoint.lif_scale` of the threshold
    :func:`neurocomp.fixedpoint.choose_vth` for these weights."""
    w_eff = weight.detach().cpu().numpy().astype(np.float32).astype(np.float64) * w_gain
    return fx.lif_scale(fx.choose_vth(w_eff, theta, fx.weight_max(weight_bits)), theta)


def _fake_gain(g: torch.Tensor) -> torch.Tensor:
    """The gain table as the quantizer stores it, dequantized (:func:`neurocomp.fixedpoint.gain_mantissa`)."""
    g64 = g.detach().double()
    if not float(g64.max()) > 0:
        return torch.zeros_like(g64)
    mant, shift = fx.gain_mantissa(g64)
    return mant / (1 << shift)


def _ste(x: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return x + (value.to(x.dtype) - x).detach()


class QSynapse(nn.Module):
    """A Conv2d/Linear whose forward uses the fixed-point weights and bias (dequantized), STE backward."""

    def __init__(self, syn, theta: float, w_gain: float, weight_bits: int, sparse: bool = False):
        super().__init__()
        self.syn, self.theta, self.w_gain, self.weight_bits = syn, theta, w_gain, weight_bits
        self.enabled = True
        # an unrolled conv keeps its zeros (its connectivity); the scale of a large layer is
        # recomputed every few steps only (always in eval mode and at the last step of an epoch)
        self.register_buffer("mask", (syn.weight.detach() != 0).to(syn.weight.dtype) if sparse else None)
        self.every = max(1, syn.weight.numel() // 200_000)
        self._calls, self._s, self._stale = 0, None, True

    def scale(self, w) -> float:
        if self.training:
            if self._s is None or self._calls % self.every == 0:
                self._s = layer_scale(w, self.theta, self.w_gain, self.weight_bits)
            self._calls += 1
            self._stale = True
        elif self._s is None or self._stale:
            self._s = layer_scale(w, self.theta, self.w_gain, self.weight_bits)
            self._stale = False
        return self._s

    def fake_weights(self):
        w, b = self.syn.weight, self.syn.bias
        if self.mask is not None:
            w = w * self.mask
        if not self.enabled:
            return w, b
        s = self.scale(w)
        q, _ = fx.round_weights(w.detach().double() * self.w_gain, s, fx.weight_max(self.weight_bits))
        wq = _ste(w, q / (s * self.w_gain))
        bq = None
        if b is not None:
            mant, exp, _ = fx.bias_mant_exp(fx.voltage_units(b.detach().double() * self.w_gain, s))
            bq = _ste(b, fx.effective_bias(mant, exp) / fx.voltage_units(self.w_gain, s))
        return wq, bq

    def forward(self, x_seq):
        w, b = self.fake_weights()
        x = x_seq.flatten(0, 1)
        if isinstance(self.syn, nn.Conv2d):
            y = F.conv2d(x, w, b, self.syn.stride, self.syn.padding, self.syn.dilation, self.syn.groups)
        else:
            y = F.linear(x, w, b)
        return y.reshape(x_seq.shape[:2] + y.shape[1:])


class QGain(nn.Module):
    """A StaticMap with a trainable table ``g``; forward uses the quantizer's gain mantissas (STE).

    ``kind="spikes"``: the per-step gain of a rank-1 spike map, used as ``g / mean_t(g)`` (the fold's
    normalisation, so the next weights are not rescaled at compile time)."""

    def __init__(self, sm, kind: str, quantized: bool = True):
        super().__init__()
        self.sm, self.kind, self.quantized = sm, kind, quantized
        self.g = nn.Parameter(sm.map.detach().clone())

    def table(self):
        g = self.g
        if self.kind == "spikes":
            g = g / g.mean()
        return _ste(g, _fake_gain(g)) if self.quantized else g

    def forward(self, x_seq):
        y = x_seq * self.table().unsqueeze(1)
        return torch.relu(y) if self.sm.rectify else y

    @torch.no_grad()
    def write_back(self):
        g = self.g / self.g.mean() if self.kind == "spikes" else self.g
        self.sm.map.copy_(g.detach())


def qat_model(model, layers, weight_bits: int = 8, quantized: bool = True):
    """A training view of ``model``: synapses and gains wrapped (sharing the parameters)."""
    mods = list(model)
    qsyn, qgain = [], []
    for L in layers:
        q = QSynapse(mods[L["synapse"]], L["theta"], L["w_gain"], weight_bits, sparse=L.get("sparse", False))
        q.enabled = quantized
        mods[L["synapse"]] = q
        qsyn.append(q)
        if L["gain"] is not None:
            qg = QGain(mods[L["gain"]], L["gain_kind"], quantized)
            mods[L["gain"]] = qg
            qgain.append(qg)
    return nn.Sequential(*mods), qsyn, qgain
