"""The graph: nodes in topological order, each with the names of its inputs.

A graph is a DAG: ``inputs`` says where each tensor comes from (several edges into an ``Add`` or a
``Concat``, one output feeding several consumers), and validation checks every edge's shape, that
the graph has no cycle, and that every node lies on a path from the input to the output (the last
node). Chains (``Graph.chain``) are the common case and keep their exact old form. Passes that remove
or merge nodes rebuild the graph with :meth:`Graph.rewrite`, which keeps a DAG's edges.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from neurocomp.errors import BadGraph
from neurocomp.ir.nodes import Add, Concat, Node, Input


def _data(a: np.ndarray):
    """An array's bytes in C order for hashing, without a copy when it is already contiguous (the same
    bytes as ``a.tobytes()``)."""
    c = np.ascontiguousarray(a)
    return c.tobytes() if c.dtype.hasobject else c


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

    @staticmethod
    def build(nodes, inputs, meta=None) -> "Graph":
        """A graph from nodes (any order) and their input edges ``{name: (input names, ...)}``: put in
        topological order (the Input first, the output -- the node nobody consumes -- last) and
        validated; a cycle, an unknown name or a mismatched shape is a one-line BadGraph naming the edge."""
        nodes = list(nodes)
        inputs = {n.name: tuple(inputs.get(n.name, ())) for n in nodes}
        by_name = {n.name: n for n in nodes}
        for n in nodes:
            for src in inputs[n.name]:
                if src not in by_name:
                    raise BadGraph(f"edge '{src}' -> '{n.name}': '{src}' is not a layer of the graph",
                                   hint="name an existing layer as the input")
        order, state = [], {}

        def visit(name, path):          # iterative DFS would be longer; graphs are <= 1000 nodes
            st = state.get(name)
            if st == 2:
                return
            if st == 1:
                k = path.index(name)
                cyc = (path[k:] + [name])[::-1]      # in the direction data flows
                raise BadGraph(f"edge '{cyc[0]}' -> '{cyc[1]}' closes a cycle ({' -> '.join(cyc)})",
                               hint="a feed-forward graph only; recurrence belongs inside a neuron (rec_weight)")
            state[name] = 1
            for src in inputs[name]:
                visit(src, path + [name])
            state[name] = 2
            order.append(by_name[name])

        import sys
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 4 * len(nodes) + 100))
        try:
            consumed = {src for v in inputs.values() for src in v}
            outputs = [n.name for n in nodes if n.name not in consumed]
            for n in nodes:                    # the Input leads; then depth first from the outputs, so a
                                               # node with one input directly follows a producer it alone reads
                if isinstance(n, Input):
                    visit(n.name, [])
            for name in outputs:
                visit(name, [])
            for n in nodes:                    # left unvisited only inside a cycle (nothing reads out of it)
                visit(n.name, [])
        finally:
            sys.setrecursionlimit(limit)
        g = Graph(tuple(order), inputs, dict(meta or {}))
        g.validate()
        dead = g._unconnected()
        if dead:
            raise BadGraph("; ".join(dead), hint="connect the layer or remove it")
        return g

    def rewrite(self, nodes, meta=None) -> "Graph":
        """The graph after a pass replaced, removed or inserted nodes (``nodes``, in order).

        A chain stays a chain (``Graph.chain``, exactly as before). In a DAG a node keeping its name keeps
        its edges; an edge from a removed node is redirected to what that node read (BatchNorm folded into
        the conv before it: consumers of the BN now read the conv); a new name is inserted after the node
        before it in ``nodes`` (it reads that node, and every later reader of that node reads it)."""
        meta = self.meta if meta is None else meta
        nodes = list(nodes)
        if self.is_chain():
            return Graph.chain(nodes, meta)
        old = {n.name for n in self.nodes}
        new = {n.name for n in nodes}

        def resolve(name):
            while name not in new and name in old:
                srcs = self.inputs.get(name, ())
                if len(srcs) != 1:
                    raise BadGraph(f"a pass removed layer '{name}', which has {len(srcs)} inputs",
                                   hint="report this: a pass may only remove single-input layers of a graph")
                name = srcs[0]
            return name

        inputs, inserted = {}, {}
        for i, n in enumerate(nodes):
            if n.name in old:
                inputs[n.name] = tuple(inserted.get(s, s) for s in map(resolve, self.inputs.get(n.name, ())))
            else:
                prev = nodes[i - 1].name
                inputs[n.name] = (prev,)
                inserted[prev] = n.name       # later readers of `prev` read the inserted node instead
        g = Graph(tuple(nodes), inputs, dict(meta))
        g.validate()
        return g

    def with_nodes(self, nodes, meta=None) -> "Graph":
        return self.rewrite(nodes, meta)

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
        return all(tuple(self.inputs.get(n.name, ())) == ((self.nodes[i - 1].name,) if i else ())
                   for i, n in enumerate(self.nodes))

    def consumers(self, name: str) -> tuple:
        """Names of the nodes that read ``name``'s output, in graph order."""
        return tuple(n.name for n in self.nodes if name in self.inputs.get(n.name, ()))

    def neurons(self):
        return [n for n in self.nodes if n.is_neuron]

    # ---- checks ---------------------------------------------------------------------
    def validate(self) -> None:
        """Every name unique, every edge known and earlier (so no cycle), every edge's shapes agreeing
        (``Graph.build`` also asks every node to lie on a path from the Input to the output)."""
        problems = []
        seen = {}
        if not self.nodes or not isinstance(self.nodes[0], Input):
            problems.append("the first node must be an Input")
        names = {n.name for n in self.nodes}
        for n in self.nodes:
            if n.name in seen:
                problems.append(f"layer '{n.name}': name used twice")
            srcs = self.inputs.get(n.name, ())
            if not isinstance(n, Input) and not srcs:
                problems.append(f"layer '{n.name}': has no input edge")
            if isinstance(n, (Add, Concat)) and len(srcs) < 2:
                problems.append(f"layer '{n.name}': a {n.kind} needs two or more inputs, has {len(srcs)}")
            elif len(srcs) > 1 and not isinstance(n, (Add, Concat)):
                problems.append(f"layer '{n.name}': a {n.kind} takes one input, has {len(srcs)} "
                                f"({', '.join(srcs)}); sum them with an Add or join them with a Concat")
            for src in srcs:
                if src not in seen:
                    what = "comes later (a cycle or an unsorted graph)" if src in names else "is unknown"
                    problems.append(f"edge '{src}' -> '{n.name}': '{src}' {what}")
                    continue
                got = tuple(seen[src].out_shape)
                if isinstance(n, Concat):
                    want = tuple(n.in_shape)[1:]
                    if got[1:] != want or len(got) != len(n.in_shape):
                        problems.append(f"edge '{src}' -> '{n.name}': concat expects (*, {', '.join(map(str, want))}) "
                                        f"but '{src}' gives {got}")
                elif got != tuple(n.in_shape):
                    problems.append(f"edge '{src}' -> '{n.name}': layer '{n.name}' expects shape {tuple(n.in_shape)} "
                                    f"but '{src}' gives {got}")
            if isinstance(n, Concat) and all(s in seen for s in srcs) and srcs:
                total = sum(int(seen[s].out_shape[0]) for s in srcs)
                if total != int(n.out_shape[0]) or tuple(n.out_shape)[1:] != tuple(n.in_shape)[1:]:
                    problems.append(f"layer '{n.name}': concat of {total} channels declares out_shape "
                                    f"{tuple(n.out_shape)}")
            if isinstance(n, Add) and tuple(n.in_shape) != tuple(n.out_shape):
                problems.append(f"layer '{n.name}': add changes shape {tuple(n.in_shape)} -> {tuple(n.out_shape)}")
            for key, arr in n.arrays().items():
                if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
                    problems.append(f"layer '{n.name}': field '{key}' holds NaN or inf")
            seen[n.name] = n
        if problems:
            raise BadGraph("; ".join(problems), hint="fix the model or file that produced this graph")

    def _unconnected(self) -> list:
        """Nodes not on a path Input -> output (a chain has none; checked in linear time)."""
        if self.is_chain():
            return []
        reach = {self.nodes[0].name}
        for n in self.nodes[1:]:
            if any(s in reach for s in self.inputs.get(n.name, ())):
                reach.add(n.name)
        used = {self.nodes[-1].name}
        for n in reversed(self.nodes):
            if n.name in used:
                used.update(self.inputs.get(n.name, ()))
        return [f"layer '{n.name}': not on a path from the input '{self.nodes[0].name}' to the output "
                f"'{self.nodes[-1].name}'" for n in self.nodes if n.name not in reach or n.name not in used]

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
                    h.update(_data(v))
                elif dataclasses.is_dataclass(v):
                    for g in dataclasses.fields(v):
                        w = getattr(v, g.name)
                        h.update(g.name.encode())
                        h.update(_data(w) if isinstance(w, np.ndarray) else repr(w).encode())
                else:
                    h.update(f.name.encode() + json.dumps(v, sort_keys=True, default=str).encode())
            h.update(repr(self.inputs.get(n.name, ())).encode())
        return h.hexdigest()
