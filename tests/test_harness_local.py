"""The local backend's scheduling (harness.jobs.local), with stand-in processes.

The jobs are real plan jobs; what each job's process does is replaced by a tiny Python process
that exits with a chosen code, and the work folder's status by a dictionary, so that skipping,
failure handling and the report's "after any" rule are checked in a second.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

import harness.jobs.local as local
from harness.processes import EXIT_BUSY
from harness.jobs.plan import plan_study


@pytest.fixture
def jobs(tmp_path):
    return plan_study("ablations", "smoke", tmp_path / "work")


def fake_backend(monkeypatch, jobs, done=(), fail=(), busy=(), status=None):
    """Jobs in ``done`` are already done; jobs in ``fail`` exit 1; jobs in ``busy`` exit with
    EXIT_BUSY (their lock is taken elsewhere, status unchanged); others succeed. ``status``: a
    dict to share (a test may change it while the grid runs)."""
    if status is None:
        status = {}
    for j in jobs:
        status.setdefault(j.key, "done" if j.key in done else "pending")
    launched = []

    def launch(job, env):
        launched.append(job.key)
        rc = EXIT_BUSY if job.key in busy else 1 if job.key in fail else 0
        if rc == 0:
            status[job.key] = "done"
        proc = subprocess.Popen([sys.executable, "-c", f"import sys; sys.exit({rc})"])
        log = local.log_path(job.work, job.key)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("job FAILED: RuntimeError: stand-in failure\n" if rc else "done\n")
        return proc, open(log, "a")

    monkeypatch.setattr(local, "_launch", launch)
    monkeypatch.setattr(local, "job_status", lambda job: status[job.key])
    return launched


def _elsewhere(status, key, after_polls, then):
    """A status dict entry that reads "running" (locked by another process) for a few polls,
    then ``then``."""
    class Flip(dict):
        polls = 0

        def __getitem__(self, k):
            if k == key and dict.__getitem__(self, k) == "running":
                Flip.polls += 1
                if Flip.polls > after_polls:
                    dict.__setitem__(self, k, then)
            return dict.__getitem__(self, k)
    flip = Flip(status)
    flip[key] = "running"
    return flip


def test_a_job_running_elsewhere_is_followed_not_started(monkeypatch, jobs):
    k3 = next(j for j in jobs if j.kind == "train" and j.payload["spec"]["model"] == "mednext-b-k3")
    status = _elsewhere({}, k3.key, after_polls=3, then="done")
    launched = fake_backend(monkeypatch, jobs, status=status)
    out = local.run_jobs(jobs, progress=False, poll=0.01)
    assert out.ok and k3.key not in launched and k3.key in out.already_done
    position = {k: i for i, k in enumerate(launched)}
    assert all(position[j.key] >= 0 for j in jobs if k3.key in j.deps)   # its dependants ran


def test_a_job_stopped_elsewhere_is_resumed_here(monkeypatch, jobs):
    k3 = next(j for j in jobs if j.kind == "train" and j.payload["spec"]["model"] == "mednext-b-k3")
    status = _elsewhere({}, k3.key, after_polls=2, then="pending")
    launched = fake_backend(monkeypatch, jobs, status=status)
    out = local.run_jobs(jobs, progress=False, poll=0.01)
    assert out.ok and launched.count(k3.key) == 1 and k3.key in out.ran


def test_a_worker_that_finds_the_lock_taken_is_followed(monkeypatch, jobs):
    k3 = next(j for j in jobs if j.kind == "train" and j.payload["spec"]["model"] == "mednext-b-k3")
    status: dict = {}
    launched = fake_backend(monkeypatch, jobs, busy={k3.key}, status=status)
    real_sleep = local.time.sleep

    def sleep(s):           # the other process finishes the job while we follow it
        if launched.count(k3.key) == 1:
            status[k3.key] = "done"
        real_sleep(s)

    monkeypatch.setattr(local.time, "sleep", sleep)
    out = local.run_jobs(jobs, progress=False, poll=0.01)
    assert out.ok and launched.count(k3.key) == 1 and k3.key in out.already_done


def test_runs_everything_in_order(monkeypatch, jobs):
    launched = fake_backend(monkeypatch, jobs)
    out = local.run_jobs(jobs, parallel=2, progress=False, poll=0.01)
    assert out.ok and sorted(out.ran) == sorted(j.key for j in jobs)
    position = {k: i for i, k in enumerate(launched)}
    for job in jobs:
        assert all(position[d] < position[job.key] for d in job.deps)


def test_done_jobs_are_skipped(monkeypatch, jobs):
    launched = fake_backend(monkeypatch, jobs, done={j.key for j in jobs})
    out = local.run_jobs(jobs, progress=False, poll=0.01)
    assert launched == [] and out.ok and len(out.already_done) == len(jobs)


def test_a_failure_skips_its_dependents_but_not_the_rest_nor_the_report(monkeypatch, jobs, capsys):
    k3 = next(j for j in jobs if j.kind == "train" and j.payload["spec"]["model"] == "mednext-b-k3")
    launched = fake_backend(monkeypatch, jobs, fail={k3.key})
    out = local.run_jobs(jobs, progress=False, poll=0.01)
    dependents = {j.key for j in jobs if k3.key in j.deps and j.kind == "train"}
    assert len(dependents) == 2                      # the UpKern k5 and the 2x-schedule run
    assert set(out.failed) == {k3.key} and "stand-in failure" in out.failed[k3.key]
    assert set(out.skipped) == dependents
    assert all(k3.key in why for why in out.skipped.values())
    report = jobs[-1]
    assert report.key in launched and report.key in out.ran
    others = {j.key for j in jobs} - dependents - {k3.key}
    assert others <= set(out.ran)
    text = local.summarize(out, jobs)
    assert "1 failed" in text and "2 skipped" in text and k3.label in text
    assert "FAILED" in capsys.readouterr().out


def test_a_failed_prepare_skips_the_datasets_runs(monkeypatch, jobs):
    prep = jobs[0]
    fake_backend(monkeypatch, jobs, fail={prep.key})
    out = local.run_jobs(jobs, progress=False, poll=0.01)
    ds = prep.payload["dataset"]
    skipped_ds = {j.payload["spec"]["dataset"] for j in jobs if j.key in out.skipped}
    assert skipped_ds == {ds}
    assert any(j.payload.get("spec", {}).get("dataset") != ds for j in jobs
               if j.key in out.ran and j.kind == "train")


def test_bad_arguments(jobs):
    with pytest.raises(ValueError, match="parallel"):
        local.run_jobs(jobs, parallel=0)
    with pytest.raises(ValueError, match="not in the plan"):
        local.run_jobs(jobs[1:], progress=False)


def test_progress_bars_over_the_grid_and_each_run(monkeypatch, jobs, capsys):
    train = next(j for j in jobs if j.kind == "train")
    progress = local.Path(train.payload["work"]) / "runs" / train.payload["run_id"] / "progress.json"
    progress.parent.mkdir(parents=True)
    progress.write_text('{"phase": "train", "done": 3, "total": 8, "time": 0}')
    fake_backend(monkeypatch, jobs)
    out = local.run_jobs(jobs, progress=True, poll=0.01)
    assert out.ok
    err = capsys.readouterr().err
    assert "grid" in err and f"{len(jobs)}/{len(jobs)}" in err
