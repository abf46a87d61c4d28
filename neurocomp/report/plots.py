"""The report's PNG plots (matplotlib, Agg). Every plot takes computed numbers only; axes carry units."""
from __future__ import annotations

import os

import numpy as np

from neurocomp.errors import escape


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, folder, name):
    from matplotlib.text import Text
    for t in fig.findobj(Text):                  # labels and tick labels quote layer names from files
        if not t.get_text().isprintable():
            t.set_text(escape(t.get_text()))
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            texts = [t.get_text() for t in axis.get_ticklabels()]
            if not all(v.isprintable() for v in texts):
                axis.set_ticklabels([escape(v) for v in texts])
    path = os.path.join(folder, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _layer_ticks(ax, positions, layers, labels=None, axis="x"):
    """Tick labels naming layers: ``labels`` (layer -> text, e.g. a branch node marked ``[join]``) where
    given; slanted on the x axis when there are many or long names (a graph's dotted block paths)."""
    texts = [(labels or {}).get(l, l) for l in layers]
    if axis == "y":
        ax.set_yticks(list(positions))
        ax.set_yticklabels(texts)
        return
    ax.set_xticks(list(positions))
    slant = len(texts) > 6 or max((len(t) for t in texts), default=0) * len(texts) > 60
    ax.set_xticklabels(texts, rotation=35 if slant else 0, ha="right" if slant else "center",
                       fontsize=8 if slant else None)


def accuracy_per_stage(folder, full: dict, subset: dict | None, n_full: int, n_subset: int | None):
    """``full``/``subset``: stage label -> accuracy in [0, 1] (None skipped)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = [(f"full split, reference simulator (N={n_full})", full)]
    if subset:
        groups.append((f"Lava exactness sample (N={n_subset})", subset))
    stages = [s for s in ("torch", "static", "float", "fixed", "lava") if any(g.get(s) is not None for _, g in groups)]
    width = 0.8 / len(groups)
    for gi, (label, accs) in enumerate(groups):
        xs = [i + gi * width for i, s in enumerate(stages) if accs.get(s) is not None]
        ys = [100 * accs[s] for s in stages if accs.get(s) is not None]
        bars = ax.bar(xs, ys, width, label=label)
        for b, y in zip(bars, ys):
            ax.text(b.get_x() + b.get_width() / 2, y, f"{y:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks([i + width * (len(groups) - 1) / 2 for i in range(len(stages))])
    ax.set_xticklabels(stages)
    ax.set_xlabel("stage")
    ax.set_ylabel("test accuracy (%)")
    lo = min([100 * v for _, g in groups for v in g.values() if v is not None] + [100])
    ax.set_ylim(max(0, lo - 10), 101)
    ax.set_title("Accuracy per lowering stage")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, folder, "accuracy_per_stage.png")


def agreement_heatmap(folder, pairs: dict, all_layers: list, labels=None):
    """``pairs``: "a->b" -> crosscheck pair result (agreement[layer] = per-step fraction)."""
    plt = _plt()
    names = list(pairs)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 0.5 * len(all_layers) + 2.2), squeeze=False)
    im = None
    for ax, name in zip(axes[0], names):
        p = pairs[name]
        layers = p["layers"]
        mat = np.array([[100 * v for v in p["agreement"][l]] for l in layers]) if layers else np.zeros((0, 0))
        im = ax.imshow(mat, aspect="auto", cmap="viridis", vmin=min(99.0, float(mat.min()) if mat.size else 99.0),
                       vmax=100.0, interpolation="nearest")
        _layer_ticks(ax, range(len(layers)), layers, labels, axis="y")
        ax.set_xlabel("time step (input frame, 0-based)")
        ax.set_ylabel("layer")
        ax.set_title(f"{name}  (N={p['samples']})", fontsize=9)
        fd = p.get("first_diverging")
        if fd:
            ax.plot([fd["step"]], [layers.index(fd["layer"])], marker="x", color="red", markersize=10,
                    label=f"first divergence: {fd['layer']} @ t={fd['step']}")
            ax.legend(fontsize=7, loc="upper right")
        fig.colorbar(im, ax=ax, label="agreement (% of sample x neuron entries)")
    fig.suptitle("Per-layer spike agreement between adjacent stages", fontsize=10)
    return _save(fig, folder, "agreement_heatmap.png")


def activity(folder, layers, rates: dict, synops_per_inf: dict, labels=None):
    """``rates``: stage -> {layer: spikes/neuron/step}; ``synops_per_inf``: layer -> ops per inference."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    stages = [s for s in rates if rates[s]]
    width = 0.8 / max(1, len(stages))
    x = np.arange(len(layers))
    for i, s in enumerate(stages):
        a1.bar(x + i * width, [rates[s].get(l, np.nan) for l in layers], width, label=s)
    _layer_ticks(a1, x + width * (len(stages) - 1) / 2, layers, labels)
    a1.set_xlabel("layer")
    a1.set_ylabel("spike rate (spikes per neuron per step)")
    a1.set_title("Spike rate per layer and stage")
    a1.legend(fontsize=8)
    vals = [synops_per_inf[l] for l in layers]
    bars = a2.bar(x, vals, color="tab:orange")
    for b, v in zip(bars, vals):
        a2.text(b.get_x() + b.get_width() / 2, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=7)
    _layer_ticks(a2, x, layers, labels)
    a2.set_xlabel("layer (synapses in front of it)")
    a2.set_ylabel("synaptic operations per inference (count)")
    a2.set_title("Synaptic operations (fixed-point reference)")
    return _save(fig, folder, "activity.png")


def bit_sweep(folder, bits, accs, float_acc=None, artifact_bits=None, samples=None):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ok = [(b, a) for b, a in zip(bits, accs) if a is not None]
    ax.plot([b for b, _ in ok], [100 * a for _, a in ok], marker="o", label="fixed-point reference")
    for b, a in ok:
        ax.annotate(f"{100 * a:.1f}", (b, 100 * a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    for b, a in zip(bits, accs):
        if a is None:   # the network cannot be represented at this width (see report.md)
            ax.annotate("n/r", (b, 0), textcoords="offset points", xytext=(0, 4), ha="center", fontsize=8,
                        color="tab:red")
    if float_acc is not None:
        ax.axhline(100 * float_acc, color="gray", linestyle="--", label=f"torch float model ({100 * float_acc:.1f} %)")
    if artifact_bits is not None:
        ax.axvline(artifact_bits, color="tab:red", linestyle=":", label=f"compiled artifact ({artifact_bits} bits)")
    ax.set_xlabel("signed weight bits (bit)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_xticks(list(bits))
    ax.set_title(f"Accuracy vs weight bit width (N={samples})")
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, folder, "bit_sweep.png")


def clipping(folder, layers, series: dict, labels=None):
    """``series``: counter name -> {layer: count}."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(series)
    width = 0.8 / max(1, len(names))
    x = np.arange(len(layers))
    for i, n in enumerate(names):
        vals = [series[n].get(l, 0) or 0 for l in layers]
        bars = ax.bar(x + i * width, vals, width, label=n)
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v, str(int(v)), ha="center", va="bottom", fontsize=7)
    _layer_ticks(ax, x + width * (len(names) - 1) / 2, layers, labels)
    ax.set_xlabel("layer")
    ax.set_ylabel("count (weights, biases, or neuron-steps)")
    ax.set_title("Saturation and clipping per layer")
    ax.legend(fontsize=8)
    return _save(fig, folder, "clipping.png")


def cores(folder, mapping: dict, labels=None):
    plt = _plt()
    layers = [l["layer"] for l in mapping["layers"]]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    c = [l["cores"] for l in mapping["layers"]]
    x = np.arange(len(layers))
    bars = a1.bar(x, c, color="tab:green")
    _layer_ticks(a1, x, layers, labels)
    for b, v in zip(bars, c):
        a1.text(b.get_x() + b.get_width() / 2, v, str(v), ha="center", va="bottom", fontsize=8)
    a1.set_xlabel("layer")
    a1.set_ylabel("cores (count)")
    a1.set_title(f"Cores per layer on {mapping['target']} (total {mapping['cores']}, {mapping['chips']} chip(s))",
                 fontsize=9)
    N = mapping["limits"]["neurons_per_core"]
    a2.bar(x, [100 * l["neurons_per_core_max"] / N for l in mapping["layers"]], color="tab:purple")
    _layer_ticks(a2, x, layers, labels)
    a2.set_xlabel("layer")
    a2.set_ylabel(f"fullest core's neurons (% of {N} per core)")
    a2.set_title("Neuron occupancy of the fullest core", fontsize=9)
    return _save(fig, folder, "cores.png")


def chips(folder, partition: list, traffic: dict):
    """Cores per chip (stacked by layer), inter-chip spikes per step of the window, and the chip-to-chip
    matrix of inter-chip spikes per inference."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    a1, a2, a3 = axes
    layers = list(dict.fromkeys(e["layer"] for p in partition for e in p["layers"]))
    cmap = plt.get_cmap("tab20")
    x = np.arange(len(partition))
    bottom = np.zeros(len(partition))
    for i, name in enumerate(layers):
        h = np.array([sum(e["cores"] for e in p["layers"] if e["layer"] == name) for p in partition], dtype=float)
        a1.bar(x, h, bottom=bottom, color=cmap(i % 20), label=name if len(layers) <= 12 else None)
        bottom += h
    a1.set_xticks(x)
    a1.set_xticklabels([str(p["chip"]) for p in partition], fontsize=7)
    a1.set_xlabel("chip")
    a1.set_ylabel("cores (count)")
    a1.set_title(f"Cores per chip, by layer ({len(partition)} chip(s))", fontsize=9)
    if len(layers) <= 12:
        a1.legend(fontsize=6)
    steps = np.arange(len(traffic["per_step"]))
    a2.plot(steps, traffic["per_step"], marker="o", color="tab:red", label="mean over samples")
    a2.axhline(traffic["max_per_step"], color="tab:gray", ls="--", label="largest step of one sample")
    a2.set_xlabel("time step of the window")
    a2.set_ylabel("inter-chip spikes per step (count)")
    a2.set_title(f"Inter-chip spikes: mean {traffic['mean_per_step']:,.1f} per step", fontsize=9)
    a2.legend(fontsize=7)
    m = np.asarray(traffic["chip_pairs"], dtype=float)
    im = a3.imshow(m if m.size else np.zeros((1, 1)), cmap="viridis")
    fig.colorbar(im, ax=a3, label="spikes per inference (count)")
    a3.set_xlabel("destination chip")
    a3.set_ylabel("source chip")
    a3.set_title("Inter-chip spikes per inference, chip to chip", fontsize=9)
    return _save(fig, folder, "chips.png")


def energy(folder, energy: dict):
    plt = _plt()
    terms = energy["terms"]
    fig, ax = plt.subplots(figsize=(7, 4))
    vals = [t["pJ"] * 1e-3 for t in terms]
    bars = ax.barh([t["term"] for t in terms], vals, color="tab:blue")
    for b, v in zip(bars, vals):
        ax.text(v, b.get_y() + b.get_height() / 2, f" {v:,.1f}", va="center", fontsize=8)
    ax.set_xlabel("energy per inference (nJ)")
    ax.set_ylabel("term")
    est = " (estimate)" if energy["estimate"] else ""
    ax.set_title(f"Dynamic energy per inference on {energy['target']}{est}: {energy['total_uJ']:.3f} uJ", fontsize=9)
    return _save(fig, folder, "energy.png")
