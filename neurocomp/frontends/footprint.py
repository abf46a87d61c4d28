"""What running a torch SNN over time allocates, estimated before it runs.

:func:`torch_bytes` runs the model once on torch's ``meta`` device (shapes only, nothing allocated; a
copy of the model, so its weights stay where they are) with forward hooks on its layers, and returns per
layer what one sample of a batch adds to a run of :func:`neurocomp.frontends.torch.run_torch_model`
without autograd: the largest working set of one layer (its input, its output and two temporaries of the
output's size: a multi-step neuron's membrane and spikes) counted at that layer, plus, for the layers in
``record``, the recorded spikes (bool, ``T x neurons`` bytes) and, for the layers in ``keep``, their whole
output (calibration keeps each attention map). A model whose forward cannot run on ``meta`` is probed
the same way on one sample of zeros on the CPU. The result feeds :func:`neurocomp.memory.plan_batch`.
"""
from __future__ import annotations

import copy

import torch

from neurocomp.frontends.torch import iter_leaves, run_torch_model


def _probe(model, x, record, keep) -> dict:
    sizes, order = {}, []
    leaves = list(iter_leaves(model))

    def hook(mod, inputs, output, path):
        if not isinstance(output, torch.Tensor):
            return
        inp = next((i for i in inputs if isinstance(i, torch.Tensor)), None)
        i_b = 0 if inp is None else inp.numel() * inp.element_size()
        sizes[path] = (i_b, output.numel() * output.element_size(), output.numel())
        order.append(path)

    hooks = [m.register_forward_hook(lambda mod, i, o, p=p: hook(mod, i, o, p)) for p, m in leaves]
    try:
        run_torch_model(model, x)
    finally:
        for h in hooks:
            h.remove()
    out, work, at = {}, 0, None
    for path in dict.fromkeys(order):
        i_b, o_b, n = sizes[path]
        w = i_b + 3 * o_b
        if w > work:
            work, at = w, path
        if path in record:
            out[path] = out.get(path, 0) + n
        if path in keep:
            out[path] = out.get(path, 0) + o_b
    if at is not None:
        out[at] = out.get(at, 0) + work
    return out


def torch_bytes(model, input_shape, T: int, record=(), keep=()) -> dict:
    """``{layer path: bytes}`` one sample adds to a run of ``model`` over ``T`` steps of
    ``input_shape`` (one step of one sample); ``record`` / ``keep``: layer paths whose spikes are
    recorded / whose outputs are kept (see the module docstring)."""
    shape = (int(T), 1) + tuple(int(s) for s in input_shape)
    record, keep = set(record), set(keep)
    try:
        meta = copy.deepcopy(model).to("meta")
        return _probe(meta, torch.zeros(shape, device="meta"), record, keep)
    except Exception:       # noqa: BLE001 - a forward that needs real values: one real sample instead
        return _probe(model, torch.zeros(shape), record, keep)
