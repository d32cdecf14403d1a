"""End to end on the KiTS19 phantom with the smoke profile: plan, train, predict, score.

Each run goes through the local backend, one process per job, exactly as ``mednext-bench run``
does: one MedNeXt, one 3D baseline (nnU-Net) and the 2D TransUNet. Then: running the finished grid
again trains nothing; a run killed with SIGKILL in the middle of an epoch resumes from its last
checkpoint and ends with the right number of epochs; a 5-fold-style ensemble predicts a folder;
and (slow) the UpKern chain k3 -> k5. On the BraTS21 phantom, one nnU-Net run per training target
(labels, as the official code; regions, nnU-Net v2's option): outputs, recorded target, run ids,
the region data beside the label data, and the scores on WT, TC and ET from either.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.io import write_text
from harness.jobs.local import run_jobs
from harness.jobs.plan import Job, job_status, plan_cell
from harness.provenance import run_id
from harness.studies.runs import RunSpec

MODELS = ("nnunet", "mednext-s-k3", "transunet")


def cell_jobs(work, models, fold=0):
    jobs, seen = [], set()
    for model in models:
        for job in plan_cell("kits19", model, fold, "smoke", work):
            if job.key not in seen:
                seen.add(job.key)
                jobs.append(job)
    return jobs


def run_dir(job):
    return Path(job.payload["work"]) / "runs" / job.payload["run_id"]


@pytest.fixture(scope="module")
def grid(smoke_work):
    jobs = cell_jobs(smoke_work, MODELS)
    out = run_jobs(jobs, progress=False)
    assert out.ok, out.failed
    return jobs


def _geometry(path):
    import SimpleITK as sitk
    img = sitk.ReadImage(str(path))
    return img.GetSize(), img.GetSpacing(), img.GetOrigin(), img.GetDirection()


@pytest.mark.parametrize("model", MODELS)
def test_each_model_trains_predicts_and_is_scored(grid, smoke_work, smoke_root, model):
    job = next(j for j in grid if j.kind == "train" and j.payload["spec"]["model"] == model)
    d = run_dir(job)
    rec = json.loads((d / "run.json").read_text())
    assert rec["status"] == "done" and rec["error"] is None and rec["run_id"] == d.name
    assert rec["spec"] == job.payload["spec"] and run_id(rec["spec"]) == d.name
    assert len(rec["attempts"]) == 1 and rec["attempts"][0]["status"] == "done"
    assert rec["timings"]["train_seconds"] > 0 and rec["training"]["attempts_that_trained"] == 1
    assert rec["wall_seconds"] > 0 and rec["peak_rss_mib"] > 0 and rec["versions"]["nnunetv2"]
    progress = pd.read_csv(d / "progress.csv")
    assert list(progress["epoch"]) == list(range(job.payload["spec"]["profile"]["epochs"]))
    assert set(progress.columns) == {"epoch", "train_loss", "val_loss", "pseudo_dice", "lr",
                                     "epoch_seconds"}
    assert (d / "checkpoint_final.pth").is_file() and not (d / "checkpoint_latest.pth").exists()
    from mednext.checkpoint import read_checkpoint
    final = read_checkpoint(d / "checkpoint_final.pth")
    assert final["optimizer_state"] is None and final["network_weights"]
    assert final["current_epoch"] == job.payload["spec"]["profile"]["epochs"]
    cases = rec["validation_cases"]
    splits = json.loads((smoke_root / "nnUNet_preprocessed" / "Dataset903_PhantomKiTS19"
                         / "splits_final.json").read_text())
    assert cases == splits[0]["val"]
    raw = smoke_root / "nnUNet_raw" / "Dataset903_PhantomKiTS19"
    for case in cases:       # original geometry, not the 1 mm grid
        assert _geometry(d / "predictions" / f"{case}.nii.gz") == _geometry(raw / "labelsTr" / f"{case}.nii.gz")
    m = pd.read_csv(d / "metrics.csv")
    from harness.metrics.regions import regions_for
    assert set(m["case"]) == set(cases)
    assert set(m["class"]) == {r.name for r in regions_for("phantom-kits19")}
    assert {"dsc", "nsd_phys", "hd95"} <= set(m["metric"])
    assert (m["run_id"] == d.name).all() and (m["model"] == model).all()
    dsc = m[m["metric"] == "dsc"]["value"]
    assert dsc.between(0, 1).all()


def test_a_finished_grid_trains_nothing(grid):
    stamps = {j.key: (run_dir(j) / "checkpoint_final.pth").stat().st_mtime_ns
              for j in grid if j.kind == "train"}
    out = run_jobs(grid, progress=False)
    assert out.ran == [] and len(out.already_done) == len(grid) and out.ok
    assert stamps == {j.key: (run_dir(j) / "checkpoint_final.pth").stat().st_mtime_ns
                      for j in grid if j.kind == "train"}


def test_train_command_on_a_finished_cell_does_nothing(grid, smoke_work):
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "train", "--dataset", "phantom-kits19",
                           "--model", "nnunet", "--fold", "0", "--profile", "smoke",
                           "--work", str(smoke_work)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "0 ran, 2 already done, 0 failed" in proc.stdout


def test_ensemble_prediction_of_a_folder(grid, smoke_work, smoke_root, tmp_path):
    from harness.predict import ensemble_runs, predict_folder

    raw = smoke_root / "nnUNet_raw" / "Dataset903_PhantomKiTS19"
    inp = tmp_path / "in"
    inp.mkdir()
    for case in ("case_000", "case_001"):
        src = next((raw / "imagesTr").glob(f"{case}*_0000.nii.gz"), None) or \
            sorted((raw / "imagesTr").glob("*_0000.nii.gz"))[int(case[-1])]
        (inp / src.name).symlink_to(src)
    written = predict_folder("nnunet", "phantom-kits19", inp, tmp_path / "out", "smoke",
                             smoke_work, progress=False)
    assert len(written) == 2
    for p in written:
        img = raw / "imagesTr" / (p.name[: -len(".nii.gz")] + "_0000.nii.gz")
        assert _geometry(p)[:2] == _geometry(img)[:2]
    with pytest.raises(ValueError, match=r"fold\(s\) \[1\] are not trained"):
        ensemble_runs("nnunet", "phantom-kits19", "smoke", smoke_work, folds=[0, 1])


def test_sigkill_mid_epoch_resumes_to_the_right_number_of_epochs(smoke_work, tmp_path):
    base = plan_cell("kits19", "nnunet", 1, "smoke", smoke_work)[-1]
    spec = RunSpec.from_dict(base.payload["spec"])
    spec = spec.replace(profile={**spec.profile, "epochs": 2, "iterations_per_epoch": 4})
    rid = spec.run_id
    job = Job(f"train:{rid}", "train", {**base.payload, "spec": spec.to_dict(), "run_id": rid},
              base.deps, base.label)
    job_file = tmp_path / "job.json"
    write_text(job_file, job.to_json())
    d = run_dir(job)
    cmd = [sys.executable, "-m", "harness.jobs.worker", str(job_file)]
    with open(tmp_path / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            p = json.loads((d / "progress.json").read_text())
        except (OSError, ValueError):
            p = {}
        # past the first iteration of epoch 1: epoch 0 is checkpointed, epoch 1 is half done
        if p.get("phase") == "train" and 5 <= p.get("done", 0) <= 7:   # of 8
            break
        time.sleep(0.05)
    assert proc.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert job_status(job) == "pending"          # killed, not failed: it will resume
    assert len(pd.read_csv(d / "progress.csv")) == 1
    assert not (d / "checkpoint_final.pth").exists()

    subprocess.run(cmd, check=True, capture_output=True)
    assert job_status(job) == "done"
    rec = json.loads((d / "run.json").read_text())
    assert rec["training"]["resumed_from_epochs"] == [1] and len(rec["attempts"]) == 2
    assert [a["status"] for a in rec["attempts"]] == ["lost", "done"]
    assert list(pd.read_csv(d / "progress.csv")["epoch"]) == [0, 1]


@pytest.mark.slow
def test_upkern_chain_k3_to_k5(grid, smoke_work):
    from mednext.checkpoint import read_checkpoint

    jobs = cell_jobs(smoke_work, ["mednext-s-k5"])
    k3, k5 = [j for j in jobs if j.kind == "train"]
    assert job_status(k3) == "done"          # trained by the grid: only k5 runs now
    out = run_jobs(jobs, progress=False)
    assert out.ok and out.ran == [k5.key]
    rec = json.loads((run_dir(k5) / "run.json").read_text())
    assert rec["training"]["init_from"] == str(run_dir(k3) / "checkpoint_final.pth")
    w = read_checkpoint(run_dir(k5) / "checkpoint_final.pth")["network_weights"]
    assert w["enc_block_0.0.conv1.weight"].shape[-3:] == (5, 5, 5)


@pytest.mark.slow
def test_real_data_is_linked_validated_and_planned(tmp_path):
    """The real-data path of ``prepare``, fed with a phantom stored under the real folder name."""
    import shutil

    from harness.datasets import make_phantom
    from harness.jobs.plan import execute, job_data_root, plan_study

    data = tmp_path / "raw"
    made = make_phantom("kits19", tmp_path / "phantoms", cases=5, size=32, seed=1)
    shutil.copytree(made, data / "Dataset503_KiTS19")
    work = tmp_path / "work"
    prepare = plan_study("table2", "paper", work, data, datasets=["kits19"])[0]
    execute(prepare)
    assert job_status(prepare) == "done"
    root = job_data_root(prepare)
    raw = root / "nnUNet_raw" / "Dataset503_KiTS19"
    assert raw.is_symlink() and raw.resolve() == (data / "Dataset503_KiTS19").resolve()
    pre = root / "nnUNet_preprocessed" / "Dataset503_KiTS19"
    plans = json.loads((pre / "nnUNetPlans_bench.json").read_text())
    assert plans["configurations"]["3d_1mm"]["spacing"] == [1.0, 1.0, 1.0]
    assert len(json.loads((pre / "splits_final.json").read_text())) == 5
    with pytest.raises(ValueError, match="Dataset501_BTCV"):
        plan_study("table2", "paper", work, tmp_path / "nowhere", datasets=["btcv"])


# ---- BraTS21: label training (the official code's, default) and region training (option) --------

@pytest.fixture(scope="module")
def brats_runs(tmp_path_factory):
    """One nnU-Net run on the BraTS21 phantom per training target (smoke profile), in process;
    both share one prepare job. Returns {target: (train job, run folder)} and the data root."""
    from harness.jobs.plan import execute, job_data_root
    from harness.studies.options import RunOptions

    work = tmp_path_factory.mktemp("brats-work")
    runs = {}
    for target in ("labels", "regions"):
        jobs = plan_cell("brats21", "nnunet", 0, "smoke", work, options=RunOptions(brats_target=target))
        for job in jobs:
            execute(job)
        assert [job_status(j) for j in jobs] == ["done", "done"]
        runs[target] = (jobs[-1], run_dir(jobs[-1]))
    return runs, job_data_root(jobs[0])


@pytest.mark.parametrize("target, n_out", [("labels", 4), ("regions", 3)])
def test_brats_trains_on_its_target_and_is_scored_on_the_regions(brats_runs, target, n_out):
    from mednext.checkpoint import read_checkpoint

    runs, root = brats_runs
    job, d = runs[target]
    rec = json.loads((d / "run.json").read_text())
    assert rec["status"] == "done" and rec["spec"]["settings"]["brats_target"] == target
    assert runs["labels"][1].name != runs["regions"][1].name          # two runs, two ids
    used = json.loads((d / "dataset.json").read_text())               # what the trainer used
    assert ("regions_class_order" in used) == (target == "regions")
    heads = {k: v.shape[0] for k, v in read_checkpoint(d / "checkpoint_final.pth")
             ["network_weights"].items() if "seg_layers" in k and k.endswith("weight")}
    assert heads and set(heads.values()) == {n_out}                   # network outputs
    raw = root / "nnUNet_raw" / "Dataset904_PhantomBraTS21"
    assert json.loads((raw / "dataset.json").read_text())["labels"] == \
        {"background": 0, "edema": 1, "necrosis": 2, "enhancing_tumor": 3}   # raw never rewritten
    for case in rec["validation_cases"]:                              # a label map in both modes
        pred = _array(d / "predictions" / f"{case}.nii.gz")
        assert set(np.unique(pred).tolist()) <= {0, 1, 2, 3}
    m = pd.read_csv(d / "metrics.csv")
    assert set(m["class"]) == {"WT", "TC", "ET"} and set(m["case"]) == set(rec["validation_cases"])
    assert m[m["metric"] == "dsc"]["value"].dropna().between(0, 1).all()


def test_brats_region_data_are_the_label_data_with_region_locations(brats_runs):
    """The region folder holds nnU-Net's arrays (linked, not copied) and exactly the foreground
    locations nnU-Net's preprocessor stores when it preprocesses with the region form."""
    import pickle

    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from harness.datasets import task_spec
    from harness.nnunet.env import configure
    from harness.nnunet.plans import DATA_IDENTIFIER, PLANS_NAME, REGIONS_DATA_IDENTIFIER

    _, root = brats_runs
    configure(root)
    spec = task_spec("phantom-brats21")
    pre = root / "nnUNet_preprocessed" / spec.folder
    raw = root / "nnUNet_raw" / spec.folder
    stamp = json.loads((pre / "bench_prepare.json").read_text())
    assert stamp["preprocessed"] == {"labels": DATA_IDENTIFIER, "regions": REGIONS_DATA_IDENTIFIER}
    assert json.loads((pre / "dataset.json").read_text())["labels"] == spec.labels
    case = stamp["cases"][0]
    lab, reg = pre / DATA_IDENTIFIER, pre / REGIONS_DATA_IDENTIFIER
    assert (lab / f"{case}.b2nd").stat().st_ino == (reg / f"{case}.b2nd").stat().st_ino
    stored = {t: pickle.loads((d / f"{case}.pkl").read_bytes())["class_locations"]
              for t, d in (("labels", lab), ("regions", reg))}
    assert set(stored["labels"]) == {1, 2, 3}
    assert set(stored["regions"]) == {(1, 2, 3), (2, 3), 3}         # nnU-Net keeps ET an int
    pm = PlansManager(json.loads((pre / f"{PLANS_NAME}.json").read_text()))
    cm = pm.get_configuration("3d_1mm")
    dj = spec.target_dataset_json(json.loads((raw / "dataset.json").read_text()), "regions")
    files = [str(raw / "imagesTr" / f"{case}_{c:04d}.nii.gz") for c in range(4)]
    _, _, props = cm.preprocessor_class(verbose=False).run_case(
        files, str(raw / "labelsTr" / f"{case}.nii.gz"), pm, cm, dj)
    expected = props["class_locations"]
    assert set(expected) == set(stored["regions"])
    for key, locs in expected.items():
        assert np.array_equal(np.asarray(locs), np.asarray(stored["regions"][key])), key


