"""The graph: nodes in topological order, each with the names of its inputs.

The frontends today produce chains (feed-forward networks); ``inputs`` is kept explicit so a
graph can say where each tensor comes from and validation can check every edge.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from neurocomp.errors import BadGraph
from neurocomp.ir.nodes import Node, Input


@dataclass(frozen=True, eq=False)
class Graph:
    nodes: tuple                      # tuple[Node, ...] in topological order
    inputs: dict                      # node name -> tuple of input node names
    meta: dict = field(default_factory=dict)   # timesteps, encoding, dt, source, ...

    # ---- construction -------------------------------------------------------------
    @staticmethod
    def chain(nodes, meta=None) -> "Graph":
        """A graph in which every node consumes the previous one."""
        nodes = tuple(nodes)
        inputs = {n.name: ((nodes[i - 1].name,) if i else ()) for i, n in enumerate(nodes)}
        g = Graph(nodes, inputs, dict(meta or {}))
        g.validate()
        return g

    def with_nodes(self, nodes, meta=None) -> "Graph":
        return Graph.chain(nodes, self.meta if meta is None else meta)

    # ---- access ---------------------------------------------------------------------
    def __iter__(self):
        return iter(self.nodes)

    def __len__(self):
        return len(self.nodes)

    def __getitem__(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def input_node(self) -> Input:
        return self.nodes[0]

    @property
    def output_node(self) -> Node:
        return self.nodes[-1]

    def is_chain(self) -> bool:
        return all(self.inputs[n.name] == ((self.nodes[i - 1].name,) if i else ())
                   for i, n in enumerate(self.nodes))

    def neurons(self):
        return [n for n in self.nodes if n.is_neuron]

    # ---- checks ---------------------------------------------------------------------
    def validate(self) -> None:
        """Every name unique, every edge known and earlier, every edge's shapes agreeing."""
        problems = []
        seen = {}
        if not self.nodes or not isinstance(self.nodes[0], Input):
            problems.append("the first node must be an Input")
        for n in self.nodes:
            if n.name in seen:
                problems.append(f"layer '{n.name}': name used twice")
            for src in self.inputs.get(n.name, ()):
                if src not in seen:
                    problems.append(f"layer '{n.name}': input '{src}' is unknown or comes later")
                elif tuple(seen[src].out_shape) != tuple(n.in_shape):
                    problems.append(f"layer '{n.name}': expects shape {tuple(n.in_shape)} but "
                                    f"'{src}' gives {tuple(seen[src].out_shape)}")
            for key, arr in n.arrays().items():
                if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                    problems.append(f"layer '{n.name}': field '{key}' holds NaN or inf")
            seen[n.name] = n
        if problems:
            raise BadGraph("; ".join(problems), hint="fix the model or file that produced this graph")

    # ---- identity -------------------------------------------------------------------
    def digest(self) -> str:
        """A hash of structure, parameters and metadata (stable across runs)."""
        h = hashlib.sha256()
        h.update(json.dumps(self.meta, sort_keys=True, default=str).encode())
        for n in self.nodes:
            h.update(n.kind.encode())
            for f in dataclasses.fields(n):
                v = getattr(n, f.name)
                if isinstance(v, np.ndarray):
                    h.update(f.name.encode() + str(v.dtype).encode() + str(v.shape).encode())
                    h.update(np.ascontiguousarray(v).tobytes())
                elif dataclasses.is_dataclass(v):
                    for g in dataclasses.fields(v):
                        w = getattr(v, g.name)
                        h.update(g.name.encode())
                        h.update(np.asarray(w).tobytes() if isinstance(w, np.ndarray) else repr(w).encode())
                else:
                    h.update(f.name.encode() + json.dumps(v, sort_keys=True, default=str).encode())
            h.update(repr(self.inputs.get(n.name, ())).encode())
        return h.hexdigest()
