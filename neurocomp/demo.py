"""``make demo``: compile the bundled default model and an attention model for Lava, run both on
the whole digits test split in Lava and the reference simulator, and print one result table."""
from __future__ import annotations

import argparse
import os
import sys

from neurocomp._quiet import import_spikingjelly
from neurocomp.api import compile as compile_, simulate

DEFAULT_MODELS = [("models/digits_plain/model.pt", "-"), ("models/digits_tcja/model.pt", "static"),
                  ("models/digits_tcja/model.pt", "portable"), ("models/digits_tcja/model.pt", "dynamic")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="out/demo")
    p.add_argument("--samples", type=int, default=None, help="test samples (default: the whole split)")
    a = p.parse_args(argv)
    import_spikingjelly()
    os.makedirs(a.out, exist_ok=True)
    rows = []
    for model, mode in DEFAULT_MODELS:
        name = os.path.basename(os.path.dirname(model)) + ("" if mode == "-" else f"-{mode}")
        art = compile_(model, os.path.join(a.out, name), attention="static" if mode == "-" else mode,
                       overwrite=True)
        print(f"compiled {model} ({'no attention' if mode == '-' else 'attention ' + mode}) -> {art}", flush=True)
        r = simulate(art, backend="lava", samples=a.samples, json_path=os.path.join(art, "simulate.json"))
        rows.append((name, r))
    def pct(v):
        return "    n/a" if v is None else f"{100 * v:6.2f}%"
    head = (f"{'model':<24}{'float':>8}{'static':>8}{'fixed':>8}{'Lava':>8}{'same class':>12}{'exact':>8}"
            f"{'latency':>9}")
    print("\n" + head + "\n" + "-" * len(head))
    for name, r in rows:
        acc = r["accuracy"]
        print(f"{name:<24}{pct(acc['float_torch']):>8}{pct(acc.get('float_static_attention')):>8}"
              f"{pct(acc['fixed_reference']):>8}{pct(acc['lava']):>8}{pct(r['same_class']['lava_vs_float']):>12}"
              f"{pct(r['exact_match_fraction']):>8}{r['latency_steps']:>9}")
    n = rows[0][1]["samples"]
    print(f"\n{n} digits test samples each, T=8. float: the trained torch model; static: with attention "
          "replaced by calibrated static maps;\nfixed: neurocomp's fixed-point reference; Lava: Loihi2SimCfg "
          "fixed_pt; same class: Lava vs float model; exact: samples whose spikes\nagree on every layer and step "
          "between Lava and the reference; latency: Lava steps from an input frame to the output (dynamic\n"
          "attention waits one window per module). Artifacts and simulate.json files are under", a.out)
    return 0 if all(r["exact_match_fraction"] == 1.0 for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