def _array(path):
    import SimpleITK as sitk
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


OLD_BRATS_LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}


def test_brats_prepared_by_an_earlier_version_is_stale_and_loads_per_target(
        brats_runs, tmp_path):
    """A data root prepared before label training (its stamp names no targets, its dataset.json
    is the region form): the prepare job runs again; the runs load the form of their target."""
    import shutil

    from harness.datasets import task_spec
    from harness.jobs.prepare import is_prepared
    from harness.nnunet.env import configure
    from harness.nnunet.training import load_plans

    runs, root = brats_runs
    spec = task_spec("phantom-brats21")
    stamp = json.loads((root / "nnUNet_preprocessed" / spec.folder / "bench_prepare.json").read_text())
    old = {k: v for k, v in stamp.items() if k != "preprocessed"}
    assert is_prepared(stamp, stamp["data"], spec) and not is_prepared(old, old["data"], spec)
    assert is_prepared(old, old["data"], task_spec("phantom-kits19"))   # labels only: still done
    pre = tmp_path / "nnUNet_preprocessed" / spec.folder
    pre.mkdir(parents=True)
    shutil.copy(root / "nnUNet_preprocessed" / spec.folder / "nnUNetPlans_bench.json", pre)
    dj = json.loads((root / "nnUNet_preprocessed" / spec.folder / "dataset.json").read_text())
    (pre / "dataset.json").write_text(json.dumps({**dj, "labels": OLD_BRATS_LABELS,
                                                  "regions_class_order": [1, 2, 3]}))
    configure(tmp_path)
    try:
        for target, (_, d) in runs.items():
            run_spec = json.loads((d / "run.json").read_text())["spec"]
            _, _, loaded = load_plans(run_spec)
            assert loaded == json.loads((d / "dataset.json").read_text()), target
    finally:
        configure(root)


