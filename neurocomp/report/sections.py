"""The report's sections: each a function ``section(ctx) -> Section | None`` that lays out measured
figures (the :class:`Context`, from :func:`neurocomp.measure.measure`) as markdown lines, a JSON record
and plots; it returns ``None`` when it does not apply to the model. A model without attention gets every
section but the attention one, which reads ``graph.meta['attention']`` and the attention modes measured
side by side. :data:`SECTIONS` is their order in the report."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from neurocomp.report import plots as P

PLOTS_DIR = "report_plots"


@dataclass
class Section:
    key: str
    title: str
    md: list                       # markdown lines
    data: dict                     # goes into report.json under sections[key]
    plots: list = field(default_factory=list)   # file names inside PLOTS_DIR


@dataclass
class Context:
    """What a section reads: the measured figures (``neurocomp.measure.Measured``: artifact, target,
    mapping, crosscheck, sweep, energy, counts, data_source, timings, modes, read through this
    object's attributes) and the folder its plots are drawn into."""
    measured: object
    plot_dir: str

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.measured, name)


def layer_labels(graph) -> dict:
    """Plot labels of a graph's branch nodes (empty for a chain): a logic neuron ``name [AND]``, a neuron
    fed by several synapse groups (an add or concat joins there) ``name [join]``, a layer whose spikes
    several layers read ``name [fork]``."""
    if graph.is_chain():
        return {}
    out = {}
    for n in graph.neurons():
        marks = []
        if n.meta.get("logic"):
            marks.append(str(n.meta["logic"]))
        else:
            src = graph.inputs[n.name][0]
            if len(graph.inputs.get(src, ())) > 1:
                marks.append("join")
        if len(graph.consumers(n.name)) > 1:
            marks.append("fork")
        if marks:
            out[n.name] = f"{n.name} [{', '.join(marks)}]"
    return out


def _labels(ctx) -> dict:
    return layer_labels(ctx.artifact.fixed_graph)


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.2f} %"


def _table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return out


def sec_accuracy(ctx: Context):
    cc = ctx.crosscheck
    full = {s: (v or {}).get("accuracy") for s, v in cc["stages"].items() if s != "lava" and v}
    sub = cc.get("accuracy_on_lava_sample") or {}
    n_l = (cc.get("lava") or {}).get("samples")
    if all(v is None for v in full.values()):
        return Section("accuracy", "Accuracy per stage", ["No labels: accuracy is not available "
                                                          "(the model names no dataset)."], {"available": False})
    rows = []
    for s in ("torch", "static", "float", "fixed", "lava"):
        st = cc["stages"].get(s)
        if not st:
            continue
        rows.append((s, st["label"], _pct(full.get(s)) if s != "lava" else "not run (Lava is too slow)",
                     _pct(sub.get(s)) if sub else "n/a"))
    md = _table(["stage", "what runs", f"full split (N={cc['samples']})", f"Lava sample (N={n_l or 0})"], rows)
    plot = P.accuracy_per_stage(ctx.plot_dir, full, sub, cc["samples"], n_l)
    md += ["", f"![accuracy per stage]({PLOTS_DIR}/{os.path.basename(plot)})"]
    return Section("accuracy", "Accuracy per stage", md, {"full_split": full, "lava_sample": sub,
                                                          "samples": cc["samples"], "lava_samples": n_l},
                   [os.path.basename(plot)])


def sec_crosscheck(ctx: Context):
    cc = ctx.crosscheck
    md = ["Agreement is the fraction of (sample, neuron) entries with the same spike, per layer and time "
          "step (time-aligned: step t is the output for input frame t). The first divergence is the "
          "earliest step at which any layer differs, and the first layer in graph order at that step. A readout "
          "head's values are compared exactly between the fixed-point reference and Lava, within float32 rounding "
          "between float stages, and by class only between the float and fixed-point stages (its values differ "
          "by quantization there).", ""]
    rows = []
    for name, p in cc["pairs"].items():
        fd = p["first_diverging"]
        rows.append((name, p["samples"], _pct(p["exact_fraction"]), _pct(p["same_class_fraction"]),
                     f"{fd['layer']} @ t={fd['step']}" if fd else "none (identical)",
                     ", ".join(f"{l}: {m}" for l, m in p["mismatches"].items())))
    md += _table(["stages", "samples", "identical samples (all layers, all steps)", "same class",
                  "first diverging layer @ step", "mismatching entries per layer"], rows)
    for s, missing in (cc.get("torch_layers_missing") or {}).items():
        md += ["", f"Layers without a matching module in the {s} model (not compared): {', '.join(missing)}."]
    plot = P.agreement_heatmap(ctx.plot_dir, cc["pairs"], cc["layers"], _labels(ctx))
    md += ["", f"![agreement heatmap]({PLOTS_DIR}/{os.path.basename(plot)})"]
    return Section("crosscheck", "Cross-check of all stages", md, {"pairs": cc["pairs"]}, [os.path.basename(plot)])


