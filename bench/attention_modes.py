"""Measure every zoo attention model in every attention mode, and every residual zoo model (the table in
the README / cards).

    python bench/attention_modes.py [--lava-samples 50] [--out bench/attention_modes]

Per model and mode: float accuracy of the original model, of the static-attention model, of the
fixed-point reference (whole test split, reference simulator), Lava accuracy and Lava-vs-reference
exact match on the first --lava-samples test samples, the attention fold errors and calibration
statistics. A model without attention (SEW-ResNet) is one row, mode ``none``; a mode compile refuses
(today: attention inside a residual graph) is a row with the reason, replaced by the measured row when a
later run compiles it. Writes ``<out>.json`` and ``<out>.md``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--lava-samples", type=int, default=50)
    p.add_argument("--out", default=os.path.join(ROOT, "bench", "attention_modes"))
    p.add_argument("--modes", default="static,portable,dynamic")
    p.add_argument("--models", default=None, help="comma-separated zoo names (default: every attention model "
                   "and every residual model)")
    p.add_argument("--merge", action="store_true", help="keep rows of <out>.json not measured in this run")
    p.add_argument("--tables-only", action="store_true",
                   help="measure nothing: rewrite <out>.md and the cards from <out>.json and the fine-tuning results")
    a = p.parse_args(argv)
    if a.tables_only:
        write_tables(json.load(open(a.out + ".json")), a.out)
        return
    from neurocomp._quiet import import_spikingjelly
    import_spikingjelly()
    rows = []
    models = sorted(m for m in glob.glob(os.path.join(ROOT, "models", "*", "model.pt")) if "plain" not in m)
    if a.models:
        wanted = set(a.models.split(","))
        models = [m for m in models if os.path.basename(os.path.dirname(m)) in wanted]
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            name = os.path.basename(os.path.dirname(model))
            os.mkdir(os.path.join(tmp, name))
            rows += measure_model(model, name, os.path.join(tmp, name), a.lava_samples, a.modes.split(","))
    if a.merge and os.path.exists(a.out + ".json"):
        done = {(r["model"], r["mode"]) for r in rows}
        order = {"none": 0, "static": 0, "portable": 1, "dynamic": 2}
        rows = sorted([r for r in json.load(open(a.out + ".json")) if (r["model"], r["mode"]) not in done] + rows,
                      key=lambda r: (r["model"], order.get(r["mode"], 9)))
    _write(a.out + ".json", json.dumps(rows, indent=1))
    write_tables(rows, a.out)


def measure_model(model, name, folder, lava_samples, modes):
    """The rows of one zoo model: one per attention mode (:func:`neurocomp.measure.measure_every_mode`);
    a model without attention (the residual zoo's SEW-ResNets) is measured once, as mode ``none``; a
    mode that compile refuses is a row with ``refused``, the one-line reason, which a later run (once
    compile accepts it) replaces with its measured row."""
    from neurocomp.errors import NeurocompError
    from neurocomp.measure import measure_every_mode
    rows, runs = [], {}
    for mode in modes:
        try:
            run = measure_every_mode(model, folder, None, lava_samples, modes=[mode])[mode]  # the report's rows
        except NeurocompError as e:
            rows.append({"model": name, "mode": mode, "refused": e.one_line().replace(ROOT + os.sep, "")})
            print(json.dumps(rows[-1]), flush=True)
            continue
        if not run.manifest.get("attention"):
            runs = {"none": run}
            break
        runs[mode] = run
    for mode, run in runs.items():
        row, ref, man = run.row, run.reference, run.manifest
        folds = [r for q in man["passes"] if q["pass"] == "fold_attention" for r in q["maps"]]
        maps = (man.get("attention") or {}).get("maps") or {}
        rows.append({"model": name, "mode": mode, "samples": row["samples"],
                     "float": row["float"], "static_float": row["static_float"], "fixed": row["fixed"],
                     "same_class_fixed_vs_float": ref["same_class"]["fixed_reference_vs_float"],
                     "lava_samples": row.get("lava_samples"), "lava": row.get("lava"),
                     "lava_exact": row.get("lava_exact"),
                     "latency_steps": row["latency_steps"],
                     "max_fold_error": max([r.get("error") or 0.0 for r in folds] or [0.0]),
                     "warnings": [s["warning"] for s in maps.values() if s.get("warning")],
                     "attention_ops_per_inference": row["attention_ops"],
                     "wall_s": run.seconds})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _write(path: str, text: str):
    from neurocomp.artifact import write_text_atomically
    write_text_atomically(path, text)


FINETUNE_RESULTS = os.path.join(ROOT, "models", "finetune_results.json")


def finetune_result(name: str):
    """The zoo's fine-tuning result for a model (``neurocomp finetune``, docs/finetune.md), or None."""
    if not os.path.exists(FINETUNE_RESULTS):
        return None
    doc = json.load(open(FINETUNE_RESULTS))
    entries = doc.get("models", doc) if isinstance(doc, dict) else {e.get("model"): e for e in doc}
    return entries.get(name)


def _after(ft):
    """Static fixed-point accuracy after fine-tuning, as a fraction (the results file stores percent)."""
    v = ft.get("static_fixed_after_pct")
    return None if v is None else v / 100.0


def summary_table(rows, name):
    """One row per model with every stage the issue asks for (original float ... attention ops)."""
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    by = {r["mode"]: r for r in rows if r["model"] == name and "refused" not in r}
    st, dy = by.get("static"), by.get("dynamic")
    if not (st and dy):
        return [], None
    ft = finetune_result(name)
    after = _after(ft) if ft else None
    exact = min(r["lava_exact"] for r in by.values())
    out = ["| original float | static float | static fixed | static after fine-tuning | dynamic fixed "
           "| Lava dynamic (first N) | Lava = ref. (every mode) | latency static / dynamic (steps) "
           "| attention-process ops / inference |", "|---|---|---|---|---|---|---|---|---|",
           f"| {pct(st['float'])} | {pct(st['static_float'])} | {pct(st['fixed'])} | "
           f"{pct(after) if after is not None else 'not run'} | {pct(dy['fixed'])} | {pct(dy['lava'])} "
           f"(N={dy['lava_samples']}) | {pct(exact)} % | {st['latency_steps']} / {dy['latency_steps']} "
           f"| {dy['attention_ops_per_inference']:,} |"]
    if after is None:
        return out, None
    gap = ft.get("after_minus_original_points")            # from the unrounded accuracies
    return out, (round(100 * (after - st["float"]), 2) if gap is None else gap) + 0.0


def write_tables(rows, out_path):
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"  # noqa: E731
    def table(rs):
        out = ["| model | mode | float (original) | static float | fixed-point reference | Lava (first N) "
               "| Lava = ref. | latency (steps) | attention-process ops / inference | max fold error |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        refused = {}                                   # the modes compile refused, one row per model and reason
        for r in rs:
            if "refused" in r:
                refused.setdefault((r["model"], r["refused"]), []).append(r["mode"])
        for r in rs:
            if "refused" in r:
                key = (r["model"], r["refused"])
                if key in refused:
                    out.append(f"| {r['model']} | {', '.join(refused.pop(key))} | not compiled: "
                               f"{r['refused'].replace('|', '/')} | | | | | | | |")
                continue
            out.append(f"| {r['model']} | {r['mode']} | {pct(r['float'])} | "
                       f"{pct(r['static_float']) if r['mode'] not in ('dynamic', 'none') else '–'} | {pct(r['fixed'])} "
                       f"| {pct(r['lava'])} (N={r['lava_samples']}) | {pct(r['lava_exact'])} % | {r['latency_steps']} "
                       f"| {r['attention_ops_per_inference'] or '–'} | {r['max_fold_error']:.3g} |")
        return out
    lines = table(rows)
    note = ("Accuracies in %: float = the trained model; static float = attention replaced by calibrated static "
            "maps (torch); fixed-point reference on the whole test split; Lava on the first N test samples; "
            "measured by `python bench/attention_modes.py`.")
    _write(out_path + ".md", note + "\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    # each model card gets its own rows between markers
    begin, end = "<!-- attention-modes:begin -->", "<!-- attention-modes:end -->"
    for name in sorted({r["model"] for r in rows}):
        card = os.path.join(ROOT, "models", name, "card.md")
        if not os.path.exists(card):
            continue
        text = open(card).read()
        summary, gap = summary_table(rows, name)
        ft_note = "Static after fine-tuning: `neurocomp finetune` (recipe and command in `docs/finetune.md`, " \
                  "results in `models/finetune_results.json`), fixed-point reference on the whole test split."
        if gap is not None:
            module = next((m for m in ("tcja", "pfa", "ma") if m in name.split("_")), "")
            if module == "ma":
                ft_note += (f" **Measured gap of static MA-SNN after fine-tuning: {gap:+.2f} points** against the "
                            "original float model; the exact form is `--attention dynamic`.")
            else:
                ft_note += (f" After fine-tuning − original float: {gap:+.2f} points "
                            f"({'within' if gap >= -1.0 else 'NOT within'} the 1-point goal).")
        ft = finetune_result(name)
        if ft and ft.get("note"):
            ft_note += f" How this run was chosen: {ft['note']}."
        if ft and ft.get("commands"):
            ft_note += " Measured with:\n\n```\n" + "\n".join(ft["commands"]) + "\n```\n"
        block = (f"{begin}\n## Compiled for Lava: attention modes (measured)\n\n"
                 + ("\n".join(summary) + "\n\n" + ft_note + "\n\nPer mode:\n\n" if summary else "")
                 + f"{note}\n\n" + "\n".join(table([r for r in rows if r["model"] == name])) + "\n" + end)
        if begin in text:
            text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        _write(card, text)


if __name__ == "__main__":
    main()
