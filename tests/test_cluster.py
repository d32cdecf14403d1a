"""The SLURM backend without a cluster: cluster profiles, job selection, arrays and dependencies
(dry runs), the job records, and status merging against stand-in ``squeue``/``sacct`` programs.

The tests against a real SLURM are in ``test_slurm.py`` (marker ``slurm``).
"""
from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from fakes import fake_raw_dataset

from harness.cluster import Resources, expand_vars, load_cluster, parse_profile
from harness.jobs.plan import Job
from harness.jobs.plan import select_jobs
from harness.jobs.slurm import _dependency, submit_jobs
from harness.jobs.slurm_task import JobTask
from harness.jobs.tracking import cell_statuses, format_statuses, queue_states, write_record

ROOT = Path(__file__).resolve().parents[1]


# ---- cluster profiles -------------------------------------------------------------------------

def test_repository_profiles_load_and_resolve():
    local = load_cluster("local")
    assert local.resources_for("train").partition == "debug"
    assert local.resources_for("prepare").mem == "4G"
    ex = load_cluster(ROOT / "clusters" / "example.toml")
    train = ex.resources_for("train", "nnunet", "btcv", "btcv")
    assert (train.gpus, train.partition, train.time_min) == (1, "gpu", 1440)
    assert ex.resources_for("prepare", None, "btcv", "btcv").gpus == 0
    big = ex.resources_for("train", "mednext-l-k5", "btcv", "btcv")
    assert big.constraint == "a100_80g|h100" and big.mem == "96G"
    # Rules match dataset or task names; a rule with datasets does not match other datasets.
    assert ex.resources_for("train", "swin-unetr", "phantom-amos22", "amos22").time_min == 2880
    assert ex.resources_for("train", "swin-unetr", "btcv", "btcv").time_min == 1440
    assert any(line.startswith("module load") for line in ex.setup_lines())


def test_resolution_order_defaults_kind_rules():
    prof = parse_profile({
        "defaults": {"cpus": 2, "mem": "8G", "time_min": 100, "sbatch": {"mail-type": "FAIL"}},
        "kind": {"train": {"gpus": 1, "mem": "16G"}},
        "rule": [{"models": ["mednext-*"], "kinds": ["train"], "mem": "32G"},
                 {"models": ["mednext-l-*"], "time_min": 300}],
        "signal_delay_s": 60, "env": {"A": "x y"}, "setup": ["module load cuda"]}, "t")
    r = prof.resources_for("train", "mednext-l-k3", "btcv", "btcv")
    assert (r.cpus, r.gpus, r.mem, r.time_min) == (2, 1, "32G", 300)
    assert dict(r.sbatch) == {"mail-type": "FAIL"}
    assert prof.resources_for("prepare").mem == "8G"
    assert prof.resources_for("train", "nnunet").mem == "16G"
    assert prof.setup_lines() == ["export A='x y'", "module load cuda"]
    params = r.sbatch_parameters()
    assert params == {"time": 300, "cpus_per_task": 2, "gpus_per_node": 1, "mem": "32G"}


@pytest.mark.parametrize("data, message", [
    ({"defaults": {"cpu": 2}}, "unknown key(s) ['cpu']"),
    ({"defaults": {"mem": "lots"}}, "mem must look like"),
    ({"defaults": {"cpus": 0}}, "cpus must be an integer >= 1"),
    ({"kind": {"training": {}}}, "unknown key(s) ['training']"),
    ({"rule": [{"models": "nnunet", "mem": "1G"}]}, "models must be a non-empty list"),
    ({"signal_delay_s": 600, "defaults": {"time_min": 5}}, "signal_delay_s=600"),
    ({"max_requeues": -1}, "max_requeues"),
    ({"env": {"BAD-NAME": "1"}}, "BAD-NAME"),
    ({"partition": "gpu"}, "unknown key(s) ['partition']"),
])
def test_bad_profiles_raise_naming_the_file_and_value(data, message):
    with pytest.raises(ValueError) as err:
        parse_profile(data, "site", Path("/x/site.toml"))
    assert message in str(err.value) and "/x/site.toml" in str(err.value)