def sec_activity(ctx: Context):
    cc = ctx.crosscheck
    act = cc["activity_fixed"]
    N = cc["samples"]
    layers = cc["layers"]
    rates = {s: (v or {}).get("spike_rates", {}) for s, v in cc["stages"].items() if v}
    synops = {l: act["layers"][l]["synaptic_ops"] / N for l in layers}
    rate_stages = [s for s in ("torch", "static", "float", "fixed", "lava") if s in rates]
    rows = []
    for l in layers:
        a = act["layers"][l]
        rows.append((l, a["synapse"], a["neurons"], *(f"{rates[s][l]:.4f}" if l in rates.get(s, {}) else "n/a"
                                                        for s in rate_stages),
                     f"{a['spikes'] / N:,.1f}", f"{synops[l]:,.1f}", f"{a['neuron_updates_active'] / N:,.1f}"))
    md = ["Rates are spikes per neuron per time step. Spikes, synaptic operations (one per input spike and "
          "outgoing synapse) and active neuron updates (neuron-steps with at least one synaptic event) are per "
          f"inference, averaged over {N} samples of the fixed-point reference. Input spikes per inference: "
          f"{act['input_spikes'] / N:,.1f}.", ""]
    md += _table(["layer", "synapse", "neurons", *(f"rate {s}" for s in rate_stages),
                  "spikes / inf.", "synaptic ops / inf.", "active updates / inf."], rows)
    plot = P.activity(ctx.plot_dir, layers, rates, synops, _labels(ctx))
    md += ["", f"![activity]({PLOTS_DIR}/{os.path.basename(plot)})"]
    return Section("activity", "Spike rates and synaptic operations per layer", md,
                   {"rates": rates, "rates_unit": cc["rates_unit"], "per_inference": {
                       l: {k: v / N for k, v in act["layers"][l].items() if isinstance(v, (int, float))
                           and k != "neurons"} for l in layers},
                    "input_spikes_per_inference": act["input_spikes"] / N}, [os.path.basename(plot)])


def sec_sweep(ctx: Context):
    sw = ctx.sweep
    if not sw:
        return None
    rows = [(r["weight_bits"], _pct(r["accuracy"]) if r["accuracy"] is not None else "not representable",
             f"{r['correct']}/{r['samples']}" if r["correct"] is not None else r.get("not_representable", "").replace("|", "\\|"),
             r["weights_clipped"], r["bias_clipped"]) for r in sw["rows"]]
    md = [f"Weights re-quantized to 2..8 signed bits from the artifact's float graph (`passes.pipeline.lower`, "
          f"the compile pipeline), scored with the fixed-point reference over {sw['samples']} samples."]
    own = next((r for r in sw["rows"] if r["weight_bits"] == sw["artifact_weight_bits"]), None)
    fixed_acc = (ctx.crosscheck["stages"]["fixed"] or {}).get("accuracy")
    if own is not None:
        md.append(f"At the artifact's own {own['weight_bits']} bits the sweep gives {_pct(own['accuracy'])}; "
                  f"the artifact's fixed-point accuracy is {_pct(fixed_acc)}; identical quantization: "
                  f"{own.get('same_quantization_as_artifact')}.")
    md += [""] + _table(["weight bits", "accuracy", "correct", "weights clipped", "biases clipped"], rows)
    torch_acc = (ctx.crosscheck["stages"]["torch"] or {}).get("accuracy")
    plot = P.bit_sweep(ctx.plot_dir, [r["weight_bits"] for r in sw["rows"]], [r["accuracy"] for r in sw["rows"]],
                       torch_acc, sw["artifact_weight_bits"], sw["samples"])
    md += ["", f"![bit sweep]({PLOTS_DIR}/{os.path.basename(plot)})"]
    return Section("bit_sweep", "Accuracy vs weight bit width", md, sw, [os.path.basename(plot)])


