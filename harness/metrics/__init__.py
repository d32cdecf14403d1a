"""Per-case segmentation metrics: DSC, surface Dice (two spacing conventions), HD95, counts.

Follows the MedNeXt evaluation (DeepMind ``surface-distance`` for surface Dice, nnU-Net's
per-class regions and empty-case conventions) with the differences documented in
``definitions`` (empty-mask rule decided in ``measures`` only; both surface Dice conventions
stored; HD95 of one empty mask = image diagonal). Public entry points:

- ``dice(ref, pred)``, ``surface_dice(ref, pred, spacing, tolerance=1.0)``,
  ``hd95(ref, pred, spacing)``: floats on boolean arrays in array axis order;
- ``evaluate_run(reference_dir, prediction_dir, case_ids, task, meta, out_csv)``: the long
  per-case table of one run (``metrics.csv``);
- ``regions_for(dataset)``, ``task_of(dataset)``, ``METRICS`` (metric metadata), ``read_nifti``.
"""
from __future__ import annotations

from .definitions import COUNTS, METRICS, PAPER_SDC, SDC_CONVENTIONS, TOLERANCE_MM, MetricInfo
from .evaluate import COLUMNS, evaluate_case, evaluate_run
from .measures import dice, empty_state, hd95, surface_dice, worst_distance
from .reader import Volume, read_nifti, write_nifti
from .regions import Region, paper_classes, regions_for, task_of

__all__ = [
    "COLUMNS", "COUNTS", "METRICS", "PAPER_SDC", "SDC_CONVENTIONS", "TOLERANCE_MM", "MetricInfo",
    "Region", "Volume", "dice", "empty_state", "evaluate_case", "evaluate_run", "hd95",
    "paper_classes", "read_nifti", "regions_for", "surface_dice", "task_of", "worst_distance",
    "write_nifti",
]
