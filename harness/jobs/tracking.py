"""Where each job of a study stands: its files, its SLURM record, its log.

Every submitted job leaves ``work/jobs/<key>.json``: the job itself (``Job.to_dict()``, so that
``python -m harness.jobs.worker`` can run the file) plus a ``slurm`` block with the job id, the
cluster profile, the log paths and the ids of earlier submissions. The local backend keeps its
job files in ``work/jobs/local/`` instead (a local grid beside a SLURM one does not overwrite
SLURM's records) and logs to ``work/logs/<job>.log``. :func:`queue_states` asks SLURM about
recorded ids (``squeue`` for what it still holds, ``sacct`` for the rest), and :func:`cell_statuses` combines both sources into
one line per job: done, running, pending or failed, with job id, log and last error line.

The files decide "done" (a job whose run folder says done is done whatever SLURM says); SLURM
decides between pending, running and failed for jobs that are not done, because a job killed by
its time limit or by ``scancel`` cannot update its own ``run.json``.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from harness.io import write_json
from harness.jobs.plan import Job, job_status, log_path, safe_name

# SLURM job states (sacct/squeue long names) by what they mean for a job that is not done.
ACTIVE_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
                  "CONFIGURING", "SUSPENDED", "STOPPED", "RESIZING", "SPECIAL_EXIT", "SIGNALING"}
ACTIVE_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT"}
ACTIVE = ACTIVE_PENDING | ACTIVE_RUNNING
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL",
         "BOOT_FAIL", "DEADLINE", "PREEMPTED", "REVOKED"}
_VERDICT = re.compile(r"^job \S+ FAILED: ")    # what harness.jobs.worker prints last on failure
_ERROR = re.compile(r"(Error|Exception|FAILED|error:|Traceback|Killed|CANCELLED|DUE TO TIME LIMIT)")


def record_path(work: Path, key: str) -> Path:
    return Path(work) / "jobs" / f"{safe_name(key)}.json"


def read_record(work: Path, key: str) -> dict | None:
    """The job file of ``key``, or None. A corrupt file is an error naming the file."""
    path = record_path(work, key)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: job record is not valid JSON ({exc})") from None


def write_record(job: Job, slurm: dict) -> Path:
    """Record a submission of ``job``; earlier job ids of the same key move to ``history``."""
    old = read_record(job.work, job.key) or {}
    history = list((old.get("slurm") or {}).get("history", []))
    old_id = (old.get("slurm") or {}).get("job_id")
    if old_id and old_id != slurm["job_id"]:
        history.append(old_id)
    return write_json(record_path(job.work, job.key),
                      {**job.to_dict(), "backend": "slurm", "slurm": {**slurm, "history": history}})


def _run(cmd: list[str], env: dict | None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    except FileNotFoundError:
        raise RuntimeError(f"{cmd[0]} not found: is this a SLURM submit host?") from None


def _expand(job_id: str) -> list[str]:
    """``12_[0-2,5%2]`` -> ``12_0 12_1 12_2 12_5``; plain ids unchanged."""
    m = re.match(r"^(\d+)_\[([^\]]+)\]$", job_id)
    if not m:
        return [job_id]
    out = []
    for part in m.group(2).split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def queue_states(job_ids: list[str], env: dict | None = None) -> dict[str, str]:
    """SLURM state of each id (``"123"`` or array task ``"123_4"``): RUNNING, PENDING, FAILED, ...

    Ids SLURM no longer knows are absent. ``squeue`` answers for jobs the controller holds (it
    is authoritative for pending and running ones); ``sacct`` for the rest. A failing ``squeue``
    raises: guessing "not queued" there would submit a job twice.
    """
    wanted = {str(j) for j in job_ids if j}
    if not wanted:
        return {}
    roots = sorted({j.split("_")[0] for j in wanted})
    states: dict[str, str] = {}
    sq = _run(["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(roots)], env)
    if sq.returncode != 0 and "Invalid job id" not in sq.stderr:
        raise RuntimeError(f"squeue failed: {sq.stderr.strip()}")
    if sq.returncode == 0:
        for line in sq.stdout.splitlines():
            jid, _, state = line.strip().partition("|")
            for one in _expand(jid):
                states[one] = state.split()[0] if state else "UNKNOWN"
    missing = sorted({j.split("_")[0] for j in wanted if j not in states})
    if missing:
        sa = _run(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(missing)], env)
        if sa.returncode == 0:
            for line in sa.stdout.splitlines():
                jid, _, state = line.strip().partition("|")
                for one in _expand(jid):
                    # "CANCELLED by 0" -> CANCELLED; squeue's answer wins where both know a job.
                    states.setdefault(one, state.split()[0] if state else "UNKNOWN")
    return {j: states[j] for j in wanted if j in states}


def last_error_line(*paths: Path | str | None) -> str:
    """The worker's own verdict (``job <key> FAILED: ...``), else the last line that looks like
    an error, in the first of ``paths`` that has one."""
    for path in paths:
        if not path:
            continue
        try:
            lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines()
                     if ln.strip()]
        except OSError:
            continue
        verdicts = [ln for ln in lines if _VERDICT.match(ln)]
        if verdicts:
            return verdicts[-1][:300]
        for line in reversed(lines):
            if _ERROR.search(line):
                return line[:300]
    return ""


def run_error(job: Job) -> str:
    """The error a train job's ``run.json`` recorded (its last line), or ``""``."""
    if job.kind != "train":
        return ""
    try:
        rec = json.loads((job.work / "runs" / job.payload["run_id"] / "run.json").read_text())
    except (OSError, ValueError):
        return ""
    return (rec.get("error") or "").strip().splitlines()[-1][:300] if rec.get("error") else ""


