"""The official papers' attention classes, recognised by class name and parameter layout.

:func:`recognise` returns the ``neurocomp.nn`` module (or ``nn.Sequential`` of them) that computes
the same as a module written with the official code's classes, with its weights, or ``None`` when
the module is not one of them.
"""
from __future__ import annotations


def recognise(module, path="model"):
    """The neurocomp equivalent of an official-code attention module, or ``None``."""
    return None
