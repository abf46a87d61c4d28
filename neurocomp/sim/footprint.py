"""What one run of the reference simulator's walk allocates, estimated from the IR before it runs.

The walk (``sim.walk``) keeps every neuron's output for the whole run (the cross-check compares them
all) and drops other values after their last consumer; each node's entry works on ``[T, B, *shape]``
tensors. Per sample of a batch, the estimate is

- every neuron's output: ``T x neurons x`` 1 byte (fixed point: bool spikes; 8 for a readout's or a
  payload's int64 values) or 4 (float32);
- plus the largest working set of one node: the values of its inputs still alive, and its own output
  in the precision it is computed in. Fixed point: a synapse over spikes whose sums stay below 2**23
  (``fixed_ops.stays_float``, known from the weights) hands on float32 sums, made in chunks of frames
  (``fixed_ops.CHUNK_BYTES``: the input as float32, the chunk's sums, the convolution's own copies); other
  synapses (graded inputs, wider sums) the int64 sums rounded from a float32/float64 product, about five
  copies, in chunks. A neuron evaluated over the window (``sim.voltage``) adds only one step's state; one
  stepped in integers (a current memory, a dynamic attention) two int64 copies of its input. Float: the
  output and two temporaries.

``walk_bytes`` gives it per layer (``{name: bytes per sample}``, the working set counted at the layer where
it peaks), for :func:`neurocomp.memory.plan_batch`; ``tests/test_memory_bounded.py`` checks it against
the measured peak of a run.
"""
from __future__ import annotations

from neurocomp.memory import product
from neurocomp.sim import fixed_ops

_SYNAPSES = ("dense", "conv", "linear", "pool")     # kinds computed as float products of integers


def _spikes(graph) -> dict:
    """``{name: True}`` where a value is bool spikes in the fixed-point walk (else integers)."""
    out = {}
    for n in graph.nodes:
        ins = graph.inputs.get(n.name, ())
        if n.kind == "input":
            out[n.name] = True
        elif n.is_neuron:
            out[n.name] = not n.graded_output
        elif n.kind in ("flatten", "concat"):
            out[n.name] = bool(ins) and all(out.get(s, False) for s in ins)
        else:
            out[n.name] = False
    return out


def _value_bytes(node, arithmetic: str, floats: bool) -> int:
    if arithmetic == "float":
        return 4
    if node.is_neuron:
        return 1 if not node.graded_output else 8
    return 4 if floats else 8


def walk_bytes(graph, arithmetic: str = "fixed", T: int | None = None) -> dict:
    """``{layer name: bytes}`` one sample adds to a run of ``graph`` (``arithmetic``: ``fixed`` or
    ``float``) over ``T`` steps (default: the graph's)."""
    T = int(T or graph.meta["timesteps"])
    nodes, edges = graph.nodes, graph.inputs
    size = {n.name: product(n.out_shape) * T for n in nodes}
    spikes = _spikes(graph) if arithmetic == "fixed" else {}
    floats = {}             # synapses whose sums go on as float32 (fixed_ops._synapse)
    for n in nodes:
        ins = edges.get(n.name, ())
        syn = any(k in n.kind for k in _SYNAPSES) and getattr(n, "qweight", None) is not None
        floats[n.name] = bool(syn and ins and all(spikes.get(s, False) for s in ins)
                              and fixed_ops.stays_float(fixed_ops.weight_fan(n)))
    value = {}
    for n in nodes:
        ins = edges.get(n.name, ())
        if n.kind == "flatten":         # a view of its input: holds it when it is no neuron's (kept anyway)
            value[n.name] = sum(value[s] for s in ins if not graph[s].is_neuron)
        else:
            value[n.name] = size[n.name] * _value_bytes(n, arithmetic, floats[n.name])
    out = {n.name: value[n.name] for n in nodes if n.is_neuron}
    work, at = 0, None
    for n in nodes:
        ins = edges.get(n.name, ())
        live = sum(value[s] for s in ins if not graph[s].is_neuron)
        if arithmetic == "float":
            w = live + 3 * 4 * size[n.name]
        elif floats[n.name]:            # float32 sums, per chunk: the input as float32, the sums, a copy of each
            chunk = 2 * 4 * size[n.name] + sum(2 * 4 * size[s] for s in ins)
            w = live + 4 * size[n.name] + min(chunk, 3 * fixed_ops.CHUNK_BYTES)
        elif any(k in n.kind for k in _SYNAPSES):     # int64 result; per chunk of frames (fixed_ops):
            chunk = 5 * 8 * size[n.name] + sum(8 * size[s] for s in ins)   # input as float, product,
            w = live + 8 * size[n.name] + min(chunk, 6 * fixed_ops.CHUNK_BYTES)  # its rounding, int64, wrap
        elif n.is_neuron and _stepped(n, graph):
            w = live + 2 * 8 * size[n.name]
        elif n.is_neuron:               # over the window: one step's state and input (sim.voltage)
            w = live + 3 * 8 * product(n.out_shape)
        else:
            w = live + 2 * 8 * size[n.name]
        if w > work:
            work, at = w, n.name
    if at is not None:
        out[at] = out.get(at, 0) + work
    return out


def _stepped(node, graph) -> bool:
    """Whether a neuron steps through the integer expression (``fixed_ops``) rather than the window code:
    a current memory (CUBA, ``du < 4095``), a dynamic attention in front, a readout."""
    p = getattr(node, "fixed", None)
    if p is None or node.kind in ("cuba_lif", "readout") or int(getattr(p, "du", 4095)) != 4095:
        return True
    return any(graph[s].kind == "ma_attention" for s in graph.inputs.get(node.name, ()))
