"""What each stored metric means: unit, direction, empty-mask rule, how it is averaged.

The long per-case table stores one row per (case, class, metric); this module is the metadata
that travels beside it (DESIGN habit 7), read by the evaluation and by every report.

Empty-mask rule (decided here, applied in ``harness.metrics.measures`` only):
- both reference and prediction empty: the value is NaN and the case drops out of that class's
  mean (nnU-Net / MedNeXt convention); the report also shows the variant where such a NaN counts
  as the metric's best value ("NaN counts as 1" for DSC and surface Dice, 0 mm for HD95);
- exactly one empty: 0 for DSC and surface Dice; for HD95 the worst value, defined as the
  diagonal of the image extent in mm, sqrt(sum((shape_i * spacing_i)^2)) -- 373.13 mm for a
  240x240x155 BraTS volume at 1 mm, the value BraTS uses.

Surface metrics follow DeepMind ``surface-distance`` (surfels on the voxel-corner grid, area
weighted). Two surface Dice variants are stored: ``nsd_phys`` uses the header spacing and a
1.0 mm tolerance (the paper's stated definition); ``nsd_mednext_code`` uses spacing (1,1,1) and
tolerance 1, i.e. one voxel, which is what the released MedNeXt evaluation computed: its
``region_based_evaluation.py`` passes ``spacing_mm=[1,1,1]``, so the SDC numbers the paper prints
are in this convention (``PAPER_SDC``). Reports show both, each under its own label.
"""
from __future__ import annotations

from dataclasses import dataclass

TOLERANCE_MM = 1.0
# How far a prediction's header may lie from its reference's and still be scored against it: the
# tolerances of the dataset validation (harness.datasets.nifti ORIGIN_ATOL, DIRECTION_ATOL, and
# np.allclose's rtol there), repeated so that the metrics do not depend on the dataset code.
ORIGIN_ATOL = 1e-3        # mm
DIRECTION_ATOL = 1e-4     # direction cosines
GEOMETRY_RTOL = 1e-5
AGGREGATION = ("5-fold CV pooled over cases; per class nanmean over cases; "
               "then the plain mean over the task's paper classes")


@dataclass(frozen=True)
class MetricInfo:
    name: str
    label: str
    unit: str
    higher_is_better: bool
    best: float              # value of a perfect prediction (used by the "NaN counts as best" variant)
    one_empty: str           # "zero" or "worst"
    scale: float             # display factor: fractions are shown in percent, as in the paper
    description: str
    convention: str = ""     # surface Dice only: the spacing convention ("1 mm" or "1 voxel")


METRICS: dict[str, MetricInfo] = {m.name: m for m in (
    MetricInfo("dsc", "DSC", "fraction", True, 1.0, "zero", 100.0,
               "volumetric Dice 2TP/(2TP+FP+FN)"),
    MetricInfo("nsd_phys", "SDC (1 mm)", "fraction", True, 1.0, "zero", 100.0,
               "surface Dice at 1.0 mm tolerance with the header spacing (paper's definition)",
               "1 mm"),
    MetricInfo("nsd_mednext_code", "SDC (1 voxel)", "fraction", True, 1.0, "zero", 100.0,
               "surface Dice at tolerance 1 with spacing (1,1,1), i.e. 1 voxel "
               "(as the released MedNeXt evaluation computed it, hence the paper's SDC numbers)",
               "1 voxel"),
    MetricInfo("hd95", "HD95", "mm", False, 0.0, "worst", 1.0,
               "95th percentile Hausdorff distance (DeepMind, area weighted, max of directions); "
               "one empty mask -> image diagonal in mm"),
)}

# Quantities stored per case and class without an empty-mask rule (never averaged in tables).
COUNTS = {
    "tp": "true-positive voxels", "fp": "false-positive voxels", "fn": "false-negative voxels",
    "vol_ref_mm3": "reference volume in mm^3", "vol_pred_mm3": "predicted volume in mm^3",
}

# The two surface Dice conventions (both in every report), and the one the paper's numbers use:
# the official MedNeXt evaluation passed spacing [1,1,1] to surface-distance, so its "1 mm" SDC
# is one voxel. A comparison with the paper's SDC cells uses PAPER_SDC.
SDC_CONVENTIONS = {
    "nsd_phys": "surface Dice at 1.0 mm with the header spacing (the paper's stated definition)",
    "nsd_mednext_code": "surface Dice at 1 voxel: spacing (1,1,1), tolerance 1 "
                        "(what the released MedNeXt evaluation computed)",
}
PAPER_SDC = "nsd_mednext_code"


def metric(name: str) -> MetricInfo:
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return METRICS[name]
