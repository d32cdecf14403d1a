"""Reports: per-case tables -> the paper's aggregates, intervals and tests, tables, figures.

Pure pandas (plus scipy for the tests and matplotlib for figures). Entry point:
``make_report(study, profile, work, out)`` (``harness.report.build``), also behind
``mednext-bench report``. Modules: ``collect`` (declared cells and their state), ``aggregate``
(the paper's convention), ``stats`` (bootstrap, Wilcoxon + Holm, ranks), ``tables`` (Table 2 /
Table 1 right with the paper's marks), ``paper`` (the transcribed tables and the comparison, in
the paper's 1-voxel surface Dice convention), ``recipes`` (each model's training recipe as run),
``header`` (the protocol stated above the numbers), ``figures``; beyond the paper (``beyond``):
``compute`` (parameters, GMACs, measured times and memory per model, the Pareto front),
``suitability`` (can a dataset rank methods; the reproduction band of each paper cell),
``ranking`` (rank stability over case resamples), ``stack`` (software stacks and known
regressions), reading the run folders through ``runinfo``.
"""
from __future__ import annotations


def make_report(*args, **kwargs):
    """See ``harness.report.build.make_report``."""
    from .build import make_report as _make_report
    return _make_report(*args, **kwargs)
