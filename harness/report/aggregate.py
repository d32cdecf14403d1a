"""Aggregation of the long per-case table as the paper does it, in pandas only.

Paper convention (MedNeXt Table 2, nnU-Net ``accumulate_cv_results`` + ``foreground_mean``): the
five validation folds are pooled (each case scored once, by the fold that held it out); for each
class the mean over cases ignoring NaN (both masks empty); the dataset score is the plain mean of
the class means over the task's paper classes (KiTS19: label 1 and label 2, as the MedNeXt code;
the official composite is reported per class only); AVG is the mean over the study's datasets and
is NaN when a dataset is missing, never a mean over fewer.

Empty-mask variants: ``nan-excluded`` (the default, as the paper) and ``nan-as-best``, where a
case with both masks empty counts as a perfect score (MedNeXt's "mean (nan is 1)").
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from harness.metrics.definitions import METRICS
from harness.metrics.regions import paper_classes

VARIANTS = ("nan-excluded", "nan-as-best")


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown empty-mask variant {variant!r}; known: {', '.join(VARIANTS)}")


def select(df: pd.DataFrame, metric: str, variant: str = "nan-excluded",
           paper_only: bool = True) -> pd.DataFrame:
    """Rows of one metric (paper classes only by default) with the empty-mask variant applied."""
    _check_variant(variant)
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; averaged metrics: {', '.join(METRICS)}")
    out = df[df["metric"] == metric]
    if paper_only and len(out):
        keep = np.zeros(len(out), bool)
        for d in out["dataset"].unique():
            keep |= ((out["dataset"] == d) & out["class"].isin(paper_classes(d))).to_numpy()
        out = out[keep]
    out = out.copy()
    if variant == "nan-as-best":
        both = out["ref_empty"].astype(bool) & out["pred_empty"].astype(bool)
        out.loc[both, "value"] = METRICS[metric].best
    return out


def to_matrix(rows: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """Cases x ``classes`` matrix of one (dataset, model, metric) selection; absent cells are NaN."""
    _, case_idx = np.unique(rows["case"].to_numpy(dtype=str), return_inverse=True)
    col = pd.Index(list(classes)).get_indexer(rows["class"])
    keep = col >= 0
    m = np.full((int(case_idx.max()) + 1 if len(case_idx) else 0, len(classes)), np.nan)
    m[case_idx[keep], col[keep]] = rows["value"].to_numpy(dtype=float)[keep]
    return m


def class_matrix(df: pd.DataFrame, dataset: str, model: str, metric: str,
                 variant: str = "nan-excluded") -> pd.DataFrame:
    """Cases x paper classes of one (dataset, model, metric); NaN where both masks were empty."""
    sub = select(df, metric, variant)
    sub = sub[(sub["dataset"] == dataset) & (sub["model"] == model)]
    classes = paper_classes(dataset)
    return pd.DataFrame(to_matrix(sub, classes), index=sorted(set(sub["case"].astype(str))),
                        columns=list(classes))


def score_from_matrix(m: np.ndarray) -> float:
    """Per-class nanmean over cases, then the plain mean over classes."""
    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(m), axis=0)
        sums = np.nansum(m, axis=0)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return float(np.mean(means)) if means.size else float("nan")


def class_means(df: pd.DataFrame, metric: str, variant: str = "nan-excluded",
                paper_only: bool = False) -> pd.DataFrame:
    """One row per (dataset, model, class): nanmean over pooled cases, cases counted, NaNs counted."""
    sub = select(df, metric, variant, paper_only=paper_only)
    g = sub.groupby(["dataset", "model", "class"], sort=False)["value"]
    out = pd.DataFrame({"mean": g.mean(), "n_cases": g.size(), "n_nan": g.size() - g.count()})
    return out.reset_index()


def dataset_scores(df: pd.DataFrame, metric: str, variant: str = "nan-excluded") -> pd.DataFrame:
    """One row per (dataset, model): the paper's score, the number of cases and of folds pooled."""
    sub = select(df, metric, variant)
    rows = []
    for (dataset, model), g in sub.groupby(["dataset", "model"], sort=False):
        score = score_from_matrix(to_matrix(g, paper_classes(dataset)))
        rows.append({"dataset": dataset, "model": model, "metric": metric, "score": score,
                     "n_cases": int(g["case"].nunique()), "n_folds": int(g["fold"].nunique())})
    return pd.DataFrame(rows, columns=["dataset", "model", "metric", "score", "n_cases", "n_folds"])


def fold_scores(df: pd.DataFrame, metric: str, variant: str = "nan-excluded") -> pd.DataFrame:
    """One row per (dataset, model, fold): the paper's score over that fold's validation cases
    alone (the spread of these is the fold-to-fold variation)."""
    sub = select(df, metric, variant)
    rows = [{"dataset": dataset, "model": model, "fold": int(fold), "metric": metric,
             "score": score_from_matrix(to_matrix(g, paper_classes(dataset)))}
            for (dataset, model, fold), g in sub.groupby(["dataset", "model", "fold"], sort=False)]
    return pd.DataFrame(rows, columns=["dataset", "model", "fold", "metric", "score"])


def case_means(df: pd.DataFrame, metric: str, variant: str = "nan-excluded") -> pd.DataFrame:
    """One row per (dataset, model, case): the mean over the case's paper classes (NaN ignored).

    This is the per-case value of the paired tests and the box plots; the dataset score itself
    averages per class first (see the module docstring), which differs when NaNs occur.
    """
    sub = select(df, metric, variant)
    g = sub.groupby(["dataset", "model", "case"], sort=False)["value"].mean()
    return g.rename("value").reset_index()


def wide_scores(scores: pd.DataFrame, models: Sequence[str], datasets: Sequence[str],
                metrics: Iterable[str], value: str = "score") -> pd.DataFrame:
    """Model rows x (dataset, metric) columns plus ("avg", metric): absent cells are NaN."""
    metrics = list(metrics)
    idx = pd.MultiIndex.from_product([list(datasets) + ["avg"], metrics], names=["dataset", "metric"])
    out = pd.DataFrame(np.nan, index=list(dict.fromkeys(models)), columns=idx)
    for r in scores.itertuples(index=False):
        if r.model in out.index and r.dataset in datasets and r.metric in metrics:
            out.loc[r.model, (r.dataset, r.metric)] = getattr(r, value)
    for m in metrics:
        # AVG over all datasets of the study; NaN if any is missing (never a mean over fewer).
        out[("avg", m)] = out[[(d, m) for d in datasets]].mean(axis=1, skipna=False)
    return out


def empty_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Per dataset: (case, class) pairs touched by each empty-mask rule (DSC rows, all classes)."""
    sub = df[df["metric"] == "dsc"]
    ref, pred = sub["ref_empty"].astype(bool), sub["pred_empty"].astype(bool)
    flags = pd.DataFrame({
        "dataset": sub["dataset"], "pairs": 1,
        "both_empty": (ref & pred).astype(int),
        "ref_empty_only": (ref & ~pred).astype(int),
        "pred_empty_only": (~ref & pred).astype(int),
    })
    return flags.groupby("dataset", sort=False).sum().reset_index()
