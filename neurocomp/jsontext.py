"""Indented JSON text, byte for byte what ``json.dumps(obj, indent=..., sort_keys=True)`` writes, faster.

Python's ``json`` module encodes indented output in pure Python (its C encoder only writes compact text),
which made writing the artifact's ``graph.json`` and ``manifest.json`` of a DVS128-sized net (thousands of
core slices) a second or more. Here every container whose items are all scalars is handed to the C
encoder with the separators the indented form puts between items (``",\\n" + indent``), and only the
containers around them are walked in Python; the text is the same (checked against ``json.dumps`` in
``tests/test_compile_fast_paths.py``).
"""
from __future__ import annotations

import json
from functools import lru_cache
from json import encoder as _encoder

_SCALARS = (str, int, float)          # bool is an int; numpy's float64 is a float (both encoders agree)
_EXACT = frozenset((str, int, float, bool, type(None)))


def _scalar(v) -> bool:
    return type(v) in _EXACT or v is None or isinstance(v, _SCALARS)


def _no_default(o):
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")   # never reached: scalars only


@lru_cache(maxsize=None)
def _flat_encoder(indent: int, level: int, sort_keys: bool):
    """The encoder writing a container of scalars as its items would appear at ``level`` of indentation:
    the C encoder made once (``JSONEncoder.encode`` would make one per call), else ``json``'s own."""
    sep = ",\n" + " " * (indent * (level + 1))
    if _encoder.c_make_encoder is not None:
        enc = _encoder.c_make_encoder(None, _no_default, _encoder.encode_basestring_ascii, None, ": ", sep,
                                      sort_keys, False, True)
        return lambda o: "".join(enc(o, 0))
    return json.JSONEncoder(sort_keys=sort_keys, separators=(sep, ": ")).encode


_PLAIN = json.JSONEncoder()


def dumps(obj, indent: int = 1, sort_keys: bool = True, default=None) -> str:
    """``json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default)``, the same text."""
    out: list = []
    _put(obj, 0, indent, sort_keys, default, out)
    return "".join(out)


def _put(o, level, indent, sort_keys, default, out):
    if _scalar(o):
        out.append(_PLAIN.encode(o))
        return
    if isinstance(o, (list, tuple)):
        items = o
        if not items:
            out.append("[]")
            return
        if all(map(_scalar, items)):
            _flat(o, level, indent, sort_keys, "[]", out)
            return
        inner = "\n" + " " * (indent * (level + 1))
        out.append("[")
        for i, v in enumerate(items):
            out.append(inner if i == 0 else "," + inner)
            _put(v, level + 1, indent, sort_keys, default, out)
        out.append("\n" + " " * (indent * level) + "]")
        return
    if isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        if all(map(_scalar, o.values())):
            _flat(o, level, indent, sort_keys, "{}", out)
            return
        items = sorted(o.items()) if sort_keys else o.items()
        inner = "\n" + " " * (indent * (level + 1))
        out.append("{")
        for i, (k, v) in enumerate(items):
            out.append(inner if i == 0 else "," + inner)
            out.append(_key(k))
            out.append(": ")
            _put(v, level + 1, indent, sort_keys, default, out)
        out.append("\n" + " " * (indent * level) + "}")
        return
    if default is None:
        raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")
    _put(default(o), level, indent, sort_keys, default, out)


def _key(k) -> str:
    """A dict key as ``json`` writes it (strings, and numbers / booleans / null turned into strings)."""
    if not isinstance(k, str):
        if isinstance(k, float) or k is True or k is False or k is None:
            k = _PLAIN.encode(k)
        elif isinstance(k, int):
            k = int.__repr__(k)
        else:
            raise TypeError(f"keys must be str, int, float, bool or None, not {k.__class__.__name__}")
    return _PLAIN.encode(k)


def _flat(o, level, indent, sort_keys, brackets, out):
    """A non-empty container of scalars: the C encoder's text with the opening and closing lines added."""
    text = _flat_encoder(indent, level, sort_keys)(o)
    out.append(brackets[0] + "\n" + " " * (indent * (level + 1)) + text[1:-1] + "\n" + " " * (indent * level)
               + brackets[1])
