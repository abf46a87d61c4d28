"""The torch/SpikingJelly module classes neurocomp understands, as a table.

Each entry says how to read a module's constructor arguments (for the checkpoint's architecture
description) and how to build it again. ``neurocomp.nn`` modules describe themselves through
their ``config`` and the ``neurocomp.nn.REGISTRY``.

SpikingJelly's two APIs are both read: ``activation_based`` and the older ``clock_driven`` (whose
multi-step neurons and containers the official TCJA code uses). A checkpoint stores a
``clock_driven`` class as its ``activation_based`` multi-step equivalent (:data:`EQUIVALENT`, and
:data:`CONTAINER_TYPES` for ``SeqToANNContainer`` / ``MultiStepContainer``: the same parameters under
the same names, the same spikes), so a rebuilt model never depends on the old API or on its
``backend='cupy'`` check.
"""
from __future__ import annotations

import torch
import torch.nn as tnn

from neurocomp._quiet import import_spikingjelly

import_spikingjelly()
from spikingjelly.activation_based import layer, neuron, surrogate  # noqa: E402
try:  # SpikingJelly 2.x removed the clock_driven API: its classes exist only where an older SpikingJelly is
    from spikingjelly.clock_driven import base as cd_base, layer as cd_layer, neuron as cd_neuron  # noqa: E402
except ImportError:  # so does every model built with them; the activation_based entries serve all others
    cd_base = cd_layer = cd_neuron = None

from neurocomp.nn import REGISTRY  # noqa: E402
from neurocomp.nn.backbones import Traceable  # noqa: E402


def _pair(v):
    return list(v) if isinstance(v, (tuple, list)) else [v, v]


def _conv_args(m):
    return dict(in_channels=m.in_channels, out_channels=m.out_channels, kernel_size=_pair(m.kernel_size),
                stride=_pair(m.stride), padding=_pair(m.padding) if not isinstance(m.padding, str) else m.padding,
                dilation=_pair(m.dilation), groups=m.groups, bias=m.bias is not None,
                padding_mode=m.padding_mode)


def _linear_args(m):
    return dict(in_features=m.in_features, out_features=m.out_features, bias=m.bias is not None)


def _bn_args(m):
    return dict(num_features=m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                track_running_stats=m.track_running_stats)


def _pool_args(m):
    d = dict(kernel_size=_pair(m.kernel_size), stride=_pair(m.stride if m.stride is not None else m.kernel_size),
             padding=_pair(m.padding), ceil_mode=m.ceil_mode)
    if isinstance(m, (tnn.MaxPool2d,)):
        d["dilation"] = _pair(m.dilation)
    else:
        d["count_include_pad"] = m.count_include_pad
        d["divisor_override"] = m.divisor_override
    return d


def _flatten_args(m):
    return dict(start_dim=m.start_dim, end_dim=m.end_dim)


def _dropout_args(m):
    return dict(p=float(m.p))


def _surrogate_spec(fn):
    spec = {"name": type(fn).__name__}
    if hasattr(fn, "alpha"):
        spec["alpha"] = float(fn.alpha)
    return spec


def _surrogate_build(spec):
    if not spec:
        return surrogate.Sigmoid()
    cls = getattr(surrogate, spec["name"], None)
    if cls is None:
        return surrogate.Sigmoid()
    return cls(alpha=spec["alpha"]) if "alpha" in spec else cls()


def _lif_args(m):
    return dict(tau=float(m.tau), decay_input=bool(m.decay_input), v_threshold=float(m.v_threshold),
                v_reset=None if m.v_reset is None else float(m.v_reset), detach_reset=bool(m.detach_reset),
                surrogate=_surrogate_spec(m.surrogate_function))


def plif_tau(m) -> float:
    """A ParametricLIFNode's learned time constant, frozen for inference: ``tau = 1 / sigmoid(w)``."""
    return 1.0 / float(torch.sigmoid(m.w.detach().float().cpu()))


def _plif_args(m):
    return dict(init_tau=plif_tau(m), decay_input=bool(m.decay_input), v_threshold=float(m.v_threshold),
                v_reset=None if m.v_reset is None else float(m.v_reset), detach_reset=bool(m.detach_reset),
                surrogate=_surrogate_spec(m.surrogate_function))


def _if_args(m):
    return dict(v_threshold=float(m.v_threshold), v_reset=None if m.v_reset is None else float(m.v_reset),
                detach_reset=bool(m.detach_reset), surrogate=_surrogate_spec(m.surrogate_function))


def _sj(cls):
    """Build a SpikingJelly multi-step layer."""
    def build(args, step_mode="m"):
        args = dict(args)
        if cls in (neuron.LIFNode, neuron.IFNode, neuron.ParametricLIFNode):
            args["surrogate_function"] = _surrogate_build(args.pop("surrogate", None))
        if "kernel_size" in args and isinstance(args["kernel_size"], list):
            args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
        return cls(**args, step_mode=step_mode)
    return build


def _plain(cls):
    def build(args, step_mode=None):
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
        return cls(**args)
    return build


