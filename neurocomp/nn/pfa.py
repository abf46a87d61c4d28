"""PFA: projected full attention (Deng et al., KBS 2024; ``RisingEntropy/PFA`` ``TCSAttention.py``
class ``TCSAModule``).

Input/output ``X[t,n,c,h,w]``; placement LIF → AvgPool → **PFA** → next Conv (or on the raw input
frames). With R the rank ("connecting factor"):

LPST (learnable projections):
1. spatial factor ``S[n,r,h,w] = σ(TS_conv(mean_c X))``, TS_conv = Conv2d(T → R, k×k, pad, bias):
   the time axis is the conv's input channels;
2. squeeze ``Z[n,t,c] = mean_{h,w} X``;
3. temporal factor ``τ[n,r,t] = σ(TC_FC(Z))``, TC_FC = Linear(C → R) applied per step;
4. channel factor ``κ[n,r,c] = σ(SC_FC(Zᵀ))``, SC_FC = Linear(T → R) applied per channel.

AMC (recombination): ``A = Σ_r w_r · S_r ⊗ τ_r ⊗ κ_r`` with ``w = softmax(λ)``, λ = ``weight`` ∈ ℝ^R
initialised to ones. **Quirk kept**: the official code only ever reads/writes λ through ``.data``,
so no gradient reaches it and ``w_r = 1/R`` throughout training; here λ is a parameter with
``requires_grad=False`` and is used detached (the official code also writes ``softmax(λ)`` back into
λ at every forward; for the uniform λ it always holds this changes nothing, so it is not repeated).
Output ``Y = ReLU(A ⊙ X)``.

``additive=True`` is the official FMNIST variant (``FMNIST/TCSAttention.py``, same class name, no
``weight``): the rank terms are summed unweighted, ``A = Σ_r S_r ⊗ τ_r ⊗ κ_r`` ∈ (0, R), and the
output is ``Y = ReLU(A + X)``; it sits on the **input current** (Conv–BN → **PFA** → LIF), where the
static compile folds its calibrated map into a per-step, per-neuron offset on the neuron input.

Parameters = ``R·(10T + C + 4)`` for k = 3 (λ included; R fewer when additive). State-dict names match the official code
(``weight``, ``TS_conv.*``, ``TC_FC.*``, ``SC_FC.*``). Non-causal: S and κ mix all steps.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import register, store_config


@register
class PFA(nn.Module):
    """PFA attention on ``[T, N, C, H, W]`` (official name ``TCSAModule``)."""

    def __init__(self, H: int = 32, W: int = 32, T: int = 12, C: int = 128,
                 kernel_sizeTS: int = 3, rank: int = 64, additive: bool = False):
        super().__init__()
        store_config(self, locals())
        self.H, self.W, self.T, self.C, self.rank = H, W, T, C, rank
        self.additive = bool(additive)
        if not self.additive:
            self.weight = nn.Parameter(torch.ones(rank), requires_grad=False)  # λ, never trained
        self.TS_conv = nn.Conv2d(T, rank, kernel_sizeTS, stride=1,
                                 padding=1 if kernel_sizeTS == 3 else 0, bias=True)
        self.TC_FC = nn.Linear(C, rank)
        self.SC_FC = nn.Linear(T, rank)

    def factors(self, x_seq: torch.Tensor):
        """Return ``(S [N,R,H,W], tau [N,R,T], kappa [N,R,C], w [R])`` (additive: ``w`` is all ones)."""
        x = x_seq.transpose(0, 1)                              # N T C H W
        s = torch.sigmoid(self.TS_conv(x.mean(dim=2)))         # N R H W
        z = x.mean(dim=(3, 4))                                 # N T C
        tau = torch.sigmoid(self.TC_FC(z)).transpose(1, 2)     # N R T
        kappa = torch.sigmoid(self.SC_FC(z.transpose(1, 2))).transpose(1, 2)  # N R C
        w = s.new_ones(self.rank) if self.additive else torch.softmax(self.weight.detach(), dim=0)
        return s, tau, kappa, w

    def attention(self, x_seq: torch.Tensor) -> torch.Tensor:
        """The map ``A[t, n, c, h, w]`` in (0, 1) (additive: in (0, R))."""
        s, tau, kappa, w = self.factors(x_seq)
        return torch.einsum("r,nrhw,nrt,nrc->tnchw", w, s, tau, kappa)

    def forward_with_map(self, x_seq: torch.Tensor):
        """``(forward(x_seq), attention(x_seq))`` with the map computed once (calibration records it)."""
        a = self.attention(x_seq)
        return (torch.relu(a + x_seq) if self.additive else torch.relu(a * x_seq)), a

    def forward(self, x_seq: torch.Tensor) -> torch.Tensor:
        return self.forward_with_map(x_seq)[0]