@pytest.mark.parametrize("bad", ["\n#SBATCH --account=other", "\r", "\x00"])
@pytest.mark.parametrize("data, key", [
    ({"defaults": {"partition": "gpu{}"}}, "partition"),
    ({"defaults": {"account": "a{}"}}, "account"),
    ({"defaults": {"qos": "q{}"}}, "qos"),
    ({"kind": {"train": {"constraint": "a100{}"}}}, "constraint"),
    ({"defaults": {"gres": "gpu:1{}"}}, "gres"),
    ({"rule": [{"models": ["x"], "exclude": "node1{}"}]}, "exclude"),
    ({"defaults": {"mem": "16G{}"}}, "mem"),
    ({"defaults": {"sbatch": {"mail-type": "FAIL{}"}}}, "sbatch.mail-type"),
    ({"defaults": {"sbatch": {"mail{}": "FAIL"}}}, "sbatch flag"),
    ({"env": {"A": "x{}"}}, "env.A"),
    ({"setup": ["module load cuda", "echo{}"]}, "setup[1]"),
    ({"python": "/venv/bin/python{}"}, "python"),
    ({"name": "site{}"}, "name"),
])
def test_values_written_into_the_job_script_refuse_line_breaks(data, key, bad):
    data = json.loads(json.dumps(data).replace("{}", json.dumps(bad)[1:-1]))
    with pytest.raises(ValueError) as err:
        parse_profile(data, "site", Path("/x/site.toml"))
    msg = str(err.value)
    assert msg.startswith("/x/site.toml") and key in msg
    assert ("mem must look like" in msg) if key == "mem" else ("#SBATCH lines" in msg)
    clean = json.loads(json.dumps(data).replace(json.dumps(bad)[1:-1], ""))
    parse_profile(clean, "site", Path("/x/site.toml"))           # the same without the break loads


def test_env_names_are_matched_whole():
    with pytest.raises(ValueError, match="not a valid shell variable name"):
        parse_profile({"env": {"A\n": "1"}}, "site", Path("/x/site.toml"))


def test_unknown_profile_and_bad_toml(tmp_path):
    with pytest.raises(ValueError, match="unknown cluster profile 'nowhere'.*local"):
        load_cluster("nowhere")
    bad = tmp_path / "bad.toml"
    bad.write_text("defaults = [\n")
    with pytest.raises(ValueError, match="bad.toml: not valid TOML"):
        load_cluster(bad)
    with pytest.raises(ValueError, match="does not exist"):
        load_cluster(tmp_path / "missing.toml")
    with pytest.raises(ValueError, match="time_min"):
        Resources(time_min=0)


