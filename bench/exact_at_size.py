"""Lava == fixed-point reference on the TCJA DVS128 net at its real size (issue 16, "Exact at size").

Builds the official TCJA DVS128 geometry from ``neurocomp.nn.backbones`` (2x128x128 input, five blocks of
Conv3x3(128)-BN-LIF-TCJA-MaxPool2, Linear 2048->512-LIF->110 and a VotingLayer(10), T = 20), either as
issue 16 measured it (``--random``: untrained weights and BatchNorm, nearly silent after its first layer)
or with every spiking layer made busy from data (``tests/busy_nets.make_busy``, the default), lowers it
as ``neurocomp compile --attention MODE`` does, and runs Bernoulli(0.15) samples through the fixed-point
reference and (unless ``--no-lava``) Lava ``fixed_pt``, printing per layer the reference's spike count and
Lava's mismatches (total, reference-only, Lava-only; for the first diverging layer the channels and steps),
the wall time of each phase and the peak memory of the whole process tree.

A watchdog samples the tree's resident memory every 0.5 s and stops the run (exit 3, one line) when the
machine's available memory falls below ``--min-available`` GiB. Smaller geometries for a quick look:
``--hw 32 --blocks 5`` (a 1x1 map after five pools) or ``--hw 8 --blocks 3``.

Usage: ``python bench/exact_at_size.py [--hw 128] [--blocks 5] [--samples 1] [--random] [--mode static]``
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))      # busy_nets: the suite's busy-network tooling


def _available_gib() -> float:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return float("inf")


_ROLLUP = os.path.exists("/proc/self/smaps_rollup")


def _pss(pid: int, rss: int) -> int:
    """Proportional set size of the memory a process holds (anonymous and shared memory, shared pages split
    between the forked Lava processes); the RSS only where the kernel has no ``smaps_rollup``. File-backed
    pages (libraries, the memory-mapped recording) are left out: they are page cache the kernel can drop,
    and counting them made the forked Lava processes of the DVS128 net look like 14.5 GiB while
    MemAvailable fell by 3.0 GiB (measured). A process whose rollup cannot be read any more has exited, or
    is exiting, since ``rss`` was read: it counts 0. Counting its RSS instead (which holds every shared
    page in full) made the 30 Lava workers of the 128x128 PFA nets, exiting together at the end of the run,
    look like 16.3 and 38.5 GiB on a 23.5 GiB machine, and the bench stopped runs that fit."""
    if not _ROLLUP:
        return rss
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            fields = dict(line.split()[:2] for line in fh if line.startswith(("Pss", "Rss")))
        fields = {k.rstrip(":"): int(v) for k, v in fields.items()}
    except (OSError, ValueError):
        return 0
    if "Pss_Anon" in fields:
        return (fields["Pss_Anon"] + fields.get("Pss_Shmem", 0)) * 1024
    return fields.get("Pss", 0) * 1024          # no memory map (a kernel thread, a zombie): 0


def tree(root: int) -> dict:
    """``{pid: RSS in bytes}`` of ``root`` and all its descendants (from /proc): the one walk of a process
    tree the benchmarks and the Lava-memory test measure with."""
    parent, rss = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            parent[int(d)] = int(fields[1])
            rss[int(d)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        if p in out or p not in rss:
            continue
        out[p] = rss[p]
        todo += [c for c, pp in parent.items() if pp == p]
    return out


def _tree_rss_gib(root: int) -> float:
    """Memory (PSS: anonymous and shared, :func:`_pss`) of ``root`` and all its descendants."""
    return sum(_pss(p, r) for p, r in tree(root).items()) / 2**30


class Watchdog(threading.Thread):
    def __init__(self, min_available: float):
        super().__init__(daemon=True)
        self.min_available, self.peak, self.stop = min_available, 0.0, False
        self.start_available = self.lowest_available = _available_gib()

    def run(self):
        me = os.getpid()
        while not self.stop:
            self.peak = max(self.peak, _tree_rss_gib(me))
            avail = _available_gib()
            self.lowest_available = min(self.lowest_available, avail)
            if avail < self.min_available:
                print(f"error: available memory {avail:.1f} GiB < {self.min_available} GiB (tree peak "
                      f"{self.peak:.1f} GiB): run stopped", flush=True)
                os.killpg(os.getpgid(me), signal.SIGTERM) if os.getpgid(me) == me else os.kill(me, signal.SIGTERM)
                return
            time.sleep(0.5)


def build(args):
    import torch
    from spikingjelly.activation_based import functional, layer
    from neurocomp.nn import backbones
    torch.manual_seed(args.seed)
    model = backbones.build("tcja", T=args.T, in_channels=2, input_hw=args.hw, channels=(args.width,) * args.blocks,
                            hidden=args.hidden, num_classes=args.classes)
    if args.vote:
        model.append(layer.VotingLayer(args.vote, step_mode="m"))
    functional.set_step_mode(model, "m")
    return model.eval()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hw", type=int, default=128)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--classes", type=int, default=110)
    ap.add_argument("--vote", type=int, default=10)
    ap.add_argument("--T", type=int, default=20)
    ap.add_argument("--mode", default="static", choices=["static", "portable", "dynamic"])
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--calib", type=int, default=2, help="calibration (and busy-tuning) samples")
    ap.add_argument("--busy-iters", type=int, default=10)
    ap.add_argument("--random", action="store_true", help="untrained, as issue 16 measured it (not busy)")
    ap.add_argument("--no-lava", action="store_true", help="the reference only")
    ap.add_argument("--random-reference-first", action="store_true",
                    help="first the untrained net through the reference only (its spike counts per layer)")
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--min-available", type=float, default=3.0, help="GiB of MemAvailable to keep")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    dog = Watchdog(args.min_available)
    dog.start()
    import torch
    from busy_nets import bernoulli, lower_for, make_busy
    shape = (2, args.hw, args.hw)
    out = {"args": vars(args), "phases": {}}

    def phase(name, fn):
        t0 = time.perf_counter()
        r = fn()
        out["phases"][name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {out['phases'][name]} s (tree peak {dog.peak:.1f} GiB)", flush=True)
        return r

    xc = bernoulli(args.T, args.calib, shape, 0.15, seed=args.seed + 1000)
    x = bernoulli(args.T, args.samples, shape, 0.15, seed=args.seed + 2000)
    from neurocomp.sim import run_fixed
    if args.random_reference_first:
        q0 = phase("lower_random", lambda: lower_for(build(args), shape, args.T, args.mode, calib=xc))
        r0 = phase("reference_random", lambda: run_fixed(q0, x))
        out["random_reference_spikes"] = {k: int(v.sum()) for k, v in r0.spikes.items() if v.dtype == torch.bool}
        print("untrained net, reference spikes per layer:", out["random_reference_spikes"], flush=True)
        del q0, r0
    model = phase("build", lambda: build(args))
    if not args.random:
        out["busy_rates"] = phase("make_busy", lambda: make_busy(model, xc, rate=(0.1, 0.3), seed=args.seed,
                                                                 iters=args.busy_iters))
    q = phase("lower", lambda: lower_for(model, shape, args.T, args.mode, calib=xc))
    ref = phase("reference", lambda: run_fixed(q, x))
    layers = {}
    for name, s in ref.spikes.items():
        layers[name] = {"reference_spikes": int(s.sum()) if s.dtype == torch.bool else None,
                        "compared": int(s.numel())}
    if not args.no_lava:
        from neurocomp.backends.lava import run_lava
        lava = phase("lava", lambda: run_lava(q, x))
        first = None
        for name, a in ref.spikes.items():
            b = lava.spikes[name]
            if a.dtype == torch.bool:
                a, b = a.bool(), b.bool()
                layers[name].update(reference_only=int((a & ~b).sum()), lava_only=int((~a & b).sum()))
            d = a != b                      # a readout's values compared as values
            layers[name]["mismatches"] = int(d.sum())
            if d.any() and first is None:
                first = name
                idx = d.nonzero()
                layers[name]["where"] = {"steps": sorted(set(idx[:, 0].tolist())),
                                         "channels": sorted(set(idx[:, 2].tolist())) if idx.shape[1] > 2 else None}
        out["first_diverging_layer"] = first
        out["exact"] = first is None
    dog.stop = True
    out["layers"] = layers
    out["peak_tree_pss_gib"] = round(dog.peak, 2)
    out["available_gib_at_start_and_lowest"] = [round(dog.start_available, 1), round(dog.lowest_available, 1)]
    for name, v in layers.items():
        print(name, v, flush=True)
    print(json.dumps({k: v for k, v in out.items() if k != "layers"}), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0 if out.get("exact", True) else 1


if __name__ == "__main__":
    sys.exit(main())
