"""``neurocomp report ARTIFACT``: report.md, report.json and PNG plots for a compiled artifact.

The report reads, it does not compile: :func:`neurocomp.measure.measure` computes every figure (the
cross-check of all stages, the bit-width sweep, the attention modes side by side, activity, energy), and
the report lays them out:

- :mod:`~neurocomp.report.sections`: one function per section, ``section(ctx) -> Section | None``
  (``None`` when it does not apply to the model), in the order of ``SECTIONS``;
- :mod:`~neurocomp.report.build`: ``build_report(measured)`` runs the sections, drawing the plots
  (:mod:`~neurocomp.report.plots`) into a temporary folder inside the artifact;
- :mod:`~neurocomp.report.write`: ``write_report(artifact, built)`` puts report.md, report.json and
  report_plots/ in place atomically; ``check_writable`` refuses a read-only artifact up front.

Full-split figures come from the reference simulator (torch model, folded float model, fixed-point
reference); Lava runs only the first ``lava_samples`` samples, as the exactness check.
"""
