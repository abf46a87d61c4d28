"""The official papers' attention classes, recognised by class name and parameter layout.

:func:`recognise` returns the ``neurocomp.nn`` module (or ``nn.Sequential`` of supported layers and
``neurocomp.nn`` modules) that computes the same as a module written with the official code's
classes, with its weights, or ``None`` when the module is not one of them. A class whose name is an
official one but whose parameters are not that class's layout is a one-line
:class:`~neurocomp.errors.UnsupportedLayer` naming the layer, the class and the difference.

What is recognised (class name -> equivalent; every equivalent is time-major ``[T, B, ...]``):

- ridgerchu/TCJA ``src/layers.py``: ``TCJA`` / ``TLA`` / ``CLA`` -> ``neurocomp.nn`` TCJA / TLA / CLA
  (same state-dict names; ``kernel_size_t`` from ``conv``, ``kernel_size_c`` from ``conv_c``);
  ``TCJA_for_TET`` (``src/tcja.py``, ``conv`` inside an ``nn.Sequential``, ``[B, T, ...]`` input) ->
  TCJA. The copy whose ``self.conv = nn.Conv1d(...),`` ends in a comma holds a tuple and cannot run:
  refused, naming the comma.
- BICLab/Attention-SNN ``MA_SNN/module/Attention.py``: ``TCSA`` / ``TCA`` / ``TSA`` / ``CSA`` /
  ``TA`` / ``CA`` / ``SA`` (``[B, T, ...]``; ``TA(fc=True)`` on ``[B, T, N]``) -> the neurocomp.nn
  class of the same name (same state-dict names; T, C, the ratios and the spatial kernel read from
  the weight shapes). ``LIF_Module.py``: ``ConvAttLIF`` -> ``SeqToANNContainer(conv2d, BNLayer,
  pooling)``, its attention, ``MALIFNode``; ``AttLIF`` -> ``SeqToANNContainer(Flatten, linear,
  BNLayer)``, ``TA(fc=True)`` or nothing, ``MALIFNode`` (the cell's ``Vthres``, ``alpha``, ``beta``;
  ``Vreset`` is never used by the cell; ``Vthres``, ``alpha`` and ``beta`` learned per channel with
  ``pa_train_self=True`` become per-channel lists).
- RisingEntropy/PFA ``TCSAttention.py``: ``TCSAModule`` with its ``weight`` (the multiplicative CIFAR
  variant) -> ``neurocomp.nn.PFA``; ``FMNIST/TCSAttention.py``'s ``TCSAModule`` without ``weight``
  (``relu(A + x)``, the rank terms summed, on the input current) -> ``PFA(..., additive=True)``; the
  FSVAE copy (``Generation/fsvae_models/TCSA.py``: the same layout on ``[N, C, H, W, T]``,
  ``relu(A * x)``) is told apart by its forward's source and refused.
- ridgerchu/TCJA ``src/dvs128.py``: its own ``VotingLayer`` (``voting = nn.AvgPool1d(k, k)``) ->
  SpikingJelly's ``VotingLayer(k)`` (the output head; see ``frontends/torch``).
- SpikingJelly: ``activation_based.layer.MultiDimensionalAttention`` -> TCSA (0.0.0.0.14's own forward
  calls a ``self.relu`` it never defines; the ReLU is what the class and MA-SNN mean; 2.x's subsets
  without some of ``ta`` / ``ca`` / ``sa`` -> TCA / TSA / CSA / TA / CA / SA);
  ``activation_based.layer.TemporalWiseAttention`` and ``clock_driven.layer.MultiStepTemporalWiseAttention``
  -> ``TA(relu=False)`` (its MLP's Linear weights as 1x1 convolutions; ``dimension=2`` -> ``fc=True``).

Refused in one line, with the reason: MA-SNN cells in ``mem`` mode, ``onlyLast=True``, BatchNorm without running statistics, and a spike function that
is not the step ``u >= Vthres``.
"""
from __future__ import annotations

import collections
import inspect

import torch
import torch.nn as tnn

from neurocomp.errors import UnsupportedLayer
from neurocomp.frontends.modules import CONTAINER_TYPES
from spikingjelly.activation_based import layer as ab_layer  # noqa: E402  (quietly imported by modules)
from neurocomp.nn import CA, CLA, CSA, MALIFNode, PFA, SA, TA, TCA, TCJA, TCSA, TLA, TSA

