"""MA-SNN multi-dimensional attention (Yao et al., TPAMI 2023; ``BICLab/Attention-SNN``
``MA_SNN/module/Attention.py``).

The modules act on the **input current** of :class:`~neurocomp.nn.neurons.MALIFNode`
(placement Conv–BN → [AvgPool] → **attention** → MALIFNode; FC layers: Linear–BN1d → TA(fc) →
MALIFNode). They take and return multi-step ``[T, B, C, H, W]`` tensors (``[T, B, N]`` for the FC
variant of TA) and permute to the official ``[B, T, ...]`` layout internally.

- TA: ``σ(f(avg_{c,h,w} X) + f(max_{c,h,w} X))``, f a bias-free 2-layer ReLU MLP T → ⌊T/r_t⌋ → T.
- CA: the same over channels, pooled over (t, h, w), MLP C → ⌊C/r_c⌋ → C.
- SA: ``σ(K ⋆ [mean; max])`` over the merged T·C axis, K a bias-free 3×3 Conv2d(2 → 1).
- TCSA applies them in sequence, each map computed from the already-reweighted tensor, then ReLU:
  ``X1 = TA(X)·X; X2 = CA(X1)·X1; X3 = SA(X2)·X2; out = ReLU(X3)``.
  The variants TCA, TSA, CSA, TA, CA, SA drop the unnamed parts; all end in ReLU.
- ``relu=False`` leaves the ReLU out: ``out = M ⊙ X``. With ``TA`` that is SpikingJelly's
  ``TemporalWiseAttention`` (Yao et al., ICCV 2021: the same TA map, no ReLU), which
  :mod:`neurocomp.frontends.official` maps onto ``TA(..., relu=False)``.

Parameters of TCSA = ``2T⌊T/r_t⌋ + 2C⌊C/r_c⌋ + 18``. State-dict names match the official code
(``ta.sharedMLP.0.weight``, ``ca.sharedMLP.2.weight``, ``sa.conv.weight``; 1×1 Conv3d/Conv1d
weights). Non-causal: TA mixes all steps, CA and SA pool over time.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import register, store_config


class TimeAttention(nn.Module):
    """TA map ``[B, T, 1, 1, 1]`` from ``[B, T, C, H, W]`` (``fc=True``: ``[B, T, 1]`` from ``[B, T, N]``)."""

    def __init__(self, T: int, ratio: int = 16, fc: bool = False):
        super().__init__()
        hidden = T // ratio
        if hidden < 1:
            raise ValueError(f"TA: T // t_ratio must be >= 1 (T={T}, t_ratio={ratio})")
        conv = nn.Conv1d if fc else nn.Conv3d
        self.fc = fc
        self.sharedMLP = nn.Sequential(conv(T, hidden, 1, bias=False), nn.ReLU(),
                                       conv(hidden, T, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.dim()))
        avg = x.mean(dim=dims, keepdim=True)
        mx = x.amax(dim=dims, keepdim=True)
        return torch.sigmoid(self.sharedMLP(avg) + self.sharedMLP(mx))


class ChannelAttention(nn.Module):
    """CA map ``[B, 1, C, 1, 1]`` from ``[B, T, C, H, W]`` (pooled over t, h, w)."""

    def __init__(self, channels: int, ratio: int = 16):
        super().__init__()
        hidden = channels // ratio
        if hidden < 1:
            raise ValueError(f"CA: C // c_ratio must be >= 1 (C={channels}, c_ratio={ratio})")
        self.sharedMLP = nn.Sequential(nn.Conv3d(channels, hidden, 1, bias=False), nn.ReLU(),
                                       nn.Conv3d(hidden, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.transpose(1, 2)  # b t c h w -> b c t h w
        avg = x.mean(dim=(2, 3, 4), keepdim=True)
        mx = x.amax(dim=(2, 3, 4), keepdim=True)
        return torch.sigmoid(self.sharedMLP(avg) + self.sharedMLP(mx)).transpose(1, 2)


class SpatialAttention(nn.Module):
    """SA map ``[B, 1, 1, H, W]`` from ``[B, T, C, H, W]`` (mean and max over the merged T·C axis)."""

    def __init__(self, kernel_size: int = 3):
        super().__init__()
        if kernel_size not in (3, 7):
            raise ValueError("SA: kernel size must be 3 or 7")
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1, 2)  # b (t c) h w
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return torch.sigmoid(self.conv(pooled)).unsqueeze(1)


class _MultiDimAttention(nn.Module):
    """Shared implementation; subclasses set ``PARTS`` (a subset of "TCS", applied in that order)."""

    PARTS = "TCS"

    def __init__(self, T: int, channels: int, t_ratio: int = 16, c_ratio: int = 16,
                 kernel_size: int = 3, fc: bool = False, relu: bool = True):
        super().__init__()
        store_config(self, locals())
        self.relu = bool(relu)
        if fc and self.PARTS != "T":
            raise ValueError("fc=True is only defined for TA")
        if "T" in self.PARTS:
            self.ta = TimeAttention(T, t_ratio, fc=fc)
        if "C" in self.PARTS:
            self.ca = ChannelAttention(channels, c_ratio)
        if "S" in self.PARTS:
            self.sa = SpatialAttention(kernel_size)

    def _maps(self, x: torch.Tensor):
        """Return ``(out_before_relu, composite_map)`` in the ``[B, T, ...]`` layout."""
        out = x
        total = torch.ones((), dtype=x.dtype, device=x.device)
        for name in ("ta", "ca", "sa"):
            part = getattr(self, name, None)
            if part is not None:
                m = part(out)
                out = m * out
                total = total * m
        return out, total

    def attention(self, x_seq: torch.Tensor) -> torch.Tensor:
        """The composite map ``M`` (``out = ReLU(M ⊙ X)``, or ``M ⊙ X`` without ReLU), broadcast to ``[T, B, ...]``."""
        x = x_seq.transpose(0, 1)
        _, m = self._maps(x)
        return m.expand_as(x).transpose(0, 1)

    def forward_with_map(self, x_seq: torch.Tensor):
        """``(forward(x_seq), attention(x_seq))`` with the maps computed once (calibration records them)."""
        x = x_seq.transpose(0, 1)
        out, m = self._maps(x)
        return (torch.relu(out) if self.relu else out).transpose(0, 1), m.expand_as(x).transpose(0, 1)

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.forward_with_map(x_seq)[0]


@register
class TCSA(_MultiDimAttention):
    """Temporal → channel → spatial attention, then ReLU (MA-SNN's full module)."""
    PARTS = "TCS"


@register
class TCA(_MultiDimAttention):
    """Temporal → channel attention, then ReLU."""
    PARTS = "TC"


@register
class TSA(_MultiDimAttention):
    """Temporal → spatial attention, then ReLU."""
    PARTS = "TS"


@register
class CSA(_MultiDimAttention):
    """Channel → spatial attention, then ReLU."""
    PARTS = "CS"


@register
class TA(_MultiDimAttention):
    """Temporal attention, then ReLU. ``fc=True`` accepts ``[T, B, N]`` (after a Linear layer);
    ``relu=False`` is SpikingJelly's ``TemporalWiseAttention``."""
    PARTS = "T"


@register
class CA(_MultiDimAttention):
    """Channel attention, then ReLU."""
    PARTS = "C"


@register
class SA(_MultiDimAttention):
    """Spatial attention, then ReLU."""
    PARTS = "S"
