"""Measure every zoo attention model in every attention mode (the table in the README / cards).

    python bench/attention_modes.py [--lava-samples 50] [--out bench/attention_modes]

Per model and mode: float accuracy of the original model, of the static-attention model, of the
fixed-point reference (whole test split, reference simulator), Lava accuracy and Lava-vs-reference
exact match on the first --lava-samples test samples, the attention fold errors and calibration
statistics. Writes ``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--lava-samples", type=int, default=50)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "attention_modes"))
    p.add_argument("--modes", default="static,portable,dynamic")
    a = p.parse_args(argv)
    from neurocomp._quiet import import_spikingjelly
    import_spikingjelly()
    from neurocomp.api import compile as compile_, simulate
    rows = []
    models = sorted(m for m in glob.glob(os.path.join(ROOT, "models", "*", "model.pt")) if "plain" not in m)
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            name = os.path.basename(os.path.dirname(model))
            for mode in a.modes.split(","):
                if mode == "dynamic" and not name.endswith("_ma"):
                    continue          # dynamic mode covers MA-SNN's current maps only
                t0 = time.time()
                art = compile_(model, os.path.join(tmp, f"{name}-{mode}"), attention=mode)
                ref = simulate(art, backend="reference", progress=False)
                lav = simulate(art, backend="lava", samples=a.lava_samples, progress=False)
                man = json.load(open(os.path.join(art, "manifest.json")))
                folds = [r for q in man["passes"] if q["pass"] == "fold_attention" for r in q["maps"]]
                rows.append({"model": name, "mode": mode, "samples": ref["samples"],
                             "float": ref["accuracy"]["float_torch"],
                             "static_float": ref["accuracy"].get("float_static_attention"),
                             "fixed": ref["accuracy"]["fixed_reference"],
                             "same_class_fixed_vs_float": ref["same_class"]["fixed_reference_vs_float"],
                             "lava_samples": lav["samples"], "lava": lav["accuracy"]["lava"],
                             "lava_exact": lav["exact_match_fraction"],
                             "latency_steps": man["alignment"]["depth"],
                             "max_fold_error": max([r.get("error") or 0.0 for r in folds] or [0.0]),
                             "warnings": [s["warning"] for s in man["attention"]["maps"].values() if s.get("warning")],
                             "wall_s": time.time() - t0})
                print(json.dumps(rows[-1]), flush=True)
    with open(a.out + ".json", "w") as fh:
        json.dump(rows, fh, indent=1)
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    lines = ["| model | mode | float | static float | fixed (ref.) | Lava (first N) | Lava = ref. | latency (steps) | max fold error |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['mode']} | {pct(r['float'])} | {pct(r['static_float'])} | {pct(r['fixed'])} "
                     f"| {pct(r['lava'])} (N={r['lava_samples']}) | {pct(r['lava_exact'])} % | {r['latency_steps']} "
                     f"| {r['max_fold_error']:.3g} |")
    with open(a.out + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
