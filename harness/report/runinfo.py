"""What the run folders of a report's declared cells recorded, read in one place.

A declared cell (``harness.studies.runs.expected_runs``) names its folder (``run_dir``) or, in
older declarations, only its ``run_id`` under ``work/runs``. Its ``run.json`` holds the spec,
the timings summed over attempts, one entry per attempt (with peak memory and the software
stack) and the top-level device (``harness.provenance``); ``progress.csv`` one row per epoch
(``epoch_seconds`` among its columns). A folder that lacks a file, or holds an unreadable one,
reads as None: reports name what is absent, they never stop on it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import pandas as pd


def run_dir(cell: Mapping, work: str | Path) -> Path | None:
    """The folder of a declared cell (None for a cell without a run id)."""
    if cell.get("run_id") is None:
        return None
    return Path(cell.get("run_dir") or Path(work) / "runs" / str(cell["run_id"]))


def read_record(folder: Path | None) -> dict | None:
    """``run.json`` of a run folder as a dict; None when absent or unreadable."""
    if folder is None:
        return None
    try:
        rec = json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def read_progress(folder: Path | None) -> pd.DataFrame | None:
    """``progress.csv`` of a run folder; None when absent. Raises on an unreadable file
    (``OSError`` / ``ValueError``), so that a caller can name it."""
    if folder is None or not (folder / "progress.csv").is_file():
        return None
    return pd.read_csv(folder / "progress.csv")


def records(expected: Sequence[Mapping], work: str | Path,
            status: str | None = None) -> Iterator[tuple[Mapping, dict]]:
    """(cell, run.json) for every declared cell whose run recorded one (of ``status``, if given)."""
    for cell in expected:
        rec = read_record(run_dir(cell, work))
        if rec is not None and (status is None or rec.get("status") == status):
            yield cell, rec