MA_CLASSES = {"TCSA": TCSA, "TCA": TCA, "TSA": TSA, "CSA": CSA, "TA": TA, "CA": CA, "SA": SA}
TCJA_CLASSES = {"TCJA": TCJA, "TLA": TLA, "CLA": CLA}
_MA_NAMES = {"T": ("ta.sharedMLP.0.weight", "ta.sharedMLP.2.weight"),
             "C": ("ca.sharedMLP.0.weight", "ca.sharedMLP.2.weight"), "S": ("sa.conv.weight",)}
# what a layer refused for its layout can be rebuilt as (the next step that works)
_BUILD_AS = {
    **{n: "neurocomp.nn.TCJA / TLA / CLA(kernel_size_t, kernel_size_c, T, channel)" for n in ("TCJA", "TLA", "CLA",
                                                                                            "TCJA_for_TET")},
    **{n: f"neurocomp.nn.{n}(T, channels, t_ratio=..., c_ratio=..., kernel_size=3 or 7)" for n in MA_CLASSES},
    "TCSAModule": "neurocomp.nn.PFA(H, W, T, C, kernel_sizeTS, rank[, additive=True])",
    "MultiDimensionalAttention": "neurocomp.nn.TCSA(T, channels, t_ratio, c_ratio, kernel_size)",
    "TemporalWiseAttention": "neurocomp.nn.TA(T, channels, t_ratio, fc=..., relu=False)",
    "MultiStepTemporalWiseAttention": "neurocomp.nn.TA(T, channels, t_ratio, fc=..., relu=False)",
    "ConvAttLIF": "SeqToANNContainer(Conv2d, BatchNorm2d[, AvgPool2d]), a neurocomp.nn attention module, "
                  "neurocomp.nn.MALIFNode",
    "AttLIF": "SeqToANNContainer(Flatten, Linear, BatchNorm1d), neurocomp.nn.TA(..., fc=True), neurocomp.nn.MALIFNode",
}


def _refuse(path, module, what, hint=None):
    if hint is None:
        hint = f"build the layer as {_BUILD_AS[type(module).__name__]} (the official state-dict names) and load its weights"
    raise UnsupportedLayer(f"{type(module).__name__}: {what}", where=f"layer '{path}'", hint=hint)


def _layout(module) -> dict:
    """``{name: shape}`` of the module's parameters (buffers left out)."""
    return {k: tuple(v.shape) for k, v in module.named_parameters()}


