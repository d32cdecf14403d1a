"""The SLURM backend against a real single-node cluster (``scripts/slurm-local.sh start``).

A reduced smoke grid (one phantom dataset; nnU-Net and MedNeXt-S k5, whose UpKern source k3 comes
with it) goes through sbatch as a job array plus dependent jobs; a failing job and its dependant;
and a training that is signalled mid-run (the USR2 SLURM sends before a time limit or on
preemption), checkpoints, requeues itself and resumes without repeating a finished epoch.

Marker ``slurm``: run by ``make test-slurm`` and ``.ci/run``, never by the default suite.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from harness.cluster import load_cluster
from harness.jobs.plan import Job, plan_study
from harness.jobs.plan import select_jobs
from harness.jobs.slurm import submit_jobs, submit_study, wait_for
from harness.jobs.tracking import cell_statuses, read_record

pytestmark = pytest.mark.slurm
MODELS, DATASETS = ["mednext-s-k5", "nnunet"], ["kits19"]


@pytest.fixture(scope="module")
def cluster():
    prof = load_cluster("local")
    out = subprocess.run(["scontrol", "ping"], env=prof.client_env(), capture_output=True, text=True)
    if out.returncode != 0 or "UP" not in out.stdout:
        pytest.fail("the local SLURM cluster is not running: bash scripts/slurm-local.sh start\n"
                    + out.stdout + out.stderr)
    return prof


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slurm-work")


def _sacct(ids, env) -> dict[str, dict]:
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,Start,End",
                          "-j", ",".join(sorted({i.split("_")[0] for i in ids}))],
                         env=env, capture_output=True, text=True, check=True).stdout
    rows = {}
    for line in out.splitlines():
        jid, state, start, end = line.split("|")
        rows[jid] = {"state": state, "start": datetime.fromisoformat(start),
                     "end": datetime.fromisoformat(end) if end[0].isdigit() else None}
    return rows


def _smoke_jobs(work, models=MODELS):
    jobs = plan_study("table2", "smoke", work, results=work / "results")
    return select_jobs(jobs, models=models, datasets=DATASETS)


def test_smoke_grid_runs_as_arrays_with_dependencies(cluster, work):
    env = cluster.client_env()
    sub = submit_study("table2", "smoke", work, None, cluster, models=MODELS, datasets=DATASETS,
                       results=work / "results", echo=False)
    assert [(g["kind"], len(g["keys"])) for g in sub.groups] == \
        [("prepare", 1), ("train", 2), ("train", 1), ("report", 1)]
    # Submitting again while everything is queued adds nothing.
    again = submit_study("table2", "smoke", work, None, cluster, models=MODELS, datasets=DATASETS,
                         results=work / "results", echo=False)
    assert again.submitted == {} and again.queued == sub.submitted

    states = wait_for(sub, cluster, timeout_s=1200, poll_s=3)
    assert set(states.values()) == {"COMPLETED"}, states

    jobs = _smoke_jobs(work)
    rows = cell_statuses(jobs, env)
    assert [r["status"] for r in rows] == ["done"] * 5, rows
    assert all(r["job_id"] == sub.submitted[r["key"]] for r in rows)

    # SLURM honoured the graph: trainings after the preparation, k5 after its k3.
    by_model = {j.payload["spec"]["model"]: j for j in jobs if j.kind == "train"}
    acct = _sacct(sub.submitted.values(), env)
    ids = {k: sub.submitted[k] for k in sub.submitted}
    prep = acct[ids[jobs[0].key]]
    for model in ("nnunet", "mednext-s-k3", "mednext-s-k5"):
        assert acct[ids[by_model[model].key]]["start"] >= prep["end"]
    assert acct[ids[by_model["mednext-s-k5"].key]]["start"] >= \
        acct[ids[by_model["mednext-s-k3"].key]]["end"]
    assert acct[ids["report:table2-smoke"]]["start"] >= \
        max(acct[ids[j.key]]["end"] for j in by_model.values())

    # The k5 run was initialised (UpKern) from the k3 run of the same dataset and fold.
    k3_id = by_model["mednext-s-k3"].payload["run_id"]
    k5 = json.loads((work / "runs" / by_model["mednext-s-k5"].payload["run_id"] / "run.json")
                    .read_text())
    assert k3_id in k5["training"]["init_from"]
    for job in by_model.values():
        assert (work / "runs" / job.payload["run_id"] / "metrics.csv").is_file()
    assert (work / "results" / "table2-smoke").is_dir()

    # Done is done: a third submission sends nothing.
    third = submit_study("table2", "smoke", work, None, cluster, models=MODELS,
                         datasets=DATASETS, results=work / "results", echo=False)
    assert third.submitted == {} and third.queued == {} and len(third.done) == 5

    cli = subprocess.run([sys.executable, "-m", "harness.cli", "status", "--study", "table2",
                          "--profile", "smoke", "--work", str(work), "--models", ",".join(MODELS),
                          "--datasets", ",".join(DATASETS), "--cluster", "local"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert "5 done, 0 running, 0 pending, 0 failed of 5 jobs" in cli
    assert ids[by_model["mednext-s-k5"].key] in cli


def test_failed_job_is_reported_and_its_dependant_leaves_the_queue(cluster, work):
    prep, train = _smoke_jobs(work, ["nnunet"])[:2]
    # A payload whose run id is not the hash of its spec: the job raises at once on the node.
    broken = Job(key="train:broken.phantom-kits19.f0.000000000000", kind="train",
                 payload={**train.payload, "run_id": "broken.phantom-kits19.f0.000000000000"},
                 deps=(prep.key,), label="broken")
    after = Job(key="train:after.phantom-kits19.f0.000000000000", kind="train",
                payload={**train.payload, "run_id": "after.phantom-kits19.f0.000000000000"},
                deps=(prep.key, broken.key), label="after broken")
    sub = submit_jobs([prep, broken, after], cluster)
    assert {broken.key, after.key} <= set(sub.submitted)
    states = wait_for(sub, cluster, timeout_s=900, poll_s=2)
    assert states[broken.key] == "FAILED"
    assert states[after.key] == "CANCELLED"        # --kill-on-invalid-dep: it never waits forever
    rows = {r["key"]: r for r in cell_statuses([prep, broken, after], cluster.client_env())}
    assert rows[broken.key]["status"] == "failed"
    assert "is not the hash of its spec" in rows[broken.key]["error"]
    assert rows[after.key]["status"] == "failed" and rows[after.key]["slurm_state"] == "CANCELLED"
    # Resubmission (dry run) would send both again, and nothing that is done.
    retry = submit_jobs([prep, broken, after], cluster, dry_run=True)
    assert [k for g in retry.groups for k in g["keys"]] == [broken.key, after.key]


def test_signalled_training_requeues_and_resumes_from_its_checkpoint(cluster, work):
    from harness.studies.runs import RunSpec

    env = cluster.client_env()
    prep, train = _smoke_jobs(work, ["nnunet"])[:2]
    spec = RunSpec.from_dict(train.payload["spec"])
    epochs = 8
    spec = spec.replace(profile={**spec.profile, "epochs": epochs})
    rid = spec.run_id
    job = Job(key=f"train:{rid}", kind="train", deps=(prep.key,), label=f"nnunet {epochs} epochs",
              payload={**train.payload, "run_id": rid, "spec": spec.to_dict()})
    sub = submit_jobs([prep, job], cluster)
    jid = sub.submitted[job.key]
    script = (work / "jobs" / "slurm" / jid / f"{jid}_submission.sh").read_text()
    assert f"--signal=USR2@{cluster.signal_delay_s}" in script and "--time=30" in script

    progress = work / "runs" / rid / "progress.csv"
    deadline = time.monotonic() + 900
    seen = 0
    while seen < 2:            # two finished epochs (checkpoint_latest.pth written before the row)
        assert time.monotonic() < deadline, "training did not reach epoch 2"
        time.sleep(0.3)
        if progress.is_file():
            seen = len(progress.read_text().strip().splitlines()) - 1
    assert seen < epochs, "training ended before it could be signalled: raise epochs"
    # What SLURM does --signal-delay seconds before the time limit, or on preemption.
    subprocess.run(["scancel", "--signal=USR2", jid], env=env, check=True)

    states = wait_for(sub, cluster, timeout_s=900, poll_s=2)
    assert states[job.key] == "COMPLETED", states
    requeues = read_record(work, job.key)["slurm"]["requeues"]
    assert len(requeues) == 1 and requeues[0]["epochs_done"] >= seen
    run = json.loads((work / "runs" / rid / "run.json").read_text())
    assert run["status"] == "done"
    assert [a["job_id"] for a in run["attempts"]] == [jid, jid]
    # the signalled attempt stopped its worker's group with SIGTERM and said so
    assert [a["status"] for a in run["attempts"]] == ["interrupted", "done"]
    (resumed,) = run["training"]["resumed_from_epochs"]
    # No finished epoch was trained twice; only the one in flight at the signal was lost.
    assert requeues[0]["epochs_done"] <= resumed < epochs
    rows = progress.read_text().strip().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(epochs))
    log = Path(read_record(work, job.key)["slurm"]["stdout"]).read_text()
    assert "attempt 1" in log and "attempt 2" in log
