"""Graph <-> folder of JSON + ``.npy`` files (the artifact's IR format).

``graph.json`` holds the structure: ``{"format": "neurocomp.ir", "version": 1, "meta": {...},
"nodes": [{"kind", "name", "inputs", "in_shape", "out_shape", "meta", "fields": {...},
"fixed": {...}}]}``. Every array field is a file ``arrays/<layer>.<field>.npy`` referenced as
``{"array": "<file>"}``. ``.npy`` files are byte-deterministic, so compiling twice gives
identical artifacts.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

import numpy as np

from neurocomp import jsontext, safeio
from neurocomp.errors import BadArtifact, BadGraph
from neurocomp.ir.graph import Graph
from neurocomp.ir.nodes import NODE_TYPES, LoihiNeuron

FORMAT = "neurocomp.ir"
VERSION = 1
MAX_GRAPH_JSON = 256 << 20
_SAFE_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,150}\Z")


def _array_file_stem(index: int, name: str) -> str:
    """The layer's name when it is a plain file name, else ``layer~<index>`` (a name from a file may
    hold ``/``, ``..`` or control characters: it must never choose where an array is written)."""
    return name if _SAFE_FILE.match(name) else f"layer~{index}"


def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def save_graph(graph: Graph, folder: str) -> None:
    os.makedirs(os.path.join(folder, "arrays"), exist_ok=True)
    nodes = []

    def put(layer, field, arr):
        fname = f"{stems[layer]}.{field}.npy"
        with open(os.path.join(folder, "arrays", fname), "wb") as fh:
            np.save(fh, np.asarray(arr, order="C"), allow_pickle=False)  # keeps 0-d arrays 0-d
        return {"array": fname}

    stems = {n.name: _array_file_stem(i, n.name) for i, n in enumerate(graph)}
    for n in graph:
        fields = {}
        fixed = None
        for f in dataclasses.fields(n):
            if f.name in ("name", "in_shape", "out_shape", "meta"):
                continue
            v = getattr(n, f.name)
            if isinstance(v, np.ndarray):
                fields[f.name] = put(n.name, f.name, v)
            elif isinstance(v, LoihiNeuron):
                fixed = {}
                for g in dataclasses.fields(v):
                    w = getattr(v, g.name)
                    if isinstance(w, np.ndarray):
                        fixed[g.name] = put(n.name, "fixed_" + g.name, w)
                    elif w is not None:
                        fixed[g.name] = _jsonable(w)
            else:
                fields[f.name] = _jsonable(v)
        nodes.append({"kind": n.kind, "name": n.name, "inputs": list(graph.inputs[n.name]),
                      "in_shape": [int(s) for s in n.in_shape], "out_shape": [int(s) for s in n.out_shape],
                      "meta": n.meta, "fields": fields, "fixed": fixed})
    doc = {"format": FORMAT, "version": VERSION, "meta": graph.meta, "nodes": nodes}
    with open(os.path.join(folder, "graph.json"), "w") as fh:
        fh.write(jsontext.dumps(doc, indent=1, sort_keys=True, default=_jsonable))   # json.dump's text, faster


def load_graph(folder: str) -> Graph:
    path = os.path.join(folder, "graph.json")
    if not os.path.lexists(path):
        raise BadArtifact("graph.json is missing", where=folder, hint="recompile with `neurocomp compile`")
    try:
        doc = json.loads(safeio.read_bytes(path, error=BadArtifact, what="graph.json", max_bytes=MAX_GRAPH_JSON))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if not isinstance(e, json.JSONDecodeError):
            raise BadArtifact("graph.json is not UTF-8 text", where=path, hint="the artifact is damaged: recompile it")
        raise BadArtifact(f"graph.json is not valid JSON ({e.msg} at line {e.lineno})", where=path,
                          hint="the artifact is damaged: recompile it")
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise BadArtifact(f"unknown IR format {doc.get('format')!r} v{doc.get('version')!r}", where=path,
                          hint=f"this neurocomp reads {FORMAT} v{VERSION}; recompile")

    def get(ref, where):
        if isinstance(ref, dict) and "array" in ref:
            name = os.path.basename(str(ref["array"]))
            try:   # a regular file only (a FIFO would block), header checked against size and budget first
                return safeio.load_npy(os.path.join(folder, "arrays", name), error=BadArtifact, what="array file")
            except BadArtifact as e:
                e.where = f"{where}: {e.where}" if e.where else where
                e.hint = "the artifact is damaged: recompile it"
                e.args = (e.one_line(),)
                raise
            except (OSError, ValueError) as e:
                raise BadArtifact(f"cannot read array {name}: {e}", where=where, hint="recompile the artifact")
        return ref

    nodes, inputs = [], {}
    try:
        for d in doc["nodes"]:
            cls = NODE_TYPES.get(d["kind"])
            if cls is None:
                raise BadArtifact(f"unknown node kind {d['kind']!r}", where=f"{path} layer {d.get('name')}",
                                  hint="the artifact comes from another neurocomp version or is damaged: recompile it")
            where = f"{path} layer {d['name']}"
            kw = {}
            for k, v in d["fields"].items():
                v = get(v, where)
                if isinstance(v, list):
                    v = tuple(v)
                kw[k] = v
            if d.get("fixed"):
                kw["fixed"] = LoihiNeuron(**{k: tuple(x) if isinstance(x, list) else x
                                             for k, x in ((k, get(v, where)) for k, v in d["fixed"].items())})
            nodes.append(cls(name=d["name"], in_shape=tuple(d["in_shape"]), out_shape=tuple(d["out_shape"]),
                             meta=d.get("meta", {}), **kw))
            inputs[d["name"]] = tuple(d["inputs"])
    except (KeyError, TypeError) as e:
        raise BadArtifact(f"graph.json lacks or mistypes field {e}", where=path, hint="recompile the artifact")
    g = Graph(tuple(nodes), inputs, doc.get("meta", {}))
    try:
        g.validate()
    except BadGraph as e:   # name the file that holds the inconsistent graph
        e.where = f"{path}: {e.where}" if e.where else path
        e.args = (e.one_line(),)
        raise
    return g
