"""The job graph and run identity (harness.jobs.plan, harness.jobs.runs, harness.provenance).

Fast: nothing trains. The graph of each study and profile is checked for order, dependencies
(UpKern and "continue" runs after their kernel-3 source, the report after everything), and the
run ids for what they must and must not depend on.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from harness.jobs.plan import Job, execute, expected_runs, job_status, plan_cell, plan_study
from harness.jobs.runs import run_chain, run_spec, run_status
from harness.provenance import RunRecord, canonical_json, run_id
from harness.studies import load_profile, load_study


@pytest.fixture
def work(tmp_path):
    return tmp_path / "work"


def test_job_validates_its_fields(work):
    payload = {"work": str(work.resolve())}
    with pytest.raises(ValueError, match="kind"):
        Job("build:x", "build", payload)
    with pytest.raises(ValueError, match="must start with"):
        Job("train:x", "prepare", payload)
    with pytest.raises(ValueError, match="not absolute"):
        Job("prepare:x", "prepare", {"work": "relative/work"})
    with pytest.raises(ValueError, match="payload"):
        Job("prepare:x", "prepare", {})


def test_job_json_round_trip(work):
    job = plan_study("ablations", "smoke", work)[4]
    again = Job.from_json(job.to_json())
    assert again == job and isinstance(again.deps, tuple)
    assert json.loads(job.to_json())["payload"]["spec"]["model"] == job.payload["spec"]["model"]


@pytest.mark.parametrize("study", ["table2", "ablations"])
@pytest.mark.parametrize("profile", ["quick", "smoke"])
def test_plan_is_topological_and_complete(study, profile, work):
    jobs = plan_study(study, profile, work)
    keys = [j.key for j in jobs]
    assert len(keys) == len(set(keys))
    position = {k: i for i, k in enumerate(keys)}
    for job in jobs:
        assert all(position[d] < position[job.key] for d in job.deps), job.key
        assert job.payload["work"] == str(work.resolve())
    st, prof = load_study(study), load_profile(profile)
    prepares = [j for j in jobs if j.kind == "prepare"]
    assert [j.payload["dataset"] for j in prepares] == [prof.dataset_name(t) for t in st.datasets]
    cells = expected_runs(study, profile, work)
    assert len(cells) == len(st.datasets) * len(st.models) * len(prof.folds)
    trains = {j.payload["run_id"] for j in jobs if j.kind == "train"}
    assert {c["run_id"] for c in cells} <= trains
    report = jobs[-1]
    assert report.kind == "report" and report.after_any
    assert set(report.deps) == {j.key for j in jobs if j.kind == "train"}
    assert report.payload["results"].endswith(f"{study}-{profile}")


def test_table2_quick_has_every_row_on_every_phantom(work):
    jobs = plan_study("table2", "quick", work)
    trains = [j for j in jobs if j.kind == "train"]
    assert len(trains) == 15 * 4
    datasets = {j.payload["spec"]["dataset"] for j in trains}
    assert datasets == {"phantom-btcv", "phantom-amos22", "phantom-kits19", "phantom-brats21"}


def test_upkern_and_continue_runs_depend_on_their_kernel3_source(work):
    jobs = {j.key: j for j in plan_study("ablations", "quick", work)}
    by_model = {(j.payload["spec"]["model"], j.payload["spec"]["dataset"]): j
                for j in jobs.values() if j.kind == "train"}
    for dataset in ("phantom-btcv", "phantom-amos22"):
        k3 = by_model[("mednext-b-k3", dataset)]
        for model, mode in (("mednext-b-k5", "upkern"), ("mednext-b-k3-2x", "continue")):
            job = by_model[(model, dataset)]
            assert job.payload["spec"]["init"] == {"mode": mode, "model": "mednext-b-k3",
                                                   "run_id": k3.payload["run_id"]}
            assert k3.key in job.deps and f"prepare:{dataset}" in job.deps
        scratch = by_model[("mednext-b-k5-scratch", dataset)]
        assert scratch.payload["spec"]["init"] is None and len(scratch.deps) == 1


def test_source_runs_outside_the_study_are_jobs_but_not_cells(work):
    runs = run_chain("kits19", "mednext-m-k5", 0, load_profile("smoke"))
    assert [r["model"] for r in runs] == ["mednext-m-k3", "mednext-m-k5"]
    assert [r["in_study"] for r in runs] == [False, True]
    jobs = plan_cell("kits19", "mednext-m-k5", 0, "smoke", work)
    assert [j.kind for j in jobs] == ["prepare", "train", "train"]
    assert jobs[1].key in jobs[2].deps


def test_run_id_is_a_stable_hash_of_what_decides_the_result():
    quick, smoke = load_profile("quick"), load_profile("smoke")
    a = run_spec("btcv", "mednext-s-k3", 0, quick)
    assert run_id(a) == run_id(json.loads(canonical_json(a)))
    assert run_id(a).startswith("mednext-s-k3.phantom-btcv.f0.")
    others = [run_spec("btcv", "mednext-s-k3", 1, quick), run_spec("btcv", "mednext-s-k5", 0, quick),
              run_spec("amos22", "mednext-s-k3", 0, quick), run_spec("btcv", "mednext-s-k3", 0, smoke)]
    assert len({run_id(s) for s in [a] + others}) == 5
    changed = json.loads(json.dumps(a))
    changed["recipe"]["lr"] *= 2
    assert run_id(changed) != run_id(a)
    # a k5 run's id follows its source's id
    k5 = run_spec("btcv", "mednext-s-k5", 0, quick)
    assert k5["init"]["run_id"] == run_id(a)
    # the KiTS19 kernel-5 learning rate of the paper
    assert run_spec("kits19", "mednext-s-k5", 0, quick)["recipe"]["lr"] == pytest.approx(1e-4)


def test_spec_holds_only_the_settings_of_the_models_dimension():
    quick = load_profile("quick")
    s3 = run_spec("btcv", "nnunet", 0, quick)
    s2 = run_spec("btcv", "transunet", 0, quick)
    assert s3["dim"] == "3d" and s3["profile"]["patch"] == list(quick.patch_3d)
    assert s2["dim"] == "2d" and s2["profile"]["patch"] == list(quick.patch_2d)
    assert s2["profile"]["batch"] == quick.batch_2d
    assert "name" not in s3["profile"] and "folds" not in s3["profile"]


def test_real_data_profile_needs_data(work, tmp_path):
    with pytest.raises(ValueError, match="--data"):
        plan_study("table2", "paper", work)
    jobs = plan_study("table2", "paper", work, data=tmp_path / "raw")
    assert jobs[0].payload["data"] == str((tmp_path / "raw").resolve())
    assert len([j for j in jobs if j.kind == "train"]) == 15 * 4 * 5


def test_run_record_and_status(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    assert run_status(run_dir) == "pending"
    rec = RunRecord(run_dir, {"model": "m"}, "r")
    rec.start()
    assert run_status(run_dir) == "running"          # this very process is alive
    rec.finish("failed", error="ValueError: boom")
    data = json.loads((run_dir / "run.json").read_text())
    assert data["status"] == "failed" and data["error"] == "ValueError: boom"
    assert data["attempts"][0]["host"] == socket.gethostname()
    assert {"torch", "nnunetv2", "python"} <= set(data["versions"])
    assert "commit" in data["attempts"][0] and "dirty" in data["attempts"][0]
    assert run_status(run_dir) == "failed"
    rec2 = RunRecord(run_dir, {"model": "m"}, "r")
    rec2.start()
    rec2.finish("done")
    data = json.loads((run_dir / "run.json").read_text())
    assert data["status"] == "done" and len(data["attempts"]) == 2 and data["error"] is None
    assert data["wall_seconds"] >= 0 and data["peak_rss_mib"] > 0
    with pytest.raises(ValueError, match="final status"):
        rec2.finish("running")


def test_a_killed_run_reads_as_pending(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(proc.stdout)
    rec = RunRecord(run_dir, {"model": "m"}, "r")
    rec.start()
    data = json.loads((run_dir / "run.json").read_text())
    data["attempts"][-1]["pid"] = dead_pid
    (run_dir / "run.json").write_text(json.dumps(data))
    assert run_status(run_dir) == "pending"


def test_execute_refuses_a_payload_whose_id_does_not_match(work):
    job = plan_cell("kits19", "nnunet", 0, "smoke", work)[-1]
    bad = Job(job.key, job.kind, {**job.payload, "run_id": "nnunet.phantom-kits19.f0.000000000000"},
              job.deps, job.label)
    with pytest.raises(ValueError, match="not the hash"):
        execute(bad)
    assert job_status(job) == "pending"


def test_unknown_names_are_rejected(work):
    with pytest.raises(ValueError, match="unknown study"):
        plan_study("table3", "quick", work)
    with pytest.raises(ValueError, match="unknown profile"):
        plan_study("table2", "fast", work)
    with pytest.raises(ValueError, match="unknown model"):
        plan_cell("kits19", "resnet", 0, "smoke", work)
    with pytest.raises(ValueError, match="fold"):
        run_spec("kits19", "nnunet", 7, load_profile("smoke"))
