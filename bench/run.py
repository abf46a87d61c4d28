"""neurocomp benchmarks (``make bench``): writes bench/results.json and bench/results.md.

Each measurement runs in its own Python process (so its memory peak is its own):

- compile wall time per zoo model (``models/*/model.pt``), failures reported with their error;
- Lava wall time per time step on the default model's test split: neurocomp's emitted network
  (``neurocomp.backends.lava.run_lava``, as ``neurocomp simulate`` runs it: every layer recorded)
  versus the same quantized network loaded through lava-dl's ``netx.hdf5.Network`` (written and run
  by ``neurocomp.backends.netx``: ``write_netx``, with ``exact=False`` where the exact writer
  refuses, and ``run_netx``, whose wall time includes loading the network), same inputs, output layer
  recorded;
- throughput in samples/s of the batched fixed-point reference simulator versus Lava, same
  network, same inputs (the whole test split);
- peak resident memory of each measurement (its process and its largest child).

Usage: ``python bench/run.py [--samples N] [--models a,b]`` (defaults: the whole test split, all
zoo models). Must finish in < 15 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import glob
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
DEFAULT_MODEL = os.path.join(ROOT, "models", "digits_plain", "model.pt")
CHUNK_SAMPLES = 16


# ----------------------------------------------------------------------------------------------
# phases (each runs in a child process: `run.py --phase NAME ...`, prints one JSON line)
# ----------------------------------------------------------------------------------------------
def _peak():
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"peak_rss_mib": round(self_kb / 1024, 1), "peak_child_rss_mib": round(child_kb / 1024, 1)}


def phase_compile(model):
    t0 = time.perf_counter()
    from neurocomp.api import compile as nc_compile
    from neurocomp.errors import NeurocompError
    t_import = time.perf_counter() - t0
    out = tempfile.mkdtemp(prefix="nc-bench-")
    t1 = time.perf_counter()
    mode = None
    try:
        path = nc_compile(model, os.path.join(out, "art"))
        ok, err = True, None
        with open(os.path.join(path, "manifest.json")) as fh:
            mode = (json.load(fh).get("attention") or {}).get("mode")
    except NeurocompError as e:
        ok, err = False, e.one_line()
    wall = time.perf_counter() - t1
    import shutil
    shutil.rmtree(out, ignore_errors=True)
    return {"model": os.path.relpath(model, ROOT), "ok": ok, "error": err, "compile_s": round(wall, 3),
            "attention": mode,
            "import_s": round(t_import, 3), **_peak()}


def _default_setup(samples):
    """Compile the default model and load its test split: (fixed graph, x [T, N, ...], labels)."""
    import torch
    from neurocomp.api import compile as nc_compile
    from neurocomp.artifact import Artifact
    from neurocomp.data.registry import load_inputs
    out = os.path.join(tempfile.mkdtemp(prefix="nc-bench-"), "art")
    nc_compile(DEFAULT_MODEL, out)
    art = Artifact(out)
    man = art.manifest
    x, y = load_inputs(man["dataset"], "test", man["timesteps"], man["encoding"], n=samples)
    return art, torch.as_tensor(x), y


def phase_lava_neurocomp(samples, output_only=False):
    from neurocomp.backends.lava import run_lava
    from neurocomp.sim import run_fixed
    art, x, y = _default_setup(samples)
    g = art.fixed_graph
    t0 = time.perf_counter()
    r = run_lava(g, x, chunk_samples=CHUNK_SAMPLES, record=() if output_only else None)
    wall = time.perf_counter() - t0
    ref = run_fixed(g, x)
    exact = all(bool((ref.spikes[k] == r.spikes[k]).all()) for k in r.spikes)
    steps = r.stats["steps"]
    n = int(x.shape[1])
    return {"samples": n, "steps": steps, "wall_s": round(wall, 3), "run_s": round(r.stats["wall_s"], 3),
            "ms_per_step": round(1e3 * wall / steps, 3), "samples_per_s": round(n / wall, 3),
            "exact_vs_reference": exact, "layers_recorded": len(r.spikes),
            "accuracy": float((r.predictions().numpy() == y).mean()), **_peak()}


def phase_lava_netx(samples):
    """The same network through stock netx: neurocomp's ``--target netx`` writer and runner
    (``backends/netx.write_netx``, ``run_netx``). Where the exact writer refuses (a bias off netx's
    bias_exp = 6 grid, a max pool's threshold neurons) the file is written with ``exact=False``: biases
    rounded, threshold neurons as CUBA neurons (same topology, sizes and weights: a timing comparison,
    not an exactness one)."""
    import numpy as np
    from neurocomp.backends.netx import run_netx, write_netx
    from neurocomp.errors import NeurocompError
    from neurocomp.sim import run_fixed

    art, x, y = _default_setup(samples)
    g = art.fixed_graph
    T, B = int(x.shape[0]), int(x.shape[1])
    tmp = tempfile.mkdtemp(prefix="nc-bench-netx-")
    path = os.path.join(tmp, "net.h5")
    try:
        write_netx(g, path)
        source_kind = "neurocomp.backends.netx (exact)"
    except NeurocompError as e:
        write_netx(g, path, exact=False)
        source_kind = f"neurocomp.backends.netx, exact=False ({e.one_line()[:160]})"
    t0 = time.perf_counter()
    spikes, net = run_netx(path, x, T)                       # loads the network and runs it
    wall = time.perf_counter() - t0
    total = B * T + len(net.layers)
    counts = spikes.numpy().reshape(T, B, -1).sum(0)         # [B, classes]
    ref = run_fixed(g, x).output.numpy().sum(0)
    return {"samples": B, "steps": total, "wall_s": round(wall, 3), "ms_per_step": round(1e3 * wall / total, 3),
            "samples_per_s": round(B / wall, 3), "hdf5_from": source_kind,
            "same_output_counts_as_reference": float((counts == ref.reshape(B, -1)).all(1).mean()),
            "accuracy": float((counts.argmax(1) == y).mean()), **_peak()}


def phase_reference(samples):
    import torch
    from neurocomp.sim import run_fixed
    art, x, y = _default_setup(samples)
    g = art.fixed_graph
    run_fixed(g, x[:, :8])                                   # warm-up (jit, allocator)
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        for i in range(0, x.shape[1], 256):
            r = run_fixed(g, x[:, i:i + 256])
        wall = time.perf_counter() - t0
        best = wall if best is None else min(best, wall)
    n = int(x.shape[1])
    return {"samples": n, "wall_s": round(best, 4), "samples_per_s": round(n / best, 1),
            "torch_threads": torch.get_num_threads(), **_peak()}


PHASES = {"compile": phase_compile, "lava_neurocomp": phase_lava_neurocomp, "lava_netx": phase_lava_netx,
          "lava_neurocomp_output": lambda n: phase_lava_neurocomp(n, output_only=True), "reference": phase_reference}


# ----------------------------------------------------------------------------------------------
# orchestration
# ----------------------------------------------------------------------------------------------
def _child(phase, arg, timeout=600):
    cmd = [sys.executable, os.path.abspath(__file__), "--phase", phase, "--arg", str(arg)]
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timed out after {timeout} s"}
    wall = time.perf_counter() - t0
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"ok": False, "error": f"exit {p.returncode}: {tail[:300]}", "process_s": round(wall, 2)}
    res = json.loads(lines[-1])
    res.setdefault("ok", True)
    res["process_s"] = round(wall, 2)
    return res


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for ln in open("/proc/cpuinfo"):
            if ln.startswith("model name"):
                cpu = ln.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for ln in open("/proc/meminfo"):
            if ln.startswith("MemTotal"):
                mem = round(int(ln.split()[1]) / 1024 ** 2, 1)
    except OSError:
        pass
    from importlib.metadata import version
    vers = {}
    for pkg in ("torch", "lava-nc", "lava-dl", "numpy"):
        try:
            vers[pkg] = version(pkg)
        except Exception:  # noqa: BLE001
            vers[pkg] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem, "os": platform.platform(),
            "python": platform.python_version(), **vers}


def to_markdown(res) -> str:
    m = res["machine"]
    out = [f"# neurocomp benchmark ({res['date']})", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}; Python {m['python']}, "
           f"torch {m['torch']}, lava-nc {m['lava-nc']}, lava-dl {m['lava-dl']}.  ",
           f"Command: `{res['command']}` ({res['total_s']:.0f} s in all).", "",
           "## Compile wall time per zoo model", "",
           "| model | result | compile (s) | peak RSS (MiB) |", "|---|---|---:|---:|"]
    for c in res["compile"]:
        status = (f"ok ({c['attention']} attention)" if c.get("attention") else "ok") if c.get("ok") \
            else f"fails: {c.get('error', '')[:160]}"
        out.append(f"| {c.get('model')} | {status} | {c.get('compile_s', '-')} | {c.get('peak_rss_mib', '-')} |")
    d = res["default"]
    nc, nx, ref = d["lava_neurocomp"], d["lava_netx"], d["reference"]
    nco = d.get("lava_neurocomp_output", {})

    def g(r, k):
        return r.get(k, "-") if r.get("ok") else "-"
    out += ["", f"## Default model ({d['model']}), {d.get('samples', '?')} test samples, T={d.get('timesteps', '?')}", "",
            "| run | wall (s) | steps | ms / step | samples/s | peak RSS (MiB) | peak child RSS (MiB) | note |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
            f"| Lava, neurocomp network (all layers recorded) | {g(nc, 'wall_s')} | {g(nc, 'steps')} | "
            f"{g(nc, 'ms_per_step')} | {g(nc, 'samples_per_s')} | {g(nc, 'peak_rss_mib')} | "
            f"{g(nc, 'peak_child_rss_mib')} | exact vs reference: {g(nc, 'exact_vs_reference')} |",
            f"| Lava, neurocomp network (output recorded) | {g(nco, 'wall_s')} | {g(nco, 'steps')} | "
            f"{g(nco, 'ms_per_step')} | {g(nco, 'samples_per_s')} | {g(nco, 'peak_rss_mib')} | "
            f"{g(nco, 'peak_child_rss_mib')} | exact vs reference: {g(nco, 'exact_vs_reference')} |",
            f"| Lava, lava-dl netx network (output recorded) | {g(nx, 'wall_s')} | {g(nx, 'steps')} | "
            f"{g(nx, 'ms_per_step')} | {g(nx, 'samples_per_s')} | {g(nx, 'peak_rss_mib')} | "
            f"{g(nx, 'peak_child_rss_mib')} | output counts = reference: {g(nx, 'same_output_counts_as_reference')}"
            f"{'' if nx.get('ok') else ' ' + str(nx.get('error'))[:200]} |",
            f"| fixed-point reference simulator | {g(ref, 'wall_s')} | - | - | {g(ref, 'samples_per_s')} | "
            f"{g(ref, 'peak_rss_mib')} | - | batched, {g(ref, 'torch_threads')} torch threads |", "",
            f"netx network built by: {nx.get('hdf5_from', '-')}.", "",
            "| ratio | value | target |", "|---|---:|---|"]
    r = res["ratios"]
    out.append(f"| reference throughput / Lava throughput | {r.get('reference_over_lava', '-')} x | >= 100 x |")
    out.append(f"| netx ms per step / neurocomp ms per step (both record the output layer) | "
               f"{r.get('netx_over_neurocomp_per_step', '-')} | >= 1 (neurocomp no slower) |")
    out.append(f"| netx ms per step / neurocomp ms per step (neurocomp records every layer) | "
               f"{r.get('netx_over_neurocomp_all_layers_per_step', '-')} | - |")
    out.append("")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=sorted(PHASES))
    ap.add_argument("--arg")
    ap.add_argument("--samples", type=int, default=None, help="test samples (default: the whole split)")
    ap.add_argument("--models", help="comma-separated zoo model names (default: all)")
    ap.add_argument("--out", default=HERE)
    a = ap.parse_args(argv)
    if a.phase:
        arg = a.arg
        if a.phase != "compile":
            arg = None if arg in (None, "None") else int(arg)
        print(json.dumps(PHASES[a.phase](arg)))
        return 0
    t0 = time.perf_counter()
    models = sorted(glob.glob(os.path.join(ROOT, "models", "*", "model.pt")))
    if a.models:
        keep = set(a.models.split(","))
        models = [m for m in models if os.path.basename(os.path.dirname(m)) in keep]
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
           "command": "make bench  (python bench/run.py" + (f" --samples {a.samples}" if a.samples else "") + ")",
           "compile": []}
    for m in models:
        print(f"compile {os.path.relpath(m, ROOT)} ...", flush=True)
        r = _child("compile", m)
        r.setdefault("model", os.path.relpath(m, ROOT))
        res["compile"].append(r)
        print(f"  {'ok' if r.get('ok') else 'FAILS'} {r.get('compile_s', '')} s {r.get('error') or ''}", flush=True)
    default = {"model": os.path.relpath(DEFAULT_MODEL, ROOT)}
    for ph in ("reference", "lava_neurocomp", "lava_neurocomp_output", "lava_netx"):
        print(f"{ph} ...", flush=True)
        default[ph] = _child(ph, a.samples, timeout=420)
        print(f"  {json.dumps(default[ph])}", flush=True)
    nc, nx, ref = default["lava_neurocomp"], default["lava_netx"], default["reference"]
    nco = default["lava_neurocomp_output"]
    default["samples"] = ref.get("samples") or nc.get("samples")
    try:
        import torch
        default["timesteps"] = torch.load(DEFAULT_MODEL, weights_only=True)["timesteps"]
    except Exception:  # noqa: BLE001
        pass
    res["default"] = default
    ratios = {}
    if nc.get("ok") and ref.get("ok"):
        ratios["reference_over_lava"] = round(ref["samples_per_s"] / nc["samples_per_s"], 1)
    if nco.get("ok") and nx.get("ok"):   # same network, same recording (output layer only)
        ratios["netx_over_neurocomp_per_step"] = round(nx["ms_per_step"] / nco["ms_per_step"], 3)
    if nc.get("ok") and nx.get("ok"):
        ratios["netx_over_neurocomp_all_layers_per_step"] = round(nx["ms_per_step"] / nc["ms_per_step"], 3)
    res["ratios"] = ratios
    res["total_s"] = round(time.perf_counter() - t0, 1)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.json"), "w") as fh:
        json.dump(res, fh, indent=1, sort_keys=True)
    md = to_markdown(res)
    with open(os.path.join(a.out, "results.md"), "w") as fh:
        fh.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
