"""The local backend: run a plan on this machine, each job in its own process.

Jobs run in the plan's (topological) order, at most ``parallel`` at a time. A job already done is
skipped; a job that fails does not stop the grid: the jobs that depend on it are skipped (except
the report, which runs after its dependencies have ended, whatever their outcome) and everything
is listed at the end. One bar with an ETA goes over the grid, one bar per running job (training
iterations, then prediction cases, read from the run's ``progress.json``); each job's output goes
to ``work/logs/<job>.log``.

Two launchers may share a work folder (two ``make reproduce-table2``, or a local grid beside a
SLURM one): a job whose lock another process holds is not started but followed until its lock is
free, then counted done, failed, or (stopped there) run here. A worker that finds the lock taken
in the meantime exits with ``EXIT_BUSY`` and is followed the same way, so each job runs once.

Each worker leads its own process group (:func:`harness.processes.spawn`): when it ends, whatever
it left behind in its group is killed; Ctrl-C or an error of the launcher stops every running
group (SIGTERM, then SIGKILL after 30 s), and a launcher that dies takes its workers with it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.io import write_text
from harness.jobs.plan import Job, index_jobs, job_status, log_path, safe_name
from harness.jobs.tracking import last_error_line, run_error
from harness.processes import EXIT_BUSY, spawn, stop_group, sweep_group, usable_cpus

TERMINAL = ("done", "ok", "failed", "skipped")


@dataclass
class Outcome:
    """What a local run did. ``failed`` and ``skipped`` map job keys to a reason."""

    already_done: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


def _failure_reason(job: Job, log: Path) -> str:
    reason = run_error(job) or last_error_line(log)
    if reason:
        return reason
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


class _Bars:
    """The grid bar and one bar per running job (tqdm, only on a terminal)."""

    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled and total > 0
        self.slots: dict[str, object] = {}
        if self.enabled:
            from tqdm import tqdm
            self._tqdm = tqdm
            self.grid = tqdm(total=total, desc="grid", unit="job", position=0, dynamic_ncols=True)

    def write(self, text: str) -> None:
        if self.enabled:
            self._tqdm.write(text)
        else:
            print(text, flush=True)

    def start(self, job: Job) -> None:
        if not self.enabled:
            return
        used = {b.pos for b in self.slots.values()}
        pos = next(i for i in range(1, 1000) if i not in used)
        self.slots[job.key] = self._tqdm(total=None, desc=job.label[:48], position=pos,
                                         leave=False, dynamic_ncols=True, unit="it")

    def update(self, job: Job) -> None:
        bar = self.slots.get(job.key)
        if bar is None or job.kind != "train":
            return
        try:
            p = json.loads((job.work / "runs" / job.payload["run_id"] / "progress.json").read_text())
        except (OSError, ValueError):
            return
        if bar.total != p["total"] or bar.unit != p["phase"]:
            bar.reset(total=p["total"])
            bar.unit = p["phase"]
        bar.n = p["done"]
        bar.refresh()

    def drop(self, job: Job) -> None:
        """Close a job's bar without counting it (it went back to waiting)."""
        bar = self.slots.pop(job.key, None)
        if bar is not None:
            bar.close()

    def finish(self, job: Job) -> None:
        bar = self.slots.pop(job.key, None)
        if bar is not None:
            bar.close()
        if self.enabled:
            self.grid.update(1)

    def close(self) -> None:
        if self.enabled:
            for bar in self.slots.values():
                bar.close()
            self.grid.close()


