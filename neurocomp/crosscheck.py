"""Cross-check every stage on the same inputs, layer by layer and step by step.

Stages, in pipeline order:

Every stage but Lava runs on one ``device`` (``--device``: ``neurocomp.devices.resolve``, default CUDA when
available): the torch models, the float reference and the fixed-point reference (bit-identical on any device).

- ``torch``: the original checkpoint's torch module;
  per-layer spikes are recorded by :func:`neurocomp.frontends.torch.run_torch_model` on the modules
  whose names the IR layers keep (``3_or``, a max pool lowered to sum-pool + threshold, is read from
  module ``3``).
- ``float``: the folded float model: ``run_float`` on the lowered graph (BN folded, pooling lowered).
- ``fixed``: the fixed-point reference ``run_fixed`` (bit-exact with Lava's ``fixed_pt`` models).
- ``lava``: the Lava CPU simulator (``fixed_pt``), usually on a smaller sample.

This is the one cross-check engine: ``neurocomp simulate`` (:func:`neurocomp.api.simulate`) is a summary
over it, and the report reads its figures. It runs batch by batch, so memory stays bounded by a batch:
Lava records every layer to disk first, then each batch of samples runs through the torch model(s), the
float and fixed-point references, is compared with Lava's recording of the same samples and dropped; only
counts, per-sample classes and the accumulators below are kept. Within a batch the stages run one after
the other, each compared with the previous one as it finishes, so at most two stages' spikes are held;
the batch size is chosen from an estimate of what a batch allocates (:func:`batch_bytes`), and a job
that cannot fit the memory budget is refused before anything runs.

All spikes are time-aligned (``spikes[layer][t]`` is the output for input frame ``t``). For every pair
of adjacent stages the check gives, per layer and step, the fraction of (sample, neuron) entries that
agree (a readout head's values: exactly between the integer stages fixed and Lava, within float32 rounding
between float stages, and not entry by entry between float and fixed, whose values differ by quantization:
their classes are compared), each layer's first differing step, the first diverging layer and step, and the fraction of
samples identical in every layer and step.
"""
from __future__ import annotations

import os

import numpy as np
import torch
from tqdm import tqdm

from neurocomp import devices, memory, signals
from neurocomp.frontends.checkpoint import load_checkpoint
from neurocomp.frontends.footprint import torch_bytes
from neurocomp.frontends.torch import run_torch_model
from neurocomp.metrics import ChipTraffic, add_activity, layer_activity
from neurocomp.sim import predict, run_fixed, run_float
from neurocomp.sim.footprint import walk_bytes

STAGES = ("torch", "static", "float", "fixed", "lava")
STAGE_LABELS = {
    "torch": "original torch model",
    "static": "torch model with calibrated static attention maps (what the IR was traced from)",
    "float": "folded float model (reference simulator, float)",
    "fixed": "fixed-point reference simulator",
    "lava": "Lava fixed_pt (CPU simulator)",
}


def torch_device() -> str:
    """The device the stages run on by default (``auto``)."""
    return devices.resolve("auto").type


def _agree(a: torch.Tensor, b: torch.Tensor, graded: bool, exact: bool) -> torch.Tensor:
    """Entry-wise agreement: spikes are equal or not; a readout head's values are compared exactly between
    integer stages and within float32 rounding between float stages."""
    if not graded:
        return a.bool() == b.bool()
    if exact:
        return a == b
    a, b = a.to(torch.float64), b.to(torch.float64)
    T, B = a.shape[:2]
    scale = torch.maximum(a.abs(), b.abs()).reshape(T, B, -1).amax(-1)      # per sample and step
    return (a - b).abs() <= 1e-5 * scale.reshape((T, B) + (1,) * (a.dim() - 2))


