"""Attention SNN layers, neurons and backbones (TCJA, MA-SNN, PFA) for neurocomp.

Every module class here stores its constructor kwargs in ``self.config`` and is registered in
:data:`REGISTRY`, so a checkpoint can rebuild it with ``REGISTRY[name](**config)``.
All modules take and return multi-step, time-major tensors ``[T, B, ...]``.
"""
from .registry import REGISTRY, register, store_config
from .neurons import MALIFNode
from .tcja import TCJA, TLA, CLA
from .ma import TCSA, TCA, TSA, CSA, TA, CA, SA
from .pfa import PFA
from .static import StaticMap
from .heads import Readout
from .backbones import BUILDERS, build, param_count

__all__ = ["REGISTRY", "register", "store_config", "MALIFNode", "TCJA", "TLA", "CLA", "TCSA", "TCA",
           "TSA", "CSA", "TA", "CA", "SA", "PFA", "StaticMap", "Readout", "BUILDERS", "build", "param_count"]
