"""The scale section of the benchmarks (issue 16 item 8): what a net costs as it grows to the seeds' sizes.

For each net of issue 16's table (untrained ``neurocomp.nn.backbones`` nets of those shapes, random
weights seeded, Bernoulli(0.15) inputs) plus MA-SNN and PFA at 2x128x128:

- compile: wall time (32 calibration samples, ``neurocomp.compile --attention MODE --calib FILE.npy``),
  peak memory, cores and chips of the mapping, neurons; calibration's forward passes alone in samples/s;
- the fixed-point reference simulator: samples/s over ``ref`` samples (``--device``, default auto), peak memory;
- Lava ``fixed_pt``: samples/s over ``lava`` samples, peak memory of the runtime's process tree, and whether
  Lava equals the reference on every layer and step of those samples;
- the ratio of the two throughputs.

Every phase runs in its own child process (``scale.py --phase ...``, one JSON line), so its peak is its own:
``ru_maxrss`` of the child and of its largest child (Lava's workers), and the process tree's proportional
set size sampled every 0.5 s by the parent. The parent stops a phase whose tree exceeds ``--max-memory``
(default: MemAvailable at start minus 3 GiB), or that runs past ``--timeout``, and the children run under
``NEUROCOMP_MAX_MEMORY`` at that limit, so neurocomp's own guard refuses a job it can size before allocating
it. A net that fails (a refusal, a crash, the memory limit, the timeout) is a row with its one-line error;
the bench goes on.

Writes ``scale.json``, ``scale.md`` and ``scale.png`` (cost against the number of neurons, log-log) into
``--out`` (``scale_quick.*`` with ``--quick``).

Usage: ``python bench/scale.py [--nets a,b] [--device auto] [--max-memory 12G] [--quick]``. ``make bench``
runs every net (the 2x128x128 ones on 4 reference samples and 1 Lava sample, their calibration rate timed
on 4 of the 32 samples); ``make bench-scale`` runs them alone. The reference phase runs at the batch
``simulate --backend reference`` chooses (``neurocomp.memory.plan_batch`` on ``sim.footprint``'s estimate). ``--quick`` checks
the code path on the two smallest nets with a handful of samples (its figures are no benchmark).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))      # busy_nets (--busy): the suite's busy-network tooling
from exact_at_size import _available_gib, _tree_rss_gib   # noqa: E402  the tree's memory, one home

P_INPUT = 0.15
CALIB = 32
# name: backbone, input hw, channels per block, hidden, classes, vote, T, attention mode, reference and Lava samples
NETS = {
    "tcja_32": dict(kind="tcja", hw=32, channels=(32, 64, 128), hidden=0, classes=11, T=16, mode="static",
                    ref=64, lava=2, small=True),
    "pfa_32_static": dict(kind="pfa", hw=32, channels=(32, 64, 128), hidden=0, classes=11, T=16, mode="static",
                          ref=64, lava=2, small=True),
    "pfa_32_dynamic": dict(kind="pfa", hw=32, channels=(32, 64, 128), hidden=0, classes=11, T=16, mode="dynamic",
                           ref=64, lava=2, small=True),
    "tcja_64": dict(kind="tcja", hw=64, channels=(32, 64, 128, 128), hidden=256, classes=11, T=16, mode="static",
                    ref=64, lava=2, small=True),
    "tcja_dvs128": dict(kind="tcja", hw=128, channels=(128,) * 5, hidden=512, classes=110, vote=10, T=20,
                        mode="static", ref=4, lava=1, rate=4),
    "ma_128": dict(kind="ma", hw=128, channels=(128,) * 5, hidden=512, classes=11, T=20, mode="static",
                   ref=4, lava=1, rate=4),
    "pfa_128_static": dict(kind="pfa", hw=128, channels=(128,) * 5, hidden=512, classes=11, T=20, mode="static",
                           ref=4, lava=1, rate=4),
    "pfa_128_dynamic": dict(kind="pfa", hw=128, channels=(128,) * 5, hidden=512, classes=11, T=20, mode="dynamic",
                            ref=4, lava=1, rate=4),
}
QUICK = {"nets": ("tcja_32", "pfa_32_dynamic"), "ref": 4, "lava": 1, "calib": 4}


def describe(spec) -> str:
    kind = {"tcja": "TCJA", "ma": "MA-SNN", "pfa": "PFA"}[spec["kind"]]
    head = f" + hidden {spec['hidden']}" if spec["hidden"] else ""
    vote = f", vote {spec['vote']}" if spec.get("vote") else ""
    return (f"{kind} 2x{spec['hw']}x{spec['hw']}, {len(spec['channels'])} blocks "
            f"({'/'.join(map(str, spec['channels']))}){head}{vote}, T={spec['T']}, {spec['mode']}")


# ----------------------------------------------------------------------------------------------
# phases: each in a child process (`scale.py --phase NAME --net NET --work DIR`), one JSON line out
# ----------------------------------------------------------------------------------------------
def _peak():
    return {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
            "peak_child_rss_gib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20, 3)}


def _inputs(spec, n, seed):
    import torch
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand((spec["T"], n, 2, spec["hw"], spec["hw"]), generator=gen) < P_INPUT).float()


def phase_compile(spec, work, calib, busy_iters=0):
    import numpy as np
    import torch
    from spikingjelly.activation_based import functional, layer
    from neurocomp.api import compile as nc_compile
    from neurocomp.artifact import Artifact
    from neurocomp.frontends.attention import attention_modules, calibrate
    from neurocomp.frontends.checkpoint import save_checkpoint
    from neurocomp.nn import backbones
    torch.manual_seed(16)
    model = backbones.build(spec["kind"], T=spec["T"], in_channels=2, input_hw=spec["hw"],
                            channels=tuple(spec["channels"]), hidden=spec["hidden"], num_classes=spec["classes"])
    if spec.get("vote"):
        model.append(layer.VotingLayer(spec["vote"], step_mode="m"))
    functional.set_step_mode(model, "m")
    model.eval()
    xc = _inputs(spec, calib, seed=1)
    out = {}
    if busy_iters:                        # every spiking layer set from data to fire at 10-30 %
        from busy_nets import make_busy
        t0 = time.perf_counter()
        rates = make_busy(model, xc, rate=(0.1, 0.3), seed=16, iters=busy_iters)
        out.update(make_busy_s=round(time.perf_counter() - t0, 1),
                   busy_rates=[round(min(rates.values()), 3), round(max(rates.values()), 3)])
    ckpt = save_checkpoint(model, os.path.join(work, "model.pt"), input_shape=(2, spec["hw"], spec["hw"]),
                           timesteps=spec["T"], encoding="bernoulli")
    npy = os.path.join(work, "calib.npy")
    np.save(npy, xc.numpy().swapaxes(0, 1).astype(np.uint8))
    if attention_modules(model):          # calibration's forward passes alone (compile repeats them)
        rate_n = min(calib, spec.get("rate", calib))       # the largest nets: on a few of the samples
        t0 = time.perf_counter()
        calibrate(model, xc[:, :rate_n])
        out["calibration_samples_per_s"] = round(rate_n / (time.perf_counter() - t0), 2)
        out["calibration_rate_samples"] = rate_n
    t0 = time.perf_counter()
    path = nc_compile(ckpt, os.path.join(work, "art"), attention=spec["mode"], calib=npy)
    out["compile_s"] = round(time.perf_counter() - t0, 2)
    art = Artifact(path)
    mp = art.manifest.get("mapping") or {}
    out.update(cores=mp.get("cores"), chips=mp.get("chips"),
               neurons=int(sum(int(np.prod(n.out_shape)) for n in art.fixed_graph.neurons())))
    return {**out, **_peak()}


def phase_reference(spec, work, n, device):
    import torch
    from neurocomp import devices, memory
    from neurocomp.artifact import Artifact
    from neurocomp.sim import run_fixed
    from neurocomp.sim.footprint import walk_bytes
    g = Artifact(os.path.join(work, "art")).fixed_graph
    dev = devices.resolve(device)
    x = _inputs(spec, n, seed=2)
    run_fixed(g, x[:, :1], device=dev)                       # warm-up (allocator, kernels)
    # the batch `simulate --backend reference` would choose (its memory plan, at most 64 samples at a time)
    batch = memory.plan_batch(walk_bytes(g, "fixed", spec["T"]), n, default=64, what="the bench's reference run")
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        run_fixed(g, x[:, i:i + batch], device=dev)
    wall = time.perf_counter() - t0
    return {"samples": n, "batch": batch, "device": str(dev), "wall_s": round(wall, 2),
            "samples_per_s": round(n / wall, 3), "torch_threads": torch.get_num_threads(), **_peak()}


def phase_lava(spec, work, n, device):
    import torch
    from neurocomp.artifact import Artifact
    from neurocomp.backends.lava import run_lava
    from neurocomp.sim import run_fixed
    g = Artifact(os.path.join(work, "art")).fixed_graph
    x = _inputs(spec, n, seed=2)
    t0 = time.perf_counter()
    lav = run_lava(g, x)
    wall = time.perf_counter() - t0
    ref = run_fixed(g, x, device=device)
    mism = {k: int((ref.spikes[k] != lav.spikes[k]).sum()) for k in lav.spikes}
    first = next((k for k, v in mism.items() if v), None)
    return {"samples": n, "wall_s": round(wall, 2), "samples_per_s": round(n / wall, 4),
            "equals_reference": first is None, "mismatches": sum(mism.values()), "first_diverging_layer": first,
            "reference_spikes": int(sum(int(v.to(torch.int64).abs().sum()) for v in ref.spikes.values())),
            **_peak()}


# ----------------------------------------------------------------------------------------------
# orchestration
# ----------------------------------------------------------------------------------------------
def _child(args, limit_gib, timeout):
    """One phase in a child process (its own session), its tree's memory watched; the phase's JSON, or
    ``{"ok": False, "error": one line}``."""
    cmd = [sys.executable, os.path.abspath(__file__)] + args
    env = {**os.environ, "NEUROCOMP_MAX_MEMORY": os.environ.get("NEUROCOMP_MAX_MEMORY", f"{limit_gib:.2f}G")}
    t0 = time.perf_counter()
    peak, stopped = 0.0, None
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=ROOT, env=env, start_new_session=True)
        while p.poll() is None:
            peak = max(peak, _tree_rss_gib(p.pid))
            if peak > limit_gib:
                stopped = f"stopped: its processes held {peak:.1f} GiB, above the bench's limit {limit_gib:.1f} GiB"
            elif time.perf_counter() - t0 > timeout:
                stopped = f"stopped after {timeout:.0f} s (--timeout)"
            if stopped:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                break
            time.sleep(0.5)
        out.seek(0)
        err.seek(0)
        lines = [ln for ln in out.read().splitlines() if ln.startswith("{")]
        tail = (err.read().strip().splitlines() or ["(no output)"])[-1]
    wall = round(time.perf_counter() - t0, 1)
    if stopped:
        return {"ok": False, "error": stopped, "process_s": wall, "tree_peak_gib": round(peak, 2)}
    if p.returncode != 0 or not lines:
        return {"ok": False, "error": f"exit {p.returncode}: {tail[:300]}", "process_s": wall,
                "tree_peak_gib": round(peak, 2)}
    res = json.loads(lines[-1])
    res.setdefault("ok", True)
    res.update(process_s=wall, tree_peak_gib=round(peak, 2))
    return res


def measure_net(name, spec, a, limit_gib) -> dict:
    work = tempfile.mkdtemp(prefix=f"nc-scale-{name}-")
    base = ["--net", name, "--work", work] + (["--quick"] if a.quick else []) + \
        (["--calib", str(a.calib)] if a.calib else []) + (["--busy", str(a.busy)] if a.busy else [])
    row = {"net": name, "description": describe(spec), **{k: spec[k] for k in ("ref", "lava")}}
    if a.quick:
        row.update(ref=QUICK["ref"], lava=QUICK["lava"])
    try:
        print(f"{name}: {row['description']}", flush=True)
        row["compile"] = c = _child(["--phase", "compile"] + base, limit_gib, a.timeout)
        print(f"  compile {json.dumps(c)}", flush=True)
        if c.get("ok"):
            row["reference"] = r = _child(["--phase", "reference", "--device", a.device] + base, limit_gib, a.timeout)
            print(f"  reference {json.dumps(r)}", flush=True)
            if row["lava"]:
                row["lava_run"] = lv = _child(["--phase", "lava", "--device", a.device] + base, limit_gib, a.timeout)
                print(f"  lava {json.dumps(lv)}", flush=True)
                if r.get("ok") and lv.get("ok"):
                    row["reference_over_lava"] = round(r["samples_per_s"] / lv["samples_per_s"], 1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return row


def _cell(r, key, fmt="{}"):
    if not r or not r.get("ok") or r.get(key) is None:
        return "–"
    return fmt.format(r[key])


def _peak_gib(r):
    if not r or not r.get("ok"):
        return "–"
    return f"{max(r.get('peak_rss_gib', 0), r.get('peak_child_rss_gib', 0), r.get('tree_peak_gib', 0)):.2f}"


def to_markdown(res) -> str:
    m = res["machine"]
    out = [f"# neurocomp scale benchmark ({res['date']})", "",
           f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; torch {m['torch']}, lava-nc "
           f"{m['lava-nc']}; reference device {res['device']}; memory limit {res['max_memory_gib']:.1f} GiB; load average "
           f"{res['load_average_start'][0]} at the start, {res['load_average_end'][0]} at the end.  ",
           f"Command: `{res['command']}` ({res['total_s']:.0f} s in all)."
           + (" **--quick: a check of the code path, not a benchmark.**" if res["quick"] else ""), "",
           ("Nets of the given shapes made busy (every spiking layer set from the calibration samples to fire at "
            f"10-30 %, {res['busy_iters']} bisection steps per layer)" if res.get("busy_iters") else
            "Untrained nets of the given shapes (nearly silent after their first layer)")
           + ", random weights (seed 16), Bernoulli(0.15) inputs; compile with "
           f"{res['calib']} calibration samples. Peak memory: the largest of the phase process's and its "
           "largest child's maximum RSS and the tree's sampled PSS.", "",
           "| net | compile (s) | compile peak (GiB) | calibration (samples/s) | cores / chips | neurons | "
           "reference (samples/s) | reference peak (GiB) | Lava (samples/s) | Lava peak (GiB) | reference / Lava "
           "| Lava = reference |",
           "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for row in res["nets"]:
        c, r, lv = row.get("compile"), row.get("reference"), row.get("lava_run")
        if not c.get("ok"):
            out.append(f"| {row['description']} | **fails**: {c.get('error', '')[:200]} | | | | | | | | | | |")
            continue
        eq = "–" if not lv or not lv.get("ok") else "yes" if lv["equals_reference"] else \
            f"**no**: {lv['mismatches']} spikes, first in {lv['first_diverging_layer']}"
        if lv and lv.get("ok"):           # a silent net's "yes" proves nothing: show what was compared
            eq += f" ({lv.get('reference_spikes')} reference spikes)"
        err = [f"{k}: {x.get('error')}" for k, x in (("reference", r), ("Lava", lv)) if x and not x.get("ok")]
        out.append(f"| {row['description']} | {c['compile_s']} | {_peak_gib(c)} | "
                   f"{_cell(c, 'calibration_samples_per_s')} | {c.get('cores')} / {c.get('chips')} | "
                   f"{c.get('neurons')} | "
                   f"{_cell(r, 'samples_per_s')} ({row['ref']}) | {_peak_gib(r)} | "
                   f"{_cell(lv, 'samples_per_s')} ({row['lava']}) | {_peak_gib(lv)} | "
                   f"{row.get('reference_over_lava', '–')} | {eq}{'; ' + '; '.join(err) if err else ''} |")
    out += ["", "Figures in parentheses: samples measured (the calibration rate of the 2x128x128 nets: on 4 of "
            "the calibration samples; compile calibrates on all of them). Plot: `scale.png` (cost against neurons).",
            ""]
    return "\n".join(out)


def plot(res, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [r for r in res["nets"] if r["compile"].get("ok")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    series = [("compile (s)", lambda r: r["compile"].get("compile_s"), axes[0]),
              ("reference (s per sample)", lambda r: 1 / r["reference"]["samples_per_s"]
               if (r.get("reference") or {}).get("ok") else None, axes[0]),
              ("Lava (s per sample)", lambda r: 1 / r["lava_run"]["samples_per_s"]
               if (r.get("lava_run") or {}).get("ok") else None, axes[0]),
              ("compile peak (GiB)", lambda r: float(_peak_gib(r["compile"])), axes[1]),
              ("reference peak (GiB)", lambda r: float(_peak_gib(r["reference"]))
               if (r.get("reference") or {}).get("ok") else None, axes[1]),
              ("Lava peak (GiB)", lambda r: float(_peak_gib(r["lava_run"]))
               if (r.get("lava_run") or {}).get("ok") else None, axes[1])]
    for label, fn, ax in series:
        pts = sorted((r["compile"]["neurons"], fn(r)) for r in rows if fn(r))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    for r in rows:                                   # name each net once, at its compile time
        axes[0].annotate(r["net"], (r["compile"]["neurons"], r["compile"]["compile_s"]), fontsize=7,
                         textcoords="offset points", xytext=(3, 3))
    for ax, title in zip(axes, ("time", "peak memory")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("neurons of the compiled net")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(("--quick check: " if res["quick"] else "") + "cost against size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=["compile", "reference", "lava"])
    ap.add_argument("--net", help="(a phase) the net")
    ap.add_argument("--work", help="(a phase) the net's working folder")
    ap.add_argument("--nets", help="comma-separated names, or 'small' (default: all): " + ", ".join(NETS))
    ap.add_argument("--device", default="auto", help="reference simulator: cpu, cuda or auto (default)")
    ap.add_argument("--max-memory", help="stop a phase whose processes hold more (default: MemAvailable - 3 GiB)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per phase (default 900)")
    ap.add_argument("--quick", action="store_true", help=f"the nets {', '.join(QUICK['nets'])} with "
                    f"{QUICK['ref']} reference / {QUICK['lava']} Lava / {QUICK['calib']} calibration samples")
    ap.add_argument("--calib", type=int, help=f"calibration samples of compile (default {CALIB}; --quick: "
                    f"{QUICK['calib']})")
    ap.add_argument("--busy", type=int, default=0, metavar="ITERS",
                    help="make every spiking layer fire at 10-30 %% first (tests/busy_nets.make_busy on the "
                         "calibration samples, ITERS bisection steps per layer); default: untrained, nearly silent")
    ap.add_argument("--out", default=HERE)
    a = ap.parse_args(argv)
    if a.phase:
        spec = NETS[a.net]
        q = a.quick
        if a.phase == "compile":
            res = phase_compile(spec, a.work, a.calib or (QUICK["calib"] if q else CALIB), a.busy)
        elif a.phase == "reference":
            res = phase_reference(spec, a.work, QUICK["ref"] if q else spec["ref"], a.device)
        else:
            res = phase_lava(spec, a.work, QUICK["lava"] if q else spec["lava"], a.device)
        print(json.dumps(res))
        return 0
    from neurocomp import devices
    from neurocomp.memory import parse_size
    from run import machine                      # the benchmarks' one machine description
    devices.resolve(a.device)                    # --device cuda without CUDA: refused now
    names = list(QUICK["nets"]) if a.quick else \
        [n for n, s in NETS.items() if s.get("small")] if a.nets == "small" else \
        a.nets.split(",") if a.nets else list(NETS)
    unknown = [n for n in names if n not in NETS]
    if unknown:
        ap.error(f"unknown nets {unknown}; choose from {', '.join(NETS)}")
    limit = parse_size(a.max_memory) / 2**30 if a.max_memory else max(1.0, _available_gib() - 3.0)
    t0 = time.perf_counter()
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "quick": a.quick, "device": a.device,
           "load_average_start": [round(v, 1) for v in os.getloadavg()],
           "max_memory_gib": round(limit, 2), "calib": a.calib or (QUICK["calib"] if a.quick else CALIB),
           "busy_iters": a.busy,
           "command": "python bench/scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "nets": [measure_net(n, NETS[n], a, limit) for n in names]}
    res["total_s"] = round(time.perf_counter() - t0, 1)
    res["load_average_end"] = [round(v, 1) for v in os.getloadavg()]
    stem = "scale_quick" if a.quick else "scale"
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, stem + ".json"), "w") as fh:
        json.dump(res, fh, indent=1, sort_keys=True)
    md = to_markdown(res)
    with open(os.path.join(a.out, stem + ".md"), "w") as fh:
        fh.write(md)
    plot(res, os.path.join(a.out, stem + ".png"))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
