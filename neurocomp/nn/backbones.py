"""Small VGG-style backbones for the zoo: plain, TCJA, MA-SNN and PFA.

Every builder returns a flat ``torch.nn.Sequential`` of SpikingJelly ``activation_based`` layers in
multi-step mode plus neurocomp.nn modules. Input ``[T, B, C, H, W]``; output the spikes of the last
LIF layer ``[T, B, num_classes]`` (one neuron per class, prediction = argmax of the spike count).

Blocks (``channels`` gives one block per entry, each halving H and W):

- ``plain``: Conv3×3(bias)–BN2d–LIF–MaxPool2
- ``tcja``:  Conv3×3(bias)–BN2d–LIF–**TCJA**–MaxPool2        (attention on spikes, before pooling)
- ``ma``:    Conv3×3(bias)–BN2d–AvgPool2–**TCSA**–MALIFNode  (attention on input current;
  head Linear–**TA(fc)**–MALIFNode, MA-SNN's AttLIF without its BN1d)
- ``pfa``:   [**PFA** on the raw input] then Conv3×3(no bias)–BN2d–LIF–AvgPool2–**PFA**
  (attention on pooled spikes, before the next conv)

Head: Flatten → [Linear–LIF hidden layer if ``hidden``] → Linear → LIF (num_classes).
LIF = SpikingJelly ``LIFNode(tau=2, decay_input=True, v_threshold=1, v_reset=0, detach_reset=True)``,
the neuron of TCJA and PFA. Surrogates: ``atan`` = ATan(α=2), ``triangle`` = PiecewiseQuadratic(α=1),
whose derivative is the triangle ``max(0, 1 − |x|)`` of the TET scripts.
"""
from __future__ import annotations

from torch import nn
from spikingjelly.activation_based import layer, neuron, surrogate

from .ma import TA, TCA, TCSA, TSA, CSA, CA, SA
from .neurons import MALIFNode
from .pfa import PFA
from .tcja import TCJA, TLA, CLA

SURROGATES = {
    "atan": lambda: surrogate.ATan(alpha=2.0),
    "triangle": lambda: surrogate.PiecewiseQuadratic(alpha=1.0),
}
TCJA_VARIANTS = {"TCJA": TCJA, "TLA": TLA, "CLA": CLA}
MA_VARIANTS = {"TCSA": TCSA, "TCA": TCA, "TSA": TSA, "CSA": CSA, "TA": TA, "CA": CA, "SA": SA}


def lif(surrogate_name: str = "atan", tau: float = 2.0) -> neuron.LIFNode:
    """The SpikingJelly LIF of TCJA/PFA (hard reset to 0, fires on v >= 1), multi-step."""
    return neuron.LIFNode(tau=tau, decay_input=True, v_threshold=1.0, v_reset=0.0,
                          surrogate_function=SURROGATES[surrogate_name](), detach_reset=True,
                          step_mode="m", backend="torch")


def _conv_bn(cin: int, cout: int, bias: bool = True) -> list[nn.Module]:
    return [layer.Conv2d(cin, cout, 3, padding=1, bias=bias, step_mode="m"),
            layer.BatchNorm2d(cout, step_mode="m")]


def _head(features: int, num_classes: int, hidden: int, make_neuron) -> list[nn.Module]:
    mods: list[nn.Module] = [layer.Flatten(step_mode="m")]
    if hidden:
        mods += [layer.Linear(features, hidden, step_mode="m"), make_neuron()]
        features = hidden
    mods += [layer.Linear(features, num_classes, step_mode="m"), make_neuron()]
    return mods


def plain(in_channels: int = 1, num_classes: int = 10, input_hw: int = 8,
          channels: tuple = (16, 32), hidden: int = 0, surrogate_name: str = "atan",
          tau: float = 2.0, T: int | None = None) -> nn.Sequential:
    """Plain conv SNN: per block Conv–BN–LIF–MaxPool2. ``T`` is accepted and unused."""
    mods: list[nn.Module] = []
    cin, hw = in_channels, input_hw
    for cout in channels:
        mods += _conv_bn(cin, cout) + [lif(surrogate_name, tau), layer.MaxPool2d(2, step_mode="m")]
        cin, hw = cout, hw // 2
    mods += _head(cin * hw * hw, num_classes, hidden, lambda: lif(surrogate_name, tau))
    return nn.Sequential(*mods)


