"""Can a dataset rank methods, and where should a faithful re-run of a paper cell land?

Dataset suitability (per dataset, DSC, percent points). The signal is how far the methods' mean
DSC lie apart: their range (max - min) and their standard deviation (SD). The noise is how
precisely one method's mean is known, as a standard error (SE), two ways:

- fold SE: the SD of the per-fold scores (each fold's validation cases scored alone), pooled over
  methods (degrees of freedom as weights), over the square root of the number of folds;
- bootstrap SE: the width of the 95% case-bootstrap interval of a method's mean, median over
  methods, over 2 x 1.96.

Rule (``RULE``): the dataset separates methods when the SD across methods exceeds twice the
larger SE. Twice the SE means the variance between methods is at least four times what noise
alone would give, so at least three quarters of the observed spread comes from the methods.
The range is reported but not used: it grows with the number of methods. The rule is
conservative, because the methods are scored on the same cases, so differences between methods
are less noisy than each method's own mean. nnU-Net Revisited (Isensee et al., MICCAI 2024,
arXiv:2404.09556) argues that some small datasets barely separate methods; this panel makes
the question one that each report answers from its own numbers.

Reproduction band (per compared paper cell except AVG): the paper's value +- t(0.975, k-1) x
SD_fold / sqrt(k), with our k folds of that model and dataset and the SD of their per-fold
scores. It treats the paper's value as the centre and our standard error of a k-fold mean as the
re-run noise. That SE includes the variation between the folds' validation cases, which a re-run
on the same splits does not have (wider than pure training noise), and leaves out the paper's
own noise (narrower): both are approximations, said so in the report. With fewer than two folds
there is no band.

Published band (``PUBLISHED_RULE``): the same lab re-ran five of Table 2's methods in nnU-Net
Revisited (Isensee et al., MICCAI 2024), on the same BTCV and BraTS21 cases, under nnU-Net v2's
own planning (``paper_tables/rerun_isensee2024.csv``). Per dataset, the largest absolute
difference between the two publications is the half-width of a second band around each DSC cell
of the paper: how far two published runs of one lab landed apart, protocol differences included.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from .tables import md_frame

Z95 = 1.959963984540054
SEPARATES, DOES_NOT = "separates methods", "does not separate methods"
RULE = ("a dataset **separates methods** when the standard deviation of the methods' mean DSC "
        "exceeds twice the larger of two standard errors of one method's mean: the fold SE "
        "(standard deviation of per-fold scores, pooled over methods, / sqrt(folds)) and the "
        "bootstrap SE (median width of the methods' 95% case-bootstrap intervals / 3.92). Then the "
        "variance between methods is at least four times what noise alone would give, so at least "
        "three quarters of the observed spread comes from the methods. Conservative: methods are "
        "scored on the same cases, so their differences are less noisy than each mean alone. The "
        "range (max - min) is shown, not used: it grows with the number of methods.")
BAND_RULE = ("band = the paper's value +- t(0.975, k-1) x SD_fold / sqrt(k), where k is the number "
             "of our folds of that model and dataset and SD_fold the standard deviation of their "
             "per-fold scores (the standard error of our k-fold mean, centred on the paper's "
             "value). It includes the variation between the folds' validation cases, which a "
             "re-run on the same splits would not have (so it is wider than pure training noise), "
             "and leaves out the paper's own noise (so it is narrower); no band with fewer than "
             "two folds.")
PUBLISHED_RULE = ("published band = the paper's value +- the largest absolute difference, on that "
                  "dataset, between the paper's Table 2 DSC and the same lab's re-run of the same "
                  "method in nnU-Net Revisited (Isensee et al., MICCAI 2024, arXiv:2404.09556; "
                  "nnU-Net, MedNeXt-L k3 and k5, SwinUNETR, nnFormer; 5-fold CV, from scratch, on "
                  "the same cases: BTCV and BraTS21 only). Those re-runs used nnU-Net v2's own "
                  "planning, not the paper's 1 mm / 128^3 protocol, so the band holds protocol "
                  "differences as well as training noise: an outer bound for a faithful re-run. DSC "
                  "only (no surface Dice was published); no band for AMOS22 (the re-run used 360 CT "
                  "and MRI cases, the paper 200 CT) or KiTS19 (the re-run used KiTS2023).")
# Other published evidence on re-run variation, and why none of it sets a band.
RERUN_SOURCES = (
    "Åkesson, Töger and Heiberg, \"Random effects during training: Implications for deep "
    "learning-based medical image segmentation\", Computers in Biology and Medicine 180:108944 "
    "(2024), doi:10.1016/j.compbiomed.2024.108944, measured exactly this kind of variation: "
    "nnU-Net trained with 50 random seeds on three multi-class 3D problems (brain tumour, "
    "hippocampus, cardiac), under hold-out and 5-fold cross-validation, with paired t- and "
    "Wilcoxon tests between seeds. Only its abstract could be read here; its numbers are not "
    "transcribed, and its tasks are not the paper's datasets.",
    "nnU-Net training is not deterministic by design (MIC-DKFZ/nnUNet issues #1423, #1906; "
    "maintainer comment on pull request #2871, 2026-04-14): re-runs differ, by an amount these "
    "threads do not measure.",
)


def published_differences(paper_table: pd.DataFrame, reruns: pd.DataFrame) -> pd.DataFrame:
    """The paper's value and the same lab's published re-run of each (model, dataset, metric)
    both report (``paper.load_paper_table("table2")``, ``paper.load_rerun_table()``): model,
    dataset, metric, paper, rerun, diff (re-run - paper), cases, same_cases."""
    p = paper_table[paper_table["dataset"] != "avg"][["model", "dataset", "metric", "value"]]
    m = reruns.merge(p, on=["model", "dataset", "metric"], suffixes=("_rerun", "_paper"))
    out = pd.DataFrame({"model": m["model"], "dataset": m["dataset"], "metric": m["metric"],
                        "paper": m["value_paper"], "rerun": m["value_rerun"],
                        "diff": m["value_rerun"] - m["value_paper"], "cases": m["cases"],
                        "same_cases": m["same_cases"]})
    return out.reset_index(drop=True)


def published_bands(differences: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(dataset, metric) -> half-width of the published band (``PUBLISHED_RULE``): the largest
    absolute difference over the methods re-run on the same cases."""
    same = differences[differences["same_cases"]]
    return {k: float(g["diff"].abs().max()) for k, g in same.groupby(["dataset", "metric"])}