class _PairAcc:
    """Accumulates the agreement of two stages over batches (``graded``: the readout heads among the
    layers; ``exact``: both stages compute in integers, so their values must be equal)."""

    def __init__(self, layers, T, graded=(), exact=False):
        self.layers = list(layers)
        self.graded, self.exact = set(graded), bool(exact)
        self.T = T
        self.equal = {l: np.zeros(T, dtype=np.int64) for l in self.layers}
        self.total = {l: np.zeros(T, dtype=np.int64) for l in self.layers}
        self.first_step = {l: None for l in self.layers}
        self.samples_differing = {l: 0 for l in self.layers}
        self.exact = 0
        self.same_class = 0
        self.samples = 0

    def add(self, sa: dict, sb: dict, pa, pb):
        B = pa.shape[0]
        any_diff = torch.zeros(B, dtype=torch.bool)
        for l in self.layers:
            eq = _agree(sa[l], sb[l], l in self.graded, self.exact).reshape(self.T, B, -1)
            self.equal[l] += eq.sum((1, 2)).numpy()
            self.total[l] += eq.shape[1] * eq.shape[2]
            diff_tb = ~eq.all(-1)                    # [T, B]
            steps = torch.nonzero(diff_tb.any(1)).flatten()
            if len(steps):
                t0 = int(steps[0])
                self.first_step[l] = t0 if self.first_step[l] is None else min(self.first_step[l], t0)
            per_sample = diff_tb.any(0)
            self.samples_differing[l] += int(per_sample.sum())
            any_diff |= per_sample
        self.exact += int((~any_diff).sum())
        self.same_class += int((pa == pb).sum())
        self.samples += B

    def result(self) -> dict:
        agreement = {l: (self.equal[l] / np.maximum(self.total[l], 1)).tolist() for l in self.layers}
        first = None
        for t in range(self.T):      # earliest step, then the first layer in graph order at that step
            hit = [l for l in self.layers if self.first_step[l] == t]
            if hit:
                first = {"layer": hit[0], "step": t}
                break
        return {"samples": self.samples, "layers": self.layers, "agreement": agreement,
                "mismatches": {l: int(self.total[l].sum() - self.equal[l].sum()) for l in self.layers},
                "first_diverging_step": self.first_step, "samples_differing": self.samples_differing,
                "first_diverging": first,
                "exact_fraction": self.exact / max(self.samples, 1),
                "same_class_fraction": self.same_class / max(self.samples, 1)}


class _StageAcc:
    def __init__(self, layers, T, graded=()):
        self.counts = {l: np.zeros(T, dtype=np.int64) for l in layers}
        self.graded = set(graded)        # readout heads send values, no spikes: their count stays 0
        self.correct = 0
        self.samples = 0

    def add(self, spikes, pred, labels):
        for l, c in self.counts.items():
            if l in spikes and l not in self.graded:
                c += spikes[l].reshape(spikes[l].shape[0], -1).sum(1).numpy().astype(np.int64)
        if labels is not None:
            self.correct += int((pred == labels).sum())
        self.samples += int(pred.shape[0])


def batches(n, size):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def batch_bytes(artifact, models: dict, float_graph, T: int, lava: bool) -> dict:
    """``{layer: bytes}`` one sample of a batch adds to :func:`crosscheck`, estimated before anything runs:
    the largest of the stages' working sets (a torch model's, :func:`frontends.footprint.torch_bytes`; the
    float and fixed-point walks', :func:`sim.footprint.walk_bytes`) plus the previous stage's recorded
    spikes, which it is compared with as it finishes; with Lava, the fixed-point spikes and Lava's
    recording of the same samples, read back for the comparison."""
    graph = artifact.fixed_graph
    shape = tuple(graph.input_node.out_shape)
    layers = [n.name for n in graph.neurons()]
    paths = {l[:-3] if l.endswith("_or") else l for l in layers}
    spikes = {n.name: memory.product(n.out_shape) * T * (1 if not n.graded_output else 8) for n in graph.neurons()}
    runs = [torch_bytes(m, shape, T, record=paths) for m in models.values()]
    runs += [walk_bytes(float_graph, "float", T), walk_bytes(graph, "fixed", T)]
    worst = dict(max(runs, key=lambda r: sum(r.values())))
    for l, b in spikes.items():       # the stage before (its spikes as recorded) or, with Lava, Lava's copy
        worst[l] = worst.get(l, 0) + b * (2 if lava else 1)
    return worst


