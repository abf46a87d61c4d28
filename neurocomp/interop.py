"""Compiling foreign NIR files (``neurocomp compile FILE.nir``) and the netx HDF5 target.

``compile_nir`` reads any NIR 1.0.x file (see ``neurocomp.frontends.nir_foreign``), lowers it with
the same passes as a torch model (plus sum-pool fusion), and writes the usual artifact folder. There
is no torch model: ``model.nir`` is a copy of the input file and the float reference simulator is
the float stage of ``simulate``. ``--target netx`` also writes ``model.net`` (lava-dl netx HDF5,
see ``neurocomp.backends.netx``).
"""
from __future__ import annotations

import os
import shutil

from neurocomp.artifact import FORMAT, VERSION, OutputClaim, record_files, write_atomically, write_json_atomically
from neurocomp.errors import BadInput
from neurocomp.ir import Graph
from neurocomp.ir.serialize import save_graph

NIR_TARGETS = ("lava", "netx")


def load_nir_graph(path, dt=None, reset: str = "zero", timesteps: int = 100) -> Graph:
    """Read a NIR file into the float IR with ``meta['timesteps']`` set."""
    from neurocomp.frontends.nir_foreign import read_foreign_nir
    if timesteps is None or int(timesteps) < 1:
        raise BadInput(f"--timesteps {timesteps}", where="--timesteps", hint="give at least 1")
    g = read_foreign_nir(str(path), dt=dt, reset=reset)
    return Graph(g.nodes, g.inputs, {**g.meta, "timesteps": int(g.meta.get("timesteps") or timesteps)})


def compile_nir(path, out, target: str = "lava", dt=None, reset: str = "zero", timesteps: int = 100,
                weight_bits: int = 8, overwrite: bool = False) -> str:
    """Compile a NIR file into an artifact folder ``out``; returns its path."""
    if target not in NIR_TARGETS:
        raise BadInput(f"unknown target {target!r} for a NIR file", where="--target",
                       hint=f"use one of {', '.join(NIR_TARGETS)}")
    if not 2 <= int(weight_bits) <= 8:
        raise BadInput(f"--weight-bits {weight_bits}", where="--weight-bits", hint="use 2..8")
    from neurocomp.errors import BadGraph, NeurocompError
    try:
        float_graph = load_nir_graph(path, dt=dt, reset=reset, timesteps=timesteps)
    except (NeurocompError, KeyboardInterrupt):
        raise
    except Exception as e:   # noqa: BLE001 - a foreign file must never give a traceback
        raise BadGraph(f"cannot be imported ({type(e).__name__}: {str(e).strip()[:160]})", where=str(path),
                       hint="re-export the graph; if it is valid NIR 1.0, please report it") from None
    claim = OutputClaim(out, overwrite=overwrite)      # refuse an existing -o before lowering
    try:
        return _compile_nir(path, float_graph, claim, target, weight_bits)
    finally:
        claim.release()                                # a claim that was not filled (after an error)


def _compile_nir(path, float_graph, claim, target, weight_bits):
    from neurocomp.api import _sha256, _versions
    from neurocomp.errors import BadGraph, NeurocompError
    from neurocomp.passes import pipeline, time_alignment
    try:
        fixed_graph = pipeline.lower_nir(float_graph, weight_bits)
    except NeurocompError as e:
        if str(path) not in (e.where or ""):
            e.where = f"{path}: {e.where}" if e.where else str(path)
            e.args = (e.one_line(),)
        raise
    except Exception as e:   # noqa: BLE001
        raise BadGraph(f"cannot be lowered ({type(e).__name__}: {str(e).strip()[:160]})", where=str(path),
                       hint="please report this graph") from None
    if target == "netx":
        from neurocomp.backends.netx import check_netx
        check_netx(fixed_graph)

    def fill(tmp):
        from neurocomp import safeio   # a regular file only; the digest is of the bytes stored
        nir_sha = safeio.copy_file(path, os.path.join(tmp, "model.nir"), error=BadGraph, what="NIR file")
        save_graph(float_graph, os.path.join(tmp, "float"))
        save_graph(fixed_graph, os.path.join(tmp, "fixed"))
        if target == "netx":
            from neurocomp.backends.netx import write_netx
            write_netx(fixed_graph, os.path.join(tmp, "model.net"))
        manifest = {
            "format": FORMAT, "version": VERSION, "versions": _versions(), "target": target,
            "timesteps": int(float_graph.meta["timesteps"]), "dt": float_graph.meta.get("dt"),
            "encoding": "spikes", "input_shape": list(float_graph.input_node.out_shape), "dataset": None,
            "source": "nir", "reset": float_graph.meta.get("reset"),
            "input_nir": {"name": os.path.basename(str(path)), "sha256": nir_sha},
            "read_warnings": float_graph.meta.get("read_warnings", []),
            "alignment": time_alignment(fixed_graph),
            "graphs": {"float": float_graph.digest(), "fixed": fixed_graph.digest()},
            "passes": fixed_graph.meta.get("passes", []),
            "weight_bits": int(weight_bits),
            "files": record_files(tmp),
        }
        write_json_atomically(os.path.join(tmp, "manifest.json"), manifest)

    return write_atomically(claim.path, fill, claim=claim)