def _check_names(module, path, want, official):
    got = _layout(module)
    if set(got) != set(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        what = "; ".join(x for x in (f"lacks {', '.join(missing)}" if missing else "",
                                     f"has {', '.join(extra)} besides" if extra else "") if x)
        _refuse(path, module, f"its parameters are not the layout of {official} ({what})")
    return got


def _shape_error(path, module, official, name, shape, expected):
    _refuse(path, module, f"its parameter {name} has shape {list(shape)}, where {official} has {expected}")


def _load(equivalent, module, path, state):
    """``equivalent`` with ``state`` (name -> tensor) loaded, in eval mode."""
    try:
        equivalent.load_state_dict({k: v.detach().cpu().clone().float() for k, v in state.items()}, strict=True)
    except RuntimeError as e:                    # pragma: no cover - the shapes were checked before
        _refuse(path, module, f"its weights do not load into {type(equivalent).__name__} "
                              f"({str(e).strip().splitlines()[0][:120]})")
    return equivalent.eval()


def _ratio(n: int, hidden: int) -> int:
    """A reduction ratio ``r`` with ``n // r == hidden`` (the official code stores only the weights)."""
    r = n // hidden
    return r if n // r == hidden else next(r for r in range(1, n + 1) if n // r == hidden)


# ---- TCJA ------------------------------------------------------------------------------------------
def _tcja(module, path):
    name = type(module).__name__
    tet = name == "TCJA_for_TET"
    official = f"ridgerchu/TCJA's {name}"
    cls = TCJA if tet else TCJA_CLASSES[name]
    if isinstance(getattr(module, "conv", None), tuple):
        _refuse(path, module, "its `conv` is a tuple, not a Conv1d (the trailing comma of `self.conv = nn.Conv1d(...),` "
                              "in that copy of the official code), so the module cannot run",
                "remove the trailing comma, retrain (or load the weights), and save the model again")
    t_name = "conv.0.weight" if tet else "conv.weight"
    want = {"TLA": ["conv_c.weight"], "CLA": [t_name]}.get(name, [t_name, "conv_c.weight"])
    got = _check_names(module, path, want, official)
    convs = {}
    for key, attr in ((t_name, "conv"), ("conv_c.weight", "conv_c")):
        if key not in got:
            continue
        conv = module.conv[0] if tet and attr == "conv" else getattr(module, attr)
        shape = got[key]
        if not (isinstance(conv, tnn.Conv1d) and len(shape) == 3 and shape[0] == shape[1] and conv.bias is None
                and conv.padding == "same" and tuple(conv.stride) == (1,) and tuple(conv.dilation) == (1,)
                and conv.groups == 1):
            _shape_error(path, module, official, key, shape, "a bias-free 'same'-padded Conv1d with as many output "
                                                             "as input channels")
        convs[attr] = shape
    T = convs["conv"][0] if "conv" in convs else 1
    channel = convs["conv_c"][0] if "conv_c" in convs else 1
    kt = convs["conv"][2] if "conv" in convs else 1
    kc = convs["conv_c"][2] if "conv_c" in convs else 1
    state = {("conv.weight" if k == t_name else k): v for k, v in module.state_dict().items()}
    return _load(cls(kernel_size_t=int(kt), kernel_size_c=int(kc), T=int(T), channel=int(channel)), module, path, state)


# ---- MA-SNN's attention modules ----------------------------------------------------------------------
def _ma_geometry(module, path, parts, official, names=None, fc_ok=True):
    """``(T, C, t_ratio, c_ratio, kernel_size, fc)`` of an MA-SNN module from its weight shapes."""
    names = names or {p: _MA_NAMES[p] for p in parts}
    got = _check_names(module, path, [n for p in parts for n in names[p]], official)
    T = C = 1
    t_ratio = c_ratio = 16
    kernel, fc = 3, False
    for part in parts:
        if part == "S":
            (w,) = names["S"]
            s = got[w]
            if not (len(s) == 4 and s[:2] == (1, 2) and s[2] == s[3] and s[2] in (3, 7)):
                _shape_error(path, module, official, w, s, "[1, 2, k, k] with k = 3 or 7")
            kernel = int(s[2])
            continue
        w1, w2 = names[part]
        a, b = got[w1], got[w2]
        ok_dims = (3, 5) if (part == "T" and fc_ok) else (5,)
        if not (len(a) == len(b) and len(a) in ok_dims and all(d == 1 for d in a[2:] + b[2:])
                and a[0] == b[1] and a[1] == b[0] and 1 <= a[0] <= a[1]):
            _shape_error(path, module, official, w1, a, f"[n // r, n, 1, ...] and {w2} [n, n // r, 1, ...] "
                                                        "(bias-free 1x1 convolutions)")
        n, hidden = int(a[1]), int(a[0])
        if part == "T":
            T, t_ratio, fc = n, _ratio(n, hidden), len(a) == 3
        else:
            C, c_ratio = n, _ratio(n, hidden)
    return T, C, t_ratio, c_ratio, kernel, fc


def _ma(module, path):
    name = type(module).__name__
    cls = MA_CLASSES[name]
    official = f"MA-SNN's {name}"
    T, C, t_ratio, c_ratio, kernel, fc = _ma_geometry(module, path, cls.PARTS, official, fc_ok=name == "TA")
    if not isinstance(getattr(module, "relu", None), tnn.ReLU):
        _refuse(path, module, f"has no `relu` (nn.ReLU), which {official} ends with")
    eq = cls(T=T, channels=C, t_ratio=t_ratio, c_ratio=c_ratio, kernel_size=kernel, fc=fc)
    return _load(eq, module, path, module.state_dict())


def _multi_dimensional(module, path):
    """SpikingJelly's MultiDimensionalAttention: TA -> CA -> SA -> ReLU on [T, N, C, H, W], i.e. TCSA.
    (SpikingJelly 0.0.0.0.14's own forward calls ``self.relu``, which it never defines.) SpikingJelly 2.x's
    ``use_temporal`` / ``use_channel`` / ``use_spatial`` leave a part ``None``: the subset is MA-SNN's class
    of those parts (TCA, TSA, CSA, TA, CA, SA), applied in the same order."""
    parts = "".join(p for p, a in zip("TCS", ("ta", "ca", "sa")) if getattr(module, a, None) is not None)
    name = {"TCS": "TCSA", "TC": "TCA", "TS": "TSA", "CS": "CSA", "T": "TA", "C": "CA", "S": "SA"}.get(parts)
    if name is None:
        _refuse(path, module, "has none of its ta, ca, sa parts")
    T, C, t_ratio, c_ratio, kernel, _ = _ma_geometry(module, path, parts, "SpikingJelly's MultiDimensionalAttention",
                                                     fc_ok=False)
    eq = MA_CLASSES[name](T=T, channels=C, t_ratio=t_ratio, c_ratio=c_ratio, kernel_size=kernel)
    return _load(eq, module, path, module.state_dict())


def _temporal_wise(module, path):
    """SpikingJelly's TemporalWiseAttention: the TA map from a Linear MLP, ``y = x * map`` (no ReLU)."""
    official = f"SpikingJelly's {type(module).__name__}"
    got = _check_names(module, path, ["sharedMLP.0.weight", "sharedMLP.2.weight"], official)
    a, b = got["sharedMLP.0.weight"], got["sharedMLP.2.weight"]
    lin = [module.sharedMLP[i] for i in (0, 2)] if isinstance(getattr(module, "sharedMLP", None), tnn.Sequential) \
        and len(module.sharedMLP) == 3 else []
    if not (len(lin) == 2 and all(isinstance(m, tnn.Linear) and m.bias is None for m in lin)
            and isinstance(module.sharedMLP[1], tnn.ReLU) and len(a) == 2 and a == b[::-1] and 1 <= a[0] <= a[1]):
        _shape_error(path, module, official, "sharedMLP.0.weight", a, "[T // r, T] (bias-free Linear, ReLU, Linear)")
    # the input's rank from the pooling the constructor's `dimension` chose (SpikingJelly 2.x stores no
    # `dimension`; every version builds these pools)
    pool = type(getattr(module, "avg_pool", None))
    dimension = {tnn.AdaptiveAvgPool3d: 4, tnn.AdaptiveAvgPool1d: 2}.get(pool)
    if dimension is None:
        _refuse(path, module, f"its avg_pool is {pool.__name__}, where {official} has AdaptiveAvgPool3d "
                              "(dimension=4, [T, N, C, H, W]) or AdaptiveAvgPool1d (dimension=2, [T, N, L])")
    T, hidden = int(a[1]), int(a[0])
    fc = dimension == 2
    tail = (1,) if fc else (1, 1, 1)
    w1, w2 = (module.sharedMLP[i].weight.detach() for i in (0, 2))
    eq = TA(T=T, channels=1, t_ratio=_ratio(T, hidden), fc=fc, relu=False)
    return _load(eq, module, path, {"ta.sharedMLP.0.weight": w1.reshape(tuple(w1.shape) + tail),
                                    "ta.sharedMLP.2.weight": w2.reshape(tuple(w2.shape) + tail)})


# ---- PFA ----------------------------------------------------------------------------------------------
def _forward_source(module) -> str:
    """The source of the module's ``forward`` where Python can find it, else ``""``."""
    try:
        return inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return ""


def _pfa(module, path):
    """PFA's TCSAModule: with ``weight``, the multiplicative CIFAR variant (``relu(A * x)``, on spikes);
    without, the additive FMNIST variant (``relu(A + x)``, A the unweighted sum over the rank, on the
    input current) -> ``PFA(..., additive=True)``."""
    official = "RisingEntropy/PFA's TCSAModule"
    additive = "weight" not in _layout(module)
    if additive and "n c h w t" in _forward_source(module):
        _refuse(path, module, "this weightless TCSAModule is PFA's FSVAE copy ([N, C, H, W, T] in and out, "
                              "relu(A * x) with the rank terms summed), not the FMNIST variant (relu(A + x))",
                "use the CIFAR TCSAModule (with `weight`) on [T, N, C, H, W], or leave the layer out")
    got = _check_names(module, path, ([] if additive else ["weight"]) + ["TS_conv.weight", "TS_conv.bias",
                                                                          "TC_FC.weight", "TC_FC.bias",
                                                                          "SC_FC.weight", "SC_FC.bias"], official)
    conv, tc, sc = module.TS_conv, module.TC_FC, module.SC_FC
    if not (isinstance(conv, tnn.Conv2d) and isinstance(tc, tnn.Linear) and isinstance(sc, tnn.Linear)):
        _refuse(path, module, f"TS_conv / TC_FC / SC_FC are not the Conv2d / Linear / Linear of {official}")
    R, T, kh, kw = (int(d) for d in got["TS_conv.weight"])
    k = kh
    if not (kh == kw and tuple(conv.padding) == ((1, 1) if k == 3 else (0, 0)) and tuple(conv.stride) == (1, 1)
            and tuple(conv.dilation) == (1, 1) and conv.groups == 1 and (additive or got["weight"] == (R,))
            and tc.out_features == R and sc.out_features == R and sc.in_features == T):
        _shape_error(path, module, official, "TS_conv.weight", got["TS_conv.weight"],
                     "[R, T, k, k] (padding 1 for k = 3, else 0), weight [R], TC_FC C -> R and SC_FC T -> R")
    H, W = (int(getattr(module, a, 1) or 1) for a in ("H", "W"))
    eq = PFA(H=H, W=W, T=T, C=int(tc.in_features), kernel_sizeTS=k, rank=R, additive=additive)
    return _load(eq, module, path, module.state_dict())


# ---- MA-SNN's layer wrappers (AttLIF / ConvAttLIF), [B, T, ...] ---------------------------------------
def _cell(module, path, cell_name):
    """The wrapper's IFCell / ConvIFCell as a MALIFNode."""
    net = getattr(module, "network", None)
    cell = net._modules.get(cell_name) if isinstance(net, tnn.Sequential) else None
    if cell is None or len(net) != 1:
        _refuse(path, module, f"its `network` is not one {cell_name} cell, as MA-SNN's {type(module).__name__} builds it")
    if getattr(cell, "mode_select", "spike") != "spike":
        _refuse(path, module, f"its cell outputs the membrane potential (mode_select={cell.mode_select!r}), not spikes",
                "train with mode_select='spike'")
    values = {}
    for attr in ("Vthres", "alpha", "beta"):
        v = getattr(cell, attr, None)
        t = torch.as_tensor(v.detach() if isinstance(v, torch.Tensor) else v, dtype=torch.float32).flatten()
        if t.numel() == 0 or not torch.isfinite(t).all():
            _refuse(path, module, f"its cell's {attr} is {v!r}, not a finite number")
        if bool((t == t[0]).all()):
            values[attr] = float(v) if isinstance(v, (int, float)) else float(t[0])
        elif t.numel() != int(getattr(cell, "hiddenSize", -1)):
            _refuse(path, module, f"its cell's {attr} has {t.numel()} values for {getattr(cell, 'hiddenSize', '?')} "
                                  "channels (one per channel, as pa_train_self=True learns them)")
        else:                     # learned per channel (pa_train_self=True): one value per output channel
            values[attr] = [float(x) for x in t]
    fn = getattr(cell, "spikeActFun", None)
    probe = torch.tensor([-1.0, -1e-6, 0.0, 1e-6, 1.0])
    try:
        with torch.no_grad():
            fired = fn(probe)
        step = torch.equal(torch.as_tensor(fired, dtype=torch.float32), torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]))
    except Exception:  # noqa: BLE001 - the user's function: any failure means it is not the step
        step = False
    if not step:
        _refuse(path, module, "its cell's spikeActFun is not the step `u - Vthres >= 0` (input.ge(0)) of MA-SNN's cell",
                "use MA-SNN's ActFun (forward: input.ge(0.).float())")
    return MALIFNode(v_threshold=values["Vthres"], alpha=values["alpha"], beta=values["beta"])