@pytest.mark.slow
def test_real_brats_converted_by_an_earlier_version_is_prepared_for_both_targets(tmp_path):
    """The real-data prepare job on a BraTS21 conversion whose dataset.json is the region form
    of earlier versions: used as it is (never rewritten), prepared for both targets."""
    import shutil

    from harness.datasets import make_phantom, task_spec
    from harness.jobs.plan import execute, job_data_root, plan_study
    from harness.nnunet.plans import DATA_IDENTIFIER, REGIONS_DATA_IDENTIFIER

    data = tmp_path / "raw" / "Dataset504_BraTS21"
    shutil.copytree(make_phantom("brats21", tmp_path / "phantoms", cases=5, size=24, seed=1), data)
    dj = json.loads((data / "dataset.json").read_text())
    text = json.dumps({**dj, "labels": OLD_BRATS_LABELS, "regions_class_order": [1, 2, 3]})
    (data / "dataset.json").write_text(text)
    prepare = plan_study("table2", "check", tmp_path / "work", data.parent, datasets=["brats21"])[0]
    execute(prepare)
    assert job_status(prepare) == "done" and (data / "dataset.json").read_text() == text
    pre = job_data_root(prepare) / "nnUNet_preprocessed" / "Dataset504_BraTS21"
    assert json.loads((pre / "dataset.json").read_text())["labels"] == task_spec("brats21").labels
    assert json.loads((pre / "bench_prepare.json").read_text())["preprocessed"] == \
        {"labels": DATA_IDENTIFIER, "regions": REGIONS_DATA_IDENTIFIER}
    assert len(list((pre / REGIONS_DATA_IDENTIFIER).glob("*.pkl"))) == 5
