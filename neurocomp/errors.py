"""Typed errors. Each carries *where* (layer, file or field) and a *hint* (what to do).

The CLI prints every error as one line and exits non-zero; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text) -> str:
    """``text`` with every control or invisible formatting character shown as an escape: newlines as
    ``\\n``, ESC as ``\\x1b``, bidi overrides as ``\\u202e``. Every string that comes from a file (layer
    names, keys, manifest fields, paths) goes through this before it reaches a terminal, a table or a
    report, so a name cannot move the cursor, recolour the screen or forge a second ``error:`` line.
    Idempotent: an escaped string holds no control characters (a literal backslash is kept as is)."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif ch == " " or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"):
            out.append(ch)
        else:
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else (f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}"))
    return "".join(out)


class NeurocompError(Exception):
    """Base class: ``where`` names the layer/file/field, ``hint`` says what to do."""

    def __init__(self, message: str, where: str | None = None, hint: str | None = None):
        self.message = message
        self.where = where
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The error as one line; every part escaped (it names files and layers taken from files)."""
        text = f"{self.where}: {self.message}" if self.where else str(self.message)
        if self.hint:
            text += f" (hint: {self.hint})"
        return escape(text)


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


class ShardFailed(NeurocompError):
    """A shard of a sharded run (its sample range named) that failed twice; every other worker was stopped."""


class TooLarge(NeurocompError):
    """A file, graph or declared size above a fixed limit of neurocomp's (refused before reading it)."""


class OutOfBudget(TooLarge):
    """A declared size whose allocation would exceed the memory budget (see neurocomp.memory)."""


class LavaEnvironmentError(NeurocompError):
    """Lava is needed, this Python cannot import it, and no working Lava environment was found
    (``NEUROCOMP_LAVA_PYTHON``, or the one ``neurocomp lava-env`` makes)."""