def tcja(T: int, in_channels: int = 1, num_classes: int = 10, input_hw: int = 8,
         channels: tuple = (16, 32), hidden: int = 0, kernel_size_t: int = 2,
         kernel_size_c: int = 2, variant: str = "TCJA", surrogate_name: str = "atan",
         tau: float = 2.0) -> nn.Sequential:
    """TCJA-SNN: per block Conv–BN–LIF–TCJA–MaxPool2 (``variant`` TLA/CLA for the ablations)."""
    att = TCJA_VARIANTS[variant]
    mods: list[nn.Module] = []
    cin, hw = in_channels, input_hw
    for cout in channels:
        mods += _conv_bn(cin, cout) + [lif(surrogate_name, tau),
                                       att(kernel_size_t, kernel_size_c, T, cout),
                                       layer.MaxPool2d(2, step_mode="m")]
        cin, hw = cout, hw // 2
    mods += _head(cin * hw * hw, num_classes, hidden, lambda: lif(surrogate_name, tau))
    return nn.Sequential(*mods)


def ma(T: int, in_channels: int = 1, num_classes: int = 10, input_hw: int = 8,
       channels: tuple = (16, 32), hidden: int = 0, attention: str = "TCSA", t_ratio: int = 2,
       c_ratio: int = 4, fc_attention: bool = True, v_threshold: float = 0.3,
       alpha: float = 0.3, lens: float = 0.25) -> nn.Sequential:
    """MA-SNN: per block Conv–BN–AvgPool2–attention–MALIFNode; FC layers Linear–TA(fc)–MALIFNode.

    Deviation: the official AttLIF has a BatchNorm1d between Linear and TA; SpikingJelly's
    multi-step ``layer.BatchNorm1d`` only accepts ``[T, N, C, L]``, so the FC layers here have none.
    """
    att = MA_VARIANTS[attention]

    def cell():
        return MALIFNode(v_threshold=v_threshold, alpha=alpha, lens=lens)

    def fc_block(fin: int, fout: int) -> list[nn.Module]:
        mods = [layer.Linear(fin, fout, step_mode="m")]
        if fc_attention:
            mods.append(TA(T, fout, t_ratio=t_ratio, fc=True))
        return mods + [cell()]

    mods: list[nn.Module] = []
    cin, hw = in_channels, input_hw
    for cout in channels:
        mods += _conv_bn(cin, cout) + [layer.AvgPool2d(2, step_mode="m"),
                                       att(T, cout, t_ratio=t_ratio, c_ratio=c_ratio), cell()]
        cin, hw = cout, hw // 2
    mods.append(layer.Flatten(step_mode="m"))
    features = cin * hw * hw
    if hidden:
        mods += fc_block(features, hidden)
        features = hidden
    mods += fc_block(features, num_classes)
    return nn.Sequential(*mods)


def pfa(T: int, in_channels: int = 1, num_classes: int = 10, input_hw: int = 8,
        channels: tuple = (16, 32), hidden: int = 0, rank: int = 4, input_attention: bool = True,
        surrogate_name: str = "atan", tau: float = 2.0) -> nn.Sequential:
    """PFA VGG: [PFA on input] then per block Conv(no bias)–BN–LIF–AvgPool2–PFA."""
    mods: list[nn.Module] = []
    cin, hw = in_channels, input_hw
    if input_attention:
        mods.append(PFA(hw, hw, T, cin, 3, rank))
    for cout in channels:
        hw //= 2
        mods += _conv_bn(cin, cout, bias=False) + [lif(surrogate_name, tau),
                                                   layer.AvgPool2d(2, step_mode="m"),
                                                   PFA(hw, hw, T, cout, 3, rank)]
        cin = cout
    mods += _head(cin * hw * hw, num_classes, hidden, lambda: lif(surrogate_name, tau))
    return nn.Sequential(*mods)


BUILDERS = {"plain": plain, "tcja": tcja, "ma": ma, "pfa": pfa}


def build(name: str, **kwargs) -> nn.Sequential:
    """Build backbone ``name`` (a key of :data:`BUILDERS`) with ``kwargs`` (lists become tuples)."""
    if name not in BUILDERS:
        raise KeyError(f"unknown backbone '{name}' (choose from {sorted(BUILDERS)})")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return BUILDERS[name](**kwargs)


def param_count(model: nn.Module) -> int:
    """Number of parameters (trainable or not, e.g. PFA's λ)."""
    return sum(p.numel() for p in model.parameters())
