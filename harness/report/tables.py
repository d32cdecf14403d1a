"""The paper's tables rebuilt from our numbers: Table 2 and Table 1 (right), as Markdown, CSV, LaTeX.

Layout follows the paper: Table 2 rows grouped as printed (seven baselines; MedNeXt kernel 3;
kernel 5), columns dataset x metric and AVG (the reports give DSC and surface Dice in both spacing
conventions, the paper DSC and SDC); Table 1 (right) the MedNeXt-B ablation pairs on
BTCV and AMOS22. Values are percent with two decimals. The marks are computed from OUR numbers,
compared at the printed precision (two decimals), with the paper's rules:

- Table 2: bold = a MedNeXt cell >= the best baseline of that column; underline = a kernel-5 cell
  > the kernel-3 cell of the same configuration (both marks may apply; the paper's text shows one).
  A row of another group (``table2-plus``: "Beyond the paper") is not a baseline: bold when it
  reaches the best of the paper's baselines, never underlined, and the paper's rows keep their marks;
- Table 1 (right): bold = the best row of its comparison group (the reference row is not marked).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

DATASET_LABELS = {"btcv": "BTCV", "amos22": "AMOS22", "kits19": "KiTS19", "brats21": "BraTS21",
                  "avg": "AVG"}
BASELINE_GROUPS = ("Baselines", "Reference")


@dataclass
class Table:
    """Rows in study order; ``values`` (percent), ``bold``, ``underline`` share rows x columns."""
    name: str
    rows: pd.DataFrame          # model, label, group
    values: pd.DataFrame        # columns MultiIndex (dataset, metric label)
    bold: pd.DataFrame
    underline: pd.DataFrame
    caption: str


def _rounded(values: pd.DataFrame) -> pd.DataFrame:
    return values.round(2)


def table2_marks(rows: pd.DataFrame, values: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bold (>= best baseline, MedNeXt rows) and underline (kernel 5 > kernel 3 of same label)."""
    v = _rounded(values)
    is_base = rows["group"].isin(BASELINE_GROUPS).to_numpy()
    best = v[is_base].max(axis=0, skipna=True)
    bold = (v.ge(best, axis=1) & ~pd.DataFrame(np.repeat(is_base[:, None], v.shape[1], 1),
                                               index=v.index, columns=v.columns)) & v.notna()
    underline = pd.DataFrame(False, index=v.index, columns=v.columns)
    k3 = {lab: i for i, lab, g in zip(rows.index, rows["label"], rows["group"]) if g == "kernel: 3"}
    for i, lab, g in zip(rows.index, rows["label"], rows["group"]):
        if g == "kernel: 5" and lab in k3:
            underline.loc[i] = (v.loc[i] > v.loc[k3[lab]]).to_numpy()
    return bold, underline


