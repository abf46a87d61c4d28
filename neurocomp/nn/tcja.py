"""TCJA: temporal-channel joint attention (Zhu et al., TNNLS 2024; ``ridgerchu/TCJA src/layers.py``).

Input/output ``X[t,b,c,h,w]`` (binary spikes from the preceding LIF; placement
Conv–BN → LIF → **TCJA** → Pool):

1. squeeze ``Z[b,t,c] = mean_{h,w} X``;
2. CLA (``self.conv``, Conv1d with T in/out channels, kernel ``kernel_size_t`` = K_C, sliding over
   **channels**): ``P = conv(Z)``;
3. TLA (``self.conv_c``, Conv1d with C in/out channels, kernel ``kernel_size_c`` = K_T, sliding over
   **time**, 'same' padding, so it looks ahead): ``Q = conv_c(Zᵀ)``;
4. fusion ``A[t,b,c] = σ(P · Q)`` (product, then sigmoid);
5. ``Y = X ⊙ A`` broadcast over h, w.

The naming trap of the official code is kept: ``kernel_size_t`` is the kernel of the T-channel conv
(slides over channels), ``kernel_size_c`` that of the C-channel conv (slides over time). Both convs
are bias-free; parameters = ``K_C·T² + K_T·C²``. State-dict names (``conv.weight``,
``conv_c.weight``) match the official ones. The map is non-causal: every output step depends on all
T input steps.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import register, store_config


def _squeeze(x_seq: torch.Tensor) -> torch.Tensor:
    """``[T,B,C,H,W]`` -> ``Z[B,T,C]`` (mean over H, W)."""
    return x_seq.mean(dim=(3, 4)).permute(1, 0, 2)


class _SpikeGate(nn.Module):
    """A (t, c) map multiplied onto the spikes ``[T, B, C, H, W]``: the forward TCJA, TLA and CLA share."""

    def forward_with_map(self, x_seq: torch.Tensor):
        """``(forward(x_seq), attention(x_seq))`` with the map computed once (calibration records it)."""
        a = self.attention(x_seq)
        return x_seq * a[:, :, :, None, None], a

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.forward_with_map(x_seq)[0]


@register
class TCJA(_SpikeGate):
    """Temporal-channel joint attention on spikes ``[T, B, C, H, W]``."""

    def __init__(self, kernel_size_t: int = 2, kernel_size_c: int = 1, T: int = 8,
                 channel: int = 128):
        super().__init__()
        store_config(self, locals())
        self.conv = nn.Conv1d(T, T, kernel_size_t, padding="same", bias=False)
        self.conv_c = nn.Conv1d(channel, channel, kernel_size_c, padding="same", bias=False)

    def attention(self, x_seq: torch.Tensor) -> torch.Tensor:
        """The map ``A[t, b, c]`` in (0, 1)."""
        z = _squeeze(x_seq)                                   # [B,T,C]
        p = self.conv(z).permute(1, 0, 2)                     # CLA, [T,B,C]
        q = self.conv_c(z.permute(0, 2, 1)).permute(2, 0, 1)  # TLA, [T,B,C]
        return torch.sigmoid(p * q)


@register
class TLA(_SpikeGate):
    """Ablation: temporal-local attention only, ``A = σ(conv_c(Zᵀ))``; parameters ``K_T·C²``."""

    def __init__(self, kernel_size_t: int = 2, kernel_size_c: int = 1, T: int = 8,
                 channel: int = 128):
        super().__init__()
        store_config(self, locals())
        self.conv_c = nn.Conv1d(channel, channel, kernel_size_c, padding="same", bias=False)

    def attention(self, x_seq: torch.Tensor) -> torch.Tensor:
        z = _squeeze(x_seq)
        return torch.sigmoid(self.conv_c(z.permute(0, 2, 1)).permute(2, 0, 1))


@register
class CLA(_SpikeGate):
    """Ablation: channel-local attention only, ``A = σ(conv(Z))``; parameters ``K_C·T²``."""

    def __init__(self, kernel_size_t: int = 2, kernel_size_c: int = 1, T: int = 8,
                 channel: int = 128):
        super().__init__()
        store_config(self, locals())
        self.conv = nn.Conv1d(T, T, kernel_size_t, padding="same", bias=False)

    def attention(self, x_seq: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(_squeeze(x_seq)).permute(1, 0, 2))
