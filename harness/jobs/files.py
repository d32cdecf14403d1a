"""Where a job's files are, and what they say about the job.

``work/locks/<job>.lock`` (the job's OS lock, :mod:`harness.jobs.locks`), ``work/logs/<job>.log``
(the local backend's log of it), and the status of a run from its ``run.json`` and its lock.
Below every other module of :mod:`harness.jobs`, so that the jobs can ask without importing the
plan that runs them.
"""
from __future__ import annotations

from pathlib import Path

from harness.jobs.locks import is_locked
from harness.provenance import RunRecord


def safe_name(key: str) -> str:
    """A job key as a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


def lock_path(work: Path, key: str) -> Path:
    return Path(work) / "locks" / f"{safe_name(key)}.lock"


def log_path(work: Path, key: str) -> Path:
    """The local backend's log of a job (SLURM jobs log beside their SLURM job id)."""
    return Path(work) / "logs" / f"{safe_name(key)}.log"


def run_status(work: Path, run_id: str) -> str:
    """done | failed | running | pending of a run, from its ``run.json`` and its lock.

    Running means its lock is held (anywhere); a run whose record says running (or interrupted)
    while nobody holds its lock was stopped and is pending: executing it again resumes it.
    """
    rec = RunRecord.load(Path(work) / "runs" / run_id / "run.json")
    if is_locked(lock_path(work, f"train:{run_id}")):
        return "running"
    if rec is None:
        return "pending"
    status = rec.get("status", "pending")
    return status if status in ("done", "failed") else "pending"


