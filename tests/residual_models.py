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


# ---- the remaining residual kinds (tests/test_residual_kinds.py) ------------------------------------------
class SEWLogicBlock(nn.Module):
    """SEW-ResNet's AND / IAND, written out by the user: ``a`` the branch's spikes, ``b`` the shortcut's."""

    def __init__(self, c, cnf):
        super().__init__()
        self.cnf = cnf
        self.conv = nn.Sequential(conv_bn(c, c), lif())

    def forward(self, x):
        a = self.conv(x)
        return a * x if self.cnf == "AND" else (1. - a) * x


class SJSewBlock(nn.Module):
    """SpikingJelly's own connect function (``model.sew_resnet.sew_function(identity, out, cnf)``, as its
    BasicBlock calls it: IAND = identity * (1 - out))."""

    def __init__(self, c, cnf):
        super().__init__()
        self.cnf = cnf
        self.conv = nn.Sequential(conv_bn(c, c), lif(), conv_bn(c, c), lif())

    def forward(self, x):
        try:
            from spikingjelly.activation_based.model.sew_resnet import sew_function
        except (ImportError, RuntimeError):
            # its module imports torchvision, whose compiled ops do not load beside the core environment's
            # local CPU build of torch: the same connect function, as SpikingJelly defines it
            def sew_function(x, y, cnf):
                return x * y if cnf == "AND" else x * (1. - y)
        return sew_function(x, self.conv(x), self.cnf)


class SEWLogicNet(nn.Module):
    """An AND block written out (``a * b``) then SpikingJelly's ``sew_function(..., 'IAND')``."""

    def __init__(self, cin=2):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(cin, 4), lif())
        self.block1 = SEWLogicBlock(4, "AND")
        self.block2 = SJSewBlock(4, "IAND")
        self.head = nn.Sequential(conv_bn(4, 4), lif(), layer.Flatten(step_mode="m"), layer.Linear(4 * 64, 3, step_mode="m"),
                                  lif())

    def forward(self, x):
        return self.head(self.block2(self.block1(self.stem(x))))


class IANDBlockNet(nn.Module):
    """IAND written out, ``(1. - a) * b``."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(2, 4), lif())
        self.block = SEWLogicBlock(4, "IAND")
        self.head = nn.Sequential(layer.Flatten(step_mode="m"), layer.Linear(4 * 64, 3, step_mode="m"), lif())

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


class AvgPoolDownBlock(nn.Module):
    """A downsampling Spiking-ResNet block whose shortcut is AvgPool2d then 1x1 conv + BN (ResNet-D style),
    joining the branch's current before the neuron; the branch is two convs deep, the shortcut one."""

    def __init__(self, ci, co):
        super().__init__()
        self.conv1 = conv_bn(ci, co, 3, stride=2)
        self.sn1 = lif()
        self.conv2 = conv_bn(co, co)
        self.down = nn.Sequential(layer.AvgPool2d(2, 2, step_mode="m"), conv_bn(ci, co, 1))
        self.sn2 = lif()

    def forward(self, x):
        return self.sn2(self.conv2(self.sn1(self.conv1(x))) + self.down(x))


class AvgPoolSEWBlock(nn.Module):
    """SEW's ADD with an AvgPool2d of the input spikes alone as the downsampling shortcut."""

    def __init__(self, c):
        super().__init__()
        self.conv = nn.Sequential(conv_bn(c, c, 3, stride=2), lif())
        self.pool = layer.AvgPool2d(2, 2, step_mode="m")

    def forward(self, x):
        return self.conv(x) + self.pool(x)


class PoolCurrentBlock(nn.Module):
    """Spiking-ResNet downsampling with AvgPool2d alone as the shortcut, added to the branch's current."""

    def __init__(self, c):
        super().__init__()
        self.conv = conv_bn(c, c, 3, stride=2)
        self.pool = layer.AvgPool2d(2, 2, step_mode="m")
        self.sn = lif()

    def forward(self, x):
        return self.sn(self.conv(x) + self.pool(x))


