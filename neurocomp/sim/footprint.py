"""What one run of the reference simulator's walk allocates, estimated from the IR before it runs.

The walk (``sim.walk``) keeps every neuron's output for the whole run (the cross-check compares them
all) and drops other values after their last consumer; each node's entry works on ``[T, B, *shape]``
tensors. Per sample of a batch, the estimate is

- every neuron's output: ``T x neurons x`` 1 byte (fixed point: bool spikes; 8 for a readout's or a
  payload's int64 values) or 4 (float32);
- plus the largest working set of one node: the values of its inputs still alive, and its own output
  in the precision it is computed in (fixed point: the float32/float64 product of integers and its int64
  copy, rounding and wrapping: about five copies for a synapse, whose input is converted too, done in
  chunks of frames of bounded size (``fixed_ops.CHUNK_BYTES``) besides the int64 result; two for other
  nodes; float: the output and two temporaries).

``walk_bytes`` gives it per layer (``{name: bytes per sample}``, the working set counted at the layer where
it peaks), for :func:`neurocomp.memory.plan_batch`; ``tests/test_memory_bounded.py`` checks it against
the measured peak of a run.
"""
from __future__ import annotations

from neurocomp.memory import product
from neurocomp.sim.fixed_ops import CHUNK_BYTES

_SYNAPSES = ("dense", "conv", "linear", "pool")     # kinds computed as float products of integers


def _value_bytes(node, arithmetic: str) -> int:
    if arithmetic == "float":
        return 4
    return 1 if node.is_neuron and not node.graded_output and node.kind != "graded_spikes" else 8


def walk_bytes(graph, arithmetic: str = "fixed", T: int | None = None) -> dict:
    """``{layer name: bytes}`` one sample adds to a run of ``graph`` (``arithmetic``: ``fixed`` or
    ``float``) over ``T`` steps (default: the graph's)."""
    T = int(T or graph.meta["timesteps"])
    nodes, edges = graph.nodes, graph.inputs
    size = {n.name: product(n.out_shape) * T for n in nodes}
    value = {n.name: size[n.name] * _value_bytes(n, arithmetic) for n in nodes}
    out = {n.name: value[n.name] for n in nodes if n.is_neuron}
    work, at = 0, None
    for n in nodes:
        ins = edges.get(n.name, ())
        live = sum(value[s] for s in ins if not graph[s].is_neuron)
        if arithmetic == "float":
            w = live + 3 * 4 * size[n.name]
        else:
            w = live + 2 * 8 * size[n.name]
            if any(k in n.kind for k in _SYNAPSES):     # int64 result; per chunk of frames (fixed_ops):
                chunk = 5 * 8 * size[n.name] + sum(8 * size[s] for s in ins)   # input as float, product,
                w = live + 8 * size[n.name] + min(chunk, 6 * CHUNK_BYTES)          # its rounding, int64, wrap
        if w > work:
            work, at = w, n.name
    if at is not None:
        out[at] = out.get(at, 0) + work
    return out
