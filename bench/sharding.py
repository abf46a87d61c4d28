"""Sharded Lava cross-checks: samples per second with ``--workers N`` against one runtime, and the CPU
each worker keeps busy (so the scaling on a machine with more cores can be predicted).

For each worker count (default 1 and 2; ``--ray`` adds a local Ray head with the largest count), on the
default model's test split, in a fresh Python process each:

- ``lava``: the Lava run alone (``record_lava_sharded``: fork or Ray start, emit, run, stop), samples/s,
  CPU seconds of the whole run (this process and every process it waited for) per wall second, and per
  shard its worker's CPU seconds per wall second;
- ``simulate``: ``neurocomp simulate --backend lava --workers N`` end to end (reference stages included),
  samples/s; the figures are checked equal to the one-worker run's.

Usage: ``python bench/sharding.py [--samples N] [--workers 1,2] [--ray]``; writes bench/sharding.json
and bench/sharding.md. Never timed in the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MODEL = os.path.join(ROOT, "models", "digits_plain", "model.pt")
FIGURES = ("accuracy", "same_class", "exact_match_fraction", "per_layer", "first_diverging_layer")


def _cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def phase(artifact, samples, workers, ray):
    from neurocomp.backends.lava import ensure_lava_runtime, record_lava_sharded
    ensure_lava_runtime()
    import torch
    from neurocomp.api import simulate
    from neurocomp.artifact import Artifact
    from neurocomp.data.registry import load_inputs
    art = Artifact(artifact)
    m = art.manifest
    x, _ = load_inputs(m["dataset"], "test", m["timesteps"], m["encoding"], n=samples)
    x = torch.as_tensor(x)
    n = int(x.shape[1])
    c0, t0 = _cpu(), time.monotonic()
    rec = record_lava_sharded(art.fixed_graph, x, workers=workers, ray=ray)
    wall, cpu = time.monotonic() - t0, _cpu() - c0
    shards = rec.stats.get("shards") or [{"samples": [0, n], "wall_s": wall, "cpu_s": cpu}]
    rec.close()
    out = {"workers": workers, "engine": "ray" if ray else "processes", "samples": n,
           "lava": {"wall_s": round(wall, 2), "samples_per_s": round(n / wall, 2),
                    "cpu_s": round(cpu, 2) if not ray else None,           # Ray's workers are not our children
                    "cores_busy": round(cpu / wall, 2) if not ray else None,
                    "per_worker": [{"samples": s["samples"], "wall_s": round(s["wall_s"], 2),
                                    "cpu_s": round(s["cpu_s"], 2), "cores_busy": round(s["cpu_s"] / s["wall_s"], 2)}
                                   for s in shards]}}
    t0 = time.monotonic()
    r = simulate(artifact, samples=samples, progress=False, workers=workers, ray=ray)
    wall = time.monotonic() - t0
    out["simulate"] = {"wall_s": round(wall, 2), "samples_per_s": round(n / wall, 2),
                       "figures": {k: r[k] for k in FIGURES}}
    print(json.dumps(out))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=None, help="test samples (default: the whole split)")
    p.add_argument("--workers", default="1,2")
    p.add_argument("--ray", action="store_true", help="also on a local Ray head (the largest worker count)")
    p.add_argument("--phase", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.phase:
        art, samples, workers, ray = a.phase
        return phase(art, None if samples == "all" else int(samples), int(workers), None if ray == "-" else ray)
    from neurocomp.api import compile as nc_compile
    counts = [int(w) for w in a.workers.split(",")]
    runs = [(w, "-") for w in counts] + ([(max(counts), "local")] if a.ray else [])
    rows = []
    with tempfile.TemporaryDirectory(prefix="nc-bench-shard-") as tmp:
        art = nc_compile(MODEL, os.path.join(tmp, "art"))
        for w, ray in runs:
            cmd = [sys.executable, os.path.abspath(__file__), "--phase", art,
                   "all" if a.samples is None else str(a.samples), str(w), ray]
            res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                 env=dict(os.environ, PYTHONWARNINGS="ignore"))
            if res.returncode:
                sys.exit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]["lava"]), file=sys.stderr)
    base = rows[0]
    base_figures = base["simulate"]["figures"]
    for r in rows:
        r["lava"]["speedup"] = round(r["lava"]["samples_per_s"] / base["lava"]["samples_per_s"], 2)
        r["simulate"]["speedup"] = round(r["simulate"]["samples_per_s"] / base["simulate"]["samples_per_s"], 2)
        r["simulate"]["figures_equal_one_worker"] = r["simulate"].pop("figures") == base_figures
    doc = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                       "load_average_at_end": [round(v, 2) for v in os.getloadavg()]}, "model": "digits_plain",
           "rows": rows}
    with open(os.path.join(HERE, "sharding.json"), "w") as fh:
        json.dump(doc, fh, indent=1)
    lines = [f"# Sharded Lava cross-checks (digits_plain, {rows[0]['samples']} samples, {os.cpu_count()} CPUs)", "",
             "| workers | engine | Lava samples/s | speedup | cores busy (all) | cores busy per worker "
             "| simulate samples/s | speedup | figures = 1 worker |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lv, sm = r["lava"], r["simulate"]
        per = ", ".join(f"{w['cores_busy']:.2f}" for w in lv["per_worker"])
        busy = "–" if lv["cores_busy"] is None else f"{lv['cores_busy']:.2f}"
        lines.append(f"| {r['workers']} | {r['engine']} | {lv['samples_per_s']:.1f} | {lv['speedup']:.2f}× "
                     f"| {busy} | {per} "
                     f"| {sm['samples_per_s']:.1f} | {sm['speedup']:.2f}× "
                     f"| {sm.get('figures_equal_one_worker', True)} |")
    lines += ["", f"Load average at the end of the run: {', '.join(map(str, doc['machine']['load_average_at_end']))} "
                  f"(1, 5, 15 min); on a busy machine the speed-ups are not the workers' own."]
    with open(os.path.join(HERE, "sharding.md"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
