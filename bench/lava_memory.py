"""The Lava runtime's memory, measured against its estimate (issue 16, "Memory bounded by design").

For each net (zoo models and untrained ``neurocomp.nn.backbones`` nets, compiled once into ``--work``),
one child process loads the artifact's fixed graph, draws Bernoulli(0.15) inputs and runs Lava
``fixed_pt`` through ``bridge.lava_recording`` (where ``simulate`` / ``report`` start Lava), every layer
recorded, ``--workers`` shards; the parent samples the child's whole process tree every 0.1 s (PSS of
anonymous and shared memory, ``exact_at_size._pss``: page cache left out) and keeps the peak. The child
prints :func:`neurocomp.backends.lava.footprint.lava_bytes`'s estimate of the same run (what the runtime
adds, plus the child's own memory when Lava starts), so each row is measured against estimated.

Usage: ``python bench/lava_memory.py [--nets a,b] [--work /tmp/lavamem] [--json out.json]``
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
from exact_at_size import _pss, tree   # noqa: E402  the one measure of a process's memory, the one tree walk

# name: zoo model folder, or backbone spec; Lava samples; workers
NETS = {
    "digits_tcja": dict(zoo="digits_tcja", samples=64),    # enough steps for the 0.1 s watch to see the run
    "events_pfa": dict(zoo="events_pfa", samples=32),
    "digits_sew": dict(zoo="digits_sew", samples=64),
    "tcja_16": dict(kind="tcja", hw=16, channels=(4, 8), T=6, mode="static", samples=32),
    "tcja_16_w2": dict(kind="tcja", hw=16, channels=(4, 8), T=6, mode="static", samples=256, workers=2),
    "tcja_32": dict(kind="tcja", hw=32, channels=(32, 64, 128), T=16, mode="static", samples=2),
    "pfa_32_dynamic": dict(kind="pfa", hw=32, channels=(32, 64, 128), T=16, mode="dynamic", samples=2),
    "tcja_32_wide": dict(kind="tcja", hw=32, channels=(128, 128), T=16, mode="static", samples=4),
    "tcja_dvs128": dict(kind="tcja", hw=128, channels=(128,) * 5, hidden=512, classes=110, vote=10, T=20,
                        mode="static", samples=1),      # bench/scale.py's row (measured there: 3.83 GiB)
}


def _tree(root: int):
    """(anonymous + shared PSS in bytes, number of processes, shared PSS) of ``root`` and its descendants."""
    procs = tree(root)
    return sum(_pss(p, 0) for p in procs), len(procs), sum(_shmem(p) for p in procs)


def _shmem(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            return next((int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("Pss_Shmem")), 0)
    except OSError:
        return 0


def compile_net(name, spec, work) -> str:
    art = os.path.join(work, name.replace("_w2", ""), "art")
    if os.path.isdir(art):
        return art
    os.makedirs(os.path.dirname(art), exist_ok=True)
    if "zoo" in spec:
        from neurocomp.api import compile as nc_compile
        nc_compile(os.path.join(ROOT, "models", spec["zoo"], "model.pt"), art, calib_samples=16)
    else:
        from scale import phase_compile
        phase_compile(dict(dict(hidden=0, classes=11), **spec), os.path.dirname(art), 2)
    return art


def phase_run(art, samples, workers) -> dict:
    import torch
    from neurocomp.artifact import Artifact
    from neurocomp.backends.lava import footprint
    from neurocomp.backends.lava.bridge import lava_recording
    g = Artifact(art).fixed_graph
    T = int(g.meta["timesteps"])
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand((T, samples) + tuple(g.input_node.out_shape), generator=gen) < 0.15).float()
    est = footprint.lava_bytes(g, samples, workers=workers)
    t0 = time.perf_counter()
    with lava_recording(g, x, workers=workers) as rec:
        rec.spikes(slice(0, 1))
    return {"estimate_added": est.added, "estimate_tree": est.tree, "own": est.own, "processes": est.processes,
            "largest": est.largest, "estimate_channels": est.channels, "lava_s": round(time.perf_counter() - t0, 2)}


def measure(name, spec, work) -> dict:
    art = compile_net(name, spec, work)
    cmd = [sys.executable, os.path.abspath(__file__), "--phase-run", art, str(spec["samples"]),
           str(spec.get("workers", 1))]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    peak, procs, shm = 0, 0, 0
    while p.poll() is None:
        b, n, sh = _tree(p.pid)
        if b > peak:
            peak, procs, shm = b, n, sh
        time.sleep(0.1)
    out = [ln for ln in p.stdout.read().splitlines() if ln.startswith("{")]
    if p.returncode or not out:
        return {"net": name, "error": f"exit {p.returncode}"}
    res = json.loads(out[-1])
    res.update(net=name, samples=spec["samples"], workers=spec.get("workers", 1), measured_peak=peak,
               measured_processes=procs, measured_shmem=shm, ratio=round(res["estimate_tree"] / peak, 2))
    return res


def _mib(r, k) -> str:
    return f"{r[k] / 2**20:.0f} MiB" if k in r else "-"


def _row(r, md=False) -> str:
    if "error" in r:
        return f"| {r['net']} | {r['error']} |" if md else f"{r['net']}: {r['error']}"
    if not md:
        return (f"{r['net']}: measured {_mib(r, 'measured_peak')} ({r['measured_processes']} processes), estimated "
                f"{_mib(r, 'estimate_tree')} (own {_mib(r, 'own')} + added {_mib(r, 'estimate_added')}; "
                f"{r['processes']} processes); shared memory measured {_mib(r, 'measured_shmem')}, estimated "
                f"{_mib(r, 'estimate_channels')}; estimated / measured {r['ratio']}")
    return (f"| {r['net']} | {r['samples']} | {r['workers']} | {_mib(r, 'measured_peak')} | {_mib(r, 'estimate_tree')} "
            f"({_mib(r, 'own')} + {_mib(r, 'estimate_added')}) | {r['ratio']} | {r['measured_processes']} / "
            f"{r['processes'] + 1} | {_mib(r, 'measured_shmem')} / {_mib(r, 'estimate_channels')} | "
            f"`python bench/lava_memory.py --nets {r['net']}` |")


SCALE_DVS128_GIB = 3.83      # bench/scale.py's Lava tree peak of the DVS128 TCJA net, 1 sample (2026-12-02)


def markdown(rows) -> str:
    out = ["Lava runtime memory: the measured peak of the process tree (PSS of anonymous + shared memory, sampled "
           "every 0.1 s) against `neurocomp.backends.lava.footprint.lava_bytes` (the child's own memory when Lava "
           "starts + what the run adds). `python bench/lava_memory.py --json bench/lava_memory.json`.", "",
           "| net | samples | workers | measured tree peak | estimated (own + added) | estimated / measured "
           "| processes (measured / estimated) | shared memory (measured / estimated) | command |",
           "|---|---|---|---|---|---|---|---|---|"]
    out += [_row(r, md=True) for r in rows]
    dvs = next((r for r in rows if r.get("net") == "tcja_dvs128" and "estimate_tree" in r), None)
    if dvs:
        out += ["", f"The DVS128 TCJA net (1 sample) measured {SCALE_DVS128_GIB} GiB in `bench/scale.py`: the "
                    f"estimate, {dvs['estimate_tree'] / 2**30:.2f} GiB, is "
                    f"{dvs['estimate_tree'] / (SCALE_DVS128_GIB * 2**30):.2f}x that."]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default=",".join(NETS))
    ap.add_argument("--work", default="/tmp/lavamem")
    ap.add_argument("--json", default=None)
    ap.add_argument("--phase-run", nargs=3, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.phase_run:
        print(json.dumps(phase_run(a.phase_run[0], int(a.phase_run[1]), int(a.phase_run[2]))), flush=True)
        return 0
    rows = []
    for name in a.nets.split(","):
        r = measure(name, NETS[name], a.work)
        rows.append(r)
        print(_row(r), flush=True)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(rows, fh, indent=1)
        with open(os.path.splitext(a.json)[0] + ".md", "w") as fh:
            fh.write(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
