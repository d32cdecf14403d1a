"""The paper's numbers beside ours: the transcribed tables and the cell-by-cell comparison.

``paper_tables/table2.csv`` and ``paper_tables/table1_right.csv`` (package data of
``harness.report``, so they travel with a wheel) hold Table 2 and Table 1 (right) of Roy et al.
(MICCAI 2023) as printed (percent, one row per cell, with the paper's marks and a source column).
For each of our cells the comparison gives our value, the paper's, the difference
(ours - paper) and whether the paper's value lies inside our 95% bootstrap interval (the AVG
column has no interval).

The paper's SDC cells are compared with our surface Dice in the paper's own convention: one
voxel (spacing [1,1,1], tolerance 1), which is what the official MedNeXt evaluation computed
(``harness.metrics.definitions.PAPER_SDC``). Our 1 mm values have no printed counterpart and
are left out of the comparison. DSC needs no convention.
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

PAPER_COLUMNS = ("model", "label", "group", "dataset", "metric", "value", "mark", "source")


def load_paper_table(stem: str, root: str | Path | None = None) -> pd.DataFrame:
    """The transcribed table ``<stem>.csv`` (comment lines start with ``#``).

    Read from the package data ``harness/report/paper_tables/`` unless ``root`` names another
    folder (tests use that to read a table of their own).
    """
    if root is not None:
        path = Path(root) / f"{stem}.csv"
    else:
        path = files("harness.report") / "paper_tables" / f"{stem}.csv"
    if not path.is_file():
        raise FileNotFoundError(f"transcribed paper table not found: {path}")
    with path.open("r", encoding="utf-8") as fh:
        df = pd.read_csv(fh, comment="#", dtype={"mark": str}, keep_default_na=False,
                         na_values={"value": [""]})
    lacking = [c for c in PAPER_COLUMNS if c not in df.columns]
    if lacking:
        raise ValueError(f"{path}: lacks columns {lacking}")
    df["value"] = df["value"].astype(float)
    return df


RERUN_TABLE = "rerun_isensee2024"


def load_rerun_table(root: str | Path | None = None) -> pd.DataFrame:
    """Published same-lab re-runs of Table 2 methods (``paper_tables/rerun_isensee2024.csv``:
    model, dataset, metric, value in percent, cases, same_cases), the source in its comments."""
    path = (Path(root) if root is not None else files("harness.report") / "paper_tables") \
        / f"{RERUN_TABLE}.csv"
    with path.open("r", encoding="utf-8") as fh:
        df = pd.read_csv(fh, comment="#")
    lacking = [c for c in ("model", "dataset", "metric", "value", "cases", "same_cases")
               if c not in df.columns]
    if lacking:
        raise ValueError(f"{path}: lacks columns {lacking}")
    return df.astype({"value": float, "same_cases": bool})


def compare(table, ci_lo: pd.DataFrame, ci_hi: pd.DataFrame, paper: pd.DataFrame,
            columns: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per compared cell of ``table`` (a ``tables.Table``): ours, paper, difference,
    inside CI.

    ``ci_lo`` / ``ci_hi`` share ``table.values``' index and columns (percent; NaN where absent).
    ``columns`` maps our column label to the paper's metric it is compared with (e.g.
    ``{"DSC": "DSC", "SDC (1 voxel)": "SDC"}``); our other columns are left out. Default: every
    column, under its own label. ``metric`` is the paper's name, ``column`` ours.
    """
    key = paper.set_index(["model", "group", "dataset", "metric"])
    if columns is None:
        columns = {m: m for m in dict.fromkeys(m for _, m in table.values.columns)}
    rows = []
    for i, r in table.rows.iterrows():
        for col in table.values.columns:
            dataset, ours_label = col
            if ours_label not in columns:
                continue
            metric = columns[ours_label]
            ours = float(table.values.loc[i, col])
            k = (r["model"], r["group"], dataset, metric)
            p = float(key.loc[k, "value"]) if k in key.index else np.nan
            mark = str(key.loc[k, "mark"]) if k in key.index else ""
            lo, hi = float(ci_lo.loc[i, col]), float(ci_hi.loc[i, col])
            inside = (lo <= p <= hi) if not (np.isnan(lo) or np.isnan(p)) else None
            rows.append({"model": r["model"], "label": r["label"], "group": r["group"],
                         "dataset": dataset, "metric": metric, "column": ours_label,
                         "ours": ours, "ci_lo": lo, "ci_hi": hi, "paper": p, "diff": ours - p,
                         "paper_in_ci": inside,
                         "our_bold": bool(table.bold.loc[i, col]),
                         "our_underline": bool(table.underline.loc[i, col]), "paper_mark": mark})
    return pd.DataFrame(rows)


def comparison_markdown(cmp: pd.DataFrame) -> str:
    """A compact Markdown view: ours / paper / difference / paper inside our CI."""
    head = ("| Network | Group | Dataset | Paper's metric | Our column | Ours [95% CI] | Paper | "
            "Ours - paper | Paper in CI |")
    lines = [head, "|:--|:--|:--|:--|:--|--:|--:|--:|:-:|"]
    for r in cmp.itertuples(index=False):
        ours = "–" if np.isnan(r.ours) else f"{r.ours:.2f}"
        if not np.isnan(r.ci_lo):
            ours += f" [{r.ci_lo:.2f}, {r.ci_hi:.2f}]"
        paper = "–" if np.isnan(r.paper) else f"{r.paper:.2f}"
        diff = "–" if np.isnan(r.diff) else f"{r.diff:+.2f}"
        inside = {True: "yes", False: "no"}.get(r.paper_in_ci, "–")
        lines.append(f"| {r.label} | {r.group} | {r.dataset} | {r.metric} | {r.column} | {ours} | "
                     f"{paper} | {diff} | {inside} |")
    return "\n".join(lines) + "\n"
