"""Stand-ins for the official attention classes, for tests/test_official_attention.py.

Each class has the official code's class name, attribute and parameter names and computes the
official arithmetic, written here from the papers' and repositories' definitions (not copied):

- ridgerchu/TCJA ``src/layers.py``: TCJA, TLA, CLA on ``[T, B, C, H, W]``; ``src/tcja.py``'s
  TCJA_for_TET on ``[B, T, C, H, W]`` (its T-channel conv inside an ``nn.Sequential``);
- BICLab/Attention-SNN ``MA_SNN/module``: TimeAttention, ChannelAttention, SpatialAttention, the
  TCSA ... SA wrappers (``[B, T, ...]``, ending in ``relu``), the IFCell / ConvIFCell (reset to
  threshold, then leak) and the AttLIF / ConvAttLIF layers (``[B, T, ...]``), ActFun (the step);
- RisingEntropy/PFA: TCSAModule (CIFAR: ``relu(A * x)`` with ``A`` weighted by ``softmax(weight)``,
  written back into ``weight``), ``fmnist.TCSAModule`` (no ``weight``, ``relu(A + x)``, A summed).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---- TCJA ---------------------------------------------------------------------------------------------
def _squeeze_tb(x_seq):                     # [T, B, C, H, W] -> [B, T, C]
    return x_seq.mean(dim=(3, 4)).transpose(0, 1)


class TCJA(nn.Module):
    def __init__(self, kernel_size_t: int = 2, kernel_size_c: int = 1, T: int = 8, channel: int = 128):
        super().__init__()
        self.conv = nn.Conv1d(T, T, kernel_size_t, padding="same", bias=False)
        self.conv_c = nn.Conv1d(channel, channel, kernel_size_c, padding="same", bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x_seq):
        z = _squeeze_tb(x_seq)                                   # B T C
        cla = self.conv(z).transpose(0, 1)                       # T B C
        tla = self.conv_c(z.transpose(1, 2)).permute(2, 0, 1)    # T B C
        return x_seq * self.sigmoid(tla * cla)[..., None, None]


class TLA(nn.Module):
    def __init__(self, kernel_size_t: int = 2, kernel_size_c: int = 1, T: int = 8, channel: int = 128):
        super().__init__()
        self.conv_c = nn.Conv1d(channel, channel, kernel_size_c, padding="same", bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x_seq):
        z = _squeeze_tb(x_seq)
        return x_seq * self.sigmoid(self.conv_c(z.transpose(1, 2)).permute(2, 0, 1))[..., None, None]


class CLA(nn.Module):
    def __init__(self, kernel_size_t: int = 2, kernel_size_c: int = 1, T: int = 8, channel: int = 128):
        super().__init__()
        self.conv = nn.Conv1d(T, T, kernel_size_t, padding="same", bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x_seq):
        return x_seq * self.sigmoid(self.conv(_squeeze_tb(x_seq)).transpose(0, 1))[..., None, None]


class TCJA_for_TET(nn.Module):                 # noqa: N801 - the official name
    """[B, T, C, H, W] in and out; the T-channel conv sits in an nn.Sequential (``conv.0.weight``)."""

    def __init__(self, kernel_size_t: int = 2, kernel_size_c: int = 1, T: int = 8, channel: int = 128):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(T, T, kernel_size_t, padding="same", bias=False))
        self.conv_c = nn.Conv1d(channel, channel, kernel_size_c, padding="same", bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x_seq):
        z = x_seq.mean(dim=(3, 4))                                # B T C
        a = self.sigmoid(self.conv_c(z.transpose(1, 2)).transpose(1, 2) * self.conv(z))
        return x_seq * a[..., None, None]


class BrokenTCJA(nn.Module):
    """The copy of TCJA whose ``self.conv = nn.Conv1d(...),`` ends in a comma: conv is a tuple."""

    def __init__(self, T=4, channel=4):
        super().__init__()
        self.conv = (nn.Conv1d(T, T, 2, padding="same", bias=False),)
        self.conv_c = nn.Conv1d(channel, channel, 2, padding="same", bias=False)


BrokenTCJA.__name__ = "TCJA"


# ---- MA-SNN ([B, T, ...]) -------------------------------------------------------------------------------
def _mlp(conv, n, ratio):
    return nn.Sequential(conv(n, n // ratio, 1, bias=False), nn.ReLU(), conv(n // ratio, n, 1, bias=False))


class TimeAttention(nn.Module):
    def __init__(self, in_planes, ratio=16, fc=False):
        super().__init__()
        pool = (nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d) if fc else (nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d)
        self.avg_pool, self.max_pool = pool[0](1), pool[1](1)
        self.sharedMLP = _mlp(nn.Conv1d if fc else nn.Conv3d, in_planes, ratio)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        return self.sigmoid(self.sharedMLP(self.avg_pool(x)) + self.sharedMLP(self.max_pool(x)))


class ChannelAttention(nn.Module):
    def __init__(self, in_planes, ratio=16):
        super().__init__()
        self.avg_pool, self.max_pool = nn.AdaptiveAvgPool3d(1), nn.AdaptiveMaxPool3d(1)
        self.sharedMLP = _mlp(nn.Conv3d, in_planes, ratio)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        x = x.transpose(1, 2)                                   # b c t h w
        out = self.sigmoid(self.sharedMLP(self.avg_pool(x)) + self.sharedMLP(self.max_pool(x)))
        return out.transpose(1, 2)


class SpatialAttention(nn.Module):
    def __init__(self, kernel_size=3):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=3 if kernel_size == 7 else 1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        x = x.flatten(1, 2)                                     # b (t c) h w
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.max(dim=1, keepdim=True)[0]], dim=1)
        return self.sigmoid(self.conv(pooled)).unsqueeze(1)


class _MA(nn.Module):
    PARTS = ""

    def __init__(self, timeWindows, channels, stride=1, c_ratio=16, t_ratio=16, fc=False):  # noqa: N803
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        if "C" in self.PARTS:
            self.ca = ChannelAttention(channels, c_ratio)
        if "T" in self.PARTS:
            self.ta = TimeAttention(timeWindows, t_ratio, fc)
        if "S" in self.PARTS:
            self.sa = SpatialAttention()
        self.stride = stride

    def forward(self, x):
        out = x
        for part in ("ta", "ca", "sa"):
            if hasattr(self, part):
                out = getattr(self, part)(out) * out
        return self.relu(out)


class TCSA(_MA):
    PARTS = "TCS"


class TCA(_MA):
    PARTS = "TC"


class TSA(_MA):
    PARTS = "TS"


class CSA(_MA):
    PARTS = "CS"


class TA(_MA):
    PARTS = "T"


class CA(_MA):
    PARTS = "C"


class SA(_MA):
    PARTS = "S"


MA = {c.__name__: c for c in (TCSA, TCA, TSA, CSA, TA, CA, SA)}


class ActFun(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.ge(0.0).float()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() < 0.25).float() / 0.5


def spike_fn(x):
    """``ActFun.apply`` (a module-level function, so the cells pickle)."""
    return ActFun.apply(x)


class _Cell(nn.Module):
    """MA-SNN's cell: ``u = h + x``; ``s = f(u - Vthres)``; ``h = (s*Vthres + (1-s)*u) * alpha + beta``."""

    def __init__(self, hiddenSize, spikeActFun, pa_dict=None, pa_train_self=False, shape=None, mode_select="spike"):  # noqa: N803
        super().__init__()
        self.hiddenSize, self.spikeActFun, self.mode_select = hiddenSize, spikeActFun, mode_select
        pa = pa_dict or {"alpha": 0.3, "beta": 0.0, "Vreset": 0.0, "Vthres": 0.3}
        for k in ("alpha", "beta", "Vreset", "Vthres"):
            if pa_train_self:
                setattr(self, k, nn.Parameter(torch.full(shape, float(pa[k]))))
            else:
                setattr(self, k, pa[k])
        self.h = None

    def forward(self, x):
        if self.h is None:
            self.h = torch.zeros_like(x)
        u = self.h + x
        s = self.spikeActFun(u - self.Vthres)
        self.h = (s * self.Vthres + (1 - s) * u) * self.alpha + self.beta
        return s if self.mode_select == "spike" else torch.relu(u)

    def reset(self):
        self.h = None


