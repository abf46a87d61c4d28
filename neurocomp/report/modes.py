"""The report's "attention modes" table: what each attention mode costs, measured for one model by
:func:`neurocomp.measure.measure_modes` (this module only lays it out)."""
from __future__ import annotations


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