def test_slurm_conf_expansion_and_client_env(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_CONF", raising=False)
    monkeypatch.setenv("SLURM_LOCAL_DIR", str(tmp_path))
    assert expand_vars("${SLURM_LOCAL_DIR:-/tmp/x}/etc") == f"{tmp_path}/etc"
    monkeypatch.delenv("SLURM_LOCAL_DIR")
    assert expand_vars("${SLURM_LOCAL_DIR:-/tmp/x}/etc") == "/tmp/x/etc"
    with pytest.raises(ValueError, match="NOPE_NOT_SET"):
        expand_vars("${NOPE_NOT_SET}/a")
    conf = tmp_path / "slurm.conf"
    prof = parse_profile({"slurm_conf": str(conf)}, "t")
    assert "SLURM_CONF" not in prof.client_env()          # the file does not exist (yet)
    conf.write_text("ClusterName=x\n")
    assert prof.client_env()["SLURM_CONF"] == str(conf)
    monkeypatch.setenv("SLURM_CONF", "/site/slurm.conf")  # the user's own setting wins
    assert prof.client_env()["SLURM_CONF"] == "/site/slurm.conf"


# ---- jobs: selection, arrays, dependencies (dry runs) -----------------------------------------

def _train(work, model, task, fold=0, deps=(), epochs=1):
    dataset = f"phantom-{task}"
    rid = f"{model}.{dataset}.f{fold}.{epochs:012d}"
    return Job(key=f"train:{rid}", kind="train", label=f"{dataset} / {model} / fold {fold}",
               payload={"work": str(work), "run_id": rid,
                        "spec": {"model": model, "dataset": dataset, "task": task, "fold": fold}},
               deps=(f"prepare:{dataset}",) + tuple(deps))


def _grid(work):
    prep = [Job(key=f"prepare:phantom-{t}", kind="prepare", label=t,
                payload={"work": str(work), "dataset": f"phantom-{t}", "task": t})
            for t in ("btcv", "kits19")]
    trains = []
    for t in ("btcv", "kits19"):
        for fold in (0, 1):
            k3 = _train(work, "mednext-s-k3", t, fold)
            trains += [_train(work, "nnunet", t, fold), k3,
                       _train(work, "mednext-s-k5", t, fold, deps=(k3.key,))]
    report = Job(key="report:table2-smoke", kind="report", label="report",
                 payload={"work": str(work)}, deps=tuple(j.key for j in trains))
    return prep + trains + [report]


def test_select_jobs_keeps_dependencies_closed(tmp_path):
    jobs = _grid(tmp_path)
    assert select_jobs(jobs) == jobs
    sel = select_jobs(jobs, models=["mednext-s-k5"], datasets=["kits19"], folds=[1])
    keys = [j.key for j in sel]
    assert keys == ["prepare:phantom-kits19", _train(tmp_path, "mednext-s-k3", "kits19", 1).key,
                    _train(tmp_path, "mednext-s-k5", "kits19", 1).key, "report:table2-smoke"]
    assert set(sel[-1].deps) == set(keys[1:3])
    assert select_jobs(jobs, datasets=["phantom-btcv"]) == select_jobs(jobs, datasets=["btcv"])
    with pytest.raises(ValueError, match=r"model\(s\) \['unet'\] not in this study"):
        select_jobs(jobs, models=["unet"])


@pytest.fixture(scope="module")
def paper_jobs(tmp_path_factory):
    """The paper profile's plan (5 folds) for two datasets, nnU-Net and MedNeXt-S k5 (+ k3)."""
    from harness.jobs.plan import plan_study
    work = tmp_path_factory.mktemp("work")
    for folder in ("Dataset501_BTCV", "Dataset503_KiTS19"):
        fake_raw_dataset(work / "data", folder)
    jobs = plan_study("table2", "paper", work, data=work / "data", results=work / "results",
                      datasets=["btcv", "kits19"])
    return select_jobs(jobs, models=["nnunet", "mednext-s-k5"], datasets=["btcv", "kits19"])


def test_dry_run_groups_arrays_by_resources_and_dependencies(paper_jobs):
    prof = parse_profile({"defaults": {"time_min": 30},
                          "rule": [{"models": ["mednext-*-k5"], "mem": "9G"}]}, "t")
    sub = submit_jobs(paper_jobs, prof, dry_run=True)
    groups = [(g["kind"], len(g["keys"]), g["dependency"]) for g in sub.groups]
    # prepare: one array of 2; per dataset one array (nnunet + k3, 5 folds); each k5 waits for
    # its own dataset's preparation and for the k3 task of the same fold; the report afterany.
    assert groups[0] == ("prepare", 2, "")
    assert groups[1] == ("train", 10, "afterok:g1_0")
    by_key = {j.key: j for j in paper_jobs}
    tasks = dict(zip(sub.groups[1]["keys"], (f"g2_{i}" for i in range(10))))
    for g in sub.groups[2:7]:
        (key,) = g["keys"]
        k5 = by_key[key].payload["spec"]
        assert k5["model"] == "mednext-s-k5" and g["resources"].mem == "9G"
        k3_key = f"train:{k5['init']['run_id']}"
        assert by_key[k3_key].payload["spec"]["fold"] == k5["fold"]
        assert g["dependency"] == f"afterok:g1_0:{tasks[k3_key]}"
    assert groups[7] == ("train", 10, "afterok:g1_1")
    assert groups[-1] == ("report", 1, "afterany:g2:g8:" + ":".join(f"g{i}" for i in
                                                                      (3, 4, 5, 6, 7, 9, 10, 11, 12, 13)))
    assert sub.groups[1]["resources"].mem is None
    assert "dry run, 33 would be submitted" in sub.summary()
    assert not (paper_jobs[0].work / "jobs").exists()          # a dry run records nothing


def test_dependency_strings():
    arrays = {"7": {"7_0", "7_1"}}
    assert _dependency(["7_0", "7_1", "3"], False, arrays) == "afterok:7:3"
    assert _dependency(["7_1", "3", "12"], True, arrays) == "afterany:3:7_1:12"
    assert _dependency([], False, arrays) == ""


# ---- records, SLURM states, status ------------------------------------------------------------

@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``squeue`` and ``sacct`` stand-ins that print what a test puts in their files."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("squeue", "sacct"):
        out = tmp_path / f"{name}.out"
        out.write_text("")
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/{name}.args\ncat {out}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_queue_states_parses_arrays_and_prefers_squeue(fake_slurm):
    (fake_slurm / "squeue.out").write_text("12_[2-3%2]|PENDING\n12_1|RUNNING\n")
    (fake_slurm / "sacct.out").write_text("12_0|COMPLETED\n12_1|RUNNING\n9|CANCELLED by 0\n")
    states = queue_states(["12_0", "12_1", "12_3", "9", "44"])
    assert states == {"12_0": "COMPLETED", "12_1": "RUNNING", "12_3": "PENDING", "9": "CANCELLED"}


def test_cell_statuses_merge_files_and_slurm(fake_slurm):
    work = fake_slurm / "work"
    jobs = [_train(work, m, "kits19") for m in ("nnunet", "unetr", "swin-unetr", "nnformer",
                                                  "transbts")]
    ids = ["5_0", "5_1", "6", "7", "8"]
    for job, jid in zip(jobs, ids):
        err = fake_slurm / f"{jid}.err"
        err.write_text("Traceback (most recent call last):\nRuntimeError: CUDA out of memory\n")
        write_record(job, {"job_id": jid, "stdout": str(fake_slurm / f"{jid}.out"),
                           "stderr": str(err)})
    run_dir = work / "runs" / jobs[0].payload["run_id"]
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "done"}))
    run_dir = work / "runs" / jobs[4].payload["run_id"]
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps({"status": "failed", "error": "ValueError: bad"}))
    (fake_slurm / "squeue.out").write_text("5_1|RUNNING\n6|PENDING\n8|REQUEUED\n")
    (fake_slurm / "sacct.out").write_text("5_0|COMPLETED\n7|TIMEOUT\n")
    rows = {r["key"]: r for r in cell_statuses(jobs)}
    got = [(rows[j.key]["status"], rows[j.key]["job_id"]) for j in jobs]
    assert got == [("done", "5_0"), ("running", "5_1"), ("pending", "6"), ("failed", "7"),
                   ("pending", "8")]   # failed on disk, but requeued: it will resume
    assert rows[jobs[3].key]["error"] == "RuntimeError: CUDA out of memory"
    table = format_statuses(list(rows.values()))
    assert "1 done, 1 running, 2 pending, 1 failed of 5 jobs" in table


