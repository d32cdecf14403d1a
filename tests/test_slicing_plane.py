"""TransUNet's slicing plane: the per-dataset facts, the 2D plans that follow them, and prediction
back in the original geometry (on the prepared KiTS19 phantom, the one task sliced sagittally)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from harness.datasets import nifti
from harness.datasets.spec import PLANE_AXIS, SlicingPlane, TASKS, slicing_plane, task_spec
from harness.nnunet.plans import (DATA_IDENTIFIER, PLANS_2D_NAME, PLANS_NAME, bench_2d_plans,
                                  preprocessed_folder, training_plans)

KITS = "Dataset903_PhantomKiTS19"


def test_official_plane_of_each_dataset():
    planes = {t: slicing_plane(t) for t in ("btcv", "amos22", "kits19", "brats21")}
    assert {t: p["plane"] for t, p in planes.items()} == {
        "btcv": "axial", "amos22": "axial", "kits19": "sagittal", "brats21": "axial"}
    assert planes["kits19"]["transpose_forward"] == [2, 1, 0] and planes["kits19"]["converted_axis"] == 2
    assert all(planes[t]["transpose_forward"] == [0, 1, 2] for t in ("btcv", "amos22", "brats21"))
    assert planes["kits19"]["certainty"] == "certain"
    assert {planes[t]["certainty"] for t in ("btcv", "amos22", "brats21")} == {"likely"}
    for name, spec in TASKS.items():
        p = slicing_plane(name)
        assert json.loads(json.dumps(p)) == p and p["download_axis"] == 0
        assert p == slicing_plane(spec.task) == slicing_plane(spec.folder)   # phantoms share it
        assert "customTargetSpacing_1x1x1" in p["source"] and "@7fdbd4a" in p["source"]
    assert "Task040_KiTS.py" in planes["kits19"]["source"]


def test_a_plane_names_each_axis_once_and_a_known_certainty():
    with pytest.raises(ValueError, match="download_axes"):
        SlicingPlane(("axial", "axial", "sagittal"), "likely", "x")
    with pytest.raises(ValueError, match="certainty"):
        SlicingPlane(("axial", "coronal", "sagittal"), "sure", "x")


@pytest.mark.parametrize("task, orientation", [("kits19", "IPL"), ("btcv", "LPS"), ("amos22", "RAS")])
def test_transpose_gives_the_downloaded_array_order(task, orientation):
    """A converted (LPS) array transposed by the plane's transpose is, up to flips, the array
    SimpleITK reads from a file stored the way the task's download stores it."""
    lps = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)      # (z, y, x), distinct sizes
    stored = nifti.reorient(nifti.from_array(lps, spacing=(0.8, 0.9, 3.0)), orientation)
    downloaded = nifti.to_array(stored)
    moved = np.transpose(lps, task_spec(task).slicing.transpose)
    assert downloaded.shape == moved.shape
    assert any(np.array_equal(downloaded, np.flip(moved, axis=ax))
               for ax in [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)])
    # the downloaded array's axis 0 is the axis of the official slices
    assert downloaded.shape[0] == lps.shape[PLANE_AXIS[task_spec(task).slicing.name]]