class DeepShortNet(nn.Module):
    """An add of currents from branches of unequal depth (three convs against one) and three pooled
    shortcuts: AvgPool2d + 1x1 conv + BN, AvgPool2d alone into an add of currents, into an add of spikes."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(2, 4), lif())
        self.deep = nn.Sequential(conv_bn(4, 4), lif(), conv_bn(4, 4), lif(), conv_bn(4, 4))
        self.short = conv_bn(4, 4, 1)
        self.sn = lif()
        self.down = AvgPoolDownBlock(4, 4)
        self.pooled = PoolCurrentBlock(4)
        self.sew = AvgPoolSEWBlock(4)
        self.head = nn.Sequential(conv_bn(4, 4), lif(), layer.Flatten(step_mode="m"),
                                  layer.Linear(4, 3, step_mode="m"), lif())

    def forward(self, x):
        s = self.stem(x)
        s = self.sn(self.deep(s) + self.short(s))
        return self.head(self.sew(self.pooled(self.down(s))))


class LoopSEWNet(nn.Module):
    """A SEW block written with single-step layers in a loop over time (``x[t]``, ``torch.stack``)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(layer.Conv2d(2, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4))
        self.sn1 = neuron.LIFNode(tau=2.0)
        self.conv2 = nn.Sequential(layer.Conv2d(4, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4))
        self.sn2 = neuron.LIFNode(tau=2.0)
        self.conv3 = nn.Sequential(layer.Conv2d(4, 4, 3, padding=1, bias=False), layer.BatchNorm2d(4))
        self.sn3 = neuron.LIFNode(tau=2.0)
        self.fc = layer.Linear(4 * 64, 3)
        self.sn4 = neuron.LIFNode(tau=2.0)

    def forward(self, x):
        out = []
        for t in range(x.shape[0]):
            s = self.sn1(self.conv1(x[t]))
            y = self.sn3(self.conv3(self.sn2(self.conv2(s)) + s))
            out.append(self.sn4(self.fc(y.flatten(1))))
        return torch.stack(out).mean(0)


class BTResNet(nn.Module):
    """A Spiking-ResNet block on MA-SNN's [B, T, ...] layout: turned to [T, B, ...] once, and back."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(2, 4), lif())
        self.block = BasicBlock(4, 4)
        self.head = nn.Sequential(layer.Flatten(step_mode="m"), layer.Linear(4 * 64, 3, step_mode="m"), lif())

    def forward(self, x):
        x = x.transpose(0, 1)
        return self.head(self.block(self.stem(x))).transpose(0, 1)


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


class OfficialCSAMSBlock(nn.Module):
    """An MS-ResNet block calling MA-SNN's official CSA (which takes ``[B, T, ...]``) on the branch's current:
    turned to ``[B, T, ...]`` for the attention and back, inside a time-major block."""

    def __init__(self, c, T, att):
        super().__init__()
        self.sn1, self.conv1, self.bn1 = lif(), layer.Conv2d(c, c, 3, padding=1, bias=False, step_mode="m"), \
            layer.BatchNorm2d(c, step_mode="m")
        self.att = att

    def forward(self, x):
        out = self.bn1(self.conv1(self.sn1(x)))
        return self.att(out.transpose(0, 1)).transpose(0, 1) + x


class OfficialCSAMSNet(nn.Module):
    def __init__(self, T=4, att=None):
        super().__init__()
        self.stem = conv_bn(2, 4)
        self.block = OfficialCSAMSBlock(4, T, att)
        self.sn = lif()
        self.head = nn.Sequential(layer.Flatten(step_mode="m"), layer.Linear(4 * 64, 3, step_mode="m"), lif())

    def forward(self, x):
        return self.head(self.sn(self.block(self.stem(x))))