def test_resubmission_skips_queued_jobs_and_waits_on_them(fake_slurm, paper_jobs):
    k3 = next(j for j in paper_jobs if j.key.startswith("train:mednext-s-k3.btcv.f2"))
    k5 = next(j for j in paper_jobs if j.deps == (k3.deps[0], k3.key))
    failed = next(j for j in paper_jobs if j.key.startswith("train:nnunet.kits19.f4"))
    write_record(k3, {"job_id": "4_1", "stdout": "", "stderr": ""})
    write_record(failed, {"job_id": "5", "stdout": "", "stderr": ""})
    try:
        (fake_slurm / "squeue.out").write_text("4_1|PENDING\n")
        (fake_slurm / "sacct.out").write_text("5|FAILED\n")
        sub = submit_jobs(paper_jobs, parse_profile({}, "t"), dry_run=True)
    finally:
        import shutil
        shutil.rmtree(k3.work / "jobs")
    assert sub.queued == {k3.key: "4_1"}                       # not submitted twice
    assert failed.key in {k for g in sub.groups for k in g["keys"]}   # failed: submitted again
    group = next(g for g in sub.groups if g["keys"] == [k5.key])
    assert group["dependency"] == "afterok:4_1:g1_0"           # waits on the queued job's id


def test_write_record_keeps_history_and_stays_a_job_file(tmp_path):
    job = _grid(tmp_path)[2]
    write_record(job, {"job_id": "3", "stdout": "a", "stderr": "b"})
    path = write_record(job, {"job_id": "9", "stdout": "a", "stderr": "b"})
    rec = json.loads(path.read_text())
    assert rec["slurm"]["job_id"] == "9" and rec["slurm"]["history"] == ["3"]
    assert Job.from_dict(rec) == job      # the worker can run the record as a job file