def run_jobs(jobs: list[Job], *, parallel: int = 1, progress: bool | None = None,
             poll: float = 0.5) -> Outcome:
    """Run ``jobs`` (topological order) locally; see the module docstring."""
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel!r}")
    by_key = index_jobs(jobs)
    out = Outcome()
    state: dict[str, str] = {}
    for j in jobs:
        s = job_status(j)
        if s == "done":
            state[j.key] = "done"
            out.already_done.append(j.key)
        else:
            state[j.key] = "waiting" if s == "running" else "pending"
    todo = [j for j in jobs if state[j.key] != "done"]
    bars = _Bars(len(todo), sys.stderr.isatty() if progress is None else progress)
    env = dict(os.environ)
    if parallel > 1:
        env["MEDNEXT_BENCH_THREADS"] = str(max(1, usable_cpus() // parallel))
    running: dict[str, tuple[subprocess.Popen, object, float]] = {}
    n_done = 0

    def end(job: Job, verdict: str, secs: float, reason: str = "") -> None:
        nonlocal n_done
        n_done += 1
        state[job.key] = verdict
        label = {"ok": "ok    ", "failed": "FAILED", "done": "done elsewhere"}.get(verdict, verdict)
        bars.write(f"[{n_done}/{len(todo)}] {label} {secs:7.1f}s  {job.label}"
                   + (f": {reason}" if reason else ""))
        bars.finish(job)

    try:
        while any(state[j.key] in ("pending", "waiting") for j in todo) or running:
            for j in todo:
                if state[j.key] == "waiting":
                    # Another process holds the job: follow it until its lock is free.
                    s = job_status(j)
                    if s == "done":
                        out.already_done.append(j.key)
                        end(j, "done", 0.0)
                    elif s == "failed":
                        reason = f"failed in another process: {_failure_reason(j, log_path(j.work, j.key))}"
                        out.failed[j.key] = reason
                        end(j, "failed", 0.0, reason)
                    elif s == "pending":
                        state[j.key] = "pending"         # stopped there: ours to resume
                if state[j.key] != "pending":
                    continue
                bad = [d for d in j.deps if state[d] in ("failed", "skipped")]
                if bad and not j.after_any:
                    out.skipped[j.key] = f"dependency {bad[0]} {state[bad[0]]}"
                    state[j.key] = "skipped"
                    bars.finish(j)
                    n_done += 1
                    continue
                deps = [state[d] for d in j.deps]
                ready = all(s in TERMINAL for s in deps) if j.after_any else \
                    all(s in ("done", "ok") for s in deps)
                if ready and len(running) < parallel:
                    running[j.key] = _launch(j, env) + (time.time(),)
                    state[j.key] = "running"
                    bars.start(j)
            for key in list(running):
                proc, log_fh, t0 = running[key]
                job = by_key[key]
                bars.update(job)
                rc = proc.poll()
                if rc is None:
                    continue
                sweep_group(proc.pid)          # whatever the job started and left behind
                log_fh.close()
                del running[key]
                secs = time.time() - t0
                if rc == EXIT_BUSY:            # it started elsewhere meanwhile: follow it
                    state[key] = "waiting"
                    bars.drop(job)
                    continue
                out.seconds[key] = round(secs, 1)
                log = log_path(job.work, job.key)
                if rc == 0 and job_status(job) == "done":
                    out.ran.append(key)
                    end(job, "ok", secs)
                else:
                    reason = _failure_reason(job, log) if rc != 0 else \
                        f"exited 0 but the job is not done (status {job_status(job)})"
                    out.failed[key] = f"{reason} (log: {log})"
                    end(job, "failed", secs, reason)
            if running or any(state[j.key] == "waiting" for j in todo):
                time.sleep(poll)
    except BaseException:
        # Ctrl-C or an error of the launcher: every job's whole process group goes down with it
        # (each worker records its run as interrupted; the next launch resumes it).
        for proc, log_fh, _ in running.values():
            stop_group(proc, grace_s=30)
            log_fh.close()
        raise
    finally:
        bars.close()
    return out


def _launch(job: Job, env: dict) -> tuple[subprocess.Popen, object]:
    job_file = local_job_file(job.work, job.key)
    write_text(job_file, job.to_json())
    log = log_path(job.work, job.key)
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "a")
    fh.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.key} =====\n")
    fh.flush()
    proc = spawn([sys.executable, "-m", "harness.jobs.worker", str(job_file)], stdout=fh, env=env)
    return proc, fh


def local_job_file(work: Path, key: str) -> Path:
    """The job file the local backend hands its worker (apart from SLURM's job records)."""
    return Path(work) / "jobs" / "local" / f"{safe_name(key)}.json"


def summarize(out: Outcome, jobs: list[Job]) -> str:
    """A human summary: counts, then every failed and skipped job with its reason."""
    labels = {j.key: j.label for j in jobs}
    lines = [f"{len(out.ran)} ran, {len(out.already_done)} already done, "
             f"{len(out.failed)} failed, {len(out.skipped)} skipped"]
    for key, why in out.failed.items():
        lines.append(f"  FAILED  {labels.get(key, key)}  [{key}]: {why}")
    for key, why in out.skipped.items():
        lines.append(f"  skipped {labels.get(key, key)}  [{key}]: {why}")
    return "\n".join(lines)
