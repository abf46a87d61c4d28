"""The reference simulator's one walk over the IR, with the arithmetic as a table.

A :class:`Run` keeps one value per layer name and calls ``run_node`` on each node in graph order:
the node's class picks its entry in the arithmetic's table (``float_ops.FLOAT_OPS`` or
``fixed_ops.FIXED_OPS``, one small function per IR node class, looked up along the class's MRO),
and the entry is called as ``op(run, node, *inputs)`` with the values of the node's input edges
(``graph.inputs[node.name]``, in order), so a node with several inputs gets them all. An entry may
also read an earlier neuron's output by name (``run.value``) and ask who consumes a node
(``run.consumers``). Adding a node kind is one entry per table.

A class with no entry is refused with :class:`UnsupportedLayer` naming the layer; an entry made by
:func:`refusal` refuses it on purpose, with a reason. Any other failure inside an entry names the
layer it happened in. Every value lives on the run's device (``run.device``, see neurocomp.devices):
the input is moved there and entries make their constants with ``run.tensor`` or on their input's
device. Neuron outputs are kept for the whole run (and recorded per ``record``); other values are
dropped after their last consumer. Nothing is written on the frozen IR nodes (the
float attention entries cache their torch modules by content, see ``float_ops``).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
import torch

from neurocomp.errors import NeurocompError, UnsupportedLayer


def refusal(reason: str):
    """A table entry that refuses its node class on purpose (``reason`` says what to do instead)."""
    def refuse(run, node, *inputs):
        raise UnsupportedLayer(f"'{node.kind}' layers have no {run.arithmetic} arithmetic: {reason}",
                               where=f"layer '{node.name}'")
    refuse.refusal = reason
    return refuse


def entry(ops: dict, cls):
    """The entry of ``ops`` for node class ``cls`` (its own or its nearest base class's), or None."""
    for c in cls.__mro__:
        op = ops.get(c)
        if op is not None:
            return op
    return None


class Run:
    """One walk of ``graph`` with the arithmetic ``ops`` (named ``arithmetic`` in messages)."""

    def __init__(self, graph, ops: dict, arithmetic: str, record=None, device=None):
        self.graph = graph
        self.device = torch.device("cpu") if device is None else torch.device(device)   # where every value lives
        self.ops = ops
        self.arithmetic = arithmetic
        self.record = record
        self.inputs = None      # the run's input tensor, time-major [T, B, *shape]
        self.spikes = {}        # recorded neuron outputs, by layer name, in graph order
        self.stats = {}         # per-layer counters an arithmetic reports (fixed point: clips, wraps)
        self._env = {}
        self._consumers = None

    # ---- what an entry may ask ----------------------------------------------------------
    def tensor(self, a, dtype) -> torch.Tensor:
        """``a`` (a node's array or number) as a tensor of ``dtype`` on the run's device."""
        return torch.as_tensor(a if isinstance(a, torch.Tensor) else np.asarray(a), dtype=dtype, device=self.device)

    def value(self, name: str):
        """The output of the earlier layer ``name`` (every neuron's output is kept for the run)."""
        return self._env[name]

    def consumers(self, node) -> tuple:
        """The nodes that take ``node``'s output as an input."""
        if self._consumers is None:
            by_name = {}
            for n in self.graph.nodes:
                for src in self.graph.inputs.get(n.name, ()):
                    by_name.setdefault(src, []).append(n)
            self._consumers = {k: tuple(v) for k, v in by_name.items()}
        return self._consumers.get(node.name, ())

    def owns_input(self, node) -> bool:
        """Whether ``node`` may overwrite its one input in place: a synapse's output (made fresh by its entry)
        that no other node reads and the run does not keep (a neuron's, or the graph's output)."""
        srcs = self.graph.inputs.get(node.name, ())
        if len(srcs) != 1:
            return False
        src = self.graph[srcs[0]]
        users = self.consumers(src)
        return (src.is_synapse and not src.is_neuron and src.name != self.graph.output_node.name
                and len(users) == 1 and users[0] is node)

    def gained_inputs(self, node) -> tuple:
        """For an Add of currents whose neuron gains only some synapse groups (``gain_groups``): what each of
        ``node``'s input edges is -- ``"gained"`` (a gained group, or the dynamic attention on one), ``"plain"``,
        or ``k``, the index of a further gained group with a map of its own (``more_groups``); () when its
        neuron gains the whole input."""
        c, seen = node, 0
        while not c.is_neuron:
            cons = self.consumers(c)
            if len(cons) != 1 or seen > len(self.graph.nodes):
                return ()
            c, seen = cons[0], seen + 1
        groups = set(getattr(c, "gain_groups", ()) or ())
        more = tuple(getattr(c, "more_groups", ()) or ())
        if not groups:
            return ()
        out = []
        for src in self.graph.inputs.get(node.name, ()):
            n = self.graph[src]
            if n.kind == "ma_attention":
                src = self.graph.inputs[src][0]
            out.append("gained" if src in groups else more.index(src) if src in more else "plain")
        return tuple(out)

    # ---- the walk -------------------------------------------------------------------------
    def run_node(self, node):
        """Dispatch ``node`` to its entry with its input edges' values; failures name the layer."""
        op = entry(self.ops, type(node))
        if op is None:
            raise UnsupportedLayer(f"no {self.arithmetic} arithmetic for '{node.kind}' layers "
                                   f"({type(node).__name__})", where=f"layer '{node.name}'")
        args = [self._env[src] for src in self.graph.inputs.get(node.name, ())]
        try:
            return op(self, node, *args)
        except NeurocompError as e:
            if e.where is None:
                e.where = f"layer '{node.name}'"
                e.args = (e.one_line(),)
            raise
        except Exception as e:
            if e.args and isinstance(e.args[0], str) and not e.args[0].startswith(f"layer '{node.name}'"):
                e.args = (f"layer '{node.name}' ({node.kind}): {e.args[0]}",) + tuple(e.args[1:])
            raise

    def run(self, x: torch.Tensor):
        """Walk the graph on ``x``; returns the output node's value."""
        self.inputs = x.to(self.device)
        nodes, edges = self.graph.nodes, self.graph.inputs
        keep = {n.name for n in nodes if n.is_neuron} | {self.graph.output_node.name}
        last_use = {}
        for i, n in enumerate(nodes):
            for src in edges.get(n.name, ()):
                last_use[src] = i
        env = self._env
        with torch.no_grad():
            for i, node in enumerate(nodes):
                env[node.name] = self.run_node(node)
                if node.is_neuron and (self.record is None or node.name in self.record):
                    self.spikes[node.name] = env[node.name]
                for src in edges.get(node.name, ()):
                    if last_use[src] == i and src not in keep:
                        env.pop(src, None)
        return env[self.graph.output_node.name]


class Split(NamedTuple):
    """An Add's value when its neuron gains only some synapse groups: the gained groups' sum, the plain
    groups' sum (None when none) and the further gained groups' values by index (``more_groups``), kept
    apart until the neuron applies the gains. Float and fixed point alike (their ``acc`` differs)."""
    gained: object
    plain: object
    more: tuple = ()


def split_sum(flags, xs, acc: Callable):
    """``xs`` (an Add's inputs, flagged by :meth:`Run.gained_inputs`) summed left to right with ``acc`` into
    a :class:`Split`, or None when the Add's neuron gains its whole input."""
    if not flags and not any(isinstance(x, Split) for x in xs):
        return None
    gained = plain = None
    more = {}
    for x, g in zip(xs, flags or ("plain",) * len(xs)):
        if isinstance(x, Split):
            gained, plain = acc(gained, x.gained), acc(plain, x.plain)
            for k, v in x.more:
                more[k] = acc(more.get(k), v)
        elif g == "gained":
            gained = acc(gained, x)
        elif g == "plain":
            plain = acc(plain, x)
        else:
            more[g] = acc(more.get(g), x)
    return Split(gained, plain, tuple(sorted(more.items())))
