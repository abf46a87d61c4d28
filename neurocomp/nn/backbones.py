"""Small backbones for the zoo: VGG-style plain, TCJA, MA-SNN and PFA, and the residual families.

Every VGG-style builder returns a flat ``torch.nn.Sequential`` of SpikingJelly ``activation_based`` layers in
multi-step mode plus neurocomp.nn modules. Input ``[T, B, C, H, W]``; output the spikes of the last
LIF layer ``[T, B, num_classes]`` (one neuron per class, prediction = argmax of the spike count).

Blocks (``channels`` gives one block per entry, each halving H and W):

- ``plain``: Conv3×3(bias)–BN2d–LIF–MaxPool2
- ``tcja``:  Conv3×3(bias)–BN2d–LIF–**TCJA**–MaxPool2        (attention on spikes, before pooling)
- ``ma``:    Conv3×3(bias)–BN2d–AvgPool2–**TCSA**–MALIFNode  (attention on input current;
  head Linear–**TA(fc)**–MALIFNode, MA-SNN's AttLIF without its BN1d)
- ``pfa``:   [**PFA** on the raw input] then Conv3×3(no bias)–BN2d–LIF–AvgPool2–**PFA**
  (attention on pooled spikes, before the next conv)

Residual families (block classes with their own ``forward``, ``out = f(x) + shortcut(x)``, read by
tracing into a graph; :class:`Traceable`):

- ``sew_resnet``: stem Conv–BN–LIF, blocks ``(Conv–BN–LIF–Conv–BN–LIF)(x) + x`` (SEW ADD of spikes), then a
  stride-2 Conv–BN–LIF
- ``ms_resnet``: stem Conv–BN, blocks ``(LIF–Conv–BN–LIF–Conv–BN)(x) + x`` (membrane shortcut), head LIF first
- ``ms_resnet_tcja`` / ``ms_resnet_csa`` / ``pfa_resnet``: the MS-ResNet with **TCJA** on the branch's
  second spikes, MA-SNN's **CSA** on the branch's current before the add, **PFA** on the branch's first spikes

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
                          step_mode="m")   # the torch backend: the default of every SpikingJelly


def _conv_bn(cin: int, cout: int, bias: bool = True, stride: int = 1) -> list[nn.Module]:
    return [layer.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias, step_mode="m"),
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


# ---- residual families (issue 15): block classes with their own forward, as users write them ----------------


class Traceable(nn.Module):
    """A zoo block or network written the way users write theirs: a class whose ``forward`` joins
    layers with ``out = f(x) + shortcut(x)``. neurocomp's front door reads it by tracing
    (``frontends/trace_graph.py``) into a graph of its layers, never as one library layer, so its
    checkpoint stores a ``"type": "Graph"`` architecture with no code of its own."""


class SEWBlock(Traceable):
    """SEW-ResNet's basic block with ADD: ``(Conv–BN–LIF–Conv–BN–LIF)(x) + x``, spikes added after the
    second neuron (the sum 0/1/2 is the next layer's input)."""

    def __init__(self, channels: int, surrogate_name: str = "atan", tau: float = 2.0):
        super().__init__()
        self.branch = nn.Sequential(*_conv_bn(channels, channels, bias=False), lif(surrogate_name, tau),
                                    *_conv_bn(channels, channels, bias=False), lif(surrogate_name, tau))

    def forward(self, x):
        return self.branch(x) + x


class MSBlock(Traceable):
    """MS-ResNet's block: ``(LIF–Conv–BN–LIF–Conv–BN)(x) + x``, the shortcut a membrane-level add of
    currents. ``attention`` puts one attention module on the residual branch only:

    - ``"TCJA"``: on the spikes of the branch's second LIF, before its second conv (TCJA acts on
      spikes, as in ridgerchu/TCJA);
    - ``"CSA"``: on the branch's current after its last BN, before the add (MA-SNN's CSA-MS-ResNet,
      BICLab/Attention-SNN ``Att_Res_SNN/models/resnet_2.py``: ``PruningCell(attention="CSA")`` last in
      ``residual_function``, its ReLU included);
    - ``"PFA"``: on the spikes of the branch's first LIF, before its first conv (PFA on spikes before
      the next conv, as in the ``pfa`` VGG).
    """

    def __init__(self, channels: int, hw: int, T: int | None = None, attention: str | None = None,
                 surrogate_name: str = "atan", tau: float = 2.0, kernel_size_t: int = 2,
                 kernel_size_c: int = 2, c_ratio: int = 4, rank: int = 4):
        super().__init__()
        c = channels
        mods = [lif(surrogate_name, tau)]
        if attention == "PFA":
            mods.append(PFA(hw, hw, T, c, 3, rank))
        mods += _conv_bn(c, c, bias=False) + [lif(surrogate_name, tau)]
        if attention == "TCJA":
            mods.append(TCJA(kernel_size_t, kernel_size_c, T, c))
        mods += _conv_bn(c, c, bias=False)
        if attention == "CSA":
            mods.append(CSA(T, c, t_ratio=1, c_ratio=c_ratio))
        elif attention not in (None, "TCJA", "PFA"):
            raise ValueError(f"MSBlock: unknown attention {attention!r} (use None, 'TCJA', 'CSA' or 'PFA')")
        self.branch = nn.Sequential(*mods)

    def forward(self, x):
        return self.branch(x) + x


class ResNet(Traceable):
    """A small residual network: stem, ``blocks``, head; time-major ``[T, B, C, H, W]`` in, the last
    LIF's spikes ``[T, B, num_classes]`` out."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: list[nn.Module]):
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(*head)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def sew_resnet(in_channels: int = 1, num_classes: int = 10, input_hw: int = 8, channels: int = 8,
               blocks: int = 1, stem_stride: int = 1, hidden: int = 0, surrogate_name: str = "atan",
               tau: float = 2.0, T: int | None = None) -> ResNet:
    """SEW-ResNet (ADD): stem Conv3×3(stride)–BN–LIF, ``blocks`` :class:`SEWBlock`, then the next
    stage's downsampling Conv3×3(stride 2)–BN–LIF (it reads the block's spike sum), Flatten → Linear →
    LIF. ``T`` is accepted and unused."""
    hw = input_hw // stem_stride
    stem = nn.Sequential(*_conv_bn(in_channels, channels, bias=False, stride=stem_stride), lif(surrogate_name, tau))
    down = _conv_bn(channels, channels, bias=False, stride=2) + [lif(surrogate_name, tau)]
    hw = (hw + 1) // 2
    return ResNet(stem, [SEWBlock(channels, surrogate_name, tau) for _ in range(blocks)],
                  down + _head(channels * hw * hw, num_classes, hidden, lambda: lif(surrogate_name, tau)))


def _ms_resnet(attention, T, in_channels, num_classes, input_hw, channels, blocks, stem_stride, hidden,
               surrogate_name, tau, **att) -> ResNet:
    hw = input_hw // stem_stride
    stem = nn.Sequential(*_conv_bn(in_channels, channels, bias=False, stride=stem_stride))
    body = [MSBlock(channels, hw, T, attention, surrogate_name, tau, **att) for _ in range(blocks)]
    head = [lif(surrogate_name, tau)] + _head(channels * hw * hw, num_classes, hidden,
                                              lambda: lif(surrogate_name, tau))
    return ResNet(stem, body, head)


def ms_resnet(in_channels: int = 1, num_classes: int = 10, input_hw: int = 8, channels: int = 8,
              blocks: int = 1, stem_stride: int = 1, hidden: int = 0, surrogate_name: str = "atan",
              tau: float = 2.0, T: int | None = None) -> ResNet:
    """MS-ResNet: stem Conv3×3(stride)–BN (a current), ``blocks`` :class:`MSBlock`, then LIF → Flatten
    → Linear → LIF. ``T`` is accepted and unused."""
    return _ms_resnet(None, T, in_channels, num_classes, input_hw, channels, blocks, stem_stride, hidden,
                      surrogate_name, tau)


def ms_resnet_tcja(T: int, in_channels: int = 1, num_classes: int = 10, input_hw: int = 8,
                   channels: int = 8, blocks: int = 1, stem_stride: int = 1, hidden: int = 0,
                   kernel_size_t: int = 2, kernel_size_c: int = 2, surrogate_name: str = "atan",
                   tau: float = 2.0) -> ResNet:
    """MS-ResNet with a TCJA in every block (on the branch's spikes, see :class:`MSBlock`)."""
    return _ms_resnet("TCJA", T, in_channels, num_classes, input_hw, channels, blocks, stem_stride, hidden,
                      surrogate_name, tau, kernel_size_t=kernel_size_t, kernel_size_c=kernel_size_c)


def ms_resnet_csa(T: int, in_channels: int = 1, num_classes: int = 10, input_hw: int = 8,
                  channels: int = 8, blocks: int = 1, stem_stride: int = 1, hidden: int = 0,
                  c_ratio: int = 4, surrogate_name: str = "atan", tau: float = 2.0) -> ResNet:
    """MA-SNN's CSA-MS-ResNet: CSA on the residual branch's current before the membrane-level add."""
    return _ms_resnet("CSA", T, in_channels, num_classes, input_hw, channels, blocks, stem_stride, hidden,
                      surrogate_name, tau, c_ratio=c_ratio)


def pfa_resnet(T: int, in_channels: int = 1, num_classes: int = 10, input_hw: int = 8,
               channels: int = 8, blocks: int = 1, stem_stride: int = 1, hidden: int = 0, rank: int = 4,
               surrogate_name: str = "atan", tau: float = 2.0) -> ResNet:
    """MS-ResNet with a PFA in every block (on the branch's first spikes, see :class:`MSBlock`)."""
    return _ms_resnet("PFA", T, in_channels, num_classes, input_hw, channels, blocks, stem_stride, hidden,
                      surrogate_name, tau, rank=rank)


RESIDUAL = ("sew_resnet", "ms_resnet", "ms_resnet_tcja", "ms_resnet_csa", "pfa_resnet")   # graphs, not chains
BUILDERS = {"plain": plain, "tcja": tcja, "ma": ma, "pfa": pfa, "sew_resnet": sew_resnet, "ms_resnet": ms_resnet,
            "ms_resnet_tcja": ms_resnet_tcja, "ms_resnet_csa": ms_resnet_csa, "pfa_resnet": pfa_resnet}


def build(name: str, **kwargs) -> nn.Module:
    """Build backbone ``name`` (a key of :data:`BUILDERS`) with ``kwargs`` (lists become tuples)."""
    if name not in BUILDERS:
        raise KeyError(f"unknown backbone '{name}' (choose from {sorted(BUILDERS)})")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return BUILDERS[name](**kwargs)


def param_count(model: nn.Module) -> int:
    """Number of parameters (trainable or not, e.g. PFA's λ)."""
    return sum(p.numel() for p in model.parameters())