class IFCell(_Cell):
    def __init__(self, inputSize, hiddenSize, spikeActFun, pa_dict=None, pa_train_self=False, mode_select="spike"):  # noqa: N803
        super().__init__(hiddenSize, spikeActFun, pa_dict, pa_train_self, (1, hiddenSize), mode_select)


class ConvIFCell(_Cell):
    def __init__(self, inputSize, hiddenSize, kernel_size, spikeActFun, pa_dict=None, pa_train_self=False,  # noqa: N803
                 mode_select="spike"):
        super().__init__(hiddenSize, spikeActFun, pa_dict, pa_train_self, (hiddenSize, 1, 1), mode_select)


def _run_cell(network, data):
    for layer in network:
        layer.reset()
    outs = []
    for t in range(data.shape[1]):
        out = data[:, t]
        for layer in network:
            out = layer(out)
        outs.append(out)
    return torch.stack(outs, dim=1)


class AttLIF(nn.Module):
    def __init__(self, inputSize, hiddenSize, spikeActFun, attention="TA", onlyLast=False, useBatchNorm=False,  # noqa: N803
                 pa_dict=None, pa_train_self=False, bias=True, T=60, track_running_stats=False, mode_select="spike",
                 t_ratio=16):
        super().__init__()
        self.onlyLast, self.useBatchNorm, self.attention_flag = onlyLast, useBatchNorm, attention
        self.network = nn.Sequential()
        self.linear = nn.Linear(inputSize, hiddenSize, bias=bias)
        if useBatchNorm:
            self.BNLayer = nn.BatchNorm1d(hiddenSize, track_running_stats=track_running_stats)
        if attention == "TA":
            self.attention = TA(T, hiddenSize, t_ratio=t_ratio, fc=True)
        self.network.add_module("IF", IFCell(inputSize, hiddenSize, spikeActFun, pa_dict, pa_train_self, mode_select))

    def forward(self, data):
        b, t = data.shape[:2]
        out = self.linear(data.reshape(b * t, -1))
        if self.useBatchNorm:
            out = self.BNLayer(out)
        out = out.reshape(b, t, -1)
        if self.attention_flag != "no":
            out = self.attention(out)
        seq = _run_cell(self.network, out)
        return seq[:, -1] if self.onlyLast else seq


