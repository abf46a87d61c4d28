"""Typed errors. Each carries *where* (layer, file or field) and a *hint* (what to do).

The CLI prints every error as one line and exits non-zero; ``--debug`` shows the traceback.
"""
from __future__ import annotations


class NeurocompError(Exception):
    """Base class: ``where`` names the layer/file/field, ``hint`` says what to do."""

    def __init__(self, message: str, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" (hint: {self.hint})"
        return text


class UnsupportedLayer(NeurocompError):
    """A module or node neurocomp cannot lower."""


class UnsupportedLayers(NeurocompError):
    """Several unsupported layers, reported at once."""

    def __init__(self, problems: list[UnsupportedLayer]):
        self.problems = problems
        lines = "; ".join(p.one_line() for p in problems)
        super().__init__(f"{len(problems)} unsupported layer(s): {lines}")


class BadCheckpoint(NeurocompError):
    """A checkpoint file that cannot be loaded safely or is incomplete."""


class BadGraph(NeurocompError):
    """An IR or NIR graph that is malformed (shapes, edges, parameters)."""


class BadArtifact(NeurocompError):
    """A compiled artifact folder that is missing files or is inconsistent."""


class DoesNotFit(NeurocompError):
    """A layer that cannot be placed under the target's limits."""


class QuantizationError(NeurocompError):
    """A parameter that cannot be represented in the target's fixed-point format."""


class BadInput(NeurocompError):
    """User input data (arrays, options) with the wrong shape or values."""


class RunTimeout(NeurocompError):
    """A simulation that exceeded its time limit (its runtime was stopped)."""


class LavaRunError(NeurocompError):
    """A Lava run that failed inside the runtime (its runtime was stopped, its workers ended)."""


class TooLarge(NeurocompError):
    """A file, graph or declared size above a fixed limit of neurocomp's (refused before reading it)."""


class OutOfBudget(TooLarge):
    """A declared size whose allocation would exceed the memory budget (see neurocomp.memory)."""
