"""The job graph and run identity (harness.jobs.plan, harness.studies.runs, harness.provenance).

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
from fakes import fake_raw_dataset

from harness.jobs.plan import (Job, execute, job_status, lock_path, plan_cell, plan_study,
                               prepare_key, run_status)
from harness.provenance import RunRecord, canonical_json, run_id
from harness.studies import load_profile, load_study
from harness.studies.runs import RunSpec, expected_runs, phantom_data, run_chain, run_spec


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
            assert k3.key in job.deps and job.deps[0].startswith(f"prepare:{dataset}-")
        scratch = by_model[("mednext-b-k5-scratch", dataset)]
        assert scratch.payload["spec"]["init"] is None and len(scratch.deps) == 1


def test_source_runs_outside_the_study_are_jobs_but_not_cells(work):
    runs = run_chain("kits19", "mednext-m-k5", 0, load_profile("smoke"))
    assert [r.spec.model for r in runs] == ["mednext-m-k3", "mednext-m-k5"]
    assert [r.in_study for r in runs] == [False, True]
    jobs = plan_cell("kits19", "mednext-m-k5", 0, "smoke", work)
    assert [j.kind for j in jobs] == ["prepare", "train", "train"]
    assert jobs[1].key in jobs[2].deps


def test_run_id_is_a_stable_hash_of_what_decides_the_result():
    quick, smoke = load_profile("quick"), load_profile("smoke")
    a = run_spec("btcv", "mednext-s-k3", 0, quick)
    assert a.run_id == run_id(json.loads(canonical_json(a.to_dict())))
    assert RunSpec.from_dict(a.to_dict()) == a and RunSpec.from_dict(a.to_dict()).run_id == a.run_id
    assert a.run_id.startswith("mednext-s-k3.phantom-btcv.f0.")
    others = [run_spec("btcv", "mednext-s-k3", 1, quick), run_spec("btcv", "mednext-s-k5", 0, quick),
              run_spec("amos22", "mednext-s-k3", 0, quick), run_spec("btcv", "mednext-s-k3", 0, smoke)]
    assert len({s.run_id for s in [a] + others}) == 5
    # everything that changes the result changes the id: recipe values, the network's builder
    # arguments (not only its name), the data, the budget
    changed = [a.replace(recipe={**a.recipe, "lr": a.recipe["lr"] * 2}),
               a.replace(network={**a.network, "kwargs": {**a.network["kwargs"], "kernel_size": 5}}),
               a.replace(data={**a.data, "fingerprint": "0" * 64}),
               a.replace(profile={**a.profile, "epochs": 2})]
    assert len({c.run_id for c in changed} | {a.run_id}) == 5
    # a k5 run's id follows its source's id
    k5 = run_spec("btcv", "mednext-s-k5", 0, quick)
    assert k5.init["run_id"] == a.run_id
    # the KiTS19 kernel-5 learning rate of the paper
    assert run_spec("kits19", "mednext-s-k5", 0, quick).recipe["lr"] == pytest.approx(1e-4)


def test_spec_names_the_data_and_the_resolved_network():
    quick = load_profile("quick")
    s = run_spec("kits19", "mednext-b-k3-std-resampling", 0, quick)
    assert s.network == {"builder": "mednext.create_mednext", "builder_options": [],
                         "kwargs": {"size": "B", "kernel_size": 3, "dim": "3d",
                                    "resampling": "standard"}}
    assert s.data == phantom_data("kits19", quick) and s.data["source"] == "phantom"
    assert s.data["phantom"]["size"] == quick.phantom["size"]
    # the profile's name and folds are not part of it: same settings, same runs
    import dataclasses
    renamed = dataclasses.replace(quick, name="other", folds=(0, 1, 2))
    assert run_spec("kits19", "nnunet", 0, renamed).run_id == run_spec("kits19", "nnunet", 0, quick).run_id


def test_spec_holds_only_the_settings_of_the_models_dimension():
    quick = load_profile("quick")
    s3 = run_spec("btcv", "nnunet", 0, quick)
    s2 = run_spec("btcv", "transunet", 0, quick)
    assert s3.dim == "3d" and s3.profile["patch"] == list(quick.patch_3d)
    assert s2.dim == "2d" and s2.profile["patch"] == list(quick.patch_2d)
    assert s2.profile["batch"] == quick.batch_2d
    assert "name" not in s3.profile and "folds" not in s3.profile


def test_recipe_option_changes_only_the_runs_whose_values_differ(work):
    from harness.studies.options import RunOptions

    quick, official = load_profile("quick"), RunOptions(recipe="official-code")
    from harness.registry.recipes import RECIPE_NAMES
    from harness.studies.options import RECIPES
    assert RECIPES == RECIPE_NAMES       # the CLI's choices are the registry's recipes
    for same in ("nnunet", "mednext-s-k3", "mednext-s-k5"):     # both recipes resolve alike
        assert run_spec("btcv", same, 0, quick, options=official).run_id == \
            run_spec("btcv", same, 0, quick).run_id
    for model, lr in (("swin-unetr", 1e-4), ("nnformer", 5e-5), ("3d-uxnet", 5e-4),
                      ("transbts", 1e-4)):
        a, b = run_spec("btcv", model, 0, quick), run_spec("btcv", model, 0, quick, options=official)
        assert a.run_id != b.run_id and b.recipe["lr"] == pytest.approx(lr)
    assert run_spec("btcv", "transbts", 0, quick, options=official).recipe["optimizer"] == "sgd"
    # the report of a non-default recipe has a folder and a job of its own
    jobs = plan_study("table2", "quick", work, options=official, datasets=["btcv"])
    assert jobs[-1].key == "report:table2-quick-official-code"
    assert jobs[-1].payload["results"].endswith("table2-quick-official-code")
    assert jobs[-1].payload["options"]["recipe"] == "official-code"
    default = plan_study("table2", "quick", work, datasets=["btcv"])
    assert default[-1].key == "report:table2-quick"
    shared = {j.key for j in jobs} & {j.key for j in default}
    assert len([k for k in shared if k.startswith("train:")]) == 15 - 4


def test_settings_are_part_of_the_identity_where_they_apply():
    from harness.studies.options import RunOptions

    quick = load_profile("quick")
    base = run_spec("brats21", "nnunet", 0, quick)
    assert base.settings == {"compile": False, "precision": "amp", "brats_target": "labels"}
    assert run_spec("btcv", "nnunet", 0, quick).settings == {"compile": False, "precision": "amp"}
    assert run_spec("kits19", "transunet", 0, quick).settings["plane"] == \
        {"plane": "sagittal", "transpose_forward": [2, 1, 0]}
    assert run_spec("btcv", "transunet", 0, quick).settings["plane"]["plane"] == "axial"
    variants = [run_spec("brats21", "nnunet", 0, quick, options=o) for o in (
        RunOptions(brats_target="regions"), RunOptions(compile=True), RunOptions(precision="fp32"))]
    assert len({v.run_id for v in variants} | {base.run_id}) == 4
    # a BraTS option leaves the other datasets' runs alone; an option equal to the profile's is no change
    assert run_spec("btcv", "nnunet", 0, quick, options=RunOptions(brats_target="regions")).run_id \
        == run_spec("btcv", "nnunet", 0, quick).run_id
    assert RunOptions(compile=False, precision="amp").suffix(quick) == ""
    assert RunOptions(brats_target="regions", precision="fp32").suffix(quick) == "-regions-fp32"
    # UpKern sources train under the same options
    k5 = run_spec("brats21", "mednext-s-k5", 0, quick, options=RunOptions(brats_target="regions"))
    assert k5.init["run_id"] == run_spec("brats21", "mednext-s-k3", 0, quick,
                                         options=RunOptions(brats_target="regions")).run_id
    with pytest.raises(ValueError, match="unknown recipe 'fast'"):
        RunOptions(recipe="fast")


def _fake_raw(root, folder="Dataset503_KiTS19"):
    return fake_raw_dataset(root, folder)


def test_real_data_profile_needs_data_and_fingerprints_it(work, tmp_path):
    with pytest.raises(ValueError, match="--data"):
        plan_study("table2", "paper", work)
    with pytest.raises(ValueError, match=r"Dataset501_BTCV not found.*convert"):
        plan_study("table2", "paper", work, data=tmp_path / "raw")
    d = _fake_raw(tmp_path / "raw")
    jobs = plan_study("table2", "paper", work, data=tmp_path / "raw", datasets=["kits19"])
    prepare = jobs[0]
    assert prepare.payload["source_path"] == str(d.resolve())
    fp = prepare.payload["data"]["fingerprint"]
    trains = [j for j in jobs if j.kind == "train"]
    assert len(trains) == 15 * 5 and all(j.payload["spec"]["data"]["fingerprint"] == fp for j in trains)
    # the report still declares every cell; the datasets never planned have no run id
    cells = expected_runs("table2", "paper", work, sources=jobs[-1].payload["sources"])
    assert {c["dataset"] for c in cells if c["run_id"] is None} == {"btcv", "amos22", "brats21"}
    assert expected_runs("table2", "paper", work) == cells      # as recorded by the plan
    again = {j.key for j in plan_study("table2", "paper", work, data=tmp_path / "raw",
                                       datasets=["kits19"])}
    assert again == {j.key for j in jobs}                   # unchanged data: the same runs
    # the same data in another folder: the same runs; changed data: new runs
    moved = tmp_path / "elsewhere"
    _fake_raw(moved)
    assert {j.key for j in plan_study("table2", "paper", work, data=moved,
                                      datasets=["kits19"])} - {jobs[-1].key} <= again
    (d / "labelsTr" / "case_00001.nii.gz").write_bytes(b"a corrected label")
    changed = plan_study("table2", "paper", work, data=tmp_path / "raw", datasets=["kits19"])
    assert changed[0].payload["data"]["fingerprint"] != fp
    assert not ({j.key for j in changed if j.kind == "train"} & again)


def test_run_record_keeps_every_attempt(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    rec = RunRecord(run_dir, {"model": "m"}, "r")
    rec.start()
    rec.heartbeat(timings={"train_seconds": 40.0})
    rec.finish("failed", error="ValueError: boom", timings={"train_seconds": 50.0})
    data = json.loads((run_dir / "run.json").read_text())
    assert data["status"] == "failed" and data["error"] == "ValueError: boom"
    first = data["attempts"][0]
    assert first["host"] == socket.gethostname() and first["status"] == "failed"
    assert first["reason"] == "ValueError: boom" and "ended" in first
    assert {"torch", "nnunetv2", "python"} <= set(data["versions"])
    assert "commit" in first and "dirty" in first and data["device"]["usable_cpus"] >= 1
    import torch
    stack = first["stack"]
    assert stack["torch"] == torch.__version__ and stack["cuda"] == torch.version.cuda
    assert {"cudnn", "nnunetv2", "monai", "python", "device", "driver"} <= set(stack)
    assert stack["monai"] and stack["nnunetv2"] and stack["device"]
    # a retry that trains nothing adds its own attempt; the times add up
    rec2 = RunRecord(run_dir, {"model": "m"}, "r")
    rec2.start()
    rec2.finish("done", training={"trained": False}, timings={"train_seconds": 0.1,
                                                               "predict_seconds": 3.0})
    data = json.loads((run_dir / "run.json").read_text())
    assert data["status"] == "done" and len(data["attempts"]) == 2 and data["error"] is None
    assert data["attempts"][0]["timings"] == {"train_seconds": 50.0}
    assert data["timings"] == {"train_seconds": 50.1, "predict_seconds": 3.0}
    assert data["wall_seconds"] >= 0 and data["peak_rss_mib"] > 0
    with pytest.raises(ValueError, match="final status"):
        rec2.finish("running")


def test_a_killed_attempt_is_closed_as_lost_at_its_last_heartbeat(tmp_path):
    run_dir = tmp_path / "runs" / "r"
    rec = RunRecord(run_dir, {"model": "m"}, "r")
    rec.start()
    rec.heartbeat(timings={"train_seconds": 12.0})
    # the process dies here: no finish(); the next attempt closes it
    again = RunRecord(run_dir, {"model": "m"}, "r")
    again.start()
    lost = again.data["attempts"][0]
    assert lost["status"] == "lost" and "killed" in lost["reason"]
    assert lost["ended"] and lost["wall_seconds"] >= 0
    assert again.data["timings"]["train_seconds"] == 12.0
    again.finish("done", timings={"train_seconds": 8.0})
    assert json.loads((run_dir / "run.json").read_text())["timings"]["train_seconds"] == 20.0


def test_run_status_follows_the_lock_not_a_pid(tmp_path):
    work = tmp_path
    run_dir = work / "runs" / "r"
    assert run_status(work, "r") == "pending"
    rec = RunRecord(run_dir, {"model": "m"}, "r")
    rec.start()
    assert run_status(work, "r") == "pending"       # says running, but nobody holds its lock
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys; from harness.jobs.locks import JobLock; "
                               f"JobLock({str(lock_path(work, 'train:r'))!r}).acquire(); "
                               "print('held', flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert run_status(work, "r") == "running"
    finally:
        holder.kill()
        holder.wait()
    assert run_status(work, "r") == "pending"       # the holder died: its lock is gone
    rec.finish("done")
    assert run_status(work, "r") == "done"


def test_execute_refuses_a_payload_whose_id_does_not_match(work):
    job = plan_cell("kits19", "nnunet", 0, "smoke", work)[-1]
    bad = Job(job.key, job.kind, {**job.payload, "run_id": "nnunet.phantom-kits19.f0.000000000000"},
              job.deps, job.label)
    assert prepare_key("phantom-kits19", job.payload["spec"]["data"]) == job.deps[0]
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
