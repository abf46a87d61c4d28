"""Residual and branching models written the way users write them (SpikingJelly multi-step layers,
block classes with their own forward), for tests/test_residual_models.py."""
from __future__ import annotations

import torch
import torch.nn as nn
from spikingjelly.activation_based import layer, neuron


def lif():
    return neuron.LIFNode(tau=2.0, step_mode="m")


def conv_bn(ci, co, k=3, stride=1):
    return nn.Sequential(layer.Conv2d(ci, co, k, stride=stride, padding=k // 2, bias=False, step_mode="m"),
                         layer.BatchNorm2d(co, step_mode="m"))


class BasicBlock(nn.Module):
    """Spiking-ResNet: the shortcut (identity, or a 1x1 conv + BN when it downsamples) joins the
    second conv's current before the second neuron."""

    def __init__(self, ci, co, stride=1):
        super().__init__()
        self.conv1 = layer.Conv2d(ci, co, 3, stride=stride, padding=1, bias=False, step_mode="m")
        self.bn1 = layer.BatchNorm2d(co, step_mode="m")
        self.sn1 = lif()
        self.conv2 = layer.Conv2d(co, co, 3, padding=1, bias=False, step_mode="m")
        self.bn2 = layer.BatchNorm2d(co, step_mode="m")
        self.sn2 = lif()
        self.shortcut = nn.Sequential()
        if stride != 1 or ci != co:
            self.shortcut = conv_bn(ci, co, 1, stride)

    def forward(self, x):
        out = self.sn1(self.bn1(self.conv1(x)))
        out = self.sn2(self.bn2(self.conv2(out)) + self.shortcut(x))
        return out


class SpikingResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = layer.Conv2d(2, 4, 3, padding=1, bias=False, step_mode="m")
        self.bn = layer.BatchNorm2d(4, step_mode="m")
        self.sn = lif()
        self.layer1 = BasicBlock(4, 4)
        self.layer2 = BasicBlock(4, 8, stride=2)          # downsampling: 1x1 conv + BN shortcut
        self.fc = layer.Linear(8 * 4 * 4, 3, step_mode="m")
        self.out = lif()

    def forward(self, x):
        x = self.sn(self.bn(self.conv(x)))
        x = self.layer2(self.layer1(x))
        return self.out(self.fc(x.flatten(2))).mean(0)


class MSBlock(nn.Module):
    """MS-ResNet: neuron first; the block's input current joins the branch's current (membrane shortcut)."""

    def __init__(self, c):
        super().__init__()
        self.sn1, self.conv1, self.bn1 = lif(), layer.Conv2d(c, c, 3, padding=1, bias=False, step_mode="m"), \
            layer.BatchNorm2d(c, step_mode="m")
        self.sn2, self.conv2, self.bn2 = lif(), layer.Conv2d(c, c, 3, padding=1, bias=False, step_mode="m"), \
            layer.BatchNorm2d(c, step_mode="m")

    def forward(self, x):
        out = self.bn1(self.conv1(self.sn1(x)))
        out = self.bn2(self.conv2(self.sn2(out)))
        return out + x


class MSResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(2, 4)
        self.block = MSBlock(4)
        self.sn = lif()
        self.fc = layer.Linear(4 * 64, 3, step_mode="m")
        self.out = lif()

    def forward(self, x):
        x = self.block(self.stem(x))
        return self.out(self.fc(self.sn(x).flatten(2)))


class SEWBlock(nn.Module):
    """SEW-ResNet's ADD: spikes of the branch plus the block's input spikes, after the neuron."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Sequential(conv_bn(c, c), lif(), conv_bn(c, c), lif())

    def forward(self, x):
        return self.conv(x) + x


class SEWResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(2, 4), lif())
        self.block = SEWBlock(4)
        self.head = nn.Sequential(conv_bn(4, 4), lif(), layer.Flatten(step_mode="m"), layer.Linear(4 * 64, 3, step_mode="m"),
                                  lif())

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


class CatNet(nn.Module):
    """Channels concatenated from branches of unequal depth: two conv layers on one, none on the other."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(2, 2), lif())
        self.deep = nn.Sequential(conv_bn(2, 2), lif(), conv_bn(2, 2), lif())
        self.mix = nn.Sequential(conv_bn(4, 4), lif(), layer.Flatten(step_mode="m"),
                                 layer.Linear(4 * 64, 3, step_mode="m"), lif())

    def forward(self, x):
        s = self.stem(x)
        return self.mix(torch.cat([self.deep(s), s], dim=2))


class NotFromInput(nn.Module):
    """Adds a tensor that does not come from the input: refused."""

    def __init__(self):
        super().__init__()
        self.a, self.sn = conv_bn(2, 2), lif()

    def forward(self, x):
        return self.sn(self.a(x) + torch.ones(x.shape))


class CSABlockNet(nn.Module):
    """MA-SNN's CSA on the residual branch's current (before the membrane-level add)."""

    def __init__(self):
        super().__init__()
        from neurocomp.nn import CSA
        self.stem = nn.Sequential(conv_bn(2, 4), lif())
        self.conv = conv_bn(4, 4)
        self.att = CSA(4, 4, t_ratio=2, c_ratio=2)
        self.sn = lif()
        self.head = nn.Sequential(layer.Flatten(step_mode="m"), layer.Linear(4 * 64, 3, step_mode="m"), lif())

    def forward(self, x):
        s = self.stem(x)
        return self.head(self.sn(self.att(self.conv(s)) + s))


# ---- attention inside branching graphs (tests/test_branch_attention.py) --------------------------------
class CSAMSBlock(nn.Module):
    """MA-SNN's CSA-MS-ResNet block (BICLab/Attention-SNN ``Att_Res_SNN/``): neuron first; the CSA map scales
    the residual branch's current, then the block's input current joins it (membrane shortcut, not scaled)."""

    def __init__(self, c, T, att=None):
        super().__init__()
        from neurocomp.nn import CSA
        self.sn1, self.conv1, self.bn1 = lif(), layer.Conv2d(c, c, 3, padding=1, bias=False, step_mode="m"), \
            layer.BatchNorm2d(c, step_mode="m")
        self.sn2, self.conv2, self.bn2 = lif(), layer.Conv2d(c, c, 3, padding=1, bias=False, step_mode="m"), \
            layer.BatchNorm2d(c, step_mode="m")
        self.att = att if att is not None else CSA(T, c, t_ratio=1, c_ratio=2)

    def forward(self, x):
        out = self.bn1(self.conv1(self.sn1(x)))
        out = self.att(self.bn2(self.conv2(self.sn2(out))))
        return out + x


class CSAMSNet(nn.Module):
    def __init__(self, T=4, att=None):
        super().__init__()
        self.stem = conv_bn(2, 4)
        self.block = CSAMSBlock(4, T, att)
        self.sn = lif()
        self.fc = layer.Linear(4 * 64, 3, step_mode="m")
        self.out = lif()

    def forward(self, x):
        x = self.block(self.stem(x))
        return self.out(self.fc(self.sn(x).flatten(2)))


class TCJAMSBlock(nn.Module):
    """An MS-ResNet block with TCJA on the spikes of its second neuron: the map's g[t] belongs to the conv
    after it, one synapse group of the next neuron (the block's input current is the other)."""

    def __init__(self, c, T, tcja=None):
        super().__init__()
        from neurocomp.nn import TCJA
        self.sn1, self.conv1, self.bn1 = lif(), layer.Conv2d(c, c, 3, padding=1, bias=False, step_mode="m"), \
            layer.BatchNorm2d(c, step_mode="m")
        self.sn2, self.conv2, self.bn2 = lif(), layer.Conv2d(c, c, 3, padding=1, bias=False, step_mode="m"), \
            layer.BatchNorm2d(c, step_mode="m")
        self.tcja = tcja if tcja is not None else TCJA(kernel_size_t=2, kernel_size_c=1, T=T, channel=c)

    def forward(self, x):
        out = self.bn1(self.conv1(self.sn1(x)))
        out = self.bn2(self.conv2(self.tcja(self.sn2(out))))
        return out + x


class TCJAMSNet(nn.Module):
    def __init__(self, T=4, tcja=None):
        super().__init__()
        self.stem = conv_bn(2, 4)
        self.block = TCJAMSBlock(4, T, tcja)
        self.sn = lif()
        self.fc = layer.Linear(4 * 64, 3, step_mode="m")
        self.out = lif()

    def forward(self, x):
        x = self.block(self.stem(x))
        return self.out(self.fc(self.sn(x).flatten(2)))


class PFABlock(nn.Module):
    """A Spiking-ResNet block with PFA (a spatially varying map) on its first neuron's spikes, in front of
    the conv whose current joins the shortcut's."""

    def __init__(self, c, T, H=8, W=8, pfa=None):
        super().__init__()
        from neurocomp.nn import PFA
        self.conv1, self.bn1, self.sn1 = layer.Conv2d(c, c, 3, padding=1, bias=False, step_mode="m"), \
            layer.BatchNorm2d(c, step_mode="m"), lif()
        self.pfa = pfa if pfa is not None else PFA(H=H, W=W, T=T, C=c, rank=2)
        self.conv2, self.bn2 = layer.Conv2d(c, c, 3, padding=1, bias=False, step_mode="m"), \
            layer.BatchNorm2d(c, step_mode="m")
        self.sn2 = lif()

    def forward(self, x):
        out = self.pfa(self.sn1(self.bn1(self.conv1(x))))
        return self.sn2(self.bn2(self.conv2(out)) + x)


class PFAResNet(nn.Module):
    def __init__(self, T=4, pfa=None):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(2, 4), lif())
        self.block = PFABlock(4, T, pfa=pfa)
        self.head = nn.Sequential(layer.Flatten(step_mode="m"), layer.Linear(4 * 64, 3, step_mode="m"), lif())

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