def test_jobtask_checkpoint_resubmits_itself_and_notes_the_requeue(tmp_path):
    job = _grid(tmp_path)[2]
    write_record(job, {"job_id": "3", "stdout": "", "stderr": ""})
    run_dir = tmp_path / "runs" / job.payload["run_id"]
    run_dir.mkdir(parents=True)
    (run_dir / "progress.csv").write_text("epoch,train_loss\n0,1.0\n1,0.9\n")
    task = JobTask(job.to_dict())
    before = signal.getsignal(signal.SIGUSR2)
    try:
        delayed = pickle.loads(pickle.dumps(task.checkpoint()))
        assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN   # one checkpoint per attempt
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert isinstance(delayed.function, JobTask)
    assert delayed.function.job == job.to_dict() and delayed.function.attempt == 2
    rec = json.loads((tmp_path / "jobs" / f"{job.key.replace(':', '_')}.json").read_text())
    assert rec["slurm"]["requeues"][0]["epochs_done"] == 2
    with pytest.raises(ValueError):
        JobTask({"key": "train:x", "kind": "train", "payload": {"work": "relative"}})


def test_jobtask_runs_the_job_in_a_worker_and_raises_on_failure(tmp_path, monkeypatch, capfd):
    """A train payload whose run id is not its spec's hash: the worker fails at once."""
    from harness.jobs.plan import plan_study
    from harness.jobs.tracking import last_error_line

    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    train = select_jobs(plan_study("table2", "smoke", tmp_path), models=["nnunet"],
                        datasets=["btcv"])[1]
    broken = Job(key="train:broken.x.f0.0", kind="train", deps=train.deps, label="broken",
                 payload={**train.payload, "run_id": "broken.x.f0.0"})
    with pytest.raises(RuntimeError, match="worker exit status 1"):
        JobTask(broken.to_dict())()
    assert Job.from_json((tmp_path / "jobs" / "slurm" / "77" / "job.json").read_text()) == broken
    err = capfd.readouterr().err
    (tmp_path / "err.log").write_text(err + "\nTraceback (most recent call last):\nRuntimeError: x\n")
    assert last_error_line(tmp_path / "err.log").startswith(
        "job train:broken.x.f0.0 FAILED: ValueError: job payload: run_id 'broken.x.f0.0'")


def test_stop_child_works_from_a_handler_that_interrupted_wait():
    """The checkpoint signal arrives while the task waits for its worker (``Popen.wait`` holds a
    lock): stopping the worker from the handler must not wait on that lock (it hung before)."""
    code = """
import signal, subprocess, sys, time
from harness.jobs import slurm_task as slurm
slurm._CHILD = subprocess.Popen(["sleep", "60"])
signal.signal(signal.SIGALRM, lambda *_: slurm._stop_child(grace_s=5))
signal.setitimer(signal.ITIMER_REAL, 0.3)
t0 = time.monotonic()
slurm._CHILD.wait()
print("stopped after", round(time.monotonic() - t0, 1))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("stopped after"), out.stderr


def test_status_of_the_local_backend_needs_no_slurm(tmp_path, monkeypatch):
    """Without SLURM records the run folders decide; the log is the local backend's."""
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))      # no squeue/sacct reachable
    jobs = [_train(tmp_path, m, "btcv") for m in ("nnunet", "unetr", "swin-unetr")]
    for job, status in zip(jobs[:2], ("done", "failed")):
        run_dir = tmp_path / "runs" / job.payload["run_id"]
        run_dir.mkdir(parents=True)
        (run_dir / "run.json").write_text(json.dumps(
            {"status": status, "error": "RuntimeError: loss is NaN\n" if status == "failed" else None}))
    log = tmp_path / "logs" / f"{jobs[1].key.replace(':', '_')}.log"
    log.parent.mkdir()
    log.write_text("job started\n")
    rows = cell_statuses(jobs)
    assert [(r["status"], r["job_id"]) for r in rows] == [("done", ""), ("failed", ""), ("pending", "")]
    assert rows[1]["error"] == "RuntimeError: loss is NaN" and rows[1]["log"] == str(log)