def _pooled_sd(folds: pd.DataFrame) -> tuple[float, int]:
    """SD of per-fold scores pooled over methods (weights: degrees of freedom), and the median
    number of folds per method."""
    g = folds.groupby("model")["score"]
    k, var = g.count(), g.var(ddof=1)
    ok = k >= 2
    dof = float((k[ok] - 1).sum())
    sd = math.sqrt(float(((k[ok] - 1) * var[ok]).sum()) / dof) if dof > 0 else math.nan
    return sd, int(k.median()) if len(k) else 0


def suitability(scores: pd.DataFrame, folds: pd.DataFrame, datasets: Sequence[str],
                models: Sequence[str]) -> pd.DataFrame:
    """One row per dataset (percent points) with the verdict of ``RULE``.

    ``scores``: (dataset, model, score, ci_lo, ci_hi) in fractions; ``folds``: (dataset, model,
    fold, score) in fractions, the per-fold scores.
    """
    rows = []
    for d in datasets:
        s = scores[(scores["dataset"] == d) & scores["model"].isin(models)].dropna(subset=["score"])
        f = folds[(folds["dataset"] == d) & folds["model"].isin(models)].dropna(subset=["score"])
        values = 100 * s["score"].to_numpy(float)
        fold_sd, n_folds = _pooled_sd(f.assign(score=100 * f["score"]))
        fold_se = fold_sd / math.sqrt(n_folds) if n_folds >= 2 else math.nan
        widths = (100 * (s["ci_hi"] - s["ci_lo"])).dropna()
        width = float(widths.median()) if len(widths) else math.nan
        boot_se = width / (2 * Z95)
        sd = float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan
        noise = float(np.nanmax([fold_se, boot_se])) if not (
            math.isnan(fold_se) and math.isnan(boot_se)) else math.nan
        if len(values) < 2:
            verdict = "undecided: fewer than two methods"
        elif math.isnan(noise):
            verdict = "undecided: no noise measure"
        else:
            verdict = SEPARATES if sd > 2 * noise else DOES_NOT
        rows.append({"dataset": d, "methods": len(values),
                     "spread": float(np.ptp(values)) if len(values) else math.nan,
                     "sd_methods": sd, "folds": n_folds, "fold_sd": fold_sd, "fold_se": fold_se,
                     "boot_ci_width": width, "boot_se": boot_se, "noise": noise,
                     "ratio": sd / noise if noise and not math.isnan(noise) else math.nan,
                     "verdict": verdict})
    return pd.DataFrame(rows, columns=["dataset", "methods", "spread", "sd_methods", "folds",
                                       "fold_sd", "fold_se", "boot_ci_width", "boot_se", "noise",
                                       "ratio", "verdict"])


def suitability_markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "No dataset.\n"
    view = table.copy()
    for c in ("spread", "sd_methods", "fold_sd", "fold_se", "boot_ci_width", "boot_se", "noise",
              "ratio"):
        view[c] = view[c].map(lambda v: "–" if pd.isna(v) else f"{v:.2f}")
    view.columns = ["Dataset", "Methods", "Range", "SD across methods", "Folds", "SD of fold "
                    "scores", "Fold SE", "Median 95% CI width", "Bootstrap SE", "Noise (larger SE)",
                    "SD / noise", "Verdict"]
    return (md_frame(view) + "\nDSC in percent points. Rule: " + RULE + "\n")


REPRODUCTION_COLUMNS = ("model", "label", "group", "dataset", "metric", "column", "ours_metric",
                        "ours", "paper", "diff", "folds", "fold_sd", "half_width", "band_lo",
                        "band_hi", "inside", "published_half_width", "published_lo",
                        "published_hi", "inside_published")


