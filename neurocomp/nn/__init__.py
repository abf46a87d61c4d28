"""Attention SNN layers, neurons and backbones (TCJA, MA-SNN, PFA) for neurocomp.

Every module class here stores its constructor kwargs in ``self.config`` and is registered in
:data:`REGISTRY`, so a checkpoint can rebuild it with ``REGISTRY[name](**config)``.
All modules take and return multi-step, time-major tensors ``[T, B, ...]``.
"""
from neurocomp._quiet import import_spikingjelly

import_spikingjelly()   # quietly, and without lava-dl (see neurocomp._quiet)

from .registry import REGISTRY, register, store_config  # noqa: E402
from .neurons import MALIFNode  # noqa: E402
from .tcja import TCJA, TLA, CLA  # noqa: E402
from .ma import TCSA, TCA, TSA, CSA, TA, CA, SA  # noqa: E402
from .pfa import PFA  # noqa: E402
from .static import StaticMap  # noqa: E402
from .heads import Readout  # noqa: E402
from .backbones import BUILDERS, build, param_count  # noqa: E402

__all__ = ["REGISTRY", "register", "store_config", "MALIFNode", "TCJA", "TLA", "CLA", "TCSA", "TCA",
           "TSA", "CSA", "TA", "CA", "SA", "PFA", "StaticMap", "Readout", "BUILDERS", "build", "param_count"]