# type name -> (class, read args, build)
MODULES = {
    "spikingjelly.Conv2d": (layer.Conv2d, _conv_args, _sj(layer.Conv2d)),
    "spikingjelly.Linear": (layer.Linear, _linear_args, _sj(layer.Linear)),
    "spikingjelly.BatchNorm2d": (layer.BatchNorm2d, _bn_args, _sj(layer.BatchNorm2d)),
    "spikingjelly.BatchNorm1d": (layer.BatchNorm1d, _bn_args, _sj(layer.BatchNorm1d)),
    "spikingjelly.MaxPool2d": (layer.MaxPool2d, _pool_args, _sj(layer.MaxPool2d)),
    "spikingjelly.AvgPool2d": (layer.AvgPool2d, _pool_args, _sj(layer.AvgPool2d)),
    "spikingjelly.Flatten": (layer.Flatten, _flatten_args, _sj(layer.Flatten)),
    "spikingjelly.Dropout": (layer.Dropout, _dropout_args, _sj(layer.Dropout)),
    "spikingjelly.VotingLayer": (layer.VotingLayer, lambda m: {"voting_size": int(m.voting_size)},
                                 _sj(layer.VotingLayer)),
    "spikingjelly.LIFNode": (neuron.LIFNode, _lif_args, _sj(neuron.LIFNode)),
    "spikingjelly.IFNode": (neuron.IFNode, _if_args, _sj(neuron.IFNode)),
    "spikingjelly.ParametricLIFNode": (neuron.ParametricLIFNode, _plif_args, _sj(neuron.ParametricLIFNode)),
    "torch.Conv2d": (tnn.Conv2d, _conv_args, _plain(tnn.Conv2d)),
    "torch.Linear": (tnn.Linear, _linear_args, _plain(tnn.Linear)),
    "torch.BatchNorm2d": (tnn.BatchNorm2d, _bn_args, _plain(tnn.BatchNorm2d)),
    "torch.BatchNorm1d": (tnn.BatchNorm1d, _bn_args, _plain(tnn.BatchNorm1d)),
    "torch.MaxPool2d": (tnn.MaxPool2d, _pool_args, _plain(tnn.MaxPool2d)),
    "torch.AvgPool2d": (tnn.AvgPool2d, _pool_args, _plain(tnn.AvgPool2d)),
    "torch.Flatten": (tnn.Flatten, _flatten_args, _plain(tnn.Flatten)),
    "torch.Dropout": (tnn.Dropout, _dropout_args, _plain(tnn.Dropout)),
    "torch.Identity": (tnn.Identity, lambda m: {}, _plain(tnn.Identity)),
}
if cd_neuron is not None:
    # clock_driven classes are built (and stored, see EQUIVALENT) as their activation_based equivalents
    MODULES.update({
        "spikingjelly.clock_driven.MultiStepLIFNode": (cd_neuron.MultiStepLIFNode, _lif_args, _sj(neuron.LIFNode)),
        "spikingjelly.clock_driven.MultiStepIFNode": (cd_neuron.MultiStepIFNode, _if_args, _sj(neuron.IFNode)),
        "spikingjelly.clock_driven.MultiStepParametricLIFNode": (cd_neuron.MultiStepParametricLIFNode, _plif_args,
                                                                 _sj(neuron.ParametricLIFNode)),
        "spikingjelly.clock_driven.MultiStepDropout": (cd_layer.MultiStepDropout, _dropout_args, _sj(layer.Dropout)),
        "spikingjelly.clock_driven.Dropout": (cd_layer.Dropout, _dropout_args, _sj(layer.Dropout)),
    })


# the clock_driven classes a checkpoint describes by their activation_based multi-step equivalent
EQUIVALENT = {"spikingjelly.clock_driven.MultiStepLIFNode": "spikingjelly.LIFNode",
              "spikingjelly.clock_driven.MultiStepIFNode": "spikingjelly.IFNode",
              "spikingjelly.clock_driven.MultiStepParametricLIFNode": "spikingjelly.ParametricLIFNode",
              "spikingjelly.clock_driven.MultiStepDropout": "spikingjelly.Dropout",
              "spikingjelly.clock_driven.Dropout": "spikingjelly.Dropout"}

# containers whose children each see one time step ([B, ...], or [T * B, ...] with T folded into the batch)
PER_STEP_CONTAINERS = (layer.SeqToANNContainer, layer.MultiStepContainer) + (
    () if cd_layer is None else (cd_layer.SeqToANNContainer, cd_layer.MultiStepContainer))
# a checkpoint's container types besides "Sequential": rebuilt as the activation_based class, whichever
# API the model used (the two compute the same: fold T into the batch / run the children step by step)
CONTAINER_TYPES = {"SeqToANNContainer": layer.SeqToANNContainer, "MultiStepContainer": layer.MultiStepContainer}


def container_type(module) -> str | None:
    """The checkpoint's container type of a SpikingJelly per-step container (either API), else None."""
    for name, cls in CONTAINER_TYPES.items():
        if type(module) in (cls, getattr(cd_layer, name, None)):
            return name
    return None


def is_library_layer(module) -> bool:
    """A module class of torch, SpikingJelly or neurocomp itself: a layer, not a user's class whose
    forward is read; neurocomp.nn's :class:`~neurocomp.nn.backbones.Traceable` zoo classes are read as a
    user's."""
    return (type(module).__module__.split(".")[0] in ("torch", "spikingjelly", "neurocomp")
            and not isinstance(module, Traceable))


def type_name(module) -> str | None:
    """The table's name for a module instance (exact class match; subclasses are not assumed)."""
    for name, (cls, _, _) in MODULES.items():
        if type(module) is cls:
            return name
    for name, cls in REGISTRY.items():
        if type(module) is cls:
            return "neurocomp.nn." + name
    return None