def _batchnorm(module, path, cls):
    if not getattr(module, "useBatchNorm", False):
        return []
    bn = getattr(module, "BNLayer", None)
    if type(bn) is not cls:
        _refuse(path, module, f"useBatchNorm is set but BNLayer is {type(bn).__name__}, not {cls.__name__}")
    if not bn.track_running_stats or bn.running_mean is None:
        _refuse(path, module, "its BNLayer has no running statistics (track_running_stats=False normalises each batch "
                              "by its own statistics, which no compiled network can)",
                "train with track_running_stats=True")
    return [bn]


def _wrapper_common(module, path):
    if getattr(module, "onlyLast", False):
        _refuse(path, module, "onlyLast=True returns the last step only", "build it with onlyLast=False")


def _per_step(*layers):
    """The wrapper's own per-step layers (the same modules, as ``as_sequential`` keeps a user's layers)."""
    return CONTAINER_TYPES["SeqToANNContainer"](*layers)


def _conv_att_lif(module, path):
    _wrapper_common(module, path)
    conv = getattr(module, "conv2d", None)
    if type(conv) is not tnn.Conv2d:
        _refuse(path, module, f"its conv2d is {type(conv).__name__}, not the nn.Conv2d of MA-SNN's ConvAttLIF")
    layers = [conv] + _batchnorm(module, path, tnn.BatchNorm2d)
    k = int(getattr(module, "pooling_kernel_size", 1) or 1)
    if k > 1:
        pool = getattr(module, "pooling", None)
        if type(pool) is not tnn.AvgPool2d:
            _refuse(path, module, f"pooling_kernel_size={k} but its pooling is {type(pool).__name__}, not nn.AvgPool2d")
        layers.append(pool)
    seq = [("0", _per_step(*layers))]
    flag = getattr(module, "attention_flag", "no")
    if flag != "no":
        att = getattr(module, "attention", None)
        if att is None or type(att).__name__ not in MA_CLASSES:
            _refuse(path, module, f"attention={flag!r} without one of MA-SNN's attention modules "
                                  f"({', '.join(MA_CLASSES)}) in `attention`")
        seq.append(("attention", _ma(att, f"{path}.attention")))
    seq.append(("cell", _cell(module, path, "ConvIF")))
    return tnn.Sequential(collections.OrderedDict(seq))


