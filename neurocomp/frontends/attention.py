"""Attention modules in the frontend: calibration and static maps.

TCJA, MA-SNN and PFA compute their maps from the whole time window of a sample, so a step-by-step
core cannot evaluate them online. ``calibrate`` runs the torch model over calibration samples and
records every attention map at its natural index set; ``make_static`` replaces each module by a
:class:`neurocomp.nn.StaticMap` holding the calibration mean (added, not multiplied, for PFA's additive
variant); the torch frontend then lowers each
``StaticMap`` to an IR ``Scale`` node (``frontends.torch.add_attention``), which
``passes.fold_attention`` folds into weights and gain-scheduled neurons.

Statistics per map (stored in the artifact and the report):
- ``variation``: mean over map entries of (std across samples) / (mean across samples);
- ``class_explained``: the share of the across-sample variance explained by the class
  (between-class sum of squares / total sum of squares, eta squared); None without labels.
A map that varies a lot and mostly by class acts as a per-class gate, which a sample average
discards: static folding is then likely to cost accuracy, and a warning says so.
"""
from __future__ import annotations

import copy
import warnings

import numpy as np
import torch

from neurocomp import devices
from neurocomp.frontends.torch import (ATTENTION, RECTIFIED, is_additive, iter_leaves, module_timesteps, rectifies,
                                       run_torch_model)
from neurocomp.nn import StaticMap

__all__ = ["attention_modules", "calibrate", "make_static", "timesteps_mismatch", "ATTENTION", "RECTIFIED"]
VARIATION_WARN = 0.10
CLASS_WARN = 0.5


def attention_modules(model):
    """``[(path, module)]`` of the attention modules of a model, in forward order."""
    return [(p, m) for p, m in iter_leaves(model) if type(m).__name__ in ATTENTION
            and type(m).__module__.startswith("neurocomp.nn")]


def timesteps_mismatch(model, T):
    """``(path, class name, its T)`` of the first attention module built for another T than ``T``
    (its weights are sized by T: the model cannot run, or be traced, over ``T`` steps), else None."""
    for path, m in iter_leaves(model):
        t = module_timesteps(m)
        if t is not None and t != int(T):
            return path, type(m).__name__, t
    return None


def _broadcast_map(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    while m.dim() < x.dim():
        m = m.unsqueeze(-1)
    return m


def calibrate(model, x_seq: torch.Tensor, labels=None, batch: int = 128, device=None) -> dict:
    """Record every attention map over ``x_seq`` ``[T, N, ...]``; returns per-module statistics and means.
    ``device``: where the model runs (None: where it is), deterministically (``neurocomp.devices``)."""
    mods = attention_modules(model)
    maps = {p: [] for p, _ in mods}
    handles = []
    for path, mod in mods:
        def hook(module, inputs, output, path=path):
            with torch.no_grad():
                maps[path].append(_broadcast_map(module.attention(inputs[0]), inputs[0]).detach().cpu())
        handles.append(mod.register_forward_hook(hook))
    try:
        with warnings.catch_warnings():   # torch warns about 'same' padding with even kernels (TCJA)
            warnings.simplefilter("ignore")
            with devices.deterministic_float("cpu" if device is None else device):
                run_torch_model(model, x_seq, device=device, batch_size=batch)   # batch by batch, each reset
    finally:
        for h in handles:
            h.remove()
    out = {}
    y = None if labels is None else np.asarray(labels)
    for path, mod in mods:
        m = torch.cat(maps[path], dim=1).double().numpy()          # [T, N, *b]
        per_sample = np.moveaxis(m, 1, 0).reshape(m.shape[1], -1)   # [N, entries]
        mean = per_sample.mean(0)
        std = per_sample.std(0)
        variation = float(np.mean(std / np.maximum(np.abs(mean), 1e-12)))
        total = float(((per_sample - mean) ** 2).sum())
        explained = None
        if y is not None and total > 0:
            between = sum(float((y == k).sum()) * float(((per_sample[y == k].mean(0) - mean) ** 2).sum())
                          for k in np.unique(y))
            explained = between / total
        stat = {"module": type(mod).__name__, "map_shape": list(m.shape[:1] + m.shape[2:]),
                "index_set": _index_set(type(mod).__name__), "acts_on": _acts_on(mod),
                "variation": variation, "class_explained": explained, "samples": int(m.shape[1]),
                "warning": None}
        if variation > VARIATION_WARN and explained is not None and explained > CLASS_WARN:
            stat["warning"] = (f"map varies {100 * variation:.0f}% across samples and the class explains "
                               f"{100 * explained:.0f}% of it: a static map discards a per-class gate, expect "
                               f"accuracy loss (use --attention dynamic or finetune)")
        stat["static_map"] = m.mean(axis=1).astype(np.float32)     # [T, *b]
        out[path] = stat
    return out


def _index_set(name):
    return {"TCJA": "(t, c)", "TLA": "(t, c)", "CLA": "(t, c)", "PFA": "(t, c, h, w), rank-R factors",
            "TA": "(t)", "CA": "(c)", "SA": "(h, w)"}.get(name, "(t, c, h, w) = TA(t) CA(c) SA(h, w)")


def _acts_on(mod):
    if is_additive(mod):        # PFA's additive variant: relu(A + x) on the current in front of a neuron
        return "input current (additive)"
    return "spikes" if type(mod).__name__ in ("TCJA", "TLA", "CLA", "PFA") else "input current"


def make_static(model, stats: dict):
    """A copy of ``model`` with each attention module replaced by its calibrated StaticMap."""
    static = copy.deepcopy(model)
    for path, st in stats.items():
        parent = static
        parts = path.split(".")
        for p in parts[:-1]:
            parent = getattr(parent, p)
        mod = getattr(parent, parts[-1])
        sm = StaticMap(shape=list(st["static_map"].shape), rectify=rectifies(mod), source=st["module"],
                       additive=is_additive(mod))
        sm.map.copy_(torch.as_tensor(st["static_map"]))
        setattr(parent, parts[-1], sm)
    return static.eval()