def crosscheck(artifact, x: torch.Tensor, labels=None, lava_samples: int = 0, batch: int | None = None,
               progress: bool = True, device: str | None = None, timeout: float | None = None,
               float_graph=None, stage_bar: bool | None = None, activity: bool = True, workers: int = 1,
               ray: str | None = None, mapping: dict | None = None, max_batch: int = 128) -> dict:
    """Run every stage on ``x`` [T, N, ...] (Lava on the first ``lava_samples``) and compare them.

    ``float_graph``: the graph the ``float`` stage runs (default: the fixed-point graph run in float,
    as the report does; ``simulate`` passes the artifact's float graph). ``progress`` shows Lava's bar,
    ``stage_bar`` (default ``progress``) the reference stages' bar; ``batch``: samples per batch
    (default: the largest, at most ``max_batch``, whose estimate, :func:`batch_bytes`, fits the memory
    budget; a given batch that does not fit, or a single sample that does not, is refused before
    anything runs, Lava included); ``activity=False`` skips the synaptic event counts (``activity_fixed``
    is then ``None``); with a core ``mapping`` (``passes.map_cores``) the fixed-point spikes are also
    counted as inter-chip traffic (``chip_traffic``, :class:`neurocomp.metrics.ChipTraffic`). ``device``:
    where the torch models and both references run (``neurocomp.devices.resolve``; None: auto, CUDA when
    available). ``workers`` / ``ray``: the Lava samples are split over that many independent Lava
    runtimes, local processes or tasks on the Ray cluster at ``ray``
    (:func:`neurocomp.backends.lava.record_lava_sharded`); the figures are the same. Where this Python
    has no Lava, Lava runs in the Lava environment (:mod:`neurocomp.backends.lava.bridge`), with the same
    figures. Besides the figures, the result keeps per-sample ``predictions`` of every stage, and
    ``float_equals_torch_samples``: the samples whose float output equals the last torch stage's (the
    static-attention model when there is
    one; a readout head's values within float32 rounding)."""
    graph = artifact.fixed_graph
    fgraph = graph if float_graph is None else float_graph
    T, N = int(x.shape[0]), int(x.shape[1])
    layers = [n.name for n in graph.neurons()]
    sizes = {n.name: int(np.prod(n.out_shape)) for n in graph.neurons()}
    graded = [n.name for n in graph.neurons() if n.graded_output]   # readout heads: values, not spikes
    head_graded = fgraph.output_node.graded_output
    labels = None if labels is None else torch.as_tensor(labels)
    dev = devices.resolve(device)
    device = str(dev)
    models = {}
    if os.path.exists(artifact.checkpoint):          # an artifact compiled from NIR has no torch model
        models["torch"] = load_checkpoint(artifact.checkpoint).model
    static_path = os.path.join(artifact.path, "static_model.pt")
    if os.path.exists(static_path):                  # attention folded as calibrated static maps
        models["static"] = load_checkpoint(static_path).model
    stage = {s: _StageAcc(layers, T, graded) for s in STAGES}
    pairs = {}
    torch_layers = {}
    chain = list(models) + ["float", "fixed"]
    want_activity, activity, stats = activity, None, {}
    traffic = ChipTraffic(graph, mapping) if want_activity and mapping else None
    preds = {s: [] for s in chain}
    float_match = 0
    n_lava = min(int(lava_samples or 0), N)
    batch = memory.plan_batch(batch_bytes(artifact, models, fgraph, T, bool(n_lava)), N, batch=batch, default=max_batch,
                              what="the cross-check", where=artifact.path)
    lava_rec, lava_preds, subset_preds = None, [], {s: [] for s in chain}
    if n_lava:
        from neurocomp.backends.lava.bridge import lava_recording     # here, or in the Lava environment
        stored = (getattr(artifact, "manifest", None) or {}).get("graphs", {}).get("fixed")
        graph_dir = os.path.join(artifact.path, "fixed") if stored and stored == graph.digest() else None
        lava_rec = lava_recording(graph, x[:, :n_lava], workers=workers, ray=ray, progress=progress, timeout=timeout,
                                  graph_dir=graph_dir)
    bar = None
    if progress if stage_bar is None else stage_bar:
        bar = tqdm(total=N, desc="reference stages (torch, float, fixed)", unit="sample")
    try:
        for sl in batches(N, batch):
            xb = x[:, sl]
            yb = None if labels is None else labels[sl]
            out_last, prev, fixed_run = None, None, None
            # stage after stage, each compared with the one before as soon as it is done, which is then
            # dropped: at most two stages' spikes are held (and Lava's recording of these samples)
            for name in chain:
                if name in models:
                    with devices.deterministic_float(dev):
                        out_t, sp = run_torch_model(models[name], xb, record=layers, device=dev)
                    torch_layers.setdefault(name, [l for l in layers if l in sp])
                    pred, out_last = predict(out_t), out_t
                    out_t = None
                else:
                    r = (run_float if name == "float" else run_fixed)(fgraph if name == "float" else graph, xb,
                                                                       device=dev)
                    sp, pred = r.spikes, r.predictions()
                    if name == "float":
                        float_match += int(xb.shape[1]) if out_last is None else \
                            int((_agree(r.output, out_last, True, False) if head_graded else r.output == out_last)
                                .flatten(2).all(-1).all(0).sum())
                    else:
                        fixed_run = r
                    r = None
                stage[name].add(sp, pred, yb)
                preds[name].append(pred)
                if prev is not None:
                    a = prev[0]
                    if (a, name) not in pairs:
                        common = [l for l in layers if l in torch_layers.get(a, layers)
                                  and l in torch_layers.get(name, layers)]
                        if (a, name) == ("float", "fixed"):   # a head's float and integer values differ by
                            common = [l for l in common if l not in graded]   # quantization: compared by class
                        pairs[(a, name)] = _PairAcc(common, T, graded)
                    pairs[(a, name)].add(prev[1], sp, prev[2], pred)
                prev = (name, sp, pred)
                sp = None
            rq = fixed_run
            if want_activity:
                activity = add_activity(activity, layer_activity(graph, xb, rq.spikes))
            if traffic is not None:
                traffic.add(rq.spikes)
            for l, s in rq.stats.items():
                acc = stats.setdefault(l, {"voltage_saturations": 0, "current_wraps": 0})
                for k in acc:
                    acc[k] += int(s.get(k) or 0)
            if lava_rec is not None and sl.start < n_lava:      # Lava's recording of these samples
                ls = slice(sl.start, min(sl.stop, n_lava))
                k = ls.stop - ls.start
                lb = lava_rec.spikes(ls)
                lp = predict(lb[lava_rec.output_name])
                fixed_k = {l: v[:, :k] for l, v in rq.spikes.items()}
                yl = None if yb is None else yb[:k]
                stage["lava"].add(lb, lp, yl)
                if ("fixed", "lava") not in pairs:
                    pairs[("fixed", "lava")] = _PairAcc(layers, T, graded, exact=True)
                pairs[("fixed", "lava")].add(fixed_k, lb, preds["fixed"][-1][:k], lp)
                lava_preds.append(lp)
                for name in chain:
                    subset_preds[name].append(preds[name][-1][:k])
            # this batch's spikes go now, not at the next one
            rq = fixed_run = prev = out_last = xb = lb = fixed_k = None
            signals.check()
            if bar is not None:
                bar.update(sl.stop - sl.start)
        lava = None
        if lava_rec is not None:
            lava = {"samples": n_lava, "wall_s": lava_rec.stats.get("wall_s")}
            if getattr(lava_rec, "python", None):     # run by the Lava environment (backends.lava.bridge)
                lava["environment"] = lava_rec.python
            if "shards" in lava_rec.stats:            # split over workers (record_lava_sharded)
                lava.update({k: lava_rec.stats[k] for k in ("engine", "workers", "shards")})
    finally:
        if bar is not None:
            bar.close()
        if lava_rec is not None:
            lava_rec.close()

    subset_acc = {}
    if n_lava and labels is not None:
        yl = labels[:n_lava]
        sub = {name: torch.cat(p) for name, p in subset_preds.items()}
        sub["lava"] = torch.cat(lava_preds)
        for name, pred in sub.items():
            subset_acc[name] = int((pred == yl).sum()) / n_lava

    def stage_result(s):
        acc = stage[s]
        if acc.samples == 0:
            return None
        present = [l for l in layers if l in torch_layers.get(s, layers)]
        return {"label": STAGE_LABELS[s] + (f" on {device}" if s in models else ""),
                "samples": acc.samples,
                "accuracy": None if labels is None else acc.correct / acc.samples,
                "spike_counts": {l: int(acc.counts[l].sum()) for l in present},
                "spike_counts_per_step": {l: acc.counts[l].tolist() for l in present},
                "spike_rates": {l: float(acc.counts[l].sum()) / (sizes[l] * T * acc.samples) for l in present}}

    predictions = {name: torch.cat(p) for name, p in preds.items()}
    if lava_preds:
        predictions["lava"] = torch.cat(lava_preds)
    return {
        "timesteps": T, "samples": N, "layers": layers, "neurons": sizes, "torch_device": device,
        "stages": {s: stage_result(s) for s in STAGES},
        "pairs": {f"{a}->{b}": p.result() for (a, b), p in pairs.items()},
        "lava": lava, "accuracy_on_lava_sample": subset_acc or None,
        "activity_fixed": activity, "fixed_stats": stats,
        "chip_traffic": None if traffic is None else traffic.result(N, T),
        "graded_layers": graded,
        "torch_layers_missing": {s: [l for l in layers if l not in ls] for s, ls in torch_layers.items()
                                 if len(ls) < len(layers)},
        "attention": getattr(artifact, "manifest", {}).get("attention"),
        "rates_unit": "spikes per neuron per time step",
        "predictions": predictions, "float_equals_torch_samples": float_match,
    }
