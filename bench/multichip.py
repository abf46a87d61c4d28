"""Multi-chip partition and inter-chip traffic of the TCJA DVS128 net at its real size (issue 16, item 6).

Builds the official TCJA DVS128 geometry as ``bench/exact_at_size.py`` does (2x128x128 input, five blocks of
Conv3x3(128)-BN-LIF-TCJA-MaxPool2, Linear 2048->512-LIF->110, VotingLayer(10), T = 20), makes every spiking
layer busy from data (``tests/busy_nets.make_busy``; ``--random``: untrained, nearly silent), lowers it as
``neurocomp compile --attention static`` does and maps it onto ``--target`` (default loihi2, 128 cores per
chip; ``--chips N`` as the CLI's), then counts the inter-chip spikes of ``--samples`` Bernoulli(0.15) samples
through the fixed-point reference (``metrics.ChipTraffic``, the count ``neurocomp report`` makes). Prints and
writes (``--json``) the partition (cores and layers per chip) and the traffic (per step mean / max, per
inference, by source layer, share of the routed spikes).

Usage: ``python bench/multichip.py [--samples 2] [--busy-iters 6] [--json bench/multichip.json]``
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "bench"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--calib", type=int, default=2, help="calibration (and busy-tuning) samples")
    ap.add_argument("--busy-iters", type=int, default=6)
    ap.add_argument("--random", action="store_true", help="untrained, as issue 16 measured it (not busy)")
    ap.add_argument("--target", default="loihi2")
    ap.add_argument("--chips", type=int, default=None)
    ap.add_argument("--seed", type=int, default=16)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    import torch
    from busy_nets import bernoulli, lower_for, make_busy
    from exact_at_size import build
    from neurocomp.metrics import ChipTraffic, layer_activity, per_inference_counts
    from neurocomp.passes.map_cores import chip_summary, map_cores
    from neurocomp.sim import run_fixed
    geo = argparse.Namespace(hw=128, blocks=5, width=128, hidden=512, classes=110, vote=10, T=20, seed=args.seed)
    shape, T = (2, 128, 128), 20
    out = {"args": vars(args), "phases": {}}

    def phase(name, fn):
        t0 = time.perf_counter()
        r = fn()
        out["phases"][name] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {out['phases'][name]} s", flush=True)
        return r

    xc = bernoulli(T, args.calib, shape, 0.15, seed=args.seed + 1000)
    x = bernoulli(T, args.samples, shape, 0.15, seed=args.seed + 2000)
    model = build(geo)
    if not args.random:
        out["busy_rates"] = phase("make_busy", lambda: make_busy(model, xc, rate=(0.1, 0.3), seed=args.seed,
                                                                 iters=args.busy_iters))
    q = phase("lower", lambda: lower_for(model, shape, T, "static", calib=xc))
    q = phase("map_cores", lambda: map_cores(q, args.target, max_chips=args.chips))
    mp = q.meta["mapping"]
    out["cores"], out["chips"] = mp["cores"], mp["chips"]
    out["cores_per_layer"] = {l["layer"]: l["cores"] for l in mp["layers"]}
    out["partition"] = chip_summary(mp)
    print(f"{mp['cores']} cores on {mp['chips']} chips of {mp['limits']['cores_per_chip']}", flush=True)
    for p in out["partition"]:
        print(f"  chip {p['chip']}: {p['cores']} cores: "
              + ", ".join(f"{e['layer']} ({e['cores']}{'' if e['whole'] else ', part'})" for e in p["layers"]))
    traffic = phase("traffic_setup", lambda: ChipTraffic(q, mp))
    ref = phase("reference", lambda: run_fixed(q, x))
    phase("count", lambda: traffic.add(ref.spikes))
    tr = traffic.result(args.samples, T)
    counts = per_inference_counts(layer_activity(q, x, ref.spikes), args.samples)
    tr["routed_spikes_per_inference"] = counts["routed_spikes"]
    tr["share_of_routed_spikes"] = tr["per_inference"] / counts["routed_spikes"] if counts["routed_spikes"] else None
    tr.pop("chip_pairs")
    out["traffic"] = tr
    out["reference_spikes"] = {k: int(v.sum()) for k, v in ref.spikes.items() if v.dtype == torch.bool}
    print(json.dumps({k: v for k, v in tr.items() if k != "per_step"}), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