class ConvAttLIF(nn.Module):
    def __init__(self, inputSize, hiddenSize, kernel_size, spikeActFun, attention="TA", bias=True, onlyLast=False,  # noqa: N803
                 padding=1, useBatchNorm=False, pa_dict=None, pa_train_self=False, T=60, stride=1,
                 pooling_kernel_size=1, track_running_stats=False, mode_select="spike", c_ratio=16, t_ratio=16):
        super().__init__()
        self.onlyLast, self.attention_flag, self.useBatchNorm = onlyLast, attention, useBatchNorm
        self.conv2d = nn.Conv2d(inputSize, hiddenSize, kernel_size, bias=True, padding=padding, stride=stride)
        if useBatchNorm:
            self.BNLayer = nn.BatchNorm2d(hiddenSize, track_running_stats=track_running_stats)
        self.pooling_kernel_size = pooling_kernel_size
        if pooling_kernel_size > 1:
            self.pooling = nn.AvgPool2d(kernel_size=pooling_kernel_size)
        if attention != "no":
            cls = MA[attention]
            kw = {k: v for k, v in (("c_ratio", c_ratio), ("t_ratio", t_ratio)) if k[0].upper() in cls.PARTS}
            self.attention = cls(T, hiddenSize, **kw)
        self.network = nn.Sequential()
        self.network.add_module("ConvIF", ConvIFCell(inputSize, hiddenSize, kernel_size, spikeActFun, pa_dict,
                                                     pa_train_self, mode_select))

    def forward(self, data):
        b, t = data.shape[:2]
        out = self.conv2d(data.reshape((b * t,) + tuple(data.shape[2:])))
        if self.useBatchNorm:
            out = self.BNLayer(out)
        if self.pooling_kernel_size > 1:
            out = self.pooling(out)
        out = out.reshape((b, t) + tuple(out.shape[1:]))
        if self.attention_flag != "no":
            out = self.attention(out)
        seq = _run_cell(self.network, out)
        return seq[:, -1] if self.onlyLast else seq


# ---- PFA ----------------------------------------------------------------------------------------------
def _pfa_factors(m, x):
    """x [N, T, C, H, W] -> S [R, N, HW], tau [R, N, T], kappa [R, N, C] (each through a sigmoid)."""
    N, T, C, H, W = x.shape
    s = torch.sigmoid(m.TS_conv(x.mean(dim=2)).reshape(N, m.rank, H * W)).permute(1, 0, 2)
    z = m.TC_pooling(x).reshape(N, T, C)
    tau = torch.sigmoid(m.TC_FC(z)).permute(2, 0, 1)
    kappa = torch.sigmoid(m.SC_FC(z.transpose(1, 2))).permute(2, 0, 1)
    return s, tau, kappa


def _outer(s, tau, kappa, H, W):
    """One rank term: [N, HW] x [N, T] x [N, C] -> [N, T, C, H, W]."""
    N, T, C = s.shape[0], tau.shape[1], kappa.shape[1]
    return torch.einsum("nq,nt,nc->ntcq", s, tau, kappa).reshape(N, T, C, H, W)


