"""The report's builder: measured figures (:func:`neurocomp.measure.measure`) laid out as the
:data:`~neurocomp.report.sections.SECTIONS`, with their plots drawn into a temporary folder inside the
artifact (moved into place by :func:`neurocomp.report.write.write_report`)."""
from __future__ import annotations

import os
import shutil
import tempfile

from neurocomp.report.sections import SECTIONS, Context
from neurocomp.report.write import write_error


def build_report(m) -> dict:
    """Lay out measured figures (:func:`neurocomp.measure.measure`) as sections; returns
    ``{"sections": [Section], "meta": {...}, "plot_dir": tmpdir}`` (the plots are drawn into tmpdir)."""
    art, target, cc, T = m.artifact, m.target, m.crosscheck, m.artifact.manifest["timesteps"]
    man, timings, source = art.manifest, m.timings, m.data_source
    plot_dir = tempfile.mkdtemp(prefix=".report-plots-", dir=art.path)
    try:
        ctx = Context(m, plot_dir)
        sections = [s for s in (fn(ctx) for fn in SECTIONS) if s is not None]
    except BaseException as e:
        shutil.rmtree(plot_dir, ignore_errors=True)
        if isinstance(e, OSError):               # writing a plot: a full disk
            raise write_error(e, art.path) from e
        raise
    meta = {"artifact": os.path.abspath(art.path), "model": man.get("input_checkpoint", {}).get("name"),
            "hardware_target": target.name, "timesteps": T, "data": source, "samples": cc["samples"],
            "lava_samples": (cc.get("lava") or {}).get("samples", 0), "torch_device": cc["torch_device"],
            "timings_s": timings, "versions": man.get("versions"),
            "method": "full-split figures: reference simulator (torch model, folded float model, fixed-point "
                      "reference); exactness: Lava fixed_pt on the first lava_samples samples"}
    return {"sections": sections, "meta": meta, "plot_dir": plot_dir}
