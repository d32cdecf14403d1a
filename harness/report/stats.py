"""Uncertainty and significance beyond the paper: bootstrap CIs, paired Wilcoxon + Holm, ranks.

- 95% percentile bootstrap CI of a dataset score by resampling *cases* (with all their classes)
  and recomputing the paper's aggregation (per-class nanmean, then mean over classes); seeded, so a
  report rebuilt from the same tables prints the same intervals. The same seed is used for every
  model of a dataset, so models with the same cases get the same resamples.
- Paired Wilcoxon signed-rank tests (scipy) on per-case class-averaged values, each model against
  nnU-Net and against the best baseline of that dataset and metric; p-values Holm-corrected within
  each family (dataset x metric x comparison), effect size = median paired difference. CV folds
  share training data, so p-values are approximate (metrics spec, section 4.2).
- Mean rank over datasets (aggregate, then rank; rank 1 is best).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd

DEFAULT_BOOT = 1000
DEFAULT_SEED = 0
MIN_BOOT = 1000      # fewer resamples leave the 2.5% tails to a couple dozen draws


@lru_cache(maxsize=32)
def resample_weights(n: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each of ``n`` cases is drawn in each of ``n_boot`` resamples (read-only).

    With the multiplicities, the resampled class sums become one matrix product; the same
    (n, n_boot, seed) gives the same resamples, so they are computed once per report.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    w = np.bincount((idx + n * np.arange(n_boot)[:, None]).ravel(),
                    minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)
    w.flags.writeable = False
    return w


def bootstrap_ci(matrix: np.ndarray, n_boot: int = DEFAULT_BOOT, seed: int = DEFAULT_SEED,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of ``score_from_matrix`` over case resamples of a cases x classes matrix.

    A resample in which a class has no defined value (every drawn case NaN there) averages the
    classes it has; with the paper's datasets this only happens for very rare classes.
    """
    if n_boot < MIN_BOOT:
        raise ValueError(f"n_boot must be >= {MIN_BOOT} for a 95% interval, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] == 0:
        return float("nan"), float("nan")
    weights = resample_weights(m.shape[0], n_boot, seed)
    valid = ~np.isnan(m)
    sums = weights @ np.where(valid, m, 0.0)
    counts = weights @ valid.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / counts, np.nan)
    ok = ~np.all(np.isnan(means), axis=1)
    if not ok.any():
        return float("nan"), float("nan")
    scores = np.nanmean(means[ok], axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(scores, [alpha, 1 - alpha])
    return float(lo), float(hi)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count in the family)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    m = ok.size
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adjusted
    return out


def wilcoxon_paired(a: Sequence[float], b: Sequence[float]) -> dict:
    """Two-sided Wilcoxon signed-rank test of paired values (pairs with a NaN are dropped)."""
    from scipy.stats import wilcoxon

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    keep = ~(np.isnan(a) | np.isnan(b))
    d = a[keep] - b[keep]
    res = {"n": int(d.size), "median_diff": float(np.median(d)) if d.size else float("nan"),
           "statistic": float("nan"), "p": float("nan")}
    if d.size == 0:
        return res
    if not np.any(d != 0):
        res["p"] = 1.0          # identical values: no evidence of a difference
        return res
    r = wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    res["statistic"], res["p"] = float(r.statistic), float(r.pvalue)
    return res


def best_baseline(scores: pd.DataFrame, baselines: Sequence[str], higher_is_better: bool) -> dict:
    """Per dataset, the baseline with the best score in ``scores`` (dataset, model, score)."""
    sub = scores[scores["model"].isin(baselines)].dropna(subset=["score"])
    out = {}
    for dataset, g in sub.groupby("dataset", sort=False):
        i = g["score"].idxmax() if higher_is_better else g["score"].idxmin()
        out[dataset] = str(g.loc[i, "model"])
    return out


def paired_tests(case_values: pd.DataFrame, scores: pd.DataFrame, metric: str,
                 models: Sequence[str], baselines: Sequence[str], higher_is_better: bool,
                 reference: str = "nnunet") -> pd.DataFrame:
    """Every model against ``reference`` and against the best baseline, per dataset.

    ``case_values``: (dataset, model, case, value); ``scores``: (dataset, model, score).
    """
    best = best_baseline(scores, baselines, higher_is_better)
    rows = []
    for dataset, g in case_values.groupby("dataset", sort=False):
        wide = g.pivot_table(index="case", columns="model", values="value", aggfunc="first")
        for kind, against in (("vs nnU-Net", reference), ("vs best baseline", best.get(dataset))):
            for model in models:
                if against is None or model == against or model not in wide or against not in wide:
                    continue
                r = wilcoxon_paired(wide[model].to_numpy(), wide[against].to_numpy())
                rows.append({"dataset": dataset, "metric": metric, "comparison": kind,
                             "model": model, "against": against, **r})
    out = pd.DataFrame(rows, columns=["dataset", "metric", "comparison", "model", "against", "n",
                                      "median_diff", "statistic", "p"])
    out["p_holm"] = np.nan
    for _, idx in out.groupby(["dataset", "metric", "comparison"], sort=False).groups.items():
        out.loc[idx, "p_holm"] = holm(out.loc[idx, "p"].to_numpy())
    out["significant"] = out["p_holm"] < 0.05
    return out


def mean_ranks(wide: pd.DataFrame, higher_is_better: bool) -> pd.Series:
    """Rank models within each column (1 = best, ties share the mean rank), then average."""
    ranks = wide.rank(axis=0, ascending=not higher_is_better, method="average")
    return ranks.mean(axis=1, skipna=False).rename("mean_rank")