class TCSAModule(nn.Module):
    def __init__(self, H=32, W=32, T=12, C=128, kernel_sizeTS=3, rank=64, device="cpu", layer=-1):  # noqa: N803
        super().__init__()
        self.H, self.W, self.T, self.C, self.rank, self.device, self.layer = H, W, T, C, rank, device, layer
        self.TC_pooling = nn.AdaptiveAvgPool2d(1)
        self.weight = nn.Parameter(torch.ones(rank), requires_grad=True)
        self.TS_conv = nn.Conv2d(T, rank, kernel_sizeTS, stride=1, padding=1 if kernel_sizeTS == 3 else 0, bias=True)
        self.TC_FC = nn.Linear(C, rank)
        self.SC_FC = nn.Linear(T, rank)

    def forward(self, x):
        x = x.transpose(0, 1)
        N, T, C, H, W = x.shape
        s, tau, kappa = _pfa_factors(self, x)
        self.weight.data = F.softmax(self.weight.data, -1)      # the official write-back
        a = torch.zeros_like(x)
        for r in range(self.rank):
            a = a + self.weight.data[r] * _outer(s[r], tau[r], kappa[r], H, W)
        return F.relu(a * x).transpose(0, 1)


class fmnist:                                  # noqa: N801 - a namespace: PFA's FMNIST/TCSAttention.py
    class TCSAModule(nn.Module):
        def __init__(self, H=32, W=32, T=12, C=128, kernel_sizeTS=3, rank=64, device="cpu"):  # noqa: N803
            super().__init__()
            self.H, self.W, self.T, self.C, self.rank, self.device = H, W, T, C, rank, device
            self.TC_pooling = nn.AdaptiveAvgPool2d(1)
            self.TS_conv = nn.Conv2d(T, rank, kernel_sizeTS, stride=1, padding=1 if kernel_sizeTS == 3 else 0)
            self.TC_FC = nn.Linear(C, rank)
            self.SC_FC = nn.Linear(T, rank)

        def forward(self, x):
            x = x.transpose(0, 1)
            s, tau, kappa = _pfa_factors(self, x)
            a = sum(_outer(s[r], tau[r], kappa[r], x.shape[3], x.shape[4]) for r in range(self.rank))
            return F.relu(a + x).transpose(0, 1)


class fsvae:                                   # noqa: N801 - a namespace: PFA's Generation/fsvae_models/TCSA.py
    class TCSAModule(fmnist.TCSAModule):
        """The FSVAE copy: the FMNIST layout on ``[N, C, H, W, T]``, ``relu(A * x)`` (A summed)."""

        def forward(self, x):
            x = x.permute(0, 4, 1, 2, 3)            # "n c h w t -> n t c h w"
            s, tau, kappa = _pfa_factors(self, x)
            a = sum(_outer(s[r], tau[r], kappa[r], x.shape[3], x.shape[4]) for r in range(self.rank))
            return F.relu(a * x).permute(0, 2, 3, 4, 1)


# ---- SpikingJelly's MultiDimensionalAttention (its own needs einops, and its forward calls a
# self.relu it never defines): the same children and names, TA -> CA -> SA -> ReLU on [T, N, ...] -----
class MultiDimensionalAttention(nn.Module):
    def __init__(self, T, C, reduction_t=16, reduction_c=16, kernel_size=3):
        super().__init__()
        self.ta = TimeAttention(T, reduction_t)
        self.ca = ChannelAttention(C, reduction_c)
        self.sa = SpatialAttention(kernel_size)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        x = x.transpose(0, 1)
        out = self.ta(x) * x
        out = self.ca(out) * out
        out = self.sa(out) * out
        return torch.relu(out).transpose(0, 1)


# ---- SpikingJelly's TemporalWiseAttention: activation_based's is no nn.Module in 0.0.0.0.14 (it cannot sit in
# a model); clock_driven's MultiStepTemporalWiseAttention is the same arithmetic as an nn.Module. SpikingJelly 2.x
# has only activation_based's, an nn.Module: there the clock_driven name is put over it --------------------------
from neurocomp.frontends.modules import cd_layer  # noqa: E402

if cd_layer is not None:
    MultiStepTemporalWiseAttention = cd_layer.MultiStepTemporalWiseAttention

    class TemporalWiseAttention(MultiStepTemporalWiseAttention):
        """activation_based's class name over clock_driven's module (same parameters, same forward)."""
else:
    from spikingjelly.activation_based.layer import TemporalWiseAttention  # noqa: F401

    class MultiStepTemporalWiseAttention(TemporalWiseAttention):
        """clock_driven's class name over SpikingJelly 2.x's module (same parameters, same forward)."""
