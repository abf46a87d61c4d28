"""Collect `neurocomp finetune` results into models/finetune_results.json (machine-readable).

One entry per zoo model: the recipe (finetune flags), the original float model's accuracy, the
static fixed-point accuracy before and after fine-tuning (reference simulator, full test split),
the kept epoch, the wall time and the exact commands. Model cards and bench tables read their
"static after fine-tuning" column from here.

    python bench/finetune_results.py --model events_tcja --artifact /tmp/ft/ft_events_tcja \
        --wall 812 --command "neurocomp compile ..." --command "neurocomp finetune ..."

Entries of other models are kept; the file is written atomically (temp file + os.replace).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUT = os.path.join(ROOT, "models", "finetune_results.json")
GOAL_POINTS = 1.0


def entry(manifest: dict, wall_seconds: float | None, commands: list[str], note: str | None = None) -> dict:
    ft = manifest["finetune"]
    before, after = ft.get("before") or {}, ft.get("after") or {}
    orig, fb, fa = before.get("float_torch"), before.get("fixed_reference"), after.get("fixed_reference")
    gap = None if orig is None or fa is None else round(100 * (fa - orig), 2)
    pct = lambda v: None if v is None else round(100 * v, 2)      # noqa: E731
    return {
        "recipe": {k: ft.get(k) for k in ("epochs", "lr", "gain_lr", "loss", "batch_size", "seed", "val_fraction",
                                          "select", "distill", "ema", "trained")},
        "test_samples": after.get("samples"),
        "original_float_pct": pct(orig),
        "static_float_pct": pct(before.get("float_static_attention")),
        "static_fixed_before_pct": pct(fb),
        "static_fixed_after_pct": pct(fa),
        "finetuned_float_pct": pct(after.get("float_torch")),
        "after_minus_original_points": gap,
        "within_1_point": None if gap is None else gap >= -GOAL_POINTS,
        "selected_epoch": ft.get("selected_epoch"),
        "val_samples": ft.get("val_samples"),
        "val_acc_selected_pct": pct((ft.get("val_selected") or {}).get("acc_emulated_fixed")),
        "train_samples": ft.get("train_samples"),
        "train_seconds": ft.get("train_seconds"),
        "wall_seconds": wall_seconds,
        "commands": commands,
        **({"note": note} if note else {}),
    }


def write_json_atomically(path: str, obj) -> None:
    from neurocomp.artifact import write_text_atomically
    write_text_atomically(path, json.dumps(obj, indent=2) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="zoo model name, e.g. events_tcja")
    p.add_argument("--artifact", required=True, help="the fine-tuned artifact folder (its manifest.json is read)")
    p.add_argument("--wall", type=float, help="wall seconds of compile + finetune")
    p.add_argument("--command", action="append", default=[], help="a command that produced it (repeat)")
    p.add_argument("--note", help="free text kept with the entry")
    p.add_argument("--out", default=DEFAULT_OUT)
    a = p.parse_args(argv)
    with open(os.path.join(a.artifact, "manifest.json")) as f:
        man = json.load(f)
    if "finetune" not in man:
        print(f"error: {a.artifact} is not a fine-tuned artifact (no 'finetune' in its manifest)", file=sys.stderr)
        return 2
    doc = {}
    if os.path.exists(a.out):
        with open(a.out) as f:
            doc = json.load(f)
    doc.setdefault("about", "neurocomp finetune results per zoo model: static-attention 8-bit fixed point "
                            "(reference simulator, bit-exact with Lava fixed_pt) on the full test split, before "
                            "and after fine-tuning, against the original float model with its per-sample "
                            "attention. Written by bench/finetune_results.py; see docs/finetune.md.")
    doc.setdefault("goal", "static after fine-tuning within 1 percentage point of the original float model")
    doc.setdefault("models", {})
    doc["models"][a.model] = entry(man, a.wall, a.command, a.note)
    doc["models"] = dict(sorted(doc["models"].items()))
    write_json_atomically(a.out, doc)
    e = doc["models"][a.model]
    print(f"{a.model}: original {e['original_float_pct']} %, fixed before {e['static_fixed_before_pct']} %, "
          f"after {e['static_fixed_after_pct']} % ({e['after_minus_original_points']:+.2f}) -> {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