class SharedSpikeMapNet(nn.Module):
    """A spike map whose scaled spikes feed the branch conv and, as the shortcut, the add: refused."""

    def __init__(self, T=4):
        super().__init__()
        from neurocomp.nn import TCJA
        self.stem = nn.Sequential(conv_bn(2, 4), lif())
        self.tcja = TCJA(kernel_size_t=2, kernel_size_c=1, T=T, channel=4)
        self.conv = conv_bn(4, 4)
        self.sn = lif()
        self.head = nn.Sequential(layer.Flatten(step_mode="m"), layer.Linear(4 * 64, 3, step_mode="m"), lif())

    def forward(self, x):
        s = self.tcja(self.stem(x))
        return self.head(self.sn(self.conv(s) + s))


class CSAMSNet2(nn.Module):
    """Two stacked CSA-MS blocks: the neuron after the second add reads both branches' currents, each
    with its own map, and the stem's current plain."""

    def __init__(self, T=4):
        super().__init__()
        self.stem = conv_bn(2, 4)
        self.block1 = CSAMSBlock(4, T)
        self.block2 = CSAMSBlock(4, T)
        self.sn = lif()
        self.fc = layer.Linear(4 * 64, 3, step_mode="m")
        self.out = lif()

    def forward(self, x):
        x = self.block2(self.block1(self.stem(x)))
        return self.out(self.fc(self.sn(x).flatten(2)))


class CSAAfterAddNet(nn.Module):
    """An MS block whose CSA map sits after the membrane-level add (on the whole sum, every group gained)."""

    def __init__(self, T=4):
        super().__init__()
        from neurocomp.nn import CSA
        self.stem = conv_bn(2, 4)
        self.block = MSBlock(4)
        self.att = CSA(T, 4, t_ratio=1, c_ratio=2)
        self.sn = lif()
        self.fc = layer.Linear(4 * 64, 3, step_mode="m")
        self.out = lif()

    def forward(self, x):
        x = self.att(self.block(self.stem(x)))
        return self.out(self.fc(self.sn(x).flatten(2)))
