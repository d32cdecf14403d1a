"""The ``report:<study>-<profile><suffix>`` job: ``harness.report.make_report`` over the study's cells.

It runs after every train job of the study has ended, failed or not: the report lists the cells
that are missing or failed. A stamp in ``work/reports/`` records the state of every cell the
report saw; the job is done while that state is unchanged, so re-running a finished grid
rebuilds nothing, and a grid with a newly finished or failed cell gets a new report.
"""
from __future__ import annotations

import json
from pathlib import Path

from harness.io import write_json
from harness.jobs.files import run_status
from harness.studies import load_profile
from harness.studies.options import RunOptions
from harness.studies.runs import expected_runs


def _options(payload: dict) -> RunOptions:
    return RunOptions.from_dict(payload.get("options"))


def _stamp_path(payload: dict) -> Path:
    name = _options(payload).report_name(payload["study"], load_profile(payload["profile"]))
    return Path(payload["work"]) / "reports" / f"{name}.json"


def _expected(payload: dict) -> list[dict]:
    return expected_runs(payload["study"], payload["profile"], Path(payload["work"]),
                         sources=payload.get("sources"), options=_options(payload))


def _snapshot(payload: dict) -> dict:
    work = Path(payload["work"])
    cells = {f"{r['dataset']}/{r['model']}/{r['fold']}":
             [r["run_id"], run_status(work, r["run_id"]) if r["run_id"] else "no data"]
             for r in _expected(payload)}
    return {"results": str(payload["results"]), "cells": cells}


def report_status(payload: dict) -> str:
    try:
        stamp = json.loads(_stamp_path(payload).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return "pending"
    if not Path(payload["results"]).is_dir():
        return "pending"
    return "done" if stamp == _snapshot(payload) else "pending"


def report_job(payload: dict) -> None:
    """Execute a ``report`` job (idempotent)."""
    from harness.report import make_report

    if report_status(payload) == "done":
        return
    snapshot = _snapshot(payload)
    make_report(payload["study"], payload["profile"], Path(payload["work"]),
                Path(payload["results"]), expected=_expected(payload), options=_options(payload))
    write_json(_stamp_path(payload), snapshot)
