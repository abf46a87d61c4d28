"""``neurocomp inspect FILE``: a checkpoint (.pt), a NIR file (.nir) or an artifact folder as tables.

For an artifact the table is the compiled (fixed-point, mapped) graph with its quantization and
core mapping. For a checkpoint or NIR file it is the float graph, followed by a preview of what
``compile`` would make of it (8-bit weights; a checkpoint mapped onto the default target) when the
graph can be lowered. A NIR file is read as ``compile`` reads it (:func:`neurocomp.frontends.nir.
read_nir_file`): neurocomp's own exactly, another framework's discretised with ``dt`` (its metadata's,
else ``--dt``: without either, the error says to pass ``--dt``) and ``reset``.
"""
from __future__ import annotations

import os

import numpy as np

from neurocomp.artifact import Artifact
from neurocomp.errors import BadInput, NeurocompError, escape
from neurocomp.ir import table
from neurocomp.ir.printing import _fmt_shape, branches, describe, format_rows, reads


def _quant_by_layer(graph) -> dict:
    recs = {}
    for p in graph.meta.get("passes", []):
        if p.get("pass") == "quantize":
            for r in p.get("layers", []):
                recs[r["layer"]] = r
                for syn in r.get("groups") or [r["synapse"]]:     # every synapse group of the neuron
                    recs[syn] = r
    return recs


def lowered_table(graph) -> str:
    """Layers with shapes, parameters, quantization and core mapping (a lowered, mapped graph)."""
    q = _quant_by_layer(graph)
    mapping = {l["layer"]: l for l in (graph.meta.get("mapping") or {}).get("layers", [])}
    rows = [("layer", "kind", "in", "out", "params", "quantization", "cores", "details")]
    branching = not graph.is_chain()
    for i, n in enumerate(graph):
        r = q.get(n.name)
        quant = ""
        if r is not None and n.is_synapse:
            qw = getattr(n, "qweight", None)
            rng = f"[{int(np.min(qw))},{int(np.max(qw))}]" if qw is not None else ""
            bits = r.get("weight_bits")
            sc = r["scale"]     # a list for per-channel scales (MA-SNN cells with per-channel thresholds)
            sc = f"{min(sc):.4g}..{max(sc):.4g}" if isinstance(sc, list) else f"{sc:.4g}"
            quant = (f"{bits}b w{rng} scale={sc}" if bits else f"w{rng}") + \
                    (f" clip={r['weights_clipped']}" if r.get("weights_clipped") else "")
        elif r is not None and n.is_neuron:
            quant = f"vth={r['vth']} dv={r['dv']}" + (f" bias_clip={r['bias_clipped']}" if r.get("bias_clipped") else "") \
                    + (" may-wrap" if r.get("current_may_wrap") else "")
        m = mapping.get(n.name)
        cores = "" if m is None else (f"{m['cores']}" + (f" (split: {m['split_by']})" if m["split_by"] else ""))
        d = (reads(graph, i) if branching else "") + describe(n).split(" | ")[0]
        rows.append((n.name, n.kind, _fmt_shape(n.in_shape), _fmt_shape(n.out_shape), str(n.params()), quant,
                     cores, d))
    lines = format_rows(rows)
    if branching:
        lines.append("\n" + branches(graph))
    mp = graph.meta.get("mapping")
    if mp:
        lines.append("\n" + escape(f"mapped on {mp['target']}: {mp['cores']} cores, {mp['chips']} chip(s)"))
        lines += [escape(line) for line in partition_lines(mp)]
    return "\n".join(lines)


def partition_lines(mapping: dict) -> list:
    """One line per chip: its cores and the layers on it (``passes.map_cores.chip_summary``)."""
    from neurocomp.passes.map_cores import chip_summary
    per_chip = mapping["limits"].get("cores_per_chip")
    out = []
    for p in chip_summary(mapping):
        layers = ", ".join(f"{e['layer']} ({e['cores']}{'' if e['whole'] else ', part'})" for e in p["layers"])
        out.append(f"  chip {p['chip']}: cores {p['first_core']}-{p['last_core']} ({p['cores']}/{per_chip}): {layers}")
    return out


def _with_branches(graph) -> str:
    """The float graph's table, and for a graph with branches where it forks and joins."""
    b = branches(graph)
    return table(graph) + ("\n\n" + b if b else "")


def _preview(graph, weight_bits=8, target="lava", nir_file=False) -> str:
    """What ``compile`` would make of ``graph``: the checkpoint pipeline mapped onto ``target``, or for a
    NIR file the NIR pipeline (not mapped, as ``compile FILE.nir`` does)."""
    from neurocomp.passes import pipeline
    try:
        if nir_file:
            g = pipeline.lower_nir(graph, weight_bits=weight_bits)
        else:
            g = pipeline.lower(graph, weight_bits=weight_bits, target=target)
    except NeurocompError as e:
        return f"\n(cannot be lowered as it is: {e.one_line()})"
    how = f"{weight_bits}-bit weights" + ("" if nir_file else f", target {target}")
    return f"\n\nas `neurocomp compile` would lower it ({how}):\n" + lowered_table(g)


