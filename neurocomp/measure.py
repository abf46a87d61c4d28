"""The report's measurements, at the API level: the report reads them, it does not compile.

- :func:`measure`: every figure of ``neurocomp report`` (the cross-check of all stages, the bit-width
  sweep, the attention modes side by side, activity and energy), laid out by
  :func:`neurocomp.report.build.build_report`; :func:`report` measures and writes report.md, report.json
  and the plots (:func:`neurocomp.report.write.write_report`).
- :func:`bit_sweep`: accuracy vs weight bit width: re-lower the artifact's float graph with
  ``weight_bits`` = 2..8 (``passes.pipeline.lower``, the same pipeline ``compile`` runs) and score the fixed-point
  reference.
- :func:`measure_modes`: what each attention mode costs, measured for one model. For an artifact compiled
  from an attention model, the source checkpoint is compiled in the ``static`` and ``dynamic`` modes (same
  calibration; the artifact itself stands for its own mode), each artifact is run by the reference
  simulator on the report's samples and by Lava ``fixed_pt`` on its Lava sample, and one row gives: the
  original (dynamic) float accuracy, the static-folded float accuracy, static fixed point, static after
  fine-tuning (from a fine-tuned artifact, ``neurocomp finetune``), dynamic fixed point, Lava (dynamic) and
  its agreement with the reference, latency in steps of each mode and the attention process's operations
  per inference.
- :func:`measure_every_mode`: all attention modes of one model, the one loop ``measure_modes`` and
  ``bench/attention_modes.py`` (every zoo model) both run: compile the checkpoint in each mode and
  measure it (:func:`measure_mode`).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from neurocomp import devices, memory
from neurocomp.api import compile as compile_, simulate
from neurocomp.artifact import Artifact
from neurocomp.crosscheck import crosscheck
from neurocomp.data.registry import load_inputs
from neurocomp.errors import BadInput, NeurocompError
from neurocomp.metrics import energy_per_inference, per_inference_counts
from neurocomp.passes.map_cores import chip_summary, map_cores
from neurocomp.passes.pipeline import lower
from neurocomp.report.build import build_report
from neurocomp.report.write import check_writable, write_report
from neurocomp.shards import check_workers, ray_session, run_shards, shard_count, split
from neurocomp.sim import run_fixed
from neurocomp.sim.footprint import walk_bytes
from neurocomp.targets import load_target


@dataclass
class Measured:
    """Every figure the report reads."""
    artifact: object
    target: object
    mapping: dict
    crosscheck: dict
    sweep: dict | None
    energy: dict | None
    counts: dict | None
    data_source: str
    timings: dict
    modes: dict | None = None       # attention modes measured side by side (measure_modes)
    chips: dict | None = None       # the chip partition and its inter-chip traffic (chip_partition)


def report(artifact, samples: int | None = None, lava_samples: int = 50, progress: bool = True,
           **kw) -> list[str]:
    """Measure, then write report.md, report.json and report_plots/*.png into the artifact folder;
    returns the paths (``neurocomp report``)."""
    return write_report(artifact, build_report(measure(artifact, samples=samples, lava_samples=lava_samples,
                                                       progress=progress, **kw)))


def measure(artifact_path, samples: int | None = None, lava_samples: int = 50, progress: bool = True,
            inputs=None, labels=None, bits=range(2, 9), timeout: float | None = None,
            attention_modes: bool = True, finetuned: str | None = None, workers: int = 1,
            ray: str | None = None, device: str = "auto", batch: int | None = None) -> Measured:
    """Compute every figure of the report (the report itself only reads them). ``workers`` / ``ray``: the
    Lava runs and the bit-width sweep are split over that many workers (``neurocomp.shards``); ``device``:
    where the reference simulator and the torch stages run (``neurocomp.devices``). ``batch``: samples per
    batch of the reference runs (default: chosen to fit the memory budget)."""
    workers = check_workers(workers, ray)
    device = str(devices.resolve(device))        # refused now, not after the inputs are read
    art = Artifact(artifact_path)
    man = art.manifest
    T = man["timesteps"]
    if samples is not None and samples < 1:
        raise BadInput(f"--samples {samples}", where="--samples", hint="give at least 1")
    check_writable(art.path)                    # before minutes of simulation, not after
    if inputs is not None:
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        source = "given inputs"
    elif man.get("dataset"):
        xs, labels = load_inputs(man["dataset"], "test", T, man["encoding"], n=samples)
        x = torch.as_tensor(xs)
        source = f"{man['dataset']} test split" + ("" if samples is None else f" (first {samples} samples)")
    else:
        raise BadInput("the model names no dataset", where=artifact_path,
                       hint="call build_report(..., inputs=[T, N, ...] array)")
    target, mapping = mapping_and_target(art)
    chip_summary(mapping)                       # a manifest's partition is checked before it sizes anything
    timings = {}
    with ray_session(ray) if ray is not None else contextlib.nullcontext():   # one Ray session for every run
        t0 = time.monotonic()
        cc = crosscheck(art, x, labels, lava_samples=lava_samples, progress=progress, timeout=timeout,
                        workers=workers, ray=ray, device=device, mapping=mapping, batch=batch)
        timings["crosscheck_s"] = time.monotonic() - t0
        sw = None
        if labels is not None and bits:
            t0 = time.monotonic()
            sw = bit_sweep(art, x, labels, bits=bits, progress=progress, workers=workers, ray=ray, device=device,
                           batch=batch)
            timings["bit_sweep_s"] = time.monotonic() - t0
        modes = None
        if attention_modes and inputs is None and man.get("attention"):
            t0 = time.monotonic()
            modes = measure_modes(art, samples, lava_samples, finetuned=finetuned, progress=False,
                                  workers=workers, ray=ray, device=device)
            timings["attention_modes_s"] = time.monotonic() - t0
    counts = per_inference_counts(cc["activity_fixed"], cc["samples"])
    energy = energy_per_inference(counts, target)
    return Measured(art, target, mapping, cc, sw, energy, counts, source, timings, modes,
                    chip_partition(mapping, cc.get("chip_traffic"), counts))


def chip_partition(mapping: dict, traffic: dict | None, counts: dict | None) -> dict:
    """The report's chip figures: the partition of the cores over chips (``passes.map_cores.chip_summary``,
    from the mapping's slices) and the measured inter-chip traffic (``metrics.ChipTraffic``) with its share
    of all routed spikes (``metrics.per_inference_counts``: input spikes and every layer's but the output's)."""
    routed = (counts or {}).get("routed_spikes")
    share = None if traffic is None or not routed else traffic["per_inference"] / routed
    return {"chips": mapping["chips"], "cores_per_chip_limit": mapping["limits"]["cores_per_chip"],
            "max_chips": mapping.get("max_chips"), "partition": chip_summary(mapping), "traffic": traffic,
            "routed_spikes_per_inference": routed, "share_of_routed_spikes": share}


def mapping_and_target(art):
    """The hardware target and the artifact's core mapping on it (mapped now if the manifest has none)."""
    man = art.manifest
    target = load_target(art.target_spec())     # a known target or the artifact's own copy, never a manifest path
    mapping = man.get("mapping") or art.fixed_graph.meta.get("mapping")
    if not mapping or mapping.get("target") != target.name:
        mapping = map_cores(art.fixed_graph, target, max_chips=(mapping or {}).get("max_chips")).meta["mapping"]
    return target, mapping


def same_quantization(a, b) -> bool:
    """Whether two lowered graphs carry identical integer weights and neuron parameters."""
    if [n.name for n in a] != [n.name for n in b]:
        return False
    for na, nb in zip(a, b):
        qa, qb = getattr(na, "qweight", None), getattr(nb, "qweight", None)
        if (qa is None) != (qb is None) or (qa is not None and not np.array_equal(qa, qb)):
            return False
        fa, fb = getattr(na, "fixed", None), getattr(nb, "fixed", None)
        if (fa is None) != (fb is None):
            return False
        if fa is not None and ((fa.du, fa.vth) != (fb.du, fb.vth) or not np.array_equal(fa.dv, fb.dv)
                               or not np.array_equal(fa.offset, fb.offset)
                               or not np.array_equal(fa.step_bias, fb.step_bias)
                               or not np.array_equal(fa.bias_mant, fb.bias_mant)
                               or not np.array_equal(fa.bias_exp, fb.bias_exp)):
            return False
    return True


def _sweep_shard(graphs: dict, x, labels, batch: int, progress=None, device=None) -> dict:
    """Correct predictions of the fixed-point reference of each lowered graph ``{bits: graph}`` on the
    samples ``x`` [T, n, ...] (on ``device``); ``progress(done)`` counts samples times graphs."""
    correct, done = {}, 0
    for b, g in graphs.items():
        correct[b] = 0
        for i in range(0, x.shape[1], batch):
            r = run_fixed(g, x[:, i:i + batch], device=device)
            correct[b] += int((r.predictions() == labels[i:i + batch]).sum())
            done += min(batch, x.shape[1] - i)
            if progress is not None:
                progress(done)
    return correct


def bit_sweep(artifact, x, labels, bits=range(2, 9), batch: int | None = None, progress: bool = True,
              workers: int = 1, ray: str | None = None, device=None) -> dict:
    """Accuracy of the fixed-point reference against weight bits, on ``device`` (default the CPU).
    ``workers`` / ``ray``: the samples are split over that many worker processes or Ray tasks
    (``neurocomp.shards``, on their CPUs); the counts are summed. ``batch``: samples per run (default: the
    largest, at most 1024, whose estimate fits the memory budget)."""
    labels = torch.as_tensor(labels)
    workers = check_workers(workers, ray)
    N = x.shape[1]
    own_bits = artifact.manifest.get("weight_bits", 8)
    att = artifact.manifest.get("attention")
    kw = {"attention": att["mode"]} if att and att.get("mode") else {}   # fold attention as compile did
    rows = {}
    graphs = {}
    it = list(bits)
    bar = None
    if progress:
        bar = tqdm(total=len(it) * N, desc="bit-width sweep (fixed-point reference)", unit="sample")
    for b in it:
        try:
            graphs[b] = lower(artifact.float_graph, weight_bits=b, **kw)
        except NeurocompError as e:     # e.g. at 2 bits a threshold may not fit the weight grid at all
            rows[b] = {"weight_bits": b, "accuracy": None, "correct": None, "samples": N, "weights_clipped": None,
                       "bias_clipped": None, "not_representable": e.one_line()}
    refused = (len(it) - len(graphs)) * N
    batch = memory.plan_batch(walk_bytes(artifact.fixed_graph, "fixed"), N, batch=batch, default=1024,
                              what="the bit-width sweep", where=artifact.path)

    def on_progress(done):
        if bar is not None and refused + done != bar.n:
            bar.update(refused + done - bar.n)

    try:
        on_progress(0)
        if ray is None and min(workers, N) <= 1:
            counts = [_sweep_shard(graphs, x, labels, batch, progress=on_progress, device=device)]
        else:
            with contextlib.ExitStack() as stack:
                if ray is not None:
                    stack.enter_context(ray_session(ray))
                ranges = split(N, shard_count(workers, ray, N))
                counts = run_shards(_sweep_shard, [(graphs, x[:, r.start:r.stop], labels[r.start:r.stop], batch)
                                                   for r in ranges], ranges, workers=len(ranges), ray=ray,
                                    what="bit-sweep shard", on_progress=on_progress,
                                    units=[len(r) * len(graphs) for r in ranges])
    finally:
        if bar is not None:
            bar.close()
    for b, g in graphs.items():
        correct = sum(c[b] for c in counts)
        q = next(p for p in g.meta["passes"] if p["pass"] == "quantize")
        row = {"weight_bits": b, "accuracy": correct / N, "correct": correct, "samples": N,
               "weights_clipped": q["weights_clipped"], "bias_clipped": q["bias_clipped"]}
        if b == own_bits:
            row["same_quantization_as_artifact"] = same_quantization(g, artifact.fixed_graph)
        rows[b] = row
    return {"rows": [rows[b] for b in it], "artifact_weight_bits": own_bits,
            "simulator": "fixed-point reference (run_fixed)", "samples": N}


MODES = ("static", "dynamic")


def _source_checkpoint(art) -> str:
    """The original attention model: a fine-tuned artifact keeps it as ``source_model.pt``."""
    src = os.path.join(art.path, "source_model.pt")
    return src if os.path.exists(src) else art.checkpoint


def _calibration(man: dict, folder: str | None = None):
    """The calibration the artifact used. A recorded ``.npy`` path is a path written in the manifest:
    it is used only when it lies inside the artifact ``folder`` (never a file elsewhere on the machine);
    otherwise the recompiles calibrate on the default training samples."""
    cal = (man.get("attention") or {}).get("calibration") or {}
    source = cal.get("source")
    inside = folder is not None and isinstance(source, str) and os.path.realpath(source).startswith(
        os.path.realpath(folder) + os.sep)
    calib = source if inside and source.endswith(".npy") and os.path.isfile(source) else None
    return calib, int(cal.get("samples") or 512)


def measure_mode(path, samples: int | None, lava_samples: int, progress: bool = False, workers: int = 1,
                 ray: str | None = None, device: str = "auto"):
    """One attention mode's row for an artifact compiled in that mode: the reference simulator on
    ``samples`` test samples, Lava on ``lava_samples``; returns ``(row, reference result, manifest)``."""
    ref = simulate(path, backend="reference", samples=samples, progress=progress, device=device)
    row = {"float": ref["accuracy"]["float_torch"],
           "static_float": ref["accuracy"].get("float_static_attention"),
           "fixed": ref["accuracy"]["fixed_reference"], "samples": ref["samples"]}
    if lava_samples:
        lav = simulate(path, backend="lava", samples=lava_samples, progress=progress, workers=workers, ray=ray,
                       device=device)
        row.update(lava=lav["accuracy"]["lava"], lava_exact=lav["exact_match_fraction"],
                   lava_samples=lav["samples"])
    m = Artifact(path).manifest           # checked like any artifact read
    row["latency_steps"] = m["alignment"]["depth"]
    row["attention_ops"] = sum(c["total_operations"] for c in (m.get("attention_process_cost") or {}).values())
    return row, ref, m


@dataclass
class ModeRun:
    """One attention mode of one model, measured (:func:`measure_every_mode`)."""
    row: dict               # measure_mode's row: accuracies, Lava agreement, latency, attention operations
    reference: dict         # the reference simulator's result (api.simulate)
    manifest: dict          # the artifact's manifest (passes, attention record)
    seconds: float          # compile and measure


def measure_every_mode(checkpoint, folder, samples: int | None, lava_samples: int, modes=MODES, calib=None,
                       calib_samples: int = 512, own: tuple | None = None,
                       progress: bool = False, workers: int = 1, ray: str | None = None,
                       device: str = "auto") -> dict[str, ModeRun]:
    """All attention modes of one model: compile ``checkpoint`` in each of ``modes`` into
    ``folder/<mode>`` (``folder`` exists; calibration ``calib``, ``calib_samples``) and measure it
    (:func:`measure_mode`).
    ``own``: ``(mode, path)`` of an artifact already compiled in that mode, measured as it is."""
    runs = {}
    for mode in modes:
        t0 = time.monotonic()
        if own is not None and own[0] == mode:
            path = own[1]                         # the artifact itself is this mode: no recompile
        else:
            path = compile_(checkpoint, os.path.join(folder, mode), attention=mode, calib=calib,
                            calib_samples=calib_samples, device=device)
        row, ref, man = measure_mode(path, samples, lava_samples, progress, workers=workers, ray=ray, device=device)
        runs[mode] = ModeRun(row, ref, man, time.monotonic() - t0)
    return runs


def measure_modes(art, samples: int | None, lava_samples: int, finetuned: str | None = None,
                  progress: bool = False, workers: int = 1, ray: str | None = None,
                  device: str = "auto") -> dict | None:
    """Measure every attention mode of the artifact's source model; ``None`` without attention."""
    man = art.manifest
    if not man.get("attention") or not man.get("dataset"):
        return None
    checkpoint = _source_checkpoint(art)
    if not os.path.exists(checkpoint):
        return None
    calib, calib_samples = _calibration(man, art.path)
    own = (man["attention"].get("mode"), art.path) if not man.get("finetune") and checkpoint == art.checkpoint \
        else None
    with tempfile.TemporaryDirectory(prefix="neurocomp-modes-") as tmp:
        runs = measure_every_mode(checkpoint, tmp, samples, lava_samples, calib=calib, calib_samples=calib_samples,
                                  own=own, progress=progress, workers=workers, ray=ray, device=device)
    out = {"samples": samples, "lava_samples": lava_samples, "source_checkpoint": os.path.basename(checkpoint),
           "modes": {mode: run.row for mode, run in runs.items()}}
    ft = None
    if finetuned:
        ref = simulate(finetuned, backend="reference", samples=samples, progress=progress, device=device)
        ft = {"artifact": os.path.abspath(finetuned), "fixed": ref["accuracy"]["fixed_reference"]}
    elif man.get("finetune"):
        ref = simulate(art.path, backend="reference", samples=samples, progress=progress, device=device)
        ft = {"artifact": os.path.abspath(art.path), "fixed": ref["accuracy"]["fixed_reference"]}
    out["static_finetuned"] = ft
    return out
