"""Per-case evaluation of a run's predictions into the long per-case table (``metrics.csv``).

One row per (case, class, metric): DSC, surface Dice at 1 mm with the header spacing
(``nsd_phys``, the paper's definition), surface Dice at one voxel (``nsd_mednext_code``, what the
released MedNeXt evaluation computed), HD95 in mm, TP/FP/FN voxels and both volumes in mm^3, with
the run's identity, the spacing (array axis order) and the two empty flags on every row. As in
nnU-Net and MedNeXt, predictions and references are compared at the original geometry; the
regions are those of ``harness.metrics.regions``. A prediction is scored only on its reference's
grid: shape, spacing, origin and direction must agree within the tolerances of the dataset
validation (nnU-Net's ``compute_metrics`` compares the voxel arrays without looking at the
headers, so a prediction with a shifted or flipped header would be scored voxel by voxel against
the wrong anatomy). Cases run in parallel, one process per usable CPU (spawned, so a caller
that holds torch threads is safe).
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from harness.processes import usable_cpus

from .definitions import DIRECTION_ATOL, GEOMETRY_RTOL, ORIGIN_ATOL, TOLERANCE_MM
from .measures import (BOTH_EMPTY, NOT_EMPTY, PRED_EMPTY, REF_EMPTY, dice, empty_state,
                       empty_value, worst_distance)
from .reader import read_nifti
from .regions import max_label, regions_for, task_of
from .surface import robust_hausdorff_from, surface_dice_from, surface_distances, union_bbox

META_KEYS = ("run_id", "dataset", "model", "fold")
COLUMNS = ("run_id", "dataset", "task", "model", "fold", "case", "class", "metric", "value",
           "ref_empty", "pred_empty", "spacing_0", "spacing_1", "spacing_2")
SPACING_RTOL = 1e-3


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v + 0.0:.6g}" for v in values) + ")"   # + 0.0: no "-0"


def _check_labels(arr: np.ndarray, top: int, case: str, path: Path, role: str) -> None:
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise ValueError(f"{role} of case {case!r} ({path}): non-integer label values")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi > top:
        raise ValueError(f"{role} of case {case!r} ({path}): label values span {lo}..{hi}, "
                         f"expected 0..{top}")


def evaluate_case(ref_path: str | Path, pred_path: str | Path, case: str, dataset: str,
                  tolerance_mm: float = TOLERANCE_MM, engine: str = "fast") -> list[dict]:
    """All metric rows of one case (without the run's identity columns)."""
    ref = read_nifti(ref_path, case, "reference")
    pred = read_nifti(pred_path, case, "prediction")
    if ref.array.shape != pred.array.shape:
        raise ValueError(f"case {case!r}: prediction {pred.path} has shape {pred.array.shape}, "
                         f"reference {ref.path} has {ref.array.shape}")
    if not np.allclose(ref.spacing, pred.spacing, rtol=SPACING_RTOL, atol=0):
        raise ValueError(f"case {case!r}: prediction {pred.path} has spacing {pred.spacing}, "
                         f"reference {ref.path} has {ref.spacing} (array axis order)")
    for name, atol, unit in (("origin", ORIGIN_ATOL, "mm"), ("direction", DIRECTION_ATOL, "cosines")):
        a, b = getattr(pred, name), getattr(ref, name)
        if len(a) != len(b) or not np.allclose(a, b, rtol=GEOMETRY_RTOL, atol=atol):
            raise ValueError(f"case {case!r}: prediction {pred.path} has {name} {_fmt(a)}, "
                             f"reference {ref.path} has {_fmt(b)} ({unit}, SimpleITK x, y, z "
                             f"order; tolerance {atol}): the prediction does not lie on the "
                             f"reference's grid")
    top = max_label(dataset)
    _check_labels(ref.array, top, case, ref.path, "reference")
    _check_labels(pred.array, top, case, pred.path, "prediction")
    spacing = ref.spacing
    worst = worst_distance(ref.array.shape, spacing)
    voxel_mm3 = float(np.prod(spacing))
    unit = (1.0,) * len(spacing)

    # Everything outside the bounding box of all foreground is background for every class, so
    # cropping once changes no metric and saves a full-volume pass per class.
    box = union_bbox((ref.array > 0) | (pred.array > 0))
    r_all = ref.array[box] if box is not None else ref.array[:0]
    p_all = pred.array[box] if box is not None else pred.array[:0]

    sp = list(spacing) + [float("nan")] * (3 - len(spacing))
    rows: list[dict] = []
    for region in regions_for(dataset):
        r, p = region.mask(r_all), region.mask(p_all)
        tp = int(np.count_nonzero(r & p))
        n_ref, n_pred = int(np.count_nonzero(r)), int(np.count_nonzero(p))
        state = empty_state(r, p)
        values = {"dsc": dice(r, p)}
        if state == NOT_EMPTY:
            d = surface_distances(r, p, spacing, engine)
            values["nsd_phys"] = surface_dice_from(d, tolerance_mm)
            values["hd95"] = robust_hausdorff_from(d, 95.0)
            values["nsd_mednext_code"] = surface_dice_from(surface_distances(r, p, unit, engine), 1.0)
        else:
            values["nsd_phys"] = values["nsd_mednext_code"] = empty_value(state, "overlap")
            values["hd95"] = empty_value(state, "distance", worst)
        values.update(tp=tp, fp=n_pred - tp, fn=n_ref - tp,
                      vol_ref_mm3=n_ref * voxel_mm3, vol_pred_mm3=n_pred * voxel_mm3)
        for metric in ("dsc", "nsd_phys", "nsd_mednext_code", "hd95",
                       "tp", "fp", "fn", "vol_ref_mm3", "vol_pred_mm3"):
            rows.append({
                "case": case, "class": region.name, "metric": metric, "value": float(values[metric]),
                "ref_empty": state in (BOTH_EMPTY, REF_EMPTY),
                "pred_empty": state in (BOTH_EMPTY, PRED_EMPTY),
                "spacing_0": sp[0], "spacing_1": sp[1], "spacing_2": sp[2],
            })
    return rows


def _job(args: tuple) -> list[dict]:
    return evaluate_case(*args)


def evaluate_run(reference_dir: str | Path, prediction_dir: str | Path, case_ids: Sequence[str],
                 task: str, meta: Mapping, out_csv: str | Path, *, workers: int | None = None,
                 engine: str = "fast", tolerance_mm: float = TOLERANCE_MM):
    """Evaluate ``prediction_dir/<case>.nii.gz`` against ``reference_dir/<case>.nii.gz``.

    Args:
        reference_dir: folder of reference label maps (e.g. ``nnUNet_raw/<Dataset>/labelsTr``).
        prediction_dir: folder of predictions at the original geometry (``runs/<id>/predictions``).
        case_ids: the cases to score; every one must have both files.
        task: dataset or task name (``btcv`` or ``phantom-btcv``): decides the regions.
        meta: the run's identity, at least ``run_id``, ``dataset``, ``model``, ``fold``.
        out_csv: where the long table is written (atomically).
        workers: processes (default: one per CPU this process may use, at most one per case);
            1 runs in-process.
        engine: ``fast`` (default) or ``reference`` (``surface-distance`` itself); same numbers.
        tolerance_mm: surface Dice tolerance of ``nsd_phys``.

    Returns:
        The table written, as a pandas DataFrame with columns ``COLUMNS``.

    Example:
        evaluate_run("work/nnUNet_raw/Dataset901_PhantomBTCV/labelsTr", "work/runs/ab12/predictions",
                     ["case_000", "case_003"], "phantom-btcv",
                     {"run_id": "ab12", "dataset": "phantom-btcv", "model": "nnunet", "fold": 0},
                     "work/runs/ab12/metrics.csv")
    """
    import pandas as pd

    from harness.io import atomic_path

    task_name = task_of(task)
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"run metadata lacks {missing}; needs {list(META_KEYS)}")
    cases = [str(c) for c in case_ids]
    if not cases:
        raise ValueError("case_ids is empty: nothing to evaluate")
    if len(set(cases)) != len(cases):
        raise ValueError(f"case_ids has duplicates: {sorted({c for c in cases if cases.count(c) > 1})}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    dataset = str(meta.get("dataset", task))
    ref_dir, pred_dir = Path(reference_dir), Path(prediction_dir)
    jobs = []
    for case in cases:
        ref, pred = ref_dir / f"{case}.nii.gz", pred_dir / f"{case}.nii.gz"
        for role, path in (("reference", ref), ("prediction", pred)):
            if not path.is_file():
                raise FileNotFoundError(f"{role} of case {case!r} not found: {path}")
        jobs.append((ref, pred, case, task, tolerance_mm, engine))

    n = min(workers or usable_cpus(), len(jobs))
    if n == 1:
        results = [_job(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=n, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(_job, jobs))

    df = pd.DataFrame([row for rows in results for row in rows])
    ident = {"run_id": str(meta["run_id"]), "dataset": dataset, "task": task_name,
             "model": str(meta["model"]), "fold": int(meta["fold"])}
    for key, value in ident.items():
        df[key] = value
    df = df[list(COLUMNS)]
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    return df
