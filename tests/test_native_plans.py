"""``nnunet-resenc-l-native``: nnU-Net's ResEnc L trained with what ``nnUNetPlannerResEncL`` plans
for the dataset itself (its own spacing, patch and batch), outside the identical protocol.

On the KiTS19 smoke phantom (anisotropic voxels, so the planner's spacing and topology differ from
the protocol's 1 mm): the planner's prepare job, a run through the local backend, what its
run.json records against the plans file nnU-Net wrote, the check that the network is the one
nnU-Net builds from those plans, the run identity, and the stamp rules. (slow) BraTS21 with the
region target: the region data beside the planner's data.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest

from harness import registry
from harness.errors import UserError
from harness.jobs.local import run_jobs
from harness.jobs.plan import job_status, plan_cell
from harness.studies import load_profile
from harness.studies.runs import run_spec

NATIVE = "nnunet-resenc-l-native"
PLANS = {"planner": "nnUNetPlannerResEncL", "plans_name": "nnUNetResEncUNetLPlans",
         "configuration": "3d_fullres"}


@pytest.fixture(scope="module")
def native_run(smoke_work):
    jobs = plan_cell("kits19", NATIVE, 0, "smoke", smoke_work)
    out = run_jobs(jobs, progress=False)
    assert out.ok, out.failed
    return jobs


def _planned(root: Path) -> dict:
    pre = next((root / "nnUNet_preprocessed").iterdir())
    return json.loads((pre / "nnUNetResEncUNetLPlans.json").read_text())


def test_the_cell_plans_with_the_planner_after_the_dataset(native_run):
    kinds = [(j.kind, j.payload.get("plans")) for j in native_run]
    assert kinds == [("prepare", None), ("prepare", PLANS), ("train", None)]
    planner, train = native_run[1], native_run[2]
    assert planner.deps == (native_run[0].key,)
    assert set(train.deps) == {native_run[0].key, planner.key}
    assert all(job_status(j) == "done" for j in native_run)


def test_run_trains_predicts_and_records_what_the_planner_planned(native_run, smoke_root):
    from harness.nnunet.env import configure

    train = native_run[-1]
    d = Path(train.payload["work"]) / "runs" / train.payload["run_id"]
    rec = json.loads((d / "run.json").read_text())
    assert rec["status"] == "done"
    assert "patch" not in rec["spec"]["profile"] and rec["spec"]["profile"]["plans"] == PLANS
    plans = _planned(smoke_root)
    assert plans["plans_name"] == PLANS["plans_name"]
    cfg = plans["configurations"]["3d_fullres"]
    got = rec["configuration"]
    assert got["plans_name"] == PLANS["plans_name"]
    assert got["spacing"] == pytest.approx(cfg["spacing"])
    assert got["patch"] == cfg["patch_size"] and got["batch"] == cfg["batch_size"]
    assert got["data_identifier"] == cfg["data_identifier"]
    # the phantom's voxels are anisotropic: the planner's spacing is not the protocol's 1 mm
    assert max(cfg["spacing"]) / min(cfg["spacing"]) > 2
    # its size as nnU-Net's own network of the plan counts it
    configure(smoke_root)
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    arch = cfg["architecture"]
    theirs = get_network_from_plans(arch["network_class_name"], arch["arch_kwargs"],
                                    arch["_kw_requires_import"], 1, 3, allow_init=False,
                                    deep_supervision=False)
    assert got["network"]["params"] == sum(p.numel() for p in theirs.parameters())
    assert got["network"]["patch"] == cfg["patch_size"] and got["network"]["gmacs"] > 0
    # predictions at the original geometry, scored
    import SimpleITK as sitk
    cases = rec["validation_cases"]
    assert cases
    for case in cases:
        pred = sitk.ReadImage(str(d / "predictions" / f"{case}.nii.gz"))
        img = sitk.ReadImage(str(smoke_root / "nnUNet_raw" / "Dataset903_PhantomKiTS19"
                                 / "imagesTr" / f"{case}_0000.nii.gz"))
        assert pred.GetSize() == img.GetSize()
        assert pred.GetSpacing() == pytest.approx(img.GetSpacing())
    assert (d / "metrics.csv").stat().st_size > 0


def test_planned_network_check_refuses_a_network_nnunet_did_not_plan(native_run, smoke_root):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from harness.compute import empty_init
    from harness.nnunet.plans import check_planned_network

    plans = _planned(smoke_root)
    cm = PlansManager(plans).get_configuration("3d_fullres")
    patch, spacing = tuple(cm.patch_size), tuple(cm.spacing)
    with empty_init():
        net = registry.build_model(NATIVE, 1, 3, patch, deep_supervision=True, spacing=spacing)
        check_planned_network(net, cm, 1, 3, True, "nnUNetPlannerResEncL")      # the same network
        other = registry.build_model(NATIVE, 1, 3, patch, deep_supervision=True)  # 1 mm topology
    with pytest.raises(ValueError, match="not the one nnUNetPlannerResEncL planned"):
        check_planned_network(other, cm, 1, 3, True, "nnUNetPlannerResEncL")
    wider = copy.deepcopy(plans)
    arch = wider["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    arch["features_per_stage"] = [2 * f for f in arch["features_per_stage"]]
    with pytest.raises(ValueError, match="first differences"):
        check_planned_network(net, PlansManager(wider).get_configuration("3d_fullres"), 1, 3,
                              True, "nnUNetPlannerResEncL")


def test_identity_names_the_planner_instead_of_the_profile_patch():
    smoke = load_profile("smoke")
    spec = run_spec("kits19", NATIVE, 0, smoke)
    assert spec.profile["plans"] == PLANS and "patch" not in spec.profile and "batch" not in spec.profile
    other_patch = dataclasses.replace(smoke, patch_3d=(64, 64, 64), batch_3d=4)
    assert run_spec("kits19", NATIVE, 0, other_patch).run_id == spec.run_id
    assert run_spec("kits19", "nnunet-resenc", 0, other_patch).run_id != \
        run_spec("kits19", "nnunet-resenc", 0, smoke).run_id
    longer = dataclasses.replace(smoke, epochs=smoke.epochs + 1)
    assert run_spec("kits19", NATIVE, 0, longer).run_id != spec.run_id
    same_net = run_spec("kits19", "nnunet-resenc", 0, smoke)
    assert same_net.network == spec.network and same_net.run_id != spec.run_id
    assert registry.get(NATIVE).recipe() == registry.get("nnunet").recipe()


def test_planner_stamp_rules(native_run, smoke_root):
    from harness.datasets import task_spec
    from harness.jobs.prepare import is_native_prepared, read_native_stamp

    spec = task_spec("phantom-kits19")
    stamp = read_native_stamp(smoke_root, spec.folder, PLANS)
    data = native_run[0].payload["data"]
    assert is_native_prepared(stamp, data, spec, PLANS)
    assert not is_native_prepared(None, data, spec, PLANS)
    assert not is_native_prepared(stamp, {**data, "fingerprint": "0" * 64}, spec, PLANS)
    assert not is_native_prepared(stamp, data, spec, {**PLANS, "configuration": "3d_lowres"})
    brats = task_spec("phantom-brats21")          # two targets: the labels folder alone is not enough
    assert not is_native_prepared(stamp, data, brats, PLANS)


def test_planner_job_before_the_dataset_is_prepared_is_refused(tmp_path):
    from harness.jobs.prepare import prepare_dataset

    job = plan_cell("kits19", NATIVE, 0, "smoke", tmp_path / "work")[1]
    assert job.payload["plans"] == PLANS and job_status(job) == "pending"
    with pytest.raises(UserError, match="its prepare job runs before nnUNetPlannerResEncL's"):
        prepare_dataset(job.payload)


@pytest.mark.parametrize("plans, message", [
    ({"planner": "nnUNetPlannerResEncXXL", "plans_name": "x", "configuration": "3d_fullres"},
     "is not one of"),
    ({"planner": "nnUNetPlannerResEncL", "plans_name": "nnUNetResEncUNetLPlans",
      "configuration": "2d"}, "planned configuration must be one of"),
    ({"planner": "nnUNetPlannerResEncL"}, "must have the keys"),
])
def test_registry_refuses_a_planner_it_cannot_train_with(plans, message):
    entry = registry.get(NATIVE)
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(entry, plans=plans)
    with pytest.raises(ValueError, match="must plan its topology per patch and spacing"):
        dataclasses.replace(registry.get("unetr"), plans=PLANS)


@pytest.mark.slow
def test_brats_region_target_trains_on_region_data_beside_the_planners(tmp_path):
    from harness.studies.options import RunOptions

    work = tmp_path / "work"
    jobs = plan_cell("brats21", NATIVE, 0, "smoke", work, options=RunOptions(brats_target="regions"))
    out = run_jobs(jobs, progress=False)
    assert out.ok, out.failed
    train = jobs[-1]
    rec = json.loads((work / "runs" / train.payload["run_id"] / "run.json").read_text())
    assert rec["configuration"]["data_identifier"] == "nnUNetPlans_3d_fullres_regions"
    stamp_dir = next((work / "datasets").glob("phantom-brats21-*")) / "nnUNet_preprocessed"
    stamp = json.loads(next(stamp_dir.glob("*/bench_prepare_nnUNetResEncUNetLPlans.json")).read_text())
    assert stamp["preprocessed"] == {"labels": "nnUNetPlans_3d_fullres",
                                     "regions": "nnUNetPlans_3d_fullres_regions"}