def cell_statuses(jobs: list[Job], env: dict | None = None, query_slurm: bool = True) -> list[dict]:
    """One dict per job: key, kind, label, status, job_id, slurm_state, log, error.

    Works for both backends: without a SLURM record the files alone decide, and the log is the
    local backend's ``work/logs/<job>.log``.
    """
    records = {j.key: read_record(j.work, j.key) for j in jobs}
    ids = [r["slurm"]["job_id"] for r in records.values() if r and r.get("slurm")]
    states = queue_states(ids, env) if (ids and query_slurm) else {}
    out = []
    for job in jobs:
        files = job_status(job)
        slurm = (records[job.key] or {}).get("slurm") or {}
        jid = slurm.get("job_id")
        state = states.get(jid) if jid else None
        local_log = log_path(job.work, job.key)
        log = slurm.get("stdout") if slurm else (str(local_log) if local_log.exists() else "")
        status = files
        if files != "done" and state is not None:
            if state in ACTIVE_RUNNING:
                status = "running"
            elif state in ACTIVE_PENDING:
                status = "pending"
            elif state in ENDED:
                # Ended without its files saying done: a failure, however SLURM names it.
                status = "failed"
        elif files == "running" and jid and state is None and query_slurm:
            # The controller forgot the job and accounting never saw it end: it is gone.
            status = "failed"
        error = ""
        if status == "failed":
            error = run_error(job) or last_error_line(slurm.get("stderr"), slurm.get("stdout"),
                                                       local_log)
            if not error and state and state != "COMPLETED":
                error = f"SLURM state {state}"
            elif not error and state == "COMPLETED":
                error = "job completed but its outputs are not done"
        out.append({"key": job.key, "kind": job.kind, "label": job.label, "status": status,
                    "job_id": jid or "", "slurm_state": state or "", "log": log or "",
                    "error": error})
    return out


def format_statuses(rows: list[dict]) -> str:
    """A fixed-width table plus a count line, for ``mednext-bench status``."""
    if not rows:
        return "no jobs"
    head = ("STATUS", "JOB", "JOB ID", "LOG", "LAST ERROR")
    table = [(r["status"], r["label"] or r["key"], r["job_id"] or "-", r["log"] or "-",
              r["error"] or "") for r in rows]
    widths = [max(len(str(row[i])) for row in [head, *table]) for i in range(4)]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row[:4], widths)) + "  " + row[4]
             for row in [head, *table]]
    counts = {s: sum(r["status"] == s for r in rows) for s in ("done", "running", "pending", "failed")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()) + f" of {len(rows)} jobs")
    return "\n".join(line.rstrip() for line in lines)