def reproduction(cmp: pd.DataFrame, folds: pd.DataFrame, level: float = 0.95,
                 published: dict[tuple[str, str], float] | None = None) -> pd.DataFrame:
    """Every compared cell with the paper's value (``cmp`` of ``paper.compare`` with an
    ``ours_metric`` column), its band (``BAND_RULE``) and whether our value lies inside, and its
    published band (``PUBLISHED_RULE``; ``published``: :func:`published_bands`) and whether our
    value lies inside that.

    ``folds``: (dataset, model, fold, metric, score) per-fold scores in fractions, ``dataset``
    being the paper's dataset name.
    """
    from scipy.stats import t

    g = folds.dropna(subset=["score"]).groupby(["dataset", "model", "metric"])["score"]
    k, sd = g.count(), 100 * g.std(ddof=1)
    rows = []
    for r in cmp.itertuples(index=False):
        if r.dataset == "avg" or pd.isna(r.paper):
            continue
        key = (r.dataset, r.model, r.ours_metric)
        n = int(k.get(key, 0))
        s = float(sd.get(key, math.nan)) if n >= 2 else math.nan
        half = float(t.ppf(1 - (1 - level) / 2, n - 1)) * s / math.sqrt(n) if n >= 2 else math.nan
        inside = None if math.isnan(half) or math.isnan(r.ours) else bool(abs(r.ours - r.paper) <= half)
        pub = (published or {}).get((r.dataset, r.metric), math.nan)
        inside_pub = None if math.isnan(pub) or math.isnan(r.ours) else \
            bool(abs(r.ours - r.paper) <= pub)
        rows.append({"model": r.model, "label": r.label, "group": r.group, "dataset": r.dataset,
                     "metric": r.metric, "column": r.column, "ours_metric": r.ours_metric,
                     "ours": r.ours, "paper": r.paper, "diff": r.ours - r.paper, "folds": n,
                     "fold_sd": s, "half_width": half, "band_lo": r.paper - half,
                     "band_hi": r.paper + half, "inside": inside, "published_half_width": pub,
                     "published_lo": r.paper - pub, "published_hi": r.paper + pub,
                     "inside_published": inside_pub})
    return pd.DataFrame(rows, columns=list(REPRODUCTION_COLUMNS))


def reproduction_markdown(table: pd.DataFrame, differences: pd.DataFrame | None = None) -> str:
    """The bands of ``table`` (:func:`reproduction`); ``differences``
    (:func:`published_differences`) are listed as the published band's evidence."""
    def counts(col: str, name: str) -> str:
        judged = table[col].dropna() if len(table) else pd.Series(dtype=object)
        return (f"{int(judged.astype(bool).sum())} of {len(judged)} cells with a {name} lie "
                f"inside it; {len(table) - len(judged)} cells have none.")

    def f(v, sign=""):
        return "–" if pd.isna(v) else f"{v:{sign}.2f}"

    head = (counts("inside", "fold band") + " " + counts("inside_published", "published band")
            if len(table) else "No compared cell.")
    lines = [head, "", "Fold " + BAND_RULE, "", PUBLISHED_RULE[0].upper() + PUBLISHED_RULE[1:], ""]
    table = table[table["ours"].notna()]          # cells we have no value for: in the CSV only
    if len(table):
        def band(h, lo, hi):
            return "–" if pd.isna(h) else f"{lo:.2f} – {hi:.2f}"
        yes_no = {True: "yes", False: "**no**"}
        view = pd.DataFrame({
            "Network": table["label"], "Group": table["group"], "Dataset": table["dataset"],
            "Paper's metric": table["metric"], "Our column": table["column"],
            "Ours": table["ours"].map(f), "Paper": table["paper"].map(f),
            "Ours - paper": table["diff"].map(lambda v: f(v, "+")), "Folds": table["folds"],
            "Fold band": [band(*v) for v in zip(table["half_width"], table["band_lo"],
                                                table["band_hi"])],
            "Inside": table["inside"].map(yes_no).fillna("–"),
            "Published band": [band(*v) for v in zip(table["published_half_width"],
                                                     table["published_lo"], table["published_hi"])],
            "Inside (published)": table["inside_published"].map(yes_no).fillna("–")})
        lines += [md_frame(view), "Cells without a value of ours are listed in reproduction.csv only.", ""]
    if differences is not None and len(differences):
        d = differences
        lines += ["Published same-lab re-runs against the paper (DSC, percent; the published band "
                  "of a dataset is the largest |difference| among its rows with the same cases):",
                  "", md_frame(pd.DataFrame({
                      "Model": d["model"], "Dataset": d["dataset"], "Paper": d["paper"].map(f),
                      "Re-run": d["rerun"].map(f), "Re-run - paper": d["diff"].map(lambda v: f(v, "+")),
                      "Cases": d["cases"], "Same cases": d["same_cases"].map({True: "yes", False: "no"})})),
                  ""]
    lines += ["Other evidence on re-run variation:", ""] + [f"- {s}" for s in RERUN_SOURCES]
    return "\n".join(lines) + "\n"
