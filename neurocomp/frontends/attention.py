"""Attention modules (neurocomp.nn) in the torch frontend.

Lowering attention into quantized membrane-potential scaling is issue 4's work; until it lands,
an attention module is refused with a clear message rather than approximated silently.
"""
from __future__ import annotations


def add_attention(builder, path, module) -> None:
    builder.refuse(path, module, "attention modules cannot be compiled by this version of neurocomp yet",
                   "compile the plain backbone, or wait for attention folding (static/dynamic modes)")