def group_best_marks(rows: pd.DataFrame, values: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Bold = best of its group (ties all bold); the reference group is not marked."""
    v = _rounded(values)
    bold = pd.DataFrame(False, index=v.index, columns=v.columns)
    for group, idx in rows.groupby("group", sort=False).groups.items():
        if group in BASELINE_GROUPS or len(idx) < 2:
            continue
        sub = v.loc[idx]
        bold.loc[idx] = (sub.eq(sub.max(axis=0)) & sub.notna()).to_numpy()
    return bold, pd.DataFrame(False, index=v.index, columns=v.columns)


def build_table(name: str, study_rows, wide: pd.DataFrame, datasets, caption: str,
                marks: str, metrics=("DSC", "SDC"), with_avg: bool = True) -> Table:
    """``wide``: model x (dataset, metric label) in fractions (0..1) incl. ("avg", ...).

    Columns come out in the paper's order: each dataset, then AVG (Table 2 has one, Table 1
    right has none: ``with_avg``); ``metrics`` within each.
    """
    rows = pd.DataFrame([{"model": r.model, "label": r.label, "group": r.group} for r in study_rows])
    cols = [(d, m) for d in list(datasets) + (["avg"] if with_avg else []) for m in metrics
            if (d, m) in wide.columns]
    values = pd.DataFrame([wide.loc[m, cols].to_numpy(dtype=float) * 100.0
                           if m in wide.index else np.full(len(cols), np.nan)
                           for m in rows["model"]], index=rows.index,
                          columns=pd.MultiIndex.from_tuples(cols, names=["dataset", "metric"]))
    if marks == "table2":
        bold, underline = table2_marks(rows, values)
    elif marks == "group-best":
        bold, underline = group_best_marks(rows, values)
    else:
        raise ValueError(f"unknown marking rule {marks!r}")
    return Table(name, rows, values, bold, underline, caption)


def _fmt(v: float) -> str:
    return "–" if pd.isna(v) else f"{v:.2f}"


def to_markdown(t: Table) -> str:
    cols = list(t.values.columns)
    head = ["Network", "Group"] + [f"{DATASET_LABELS.get(d, d)} {m}" for d, m in cols]
    lines = [f"**{t.caption}**", "", "| " + " | ".join(head) + " |",
             "|" + "|".join([":--", ":--"] + ["--:"] * len(cols)) + "|"]
    last_group = None
    for i, r in t.rows.iterrows():
        cells = []
        for c in cols:
            s = _fmt(t.values.loc[i, c])
            if t.underline.loc[i, c]:
                s = f"<u>{s}</u>"
            if t.bold.loc[i, c]:
                s = f"**{s}**"
            cells.append(s)
        group = r["group"] if r["group"] != last_group else ""
        last_group = r["group"]
        lines.append("| " + " | ".join([r["label"], group] + cells) + " |")
    return "\n".join(lines) + "\n"


def _tex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                 ("#", r"\#")):
        s = s.replace(a, b)
    return s


def to_latex(t: Table) -> str:
    cols = list(t.values.columns)
    datasets = list(dict.fromkeys(d for d, _ in cols))
    per = {d: [m for dd, m in cols if dd == d] for d in datasets}
    spec = "ll" + "".join("c" * len(per[d]) for d in datasets)
    top = ["Networks", "Cat."] + [rf"\multicolumn{{{len(per[d])}}}{{c}}{{{DATASET_LABELS.get(d, d)}}}"
                                  for d in datasets]
    rules, start = [], 3
    for d in datasets:
        rules.append(rf"\cmidrule(lr){{{start}-{start + len(per[d]) - 1}}}")
        start += len(per[d])
    sub = ["", ""] + [_tex_escape(m) for d in datasets for m in per[d]]
    out = [r"% requires \usepackage{booktabs}", r"\begin{table}", r"\centering",
           rf"\caption{{{_tex_escape(t.caption)}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
           " & ".join(top) + r" \\", "".join(rules), " & ".join(sub) + r" \\", r"\midrule"]
    last_group = None
    for i, r in t.rows.iterrows():
        if last_group is not None and r["group"] != last_group:
            out.append(r"\midrule")
        cells = []
        for c in cols:
            s = _fmt(t.values.loc[i, c]).replace("–", "--")
            if t.underline.loc[i, c]:
                s = rf"\underline{{{s}}}"
            if t.bold.loc[i, c]:
                s = rf"\textbf{{{s}}}"
            cells.append(s)
        group = _tex_escape(r["group"]) if r["group"] != last_group else ""
        last_group = r["group"]
        out.append(" & ".join([_tex_escape(r["label"]), group] + cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def to_long(t: Table) -> pd.DataFrame:
    """Tidy CSV form: one row per cell (model, label, group, dataset, column, value in percent,
    bold, underline); ``column`` is the table's metric label."""
    rows = [{"model": r["model"], "label": r["label"], "group": r["group"], "dataset": d,
             "column": m, "value": round(float(t.values.loc[i, (d, m)]), 4),
             "bold": bool(t.bold.loc[i, (d, m)]), "underline": bool(t.underline.loc[i, (d, m)])}
            for i, r in t.rows.iterrows() for d, m in t.values.columns]
    return pd.DataFrame(rows, columns=["model", "label", "group", "dataset", "column", "value",
                                       "bold", "underline"])


def md_frame(df: pd.DataFrame) -> str:
    """A plain Markdown table (pandas' ``to_markdown`` needs ``tabulate``, not a dependency)."""
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("--:" if pd.api.types.is_numeric_dtype(df[c]) else ":--" for c in df.columns) + "|"
    body = ["| " + " | ".join("–" if pd.isna(v) else str(v) for v in row) + " |"
            for row in df.itertuples(index=False)]
    return "\n".join([head, rule] + body) + "\n"