def _bench(t3, median_raw):
    cfg = {"data_identifier": DATA_IDENTIFIER, "spacing": [1.0, 1.0, 1.0],
           "median_image_size_in_voxels": [median_raw[a] for a in t3],
           "patch_size": [median_raw[a] // 10 for a in t3],
           "architecture": {"arch_kwargs": {"strides": [[1, 1, 1], [a + 1 for a in t3]]}}}
    return {"dataset_name": KITS, "plans_name": PLANS_NAME, "transpose_forward": t3,
            "transpose_backward": [t3.index(i) for i in range(3)],
            "original_median_shape_after_transp": [median_raw[a] for a in t3],
            "configurations": {"3d_1mm": cfg}, "protocol": {"target_spacing": [1.0] * 3}}


@pytest.mark.parametrize("t3", [[0, 1, 2], [1, 0, 2], [2, 0, 1]])
def test_2d_plans_put_the_slicing_axis_first(t3):
    raw = [30, 40, 50]                                   # median size per converted axis
    bench = _bench(t3, raw)
    out = bench_2d_plans(bench, slicing_plane("kits19"))
    assert out["plans_name"] == PLANS_2D_NAME and list(out["configurations"]) == ["2d_1mm"]
    assert out["transpose_forward"] == [2, 1, 0] and out["transpose_backward"] == [2, 1, 0]
    cfg = out["configurations"]["2d_1mm"]
    assert cfg["median_image_size_in_voxels"] == [50, 40, 30] and cfg["patch_size"] == [5, 4, 3]
    assert cfg["architecture"]["arch_kwargs"]["strides"] == [[1, 1, 1], [3, 2, 1]]
    assert out["original_median_shape_after_transp"] == [50, 40, 30]
    assert cfg["data_identifier"] == f"{PLANS_2D_NAME}_1mm" != DATA_IDENTIFIER
    assert out["protocol"]["slicing_plane"]["plane"] == "sagittal"
    assert bench["transpose_forward"] == t3 and "3d_1mm" in bench["configurations"]  # not mutated
    axial = bench_2d_plans(bench, slicing_plane("btcv"))["configurations"]["2d_1mm"]
    assert (axial["data_identifier"] == DATA_IDENTIFIER) == (t3 == [0, 1, 2])
    with pytest.raises(ValueError, match="permutation"):
        bench_2d_plans(bench, {"transpose_forward": [0, 0, 1]})


@pytest.fixture
def kits_2d(smoke_root):
    from harness.nnunet.env import configure
    configure(smoke_root)
    return training_plans(KITS, "2d", (32, 32), 4, "transunet")


def _case(folder, identifier):
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
    data, seg, _, props = infer_dataset_class(str(folder))(str(folder)).load_case(identifier)
    return np.asarray(data), np.asarray(seg), props


def test_kits_phantom_2d_data_are_sagittal_slices_of_the_3d_data(kits_2d, smoke_root):
    plans2, c2 = kits_2d
    plans3, c3 = training_plans(KITS, "3d", (32, 32, 32), 2, "nnunet")
    cfg2, cfg3 = plans2["configurations"][c2], plans3["configurations"][c3]
    assert plans2["transpose_forward"] == [2, 1, 0] and cfg2["data_identifier"] != cfg3["data_identifier"]
    pre = preprocessed_folder(KITS)
    order = [plans3["transpose_forward"].index(a) for a in plans2["transpose_forward"]]
    case = json.loads((pre / "splits_final.json").read_text())[0]["val"][0]
    d2, s2, p2 = _case(pre / cfg2["data_identifier"], case)
    d3, s3, _ = _case(pre / cfg3["data_identifier"], case)
    assert d2.shape == tuple(d3.shape[i] for i in [0] + [o + 1 for o in order])
    np.testing.assert_allclose(d2, d3.transpose([0] + [o + 1 for o in order]), atol=1e-3)
    assert np.mean(s2 != s3.transpose([0] + [o + 1 for o in order])) < 1e-3
    raw = nifti.read_geometry(smoke_root / "nnUNet_raw" / KITS / "labelsTr" / f"{case}.nii.gz")
    assert tuple(p2["shape_before_cropping"]) == raw.size      # (x, y, z): left-right first


def _exported(plans, cfg, raw, case, out_file):
    """A case preprocessed with ``plans``, its label made into logits and exported the way
    prediction exports them (resample, un-crop, ``transpose_backward``, write)."""
    import torch
    from nnunetv2.inference.export_prediction import \
        convert_predicted_logits_to_segmentation_with_correct_shape
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    cm = pm.get_configuration(cfg)
    dj = json.loads((raw / "dataset.json").read_text())
    _, seg, props = cm.preprocessor_class(verbose=False).run_case(
        [str(raw / "imagesTr" / f"{case}_0000.nii.gz")], str(raw / "labelsTr" / f"{case}.nii.gz"),
        pm, cm, dj)
    lm = pm.get_label_manager(dj)
    logits = torch.from_numpy(np.stack([(seg[0] == v) for v in lm.all_labels]).astype(np.float32))
    out = convert_predicted_logits_to_segmentation_with_correct_shape(logits, pm, cm, lm, props,
                                                                     num_threads_torch=1)
    pm.image_reader_writer_class().write_seg(out, str(out_file), props)
    return nifti.read(out_file)


def test_kits_phantom_2d_prediction_returns_the_original_geometry(kits_2d, smoke_root, tmp_path):
    """Exported through the 2D plans (sagittal), a case lands on its raw grid and on the same
    voxels as through the 3D plans; both are the raw label up to the 1 mm round trip."""
    raw = smoke_root / "nnUNet_raw" / KITS
    case = sorted(p.name[:-len(".nii.gz")] for p in (raw / "labelsTr").glob("*.nii.gz"))[0]
    ref = nifti.read(raw / "labelsTr" / f"{case}.nii.gz")
    two = _exported(*kits_2d, raw, case, tmp_path / "2d.nii.gz")
    three = _exported(*training_plans(KITS, "3d", (32, 32, 32), 2, "nnunet"), raw, case,
                      tmp_path / "3d.nii.gz")
    assert not nifti.geometry(two).differences(nifti.geometry(ref))
    a2, a3, r = (nifti.to_array(i) for i in (two, three, ref))
    assert np.mean(a2 != a3) < 1e-3
    fg2, fgr = a2 > 0, r > 0
    assert 2 * np.sum(fg2 & fgr) / (np.sum(fg2) + np.sum(fgr)) > 0.75
