"""The fixed-point reference on CUDA equals the CPU run, spike for spike (issue 16 item 4).

For a GPU machine (the suite never needs one): compiles every zoo model (``--attention static``, and
``dynamic`` for the attention models), runs the fixed-point reference on the same test samples with
``device="cpu"`` and ``device="cuda"``, and compares the output and every recorded layer's spikes and
the activity statistics. Then the same for the issue's DVS128-shaped TCJA net (``--dvs``, built and made busy as
``bench/exact_at_size.py`` does, Bernoulli(0.15) inputs). Prints one line per model and
writes ``bench/device_check.json``; exits 1 on any difference, 2 where torch sees no GPU.

Usage: ``python bench/device_check.py [--samples 64] [--dvs] [--models digits_plain ...]``
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _same(a, b) -> list[str]:
    import torch
    bad = [] if torch.equal(a.output, b.output) else ["output"]
    bad += [k for k in a.spikes if not torch.equal(a.spikes[k], b.spikes[k].to(a.spikes[k].device))]
    return bad + ([] if a.stats == b.stats else ["stats"])


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def check_graph(name, q, x, rows):
    from neurocomp.sim import run_fixed
    a, t_cpu = _timed(lambda: run_fixed(q, x, device="cpu"))
    b, t_gpu = _timed(lambda: run_fixed(q, x, device="cuda"))
    diff = _same(a, b)
    rows.append({"model": name, "samples": int(x.shape[1]), "identical": not diff, "differs_in": diff,
                 "cpu_s": round(t_cpu, 3), "cuda_s": round(t_gpu, 3)})
    print(f"{name:28s} {'identical' if not diff else 'DIFFERS in ' + ', '.join(diff)}  "
          f"cpu {t_cpu:.2f} s  cuda {t_gpu:.2f} s", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument("--dvs", action="store_true", help="also the DVS128-shaped TCJA net (2x128x128, T=20)")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "device_check.json"))
    a = ap.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("error: torch sees no CUDA device here (hint: run this on a GPU machine)", file=sys.stderr)
        return 2
    import neurocomp
    from neurocomp.artifact import Artifact
    from neurocomp.data.registry import load_inputs
    models_dir = os.path.join(ROOT, "models")
    names = a.models or sorted(d for d in os.listdir(models_dir) if os.path.isfile(os.path.join(models_dir, d, "model.pt")))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            modes = ["static"] if name.endswith(("plain", "sew")) else ["static", "dynamic"]
            for mode in modes:
                out = os.path.join(tmp, f"{name}-{mode}")
                neurocomp.compile(os.path.join(models_dir, name, "model.pt"), out, attention=mode)
                art = Artifact(out)
                man = art.manifest
                xs, _ = load_inputs(man["dataset"], "test", man["timesteps"], man["encoding"], n=a.samples)
                check_graph(f"{name} ({mode})", art.fixed_graph, torch.as_tensor(xs), rows)
    if a.dvs:
        sys.path.insert(0, os.path.join(ROOT, "bench"))
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        import exact_at_size
        from busy_nets import bernoulli, lower_for, make_busy
        args = argparse.Namespace(hw=128, blocks=5, width=128, hidden=512, classes=110, vote=10, T=20, seed=16)
        shape = (2, args.hw, args.hw)
        model = exact_at_size.build(args)
        xc = bernoulli(args.T, 2, shape, 0.15, seed=args.seed + 1000)
        make_busy(model, xc, rate=(0.1, 0.3), seed=args.seed, iters=6)     # every layer fires, as in the bench
        q = lower_for(model, shape, args.T, "static", calib=xc)
        x = bernoulli(args.T, min(a.samples, 4), shape, 0.15, seed=args.seed + 2000)
        check_graph("TCJA DVS128 shape, busy (static)", q, x, rows)
    with open(a.json, "w") as fh:
        json.dump({"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": rows}, fh, indent=1)
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
