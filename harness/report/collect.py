"""Collect a study's per-case tables and account for every declared cell.

The declared grid comes from ``harness.studies.runs.expected_runs(study, profile, work)`` (one dict
per dataset x model x fold: ``run_id``, ``dataset``, ``task``, ``model``, ``fold``). Each cell's
state is read from ``work/runs/<run_id>/run.json`` ("status") and its ``metrics.csv``:

- ``ok``: done, with a readable per-case table;
- ``no-metrics``: done, but ``metrics.csv`` is missing or unreadable (the reason is kept);
- ``failed`` / ``running`` / ``interrupted``: as ``run.json`` says (with its error text; an
  interrupted run resumes when the study runs again);
- ``missing``: no ``run.json`` at all, or no run id: the data of a real dataset were never
  planned in this work folder, so which run would hold the cell is unknown.

Nothing is dropped silently: every non-``ok`` cell is listed in the report. This is the
nnU-Net habit of pooling the five validation folds per model, made explicit about what is absent.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

STATES = ("ok", "no-metrics", "failed", "running", "interrupted", "missing")
REQUIRED_COLUMNS = ("run_id", "dataset", "model", "fold", "case", "class", "metric", "value",
                    "ref_empty", "pred_empty")


@dataclass
class Collection:
    """``cells``: one row per declared cell with its state; ``per_case``: the pooled long table."""
    cells: pd.DataFrame
    per_case: pd.DataFrame

    @property
    def problems(self) -> pd.DataFrame:
        return self.cells[self.cells["state"] != "ok"]


def _read_status(run_dir: Path) -> tuple[str, str]:
    path = run_dir / "run.json"
    if not path.is_file():
        return "missing", ""
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return "failed", f"unreadable run.json: {exc}"
    status = rec.get("status", "")
    error = str(rec.get("error") or "")
    if status == "done":
        return "done", error
    if status in ("failed", "running", "interrupted"):
        return status, error
    return "failed", f"run.json has unknown status {status!r}"


def _read_metrics(path: Path, cell: dict) -> tuple[pd.DataFrame | None, str]:
    if not path.is_file():
        return None, f"{path} not found"
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        return None, f"{path}: unreadable ({exc})"
    lacking = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if lacking:
        return None, f"{path}: lacks columns {lacking}"
    if df.empty:
        return None, f"{path}: no rows"
    ids = set(df["run_id"].astype(str))
    if ids != {str(cell["run_id"])}:
        return None, f"{path}: holds run ids {sorted(ids)}, expected {cell['run_id']!r}"
    return df, ""


def collect(expected: Sequence[dict], work: str | Path) -> Collection:
    """State of every expected cell and the concatenation of the ``ok`` cells' tables.

    The identity columns of the pooled table (dataset, task, model, fold) are taken from the
    declared cell, so a table can only be counted where the grid puts it.
    """
    runs = Path(work) / "runs"
    cells, tables = [], []
    for cell in expected:
        if cell.get("run_id") is None:
            state, detail = "missing", (f"no data of {cell['dataset']} planned in {work} "
                                        "(convert it and run the study with --data)")
        else:
            state, detail = _read_status(runs / str(cell["run_id"]))
        run_dir = runs / str(cell["run_id"])
        if state == "done":
            df, detail = _read_metrics(run_dir / "metrics.csv", cell)
            if df is None:
                state = "no-metrics"
            else:
                state = "ok"
                df = df.assign(dataset=cell["dataset"], task=cell.get("task", cell["dataset"]),
                               model=cell["model"], fold=int(cell["fold"]))
                tables.append(df)
        cells.append({"run_id": cell["run_id"], "dataset": cell["dataset"],
                      "task": cell.get("task", cell["dataset"]), "model": cell["model"],
                      "fold": int(cell["fold"]), "state": state, "detail": detail,
                      "data_fingerprint": cell.get("data_fingerprint")})
    cells_df = pd.DataFrame(cells, columns=["run_id", "dataset", "task", "model", "fold",
                                            "state", "detail", "data_fingerprint"])
    per_case = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        columns=list(REQUIRED_COLUMNS) + ["task"])
    if len(per_case):
        per_case["ref_empty"] = per_case["ref_empty"].astype(bool)
        per_case["pred_empty"] = per_case["pred_empty"].astype(bool)
        per_case["case"] = per_case["case"].astype(str)
        dup = per_case.duplicated(["dataset", "model", "case", "class", "metric"])
        if dup.any():
            first = per_case[dup].iloc[0]
            raise ValueError(f"case {first['case']!r} of {first['dataset']} / {first['model']} is "
                             "scored in more than one fold: the folds' validation sets must be disjoint")
    return Collection(cells_df, per_case)


def collect_study(study: str, profile: str, work: str | Path, options=None) -> Collection:
    """``collect`` over the grid that ``harness.studies.runs.expected_runs`` declares."""
    from harness.studies.runs import expected_runs

    return collect(expected_runs(study, profile, Path(work), options=options), work)