def _head(lines) -> str:
    """Header lines joined, each escaped (they quote names, paths and manifest fields)."""
    return "\n".join(escape(line) for line in lines)


def module_text(module, name=None, indent=0) -> str:
    """``str(module)`` with every child name and extra_repr escaped: torch prints names as they are,
    so a name holding a newline or an escape sequence would reach the terminal raw."""
    pad = "  " * indent
    head = f"{pad}({escape(name)}): " if name is not None else pad
    extra = escape(module.extra_repr())
    children = list(module.named_children())
    if not children:
        return f"{head}{escape(module._get_name())}({extra})"
    body = ([f"{pad}  {extra}"] if extra else []) + [module_text(c, n, indent + 1) for n, c in children]
    return f"{head}{escape(module._get_name())}(\n" + "\n".join(body) + f"\n{pad})"


def _graph_header(g) -> list:
    m = g.meta
    params = sum(n.params() for n in g)
    return [f"T={m.get('timesteps')}  encoding={m.get('encoding')}  dt={m.get('dt')}  "
            f"dataset={m.get('dataset')}  input={_fmt_shape(g.input_node.out_shape)}  "
            f"{len(g)} layers, {params:,} parameters"]


def inspect_path(path: str, trust_pickle: bool = False, dt=None, reset: str = "zero", timesteps=None,
                 **model_kw) -> str:
    """The tables of a checkpoint, NIR file or artifact folder; ``dt``, ``reset`` and ``timesteps`` apply
    to a NIR file from another framework, as for ``compile``; ``timesteps`` and ``model_kw`` (``input_shape``,
    ``encoding``, ``dataset``, ``model_code``, ``model_args``, ``code_path``) to a pickled module or a state
    dict, as for ``compile``."""
    if os.path.isdir(path):
        art = Artifact(path)                 # the manifest's structure is checked there
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
        return _head(head) + "\n\n" + lowered_table(g)
    if not os.path.exists(path):
        raise BadInput("no such file or folder", where=path, hint="pass a .pt checkpoint, a .nir file or an artifact folder")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".nir":
        from neurocomp.frontends.nir import read_nir_file
        g = read_nir_file(path, dt=dt, reset=reset, timesteps=timesteps)
        m = g.meta
        made = ("from another framework: neurons discretised with dt=" f"{m.get('dt')} s, reset {m.get('reset')}"
                if m.get("source") == "nir" else "written by neurocomp")
        return (_head([f"NIR file {path}  ({made})"] + _graph_header(g)) + "\n\n" + _with_branches(g)
                + _preview(g, nir_file=True))
    if ext in (".pt", ".pth"):
        from neurocomp.frontends.checkpoint import load_checkpoint
        from neurocomp.frontends.torch import module_to_graph
        kw = dict(model_kw)
        kw["model"] = kw.pop("model_code", None)
        loaded = load_checkpoint(path, trust_pickle=trust_pickle, timesteps=timesteps, **kw)
        if loaded.missing:
            n = sum(p.numel() for p in loaded.model.parameters())
            flags = {"input_shape": "--input-shape", "timesteps": "--timesteps", "encoding": "--encoding"}
            return (escape(f"pickled module {path} ({n:,} parameters; no input shape / T / encoding recorded: pass "
                           f"{', '.join(flags[k] for k in loaded.missing)} to see its graph)")
                    + "\n" + module_text(loaded.model))
        meta = {"dataset": loaded.dataset} if loaded.dataset else {}
        n = sum(p.numel() for p in loaded.model.parameters())
        try:
            g = module_to_graph(loaded.model, loaded.input_shape, loaded.timesteps, loaded.encoding, meta)
        except NeurocompError as e:
            return (_head([f"checkpoint {path}  ({type(loaded.model).__name__}, {n:,} torch parameters; "
                           f"T={loaded.timesteps} encoding={loaded.encoding} dataset={loaded.dataset} "
                           f"input={_fmt_shape(loaded.input_shape)})", f"not traceable to the IR yet: {e.one_line()}"])
                    + "\n\n" + module_text(loaded.model))
        head = [f"checkpoint {path}  ({type(loaded.model).__name__}, {n:,} torch parameters)"] + _graph_header(g)
        return _head(head) + "\n\n" + _with_branches(g) + _preview(g)
    raise BadInput(f"unknown file type {ext or '(none)'}", where=path,
                   hint="pass a .pt checkpoint, a .nir file or an artifact folder")