def sec_clipping(ctx: Context):
    q = next((p for p in ctx.artifact.manifest.get("passes", []) if p.get("pass") == "quantize"), None)
    stats = ctx.crosscheck["fixed_stats"]
    layers = ctx.crosscheck["layers"]
    recs = {r["layer"]: r for r in (q or {}).get("layers", [])}
    series = {"weights clipped": {l: recs.get(l, {}).get("weights_clipped", 0) for l in layers},
              "biases clipped": {l: recs.get(l, {}).get("bias_clipped", 0) for l in layers},
              "voltage saturations": {l: stats.get(l, {}).get("voltage_saturations", 0) for l in layers},
              "current wraps": {l: stats.get(l, {}).get("current_wraps", 0) for l in layers}}
    rows = [(l, f"{series['weights clipped'][l]}/{recs.get(l, {}).get('weights_total', 'n/a')}",
             series["biases clipped"][l], recs.get(l, {}).get("current_may_wrap", "n/a"),
             series["voltage saturations"][l], series["current wraps"][l]) for l in layers]
    N = ctx.crosscheck["samples"]
    md = [f"Weights and biases clipped by `quantize` (compile time); voltage saturations and 24-bit current "
          f"wraps counted in neuron-steps by the fixed-point reference over {N} samples.", ""]
    md += _table(["layer", "weights clipped/total", "biases clipped", "current may wrap (bound)",
                  "voltage saturations", "current wraps"], rows)
    plot = P.clipping(ctx.plot_dir, layers, series, _labels(ctx))
    md += ["", f"![clipping]({PLOTS_DIR}/{os.path.basename(plot)})"]
    return Section("clipping", "Saturation and clipping", md, {"per_layer": series, "samples": N},
                   [os.path.basename(plot)])


def sec_mapping(ctx: Context):
    m = ctx.mapping
    lim = m["limits"]
    rows = [(l["layer"], " + ".join(l.get("groups") or [l["synapse"]]), l["neurons"], l["synapses"], l["max_fan_in_per_neuron"], l["cores"],
             l["neurons_per_core_max"], l["split_by"] or "-") for l in m["layers"]]
    md = [f"Target **{m['target']}** (`{os.path.basename(m['target_file'])}`): {lim['neurons_per_core']} neurons, "
          f"{lim['synaptic_memory_bits']:,} bits of synaptic memory ({lim['bits_per_synapse']} bits per synapse), "
          f"fan-in {lim['fan_in'] or 'unpublished'}, fan-out {lim['fan_out'] or 'unpublished'} per core; "
          f"{lim['cores_per_chip']} cores per chip. **{m['cores']} cores on {m['chips']} chip(s).**", ""]
    md += _table(["layer", "synapse", "neurons", "synapses", "max fan-in", "cores", "neurons on fullest core",
                  "split by"], rows)
    md += [""] + [f"- {n}" for n in m.get("notes", [])]
    plot = P.cores(ctx.plot_dir, m, _labels(ctx))
    md += ["", f"![cores]({PLOTS_DIR}/{os.path.basename(plot)})"]
    return Section("mapping", "Cores per layer", md, m, [os.path.basename(plot)])


def sec_chips(ctx: Context):
    """The partition of the cores over chips (``passes.map_cores``'s greedy rule) and the inter-chip spikes
    counted from the fixed-point reference's spikes (``metrics.ChipTraffic``)."""
    c = getattr(ctx.measured, "chips", None)
    if not c:
        return None
    part, tr = c["partition"], c["traffic"]
    budget = f"at most {c['max_chips']} allowed (`--chips`)" if c.get("max_chips") else "the fewest that hold the cores"
    md = [f"**{c['chips']} chip(s)** of {c['cores_per_chip_limit']} cores (`chip_limits.cores`), {budget}. "
          f"Layers stay contiguous in graph order; a layer is cut across chips only when it exceeds a chip or "
          f"the chip budget leaves no room to start it on a fresh one.", ""]
    rows = [(p["chip"], p["cores"], f"{p['first_core']}-{p['last_core']}",
             ", ".join(f"{e['layer']} ({e['cores']}{'' if e['whole'] else ', part'})" for e in p["layers"]))
            for p in part]
    md += _table(["chip", "cores", "core numbers", "layers (cores on this chip; part = layer cut across chips)"], rows)
    plots = []
    if tr is None:
        md += ["", "Inter-chip traffic: not measured."]
    elif c["chips"] == 1:
        md += ["", "One chip: no spike leaves it (inter-chip traffic 0)."]
    else:
        share = c.get("share_of_routed_spikes")
        md += ["", f"Inter-chip spikes, counted from the fixed-point reference's spikes over {tr['samples']} samples "
                   f"({tr['rule']}): **{tr['mean_per_step']:,.2f} per step on average, at most "
                   f"{tr['max_per_step']:,} in one step of one sample; {tr['per_inference']:,.1f} per inference = "
                   f"{_pct(share)} of all routed spikes** ({c['routed_spikes_per_inference'] or 0:,.1f} per "
                   f"inference: input spikes and every layer's but the output's; a spike that reaches several "
                   f"other chips counts once per chip, so the share can exceed 100 %).", ""]
        if tr["by_layer"]:
            md += _table(["source layer", "inter-chip spikes / inference"],
                         [(k, f"{v:,.1f}") for k, v in tr["by_layer"].items()])
        plot = P.chips(ctx.plot_dir, part, tr)
        plots.append(os.path.basename(plot))
        md += ["", f"![chips]({PLOTS_DIR}/{os.path.basename(plot)})"]
    return Section("chips", "Chips and inter-chip traffic", md, c, plots)


