"""The reference simulator's two public runs: one walk over the IR (``sim.walk``), two arithmetics.

- ``run_float``: the source framework's float32 arithmetic, op for op (``sim.float_ops``), so on the
  unfolded graph it reproduces the torch model's spikes exactly. On a folded graph it is the
  "folded float model".
- ``run_fixed``: Loihi fixed point from ``neurocomp.fixedpoint`` on a quantized graph
  (``sim.fixed_ops``); it reproduces Lava's ``fixed_pt`` models bit for bit.

Both run on ``device`` (``"cpu"``, ``"cuda"``, ``"auto"``: ``neurocomp.devices.resolve``; default the
CPU, the entry points ``simulate`` / ``report`` default to ``auto``, ``compile`` to the CPU); the results
come back on the CPU. The fixed-point run is bit-identical on every device by construction
(``devices.integer_exact``, ``fixed_ops.exact_float``); the float run is deterministic per device
(``devices.deterministic_float``).

Before walking, each run checks its estimated allocation (``sim.footprint``) against the memory budget
(``neurocomp.memory``); callers with many samples run them in batches (``neurocomp.crosscheck``).

Tensors are time-major ``[T, B, *shape]``. Results are *time-aligned*: ``spikes[name][t]`` is the
layer's output for input frame ``t`` (Lava shows it ``delay`` steps later; see neurocomp.ir.timing).
"""
from __future__ import annotations

import torch

from neurocomp import devices, memory
from neurocomp.errors import BadInput
from neurocomp.results import SimResult
from neurocomp.sim.fixed_ops import FIXED_OPS
from neurocomp.sim.float_ops import FLOAT_OPS
from neurocomp.sim.footprint import walk_bytes
from neurocomp.sim.walk import Run


def _check_input(graph, x_seq) -> torch.Tensor:
    x_seq = torch.as_tensor(x_seq)
    shape = tuple(graph.input_node.out_shape)
    if x_seq.dim() != len(shape) + 2 or tuple(x_seq.shape[2:]) != shape:
        raise BadInput(f"inputs have shape {tuple(x_seq.shape)}, expected [T, B, {', '.join(map(str, shape))}]",
                       where="inputs", hint="time-major [T, batch, *input_shape]")
    return x_seq


def _check_budget(graph, x, arithmetic: str) -> None:
    """Refuse, before the walk allocates, a run whose estimate (``sim.footprint``) exceeds the budget."""
    B = int(x.shape[1])
    memory.plan_batch(walk_bytes(graph, arithmetic, int(x.shape[0])), B, batch=B,
                      what=f"the {'fixed-point' if arithmetic == 'fixed' else 'float'} reference on {B} samples",
                      where="reference simulator", fit_hint="run at most {n} samples at a time")


def _on_cpu(run, out) -> dict:
    return dict(spikes={k: v.cpu() for k, v in run.spikes.items()}, output=out.cpu())


def run_float(graph, x_seq, record=None, device=None) -> SimResult:
    """Float reference over any float graph. ``record`` limits which neuron outputs are kept."""
    x = _check_input(graph, x_seq).to(torch.float32)
    _check_budget(graph, x, "float")
    dev = devices.resolve("cpu" if device is None else device)
    run = Run(graph, FLOAT_OPS, "float", record, device=dev)
    with devices.deterministic_float(dev):
        out = run.run(x)
    return SimResult(**_on_cpu(run, out))


def run_fixed(graph, x_seq, record=None, device=None) -> SimResult:
    """Fixed-point reference over a quantized graph; inputs must be binary spikes."""
    x = _check_input(graph, x_seq)
    if not bool(((x == 0) | (x == 1)).all()):
        raise BadInput("fixed-point inputs must be binary spikes (0/1)", where="inputs",
                       hint="encode inputs as spikes (bernoulli/events encodings)")
    _check_budget(graph, x, "fixed")
    dev = devices.resolve("cpu" if device is None else device)
    run = Run(graph, FIXED_OPS, "fixed-point", record, device=dev)
    with devices.integer_exact(dev):
        out = run.run(x)
        if out.is_floating_point():         # a synapse's sums handed on as float32 (sim.fixed_ops): integers
            out = out.to(torch.int64)
    return SimResult(**_on_cpu(run, out), stats=run.stats)
