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

from neurocomp import devices, memory
from neurocomp.frontends.fastneurons import fast_neurons
from neurocomp.frontends.footprint import torch_bytes
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


class _MapStats:
    """One map's statistics over the calibration samples, accumulated batch by batch (nothing per sample
    is kept): the mean summed sample after sample in float64 (the same sums, in the same order, as a mean
    over all samples at once), the spread around the first sample's map (a map equal on every sample has
    exactly zero spread), and per class the sums the between-class variance needs (with labels)."""

    def __init__(self):
        self.n, self.sum, self.ref, self.dev, self.dev2, self.by_class = 0, None, None, None, None, {}
        self.d = None

    def add(self, m: np.ndarray, y=None):          # m: [T, B, *b] float64
        if self.sum is None:
            self.ref = m[:, 0].copy()
            self.sum, self.dev, self.dev2, self.d = (np.zeros_like(self.ref) for _ in range(4))
        d = self.d                                 # one scratch buffer: the same float64 operations, in place
        for i in range(m.shape[1]):
            x = m[:, i]
            self.sum += x
            np.subtract(x, self.ref, out=d)
            self.dev += d
            np.multiply(d, d, out=d)
            self.dev2 += d
            if y is not None:
                k = y[i].item()
                c = self.by_class.setdefault(k, [0, np.zeros_like(self.ref)])
                c[0] += 1
                c[1] += x
        self.n += m.shape[1]

    def result(self, labelled: bool):
        n = self.n
        mean = self.sum / n
        var = np.maximum(self.dev2 / n - (self.dev / n) ** 2, 0.0)
        variation = float(np.mean(np.sqrt(var) / np.maximum(np.abs(mean), 1e-12)))
        total = float(var.sum() * n)
        explained = None
        if labelled and total > 0:
            between = sum(float(cnt) * float(((s / cnt - mean) ** 2).sum()) for cnt, s in self.by_class.values())
            explained = between / total
        return mean, variation, explained


def calibration_bytes(model, x_seq: torch.Tensor):
    """``(per-sample bytes by layer, fixed bytes)`` that calibrating ``model`` on ``x_seq`` allocates: the
    forward passes (:func:`neurocomp.frontends.footprint.torch_bytes`, the maps kept per batch) and each
    map's accumulators (five float64 arrays: reference, sum, deviations, squares, scratch; with labels one
    more per class, which the caller adds)."""
    mods = attention_modules(model)
    T, shape = int(x_seq.shape[0]), tuple(x_seq.shape[2:])
    per = torch_bytes(model, shape, T, keep=[p for p, _ in mods])
    entries = sum(v for p, v in per.items() if p in dict(mods)) // 4   # upper bound of one map's entries
    return per, entries * 8 * 5


def calibrate(model, x_seq: torch.Tensor, labels=None, batch: int | None = None, device=None) -> dict:
    """Record every attention map over ``x_seq`` ``[T, N, ...]``; returns per-module statistics and means.
    Streams over batches: ``batch`` (default: the largest that fits the memory budget, at most 128) is
    checked against the estimate before anything runs (:func:`neurocomp.memory.plan_batch`). ``device``:
    where the model runs (None: where it is), deterministically (``neurocomp.devices``)."""
    mods = attention_modules(model)
    N = int(x_seq.shape[1])
    y = None if labels is None else np.asarray(labels)
    per, fixed = calibration_bytes(model, x_seq)
    if y is not None:
        fixed += (fixed // 4) * len(np.unique(y))
    step = memory.plan_batch(per, N, batch=batch, default=128, fixed=fixed,
                             what=f"calibrating attention on {N} samples", where="calibration")
    acc = {p: _MapStats() for p, _ in mods}
    current, own = {}, {}
    for path, mod in mods:     # each module records the map its own forward computes (computed once)
        own[path] = vars(mod).get("forward")

        def forward(x_seq, mod=mod, path=path, plain=own[path] or type(mod).forward.__get__(mod)):
            if hasattr(mod, "forward_with_map"):
                out, a = mod.forward_with_map(x_seq)
            else:                 # an attention class with only attention() and forward(): its map computed again
                out, a = plain(x_seq), mod.attention(x_seq)
            current[path] = _broadcast_map(a, x_seq).detach().cpu()
            return out
        mod.forward = forward
    try:
        with warnings.catch_warnings():   # torch warns about 'same' padding with even kernels (TCJA)
            warnings.simplefilter("ignore")
            with devices.deterministic_float("cpu" if device is None else device), fast_neurons(model):
                for i in range(0, N, step):     # batch by batch, each from a reset state
                    current.clear()
                    run_torch_model(model, x_seq[:, i:i + step], device=device)
                    for path, m in current.items():
                        acc[path].add(m.double().numpy(), None if y is None else y[i:i + step])
    finally:
        for path, mod in mods:
            vars(mod).pop("forward", None)
            if own[path] is not None:
                mod.forward = own[path]
    out = {}
    for path, mod in mods:
        st = acc[path]
        mean, variation, explained = st.result(y is not None)
        stat = {"module": type(mod).__name__, "map_shape": [int(mean.shape[0])] + [int(s) for s in mean.shape[1:]],
                "index_set": _index_set(type(mod).__name__), "acts_on": _acts_on(mod),
                "variation": variation, "class_explained": explained, "samples": int(st.n),
                "warning": None}
        if variation > VARIATION_WARN and explained is not None and explained > CLASS_WARN:
            stat["warning"] = (f"map varies {100 * variation:.0f}% across samples and the class explains "
                               f"{100 * explained:.0f}% of it: a static map discards a per-class gate, expect "
                               f"accuracy loss (use --attention dynamic or finetune)")
        stat["static_map"] = mean.astype(np.float32)     # [T, *b]
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
