"""The report's writer: a built report (:func:`neurocomp.report.build.build_report`) goes into the
artifact folder as report.md, report.json and report_plots/*.png. The plots folder is replaced whole by
the one atomic folder writer (:func:`neurocomp.artifact.write_atomically`), each document by
:func:`neurocomp.artifact.write_text_atomically`; nothing half-written is left."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

from neurocomp.artifact import _why, write_atomically, write_text_atomically
from neurocomp.errors import BadInput, NeurocompError, escape
from neurocomp.report.sections import PLOTS_DIR


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return o


def _markdown(rep) -> str:
    m = rep["meta"]
    lines = [f"# neurocomp report: {m['model']}", "",
             f"- artifact: `{m['artifact']}`", f"- hardware target: {m['hardware_target']}",
             f"- data: {m['data']}, T = {m['timesteps']} steps",
             f"- **full-split figures use the reference simulator** (torch model on {m['torch_device']}, folded "
             f"float model, fixed-point reference) over {m['samples']} samples; **Lava** (fixed_pt, CPU) runs only "
             f"the first {m['lava_samples']} samples, as the exactness check",
             f"- computed in " + ", ".join(f"{k} {v:.1f}" for k, v in m["timings_s"].items()), ""]
    for s in rep["sections"]:
        lines += [f"## {s.title}", ""] + list(s.md) + [""]
    return "\n".join(escape(line) for line in lines)     # each entry is one line; names come from files


def check_writable(folder):
    """The report is written into the artifact: refuse a read-only one up front, in one line."""
    try:
        shutil.rmtree(tempfile.mkdtemp(prefix=".report-probe-", dir=folder))
    except OSError as e:
        raise BadInput(f"the artifact folder is not writable ({e.strerror or e}): the report is written into it",
                       where=folder, hint="copy the artifact to a writable folder (cp -r) and report on the copy") \
            from None


def _previous_plots(path) -> bool:
    """What the plots folder may replace: a real folder (a previous report's plots), never a link."""
    return os.path.isdir(path) and not os.path.islink(path)


def write_report(artifact, rep) -> list[str]:
    """Write a built report (:func:`~neurocomp.report.build.build_report`) as report.md, report.json and
    report_plots/*.png into the artifact folder; returns the paths."""
    out = os.path.abspath(artifact)
    tmp = rep["plot_dir"]

    def fill(folder):
        for f in os.listdir(tmp):
            if f.endswith(".png"):
                os.rename(os.path.join(tmp, f), os.path.join(folder, f))

    try:
        doc = {"meta": rep["meta"], "sections": {s.key: {"title": s.title, "plots": [f"{PLOTS_DIR}/{p}" for p in s.plots],
                                                         "data": s.data} for s in rep["sections"]}}
        report_json = json.dumps(_jsonable(doc), indent=1, sort_keys=True)
        report_md = _markdown(rep)     # both documents are made before anything is replaced
        write_atomically(os.path.join(out, PLOTS_DIR), fill, overwrite=True, replaceable=_previous_plots)
        write_text_atomically(os.path.join(out, "report.json"), report_json)
        write_text_atomically(os.path.join(out, "report.md"), report_md)
    except OSError as e:
        raise write_error(e, artifact) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    plots = sorted(os.path.join(out, PLOTS_DIR, p) for s in rep["sections"] for p in s.plots)
    return [os.path.join(out, "report.md"), os.path.join(out, "report.json")] + plots


def write_error(e, artifact) -> NeurocompError:
    """A failed write of the report (a full disk, a folder made read-only meanwhile), in one line."""
    return NeurocompError(f"cannot write the report ({_why(e)})", where=os.path.abspath(str(artifact)),
                          hint="check permissions and free space of the artifact folder")