def _att_lif(module, path):
    _wrapper_common(module, path)
    lin = getattr(module, "linear", None)
    if type(lin) is not tnn.Linear:
        _refuse(path, module, f"its linear is {type(lin).__name__}, not the nn.Linear of MA-SNN's AttLIF")
    seq = [("0", _per_step(tnn.Flatten(1), lin, *_batchnorm(module, path, tnn.BatchNorm1d)))]
    flag = getattr(module, "attention_flag", "no")
    if flag == "TA":
        att = getattr(module, "attention", None)
        if att is None or type(att).__name__ != "TA":
            _refuse(path, module, "attention='TA' without MA-SNN's TA in `attention`")
        seq.append(("attention", _ma(att, f"{path}.attention")))
    elif flag != "no":
        _refuse(path, module, f"attention={flag!r}: MA-SNN's AttLIF builds only 'TA' or 'no' (its forward fails "
                              "for any other)", "build it with attention='TA' or 'no'")
    seq.append(("cell", _cell(module, path, "IF")))
    return tnn.Sequential(collections.OrderedDict(seq))


def _voting(module, path):
    """ridgerchu/TCJA ``src/dvs128.py``'s own ``VotingLayer``: ``voting = nn.AvgPool1d(k, k)`` over the
    last dim of ``x.unsqueeze(1)``, SpikingJelly's ``VotingLayer(k)`` op for op."""
    pool = getattr(module, "voting", None)
    if [n for n, _ in module.named_children()] != ["voting"] or not isinstance(pool, tnn.AvgPool1d) \
            or any(True for _ in module.parameters()):
        _refuse(path, module, "a VotingLayer whose one child is not `voting = nn.AvgPool1d(k, k)`",
                "use spikingjelly.activation_based.layer.VotingLayer(k)")
    k, s, p = int(pool.kernel_size[0]), int(pool.stride[0]), int(pool.padding[0])
    if s != k or p != 0 or pool.ceil_mode:
        _refuse(path, module, f"its AvgPool1d has kernel {k}, stride {s}, padding {p}, ceil_mode {pool.ceil_mode} "
                              "(a vote is kernel = stride, no padding)",
                "use spikingjelly.activation_based.layer.VotingLayer(k)")
    return ab_layer.VotingLayer(k)        # single-step, as the user calls it (on one step or the mean)


RECOGNISERS = {
    "VotingLayer": _voting,
    **{name: _tcja for name in ("TCJA", "TLA", "CLA", "TCJA_for_TET")},
    **{name: _ma for name in MA_CLASSES},
    "TCSAModule": _pfa,
    "MultiDimensionalAttention": _multi_dimensional,
    "TemporalWiseAttention": _temporal_wise,
    "MultiStepTemporalWiseAttention": _temporal_wise,
    "ConvAttLIF": _conv_att_lif,
    "AttLIF": _att_lif,
}


def recognise(module, path="model"):
    """The neurocomp equivalent of an official-code attention module (time-major, weights copied), or
    ``None`` when ``module``'s class name is none of :data:`RECOGNISERS`; a matching name with another
    parameter layout, or an official variant neurocomp cannot lower, is a one-line UnsupportedLayer."""
    make = RECOGNISERS.get(type(module).__name__)
    if make is None:
        return None
    return make(module, path)
