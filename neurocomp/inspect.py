"""``neurocomp inspect FILE``: a checkpoint (.pt), a NIR file (.nir) or an artifact folder as tables.

For an artifact the table is the compiled (fixed-point, mapped) graph with its quantization and
core mapping. For a checkpoint or NIR file it is the float graph, followed by a preview of what
``compile`` would make of it (8-bit weights, default target) when the graph can be lowered.
"""
from __future__ import annotations

import os

import numpy as np

from neurocomp.errors import BadInput, NeurocompError
from neurocomp.ir import table
from neurocomp.ir.printing import _fmt_shape, describe, format_rows


def _quant_by_layer(graph) -> dict:
    recs = {}
    for p in graph.meta.get("passes", []):
        if p.get("pass") == "quantize":
            for r in p.get("layers", []):
                recs[r["layer"]] = r
                recs[r["synapse"]] = r
    return recs


def lowered_table(graph) -> str:
    """Layers with shapes, parameters, quantization and core mapping (a lowered, mapped graph)."""
    q = _quant_by_layer(graph)
    mapping = {l["layer"]: l for l in (graph.meta.get("mapping") or {}).get("layers", [])}
    rows = [("layer", "kind", "in", "out", "params", "quantization", "cores", "details")]
    for n in graph:
        r = q.get(n.name)
        quant = ""
        if r is not None and n.is_synapse:
            qw = getattr(n, "qweight", None)
            rng = f"[{int(np.min(qw))},{int(np.max(qw))}]" if qw is not None else ""
            bits = r.get("weight_bits")
            quant = (f"{bits}b w{rng} scale={r['scale']:.4g}" if bits else f"w{rng}") + \
                    (f" clip={r['weights_clipped']}" if r.get("weights_clipped") else "")
        elif r is not None and n.is_neuron:
            quant = f"vth={r['vth']} dv={r['dv']}" + (f" bias_clip={r['bias_clipped']}" if r.get("bias_clipped") else "") \
                    + (" may-wrap" if r.get("current_may_wrap") else "")
        m = mapping.get(n.name)
        cores = "" if m is None else (f"{m['cores']}" + (f" (split: {m['split_by']})" if m["split_by"] else ""))
        d = describe(n).split(" | ")[0]
        rows.append((n.name, n.kind, _fmt_shape(n.in_shape), _fmt_shape(n.out_shape), str(n.params()), quant,
                     cores, d))
    lines = format_rows(rows)
    mp = graph.meta.get("mapping")
    if mp:
        lines.append(f"\nmapped on {mp['target']}: {mp['cores']} cores, {mp['chips']} chip(s)")
    return "\n".join(lines)


def _preview(graph, weight_bits=8, target="lava") -> str:
    from neurocomp.api import lower
    try:
        g = lower(graph, weight_bits=weight_bits, target=target)
    except NeurocompError as e:
        return f"\n(cannot be lowered as it is: {e.one_line()})"
    return f"\n\nas `neurocomp compile` would lower it ({weight_bits}-bit weights, target {target}):\n" + lowered_table(g)


def _graph_header(g) -> list:
    m = g.meta
    params = sum(n.params() for n in g)
    return [f"T={m.get('timesteps')}  encoding={m.get('encoding')}  dt={m.get('dt')}  "
            f"dataset={m.get('dataset')}  input={_fmt_shape(g.input_node.out_shape)}  "
            f"{len(g)} layers, {params:,} parameters"]


def inspect_path(path: str, trust_pickle: bool = False) -> str:
    if os.path.isdir(path):
        from neurocomp.artifact import Artifact
        art = Artifact(path)
        man = art.manifest
        g = art.fixed_graph
        head = [f"artifact {os.path.abspath(path)}",
                f"model {man.get('input_checkpoint', {}).get('name')}  sha256 "
                f"{man.get('input_checkpoint', {}).get('sha256', '')[:12]}  target {man.get('target')}"
                f" ({man.get('hardware_target', 'unmapped')})  weight bits {man.get('weight_bits')}",
                f"latency {man.get('alignment', {}).get('depth')} steps; neurocomp "
                f"{(man.get('versions') or {}).get('neurocomp')}"] + _graph_header(g)
        q = next((p for p in g.meta.get("passes", []) if p.get("pass") == "quantize"), {})
        if q:
            head.append(f"quantization: {q.get('weights_clipped', 0)} weights and {q.get('bias_clipped', 0)} biases "
                        f"clipped; layers whose current may wrap: {', '.join(q.get('layers_that_may_wrap') or []) or 'none'}")
        if os.path.exists(os.path.join(path, "report.md")):
            head.append("report: report.md")
        return "\n".join(head) + "\n\n" + lowered_table(g)
    if not os.path.exists(path):
        raise BadInput("no such file or folder", where=path, hint="pass a .pt checkpoint, a .nir file or an artifact folder")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".nir":
        from neurocomp.frontends.nir import read_nir
        g = read_nir(path)
        return "\n".join([f"NIR file {path}"] + _graph_header(g)) + "\n\n" + table(g) + _preview(g)
    if ext in (".pt", ".pth"):
        from neurocomp.frontends.checkpoint import load_checkpoint
        from neurocomp.frontends.torch import module_to_graph
        loaded = load_checkpoint(path, trust_pickle=trust_pickle)
        if loaded.timesteps < 1:
            n = sum(p.numel() for p in loaded.model.parameters())
            return (f"pickled module {path} ({n:,} parameters; no input shape / T / encoding recorded)\n"
                    f"{loaded.model}")
        meta = {"dataset": loaded.dataset} if loaded.dataset else {}
        n = sum(p.numel() for p in loaded.model.parameters())
        try:
            g = module_to_graph(loaded.model, loaded.input_shape, loaded.timesteps, loaded.encoding, meta)
        except NeurocompError as e:
            return (f"checkpoint {path}  ({type(loaded.model).__name__}, {n:,} torch parameters; T={loaded.timesteps} "
                    f"encoding={loaded.encoding} dataset={loaded.dataset} input={_fmt_shape(loaded.input_shape)})\n"
                    f"not traceable to the IR yet: {e.one_line()}\n\n{loaded.model}")
        head = [f"checkpoint {path}  ({type(loaded.model).__name__}, {n:,} torch parameters)"] + _graph_header(g)
        return "\n".join(head) + "\n\n" + table(g) + _preview(g)
    raise BadInput(f"unknown file type {ext or '(none)'}", where=path,
                   hint="pass a .pt checkpoint, a .nir file or an artifact folder")
