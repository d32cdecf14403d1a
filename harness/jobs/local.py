"""The local backend: run a plan on this machine, each job in its own process.

Jobs run in the plan's (topological) order, at most ``parallel`` at a time. A job already done is
skipped; a job that fails does not stop the grid: the jobs that depend on it are skipped (except
the report, which runs after its dependencies have ended, whatever their outcome) and everything
is listed at the end. One bar with an ETA goes over the grid, one bar per running job (training
iterations, then prediction cases, read from the run's ``progress.json``); each job's output goes
to ``work/logs/<job>.log``.
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
from harness.jobs.plan import Job, index_jobs, job_status

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


def safe_name(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)


def _failure_reason(job: Job, log: Path) -> str:
    from harness.jobs.tracking import last_error_line, run_error   # tracking imports this module
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
        elif s == "running":
            state[j.key] = "skipped"
            out.skipped[j.key] = "running in another process"
        else:
            state[j.key] = "pending"
    todo = [j for j in jobs if state[j.key] == "pending"]
    bars = _Bars(len(todo), sys.stderr.isatty() if progress is None else progress)
    env = dict(os.environ)
    if parallel > 1:
        env["MEDNEXT_BENCH_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    n_done = 0
    try:
        while any(state[j.key] == "pending" for j in todo) or running:
            for j in todo:
                if state[j.key] != "pending":
                    continue
                deps = [state[d] for d in j.deps]
                bad = [d for d in j.deps if state[d] in ("failed", "skipped")]
                if bad and not j.after_any:
                    state[j.key] = "skipped"
                    out.skipped[j.key] = f"dependency {bad[0]} {state[bad[0]]}"
                    bars.finish(j)
                    n_done += 1
                    continue
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
                log_fh.close()
                del running[key]
                n_done += 1
                secs = time.time() - t0
                out.seconds[key] = round(secs, 1)
                log = _log_path(job)
                if rc == 0 and job_status(job) == "done":
                    state[key] = "ok"
                    out.ran.append(key)
                    bars.write(f"[{n_done}/{len(todo)}] ok     {secs:7.1f}s  {job.label}")
                else:
                    state[key] = "failed"
                    reason = _failure_reason(job, log) if rc != 0 else \
                        f"exited 0 but the job is not done (status {job_status(job)})"
                    out.failed[key] = f"{reason} (log: {log})"
                    bars.write(f"[{n_done}/{len(todo)}] FAILED {secs:7.1f}s  {job.label}: {reason}")
                bars.finish(job)
            if running:
                time.sleep(poll)
    except BaseException:
        for proc, log_fh, _ in running.values():
            proc.terminate()
        for proc, log_fh, _ in running.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log_fh.close()
        raise
    finally:
        bars.close()
    return out


def _log_path(job: Job) -> Path:
    return job.work / "logs" / f"{safe_name(job.key)}.log"


def _launch(job: Job, env: dict) -> tuple[subprocess.Popen, object]:
    job_file = job.work / "jobs" / f"{safe_name(job.key)}.json"
    write_text(job_file, job.to_json())
    log = _log_path(job)
    log.parent.mkdir(parents=True, exist_ok=True)
    fh = open(log, "a")
    fh.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {job.key} =====\n")
    fh.flush()
    proc = subprocess.Popen([sys.executable, "-m", "harness.jobs.worker", str(job_file)],
                            stdout=fh, stderr=subprocess.STDOUT, env=env,
                            stdin=subprocess.DEVNULL)
    return proc, fh


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