def sec_energy(ctx: Context):
    e = ctx.energy
    if not e:
        return None
    rows = [(t["term"], f"{t['count']:,.1f}", t["pJ_each"], f"{t['pJ'] * 1e-3:,.2f}",
             f"{t['figure']} [{t['source']}]" + (" (estimate)" if t["estimate"] else "")) for t in e["terms"]]
    md = [f"Per inference (T={ctx.crosscheck['timesteps']} steps), counts from the fixed-point reference over "
          f"{ctx.crosscheck['samples']} samples, energy figures from `{os.path.basename(ctx.target.path)}`. "
          f"Each routed spike is assumed to cross {ctx.counts['hops_per_spike']:g} tile hop. "
          f"Scope: {e['scope']}.", ""]
    md += _table(["term", "count / inference", "pJ each", "nJ", "figure [source]"], rows)
    md += ["", f"**Total: {e['total_pJ'] * 1e-3:,.1f} nJ = {e['total_uJ']:.4f} uJ per inference"
               + (" (estimate: some figures are estimates or proxies)**" if e["estimate"] else "**"), "",
           "Sources:"]
    used = sorted({t["source"] for t in e["terms"]})
    md += [f"- [{k}] {ctx.target.source_text(k)}" for k in used]
    if ctx.target.doc.get("unpublished"):
        md.append(f"- not published for {ctx.target.name}: {', '.join(ctx.target.doc['unpublished'])}")
    plot = P.energy(ctx.plot_dir, e)
    md += ["", f"![energy]({PLOTS_DIR}/{os.path.basename(plot)})"]
    att = ctx.artifact.manifest.get("attention_process_cost")
    if att:
        md += ["", "### Attention processes (dynamic attention), per inference, beside the neuron cores", "",
               f"The attention processes would run on the embedded x86 cores (integer arithmetic, "
               f"`neurocomp/fixedpoint/attention.py`); their energy is not in the total above (no published "
               f"figure per x86 operation). For scale, the neuron cores spend "
               f"{ctx.counts['synaptic_ops']:,.0f} synaptic operations and "
               f"{ctx.counts['neuron_updates_active'] + ctx.counts['neuron_updates_inactive']:,.0f} neuron "
               f"updates per inference.", ""]
        md += _table(["module", "pooling", "multiply-accumulates", "table lookups", "multiplies", "total operations",
                      "bits in", "bits out"],
                     [(name, *(f"{c['operations'][k]:,}" for k in ("pool", "mac", "lut", "mul")),
                       f"{c['total_operations']:,}", f"{c['bits_in']:,}", f"{c['bits_out']:,}")
                      for name, c in att.items()])
    return Section("energy", "Energy per inference", md, {**e, "counts": ctx.counts, "attention_processes": att},
                   [os.path.basename(plot)])


def sec_attention(ctx: Context):
    """Attention layers (TCJA / MA / PFA): the manifest's ``attention`` record (mode, calibration, one
    entry per attention module) and the ``fold_attention`` pass record, when the model has attention."""
    att = ctx.artifact.manifest.get("attention") or ctx.artifact.fixed_graph.meta.get("attention")
    if not att:
        return None
    maps = att.get("maps", {}) if isinstance(att, dict) else {}
    records = [{"layer": k, **{kk: vv for kk, vv in v.items() if not isinstance(vv, (list, dict)) and kk != "layer"},
                "map_shape": "x".join(str(d) for d in v.get("map_shape", []))}
               for k, v in maps.items() if isinstance(v, dict)]
    md = [f"Attention mode **{att.get('mode')}**, calibrated on {(att.get('calibration') or {}).get('source')} "
          f"({(att.get('calibration') or {}).get('samples')} samples). The `static` stage is the torch model "
          f"with these calibrated maps (what the IR is traced from); `torch` keeps the original attention.", ""]
    if records:
        keys = ["layer"] + sorted({k for r in records for k in r} - {"layer"})
        fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)   # noqa: E731
        md += _table(keys, [[fmt(r.get(k, "")) for k in keys] for r in records])
    if ctx.modes:
        md += ["", "### Attention modes, measured side by side", ""] + modes_table(ctx.modes)
    return Section("attention", "Attention layers", md, {"attention": att, "modes": ctx.modes})


def modes_table(m: dict) -> list[str]:
    """Markdown lines: one row with every stage of the attention-mode comparison
    (:func:`neurocomp.measure.measure_modes` measures it)."""
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


SECTIONS = (sec_accuracy, sec_crosscheck, sec_activity, sec_sweep, sec_clipping, sec_mapping, sec_chips, sec_energy,
            sec_attention)
