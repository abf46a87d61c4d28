"""neurocomp's own module for a branching model: named layers and the operations that join them.

A :class:`GraphModule` holds its layers as registered submodules under their (possibly dotted) paths,
so its ``state_dict`` keys are the user's, and ``ops``, an ordered list of plain dictionaries:

- ``{"op": "module", "name": PATH, "input": SRC}``: the layer ``PATH`` applied to the value ``SRC``;
  its output is the value ``PATH`` (each layer is applied once);
- ``{"op": "add", "name": NAME, "inputs": [SRC, SRC, ...]}``: the element-wise sum (a residual);
- ``{"op": "cat", "name": NAME, "inputs": [SRC, ...], "dim": 2}``: channels joined (``torch.cat`` on
  ``[T, B, C, ...]``);
- ``{"op": "mul", "name": NAME, "inputs": [SRC, SRC, ...]}``: the element-wise product (SEW-ResNet's AND
  of spikes, ``a * b``);
- ``{"op": "not", "name": NAME, "input": SRC}``: ``1. - SRC`` (the negation inside SEW's IAND,
  ``(1. - a) * b``; only a product may read it).

``SRC`` is ``"input"`` or the name of an earlier operation; the last operation is the output. The
forward is time-major (``[T, B, ...]``), as every model neurocomp compiles. :func:`check_ops` is the
one validation of such a list (the checkpoint's reader and the tracer both call it).
"""
from __future__ import annotations

import torch
import torch.nn as tnn

from neurocomp.errors import BadCheckpoint

OPS = ("module", "add", "cat", "mul", "not")
INPUT = "input"
MAX_OPS = 100_000


def _name_ok(v) -> bool:
    return isinstance(v, str) and 0 < len(v) <= 200 and v.isprintable() and all(
        p and p.isidentifier() or p.isdigit() for p in v.split("."))


def check_ops(ops, modules, where="architecture"):
    """Every field of an operation list, in order (one-line :class:`BadCheckpoint` naming the field):
    known ops, names, sources defined before use, each layer applied once, addends / parts given."""
    if not isinstance(ops, (list, tuple)) or not ops:
        raise BadCheckpoint(f"'ops' is {type(ops).__name__}, not a non-empty list of operations", where=f"{where}: ops",
                            hint="re-save the model with neurocomp.save_checkpoint")
    if len(ops) > MAX_OPS:
        raise BadCheckpoint(f"'ops' has more than {MAX_OPS} operations", where=f"{where}: ops",
                            hint="the file is damaged or not a model neurocomp compiles")
    defined, used = {INPUT}, set()
    for i, op in enumerate(ops):
        at = f"{where}: ops[{i}]"
        if not isinstance(op, dict):
            raise BadCheckpoint(f"is {type(op).__name__}, not an operation {{'op': ..., ...}}", where=at,
                                hint="re-save the model with neurocomp.save_checkpoint")
        kind = op.get("op")
        if kind not in OPS:
            raise BadCheckpoint(f"op={str(kind)[:40]!r} is not one of {', '.join(OPS)}", where=f"{at}.op",
                                hint="re-save the model with neurocomp.save_checkpoint")
        name = op.get("name")
        if not _name_ok(name):
            raise BadCheckpoint(f"name={str(name)[:40]!r} is not a layer path (identifiers joined by '.')",
                                where=f"{at}.name", hint="re-save the model with neurocomp.save_checkpoint")
        if name in defined:
            raise BadCheckpoint(f"name '{name}' is defined twice", where=f"{at}.name",
                                hint="apply each layer once; give each add / cat its own name")
        if kind in ("module", "not"):
            srcs = [op.get("input")]
        if kind == "module":
            if name not in modules:
                raise BadCheckpoint(f"applies '{name}', which is not among the graph's modules", where=f"{at}.name",
                                    hint="name a module listed under 'modules'")
            used.add(name)
        elif kind != "not":
            srcs = op.get("inputs")
            if not isinstance(srcs, (list, tuple)) or len(srcs) < 2:
                raise BadCheckpoint(f"'inputs' of {kind} is {str(srcs)[:40]!r}, not a list of two or more values",
                                    where=f"{at}.inputs", hint="join two or more earlier values")
            if kind == "cat" and op.get("dim") != 2:
                raise BadCheckpoint(f"cat along dim={str(op.get('dim'))[:20]!r}; neurocomp joins channels "
                                    "(dim 2 of [T, B, C, ...])", where=f"{at}.dim", hint="concatenate along dim 2")
        for s in srcs:
            if not isinstance(s, str) or s not in defined:
                raise BadCheckpoint(f"reads {str(s)[:40]!r}, which no earlier operation defines", where=at,
                                    hint="read 'input' or the name of an earlier operation")
        defined.add(name)
    unused = [m for m in modules if m not in used]
    if unused:
        raise BadCheckpoint(f"module '{unused[0]}' is never applied", where=f"{where}: modules",
                            hint="apply every module in 'ops' or remove it")


def _set(root: tnn.Module, path: str, module: tnn.Module) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        if p not in root._modules:
            root.add_module(p, tnn.Module())
        root = root._modules[p]
        if root is None or type(root) is not tnn.Module:
            raise BadCheckpoint(f"module path '{path}' passes through layer '{p}'", where="architecture: modules",
                                hint="give layers paths that do not nest inside other layers")
    if parts[-1] in root._modules:
        raise BadCheckpoint(f"module '{path}' appears twice", where="architecture: modules",
                            hint="give each module its own path")
    root.add_module(parts[-1], module)


class GraphModule(tnn.Module):
    """A branching model, time-major: its layers (``layers``: path -> module) and ``ops``."""

    def __init__(self, layers, ops, where="architecture"):
        super().__init__()
        layers = dict(layers)
        check_ops(ops, layers, where)
        for path, m in layers.items():
            _set(self, path, m)
        self.layer_paths = tuple(layers)
        self.ops = [dict(op, inputs=list(op["inputs"])) if "inputs" in op else dict(op) for op in ops]

    def layer(self, path: str) -> tnn.Module:
        return self.get_submodule(path)

    def forward(self, x):
        env = {INPUT: x}
        for op in self.ops:
            if op["op"] == "module":
                env[op["name"]] = self.get_submodule(op["name"])(env[op["input"]])
            elif op["op"] == "not":
                env[op["name"]] = 1. - env[op["input"]]
            elif op["op"] in ("add", "mul"):
                out = env[op["inputs"][0]]
                for s in op["inputs"][1:]:
                    out = out + env[s] if op["op"] == "add" else out * env[s]
                env[op["name"]] = out
            else:
                env[op["name"]] = torch.cat([env[s] for s in op["inputs"]], dim=op["dim"])
        return env[self.ops[-1]["name"]]
