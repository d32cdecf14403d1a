"""The protocol a report states before its numbers: header, metric metadata, missing cells.

The header names the profile, the data versions, the folds, the options the runs were trained
under (recipe first), both surface Dice conventions and which one the paper's numbers use, the
aggregation, the empty-mask rules and how many cases each touched, the intervals and tests, and
the library versions (metrics spec, section 4.3: a table's footnote block).
"""
from __future__ import annotations

from importlib import metadata

import pandas as pd

from harness.metrics.definitions import (AGGREGATION, COUNTS, METRICS, PAPER_SDC, SDC_CONVENTIONS,
                                        TOLERANCE_MM)
from harness.studies.options import RunOptions

from . import aggregate

LIBRARIES = ("surface-distance", "numpy", "scipy", "pandas", "SimpleITK", "matplotlib", "nnunetv2")


def metric_info() -> pd.DataFrame:
    """The metadata of every stored quantity, written beside the numbers it describes."""
    rows = [{"metric": m.name, "label": m.label, "convention": m.convention, "unit": m.unit,
             "display_scale": m.scale, "higher_is_better": m.higher_is_better, "best": m.best,
             "one_empty": "0" if m.one_empty == "zero" else "image diagonal (mm)",
             "both_empty": "NaN, excluded (variant nan-as-best: best)",
             "aggregation": AGGREGATION, "description": m.description} for m in METRICS.values()]
    rows += [{"metric": k, "label": k, "unit": "mm^3" if k.startswith("vol") else "voxels",
              "description": v, "aggregation": "not aggregated"} for k, v in COUNTS.items()]
    return pd.DataFrame(rows)


def sdc_lines() -> list[str]:
    """Both surface Dice conventions by their table labels, and which one the paper printed."""
    paper = METRICS[PAPER_SDC].label
    return [f"**{METRICS[k].label}** (`{k}`): {text}" for k, text in SDC_CONVENTIONS.items()] + [
        f"the paper's SDC numbers are **{paper}** values: the official MedNeXt evaluation passed "
        "spacing [1,1,1] to surface-distance, so its 1.0 mm tolerance is one voxel; every "
        f"comparison with the paper uses {paper}. The two agree on 1 mm isotropic images "
        "(BraTS21). DSC has no spacing convention."]


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def header_text(study, prof, cells: pd.DataFrame, per_case: pd.DataFrame, n_boot: int,
                seed: int, options: RunOptions | None = None) -> str:
    options = (options or RunOptions()).resolved(prof)
    counts = aggregate.empty_counts(per_case) if len(per_case) else pd.DataFrame()
    states = cells["state"].value_counts().to_dict()
    lines = [
        f"# {study.title}",
        "",
        f"- Recipe: **{options.recipe}** (each model's optimizer, learning rate, schedule and "
        "switches as run: section \"Training recipes\" and recipes.csv)",
        f"- Profile: **{prof.name}** ({prof.description}) -- data: **{prof.data}**"
        + (" (phantoms: synthetic volumes, numbers say nothing about the paper's datasets)"
           if prof.data == "phantom" else ""),
        "- Data (every cell of a dataset comes from runs on this one version of it; "
        "fingerprint = SHA-256 of dataset.json and every image and label file): "
        + _data_text(cells),
        f"- Folds: {', '.join(map(str, prof.folds))} (validation cases pooled over folds); "
        f"epochs {prof.epochs} x {prof.iterations_per_epoch} iterations",
        "- Options: " + "; ".join(options.describe(prof)),
        f"- Cells: {len(cells)} declared; " + ", ".join(f"{k} {v}" for k, v in sorted(states.items())),
        f"- DSC: volumetric Dice. Surface Dice (SDC), tolerance {TOLERANCE_MM}, DeepMind "
        "surface-distance surfels, in two conventions, both in every table:",
        *(f"  - {line}" for line in sdc_lines()),
        f"- Aggregation: {AGGREGATION}. AVG = mean over datasets, empty when one is missing.",
        "- Empty masks: both empty -> NaN, excluded (variant `nan-as-best`: counted as 1 / 0 mm); "
        "one empty -> 0 for DSC and SDC, image diagonal in mm for HD95",
        f"- Intervals: 95% percentile bootstrap over cases, {n_boot} resamples, seed {seed}; "
        "paired two-sided Wilcoxon signed-rank, Holm within dataset x metric x comparison",
        "- Libraries: " + ", ".join(f"{n} {_version(n)}" for n in LIBRARIES),
    ]
    if len(counts):
        lines.append("- (case, class) pairs touched by each empty-mask rule, all classes:")
        for r in counts.itertuples(index=False):
            lines.append(f"  - {r.dataset}: {r.pairs} pairs; both empty (NaN) {r.both_empty}; "
                         f"reference empty only {r.ref_empty_only}; prediction empty only "
                         f"{r.pred_empty_only}")
    return "\n".join(lines) + "\n"


def _data_text(cells: pd.DataFrame) -> str:
    if "data_fingerprint" not in cells.columns or cells.empty:
        return "none declared"
    parts = []
    for dataset, g in cells.groupby("dataset", sort=False):
        fps = sorted({str(f)[:12] for f in g["data_fingerprint"] if isinstance(f, str) and f})
        parts.append(f"{dataset} {', '.join(fps) if fps else 'not planned in this work folder'}")
    return "; ".join(parts)


def problems_text(cells: pd.DataFrame) -> str:
    bad = cells[cells["state"] != "ok"]
    if bad.empty:
        return "All declared cells are present.\n"
    lines = ["| Dataset | Model | Fold | State | Run | Detail |", "|:--|:--|--:|:--|:--|:--|"]
    for r in bad.itertuples(index=False):
        detail = str(r.detail).replace("|", "/").replace("\n", " ")[:160]
        lines.append(f"| {r.dataset} | {r.model} | {r.fold} | {r.state} | {r.run_id} | {detail} |")
    return "\n".join(lines) + "\n"
