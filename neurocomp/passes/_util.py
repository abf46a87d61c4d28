"""Small helpers shared by passes."""
from __future__ import annotations


def with_record(graph, pass_name, record, nodes=None):
    """A new graph (``nodes`` or the same ones; a DAG keeps its edges, see ``Graph.rewrite``) whose ``meta['passes']`` ends with ``record``."""
    meta = dict(graph.meta)
    meta["passes"] = list(meta.get("passes", [])) + [{"pass": pass_name, **record}]
    return graph.rewrite(graph.nodes if nodes is None else nodes, meta)


def feeds_only(graph, a, b) -> bool:
    """Whether node ``a``'s output goes to ``b`` alone and is ``b``'s only input (always true of
    neighbours in a chain): the condition for a pass to merge two neighbours of ``graph.nodes``."""
    if graph.is_chain():
        return True
    return tuple(graph.inputs.get(b.name, ())) == (a.name,) and graph.consumers(a.name) == (b.name,)
