"""What each attention mode costs, measured for one model: the report's "attention modes" table.

For an artifact compiled from an attention model, the source checkpoint is compiled in the
``static`` and ``dynamic`` modes (same calibration; the artifact itself stands for its own mode), each artifact is run by the reference simulator
on the report's samples and by Lava ``fixed_pt`` on its Lava sample, and one row gives: the original
(dynamic) float accuracy, the static-folded float accuracy, static fixed point, static after
fine-tuning (from a fine-tuned artifact, ``neurocomp finetune``), dynamic fixed point, Lava (dynamic)
and its agreement with the reference, latency in steps of each mode and the attention process's
operations per inference.
"""
from __future__ import annotations

import os
import tempfile

MODES = ("static", "dynamic")


def _source_checkpoint(art) -> str:
    """The original attention model: a fine-tuned artifact keeps it as ``source_model.pt``."""
    src = os.path.join(art.path, "source_model.pt")
    return src if os.path.exists(src) else art.checkpoint


def _calibration(man: dict, folder: str | None = None):
    """The calibration the artifact used. A recorded ``.npy`` path is a path written in the manifest:
    it is used only when it lies inside the artifact ``folder`` (never a file elsewhere on the machine);
    otherwise the recompiles calibrate on the default training samples."""
    cal = (man.get("attention") or {}).get("calibration") or {}
    source = cal.get("source")
    inside = folder is not None and isinstance(source, str) and os.path.realpath(source).startswith(
        os.path.realpath(folder) + os.sep)
    calib = source if inside and source.endswith(".npy") and os.path.isfile(source) else None
    return calib, int(cal.get("samples") or 512)


def measure_modes(art, samples: int | None, lava_samples: int, finetuned: str | None = None,
                  progress: bool = False) -> dict | None:
    """Measure every attention mode of the artifact's source model; ``None`` without attention."""
    from neurocomp.api import compile as compile_, simulate
    from neurocomp.artifact import Artifact
    man = art.manifest
    if not man.get("attention") or not man.get("dataset"):
        return None
    checkpoint = _source_checkpoint(art)
    if not os.path.exists(checkpoint):
        return None
    calib, calib_samples = _calibration(man, art.path)
    out = {"samples": samples, "lava_samples": lava_samples, "source_checkpoint": os.path.basename(checkpoint),
           "modes": {}}
    with tempfile.TemporaryDirectory(prefix="neurocomp-modes-") as tmp:
        for mode in MODES:
            if (man["attention"].get("mode") == mode and not man.get("finetune")
                    and checkpoint == art.checkpoint):
                path = art.path                       # the artifact itself is this mode: no recompile
            else:
                path = compile_(checkpoint, os.path.join(tmp, mode), attention=mode, calib=calib,
                                calib_samples=calib_samples)
            ref = simulate(path, backend="reference", samples=samples, progress=progress)
            row = {"float": ref["accuracy"]["float_torch"],
                   "static_float": ref["accuracy"].get("float_static_attention"),
                   "fixed": ref["accuracy"]["fixed_reference"], "samples": ref["samples"]}
            if lava_samples:
                lav = simulate(path, backend="lava", samples=lava_samples, progress=progress)
                row.update(lava=lav["accuracy"]["lava"], lava_exact=lav["exact_match_fraction"],
                           lava_samples=lav["samples"])
            m = Artifact(path).manifest           # checked like any artifact read
            row["latency_steps"] = m["alignment"]["depth"]
            row["attention_ops"] = sum(c["total_operations"] for c in (m.get("attention_process_cost") or {}).values())
            out["modes"][mode] = row
    ft = None
    if finetuned:
        ref = simulate(finetuned, backend="reference", samples=samples, progress=progress)
        ft = {"artifact": os.path.abspath(finetuned), "fixed": ref["accuracy"]["fixed_reference"]}
    elif man.get("finetune"):
        ref = simulate(art.path, backend="reference", samples=samples, progress=progress)
        ft = {"artifact": os.path.abspath(art.path), "fixed": ref["accuracy"]["fixed_reference"]}
    out["static_finetuned"] = ft
    return out


def modes_table(m: dict) -> list[str]:
    """Markdown lines: one row with every stage of the attention-mode comparison."""
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}"   # noqa: E731
    st, dy = m["modes"]["static"], m["modes"]["dynamic"]
    ft = m.get("static_finetuned")
    header = ["original float", "static float", "static fixed", "static after fine-tuning", "dynamic fixed",
              f"Lava dynamic (N={dy.get('lava_samples', 0)})", "Lava = reference", "latency static / dynamic (steps)",
              "attention-process ops / inference"]
    row = [pct(st["float"]), pct(st["static_float"]), pct(st["fixed"]),
           pct(ft["fixed"]) if ft else "not run", pct(dy["fixed"]),
           pct(dy.get("lava")), (pct(dy.get("lava_exact")) + " %") if "lava_exact" in dy else "n/a",
           f"{st['latency_steps']} / {dy['latency_steps']}", f"{dy['attention_ops']:,}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), "| " + " | ".join(row) + " |"]
    lines += ["", f"Accuracies in % of the first {st['samples']} test samples (reference simulator, bit-exact with "
                  f"Lava fixed_pt); the source model was recompiled in each mode with the artifact's calibration."]
    if not ft:
        lines.append("Static after fine-tuning: not run; `neurocomp finetune ARTIFACT -o FT` then "
                     "`neurocomp report ARTIFACT --finetuned FT` fills the column.")
    return lines
