"""Validation: every failure has its message (file, case, what, expected vs found); all are reported
together; on any error nothing is written."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from harness.datasets import DatasetError, convert, make_phantom, validate_raw


def write(path, arr, spacing=(0.8, 0.8, 2.5), origin=(0.0, 0.0, 0.0), direction=None):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)


def btcv_case(root, i, img=None, lab=None, img_kw=None, lab_kw=None):
    rng = np.random.default_rng(int(i))
    img = rng.integers(-100, 100, (3, 4, 5)).astype(np.int16) if img is None else img
    lab = rng.integers(0, 14, (3, 4, 5)).astype(np.uint8) if lab is None else lab
    train = root / "RawData" / "Training"
    write(train / "img" / f"img{i}.nii.gz", img, **(img_kw or {}))
    write(train / "label" / f"label{i}.nii.gz", lab, **(lab_kw or {}))


def failing(tmp_path, task="btcv"):
    with pytest.raises(DatasetError) as info:
        convert(task, tmp_path / "src", tmp_path / "raw", progress=False, quiet=True)
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())  # nothing written
    return info.value


CASES = {
    "shape": (dict(lab=np.zeros((3, 4, 6), np.uint8)), "shape differs from", "(3, 4, 5)", "(3, 4, 6)"),
    "spacing": (dict(lab_kw=dict(spacing=(0.8, 0.8, 3.0))), "spacing differs", "(0.8, 0.8, 2.5)", "(0.8, 0.8, 3)"),
    "origin": (dict(lab_kw=dict(origin=(0.0, 5.0, 0.0))), "origin differs", "(0, 0, 0)", "(0, 5, 0)"),
    "direction": (dict(lab_kw=dict(direction=(-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0))), "direction differs",
                  "(1, 0, 0", "(-1, 0, 0"),
    "label values": (dict(lab=np.full((3, 4, 5), 20, np.uint8)), "label values outside the label map",
                     "values in [0, 1, 2", "[20]"),
    "nan": (dict(img=np.full((3, 4, 5), np.nan, np.float32)), "image has NaN/Inf voxels", "0", "60"),
    "inf": (dict(img=np.where(np.arange(60).reshape(3, 4, 5) == 7, np.inf, 1.0).astype(np.float32)),
            "image has NaN/Inf voxels", "0", "1"),
    "nan label": (dict(lab=np.full((3, 4, 5), np.nan, np.float32)), "label has NaN/Inf", "integers", "60 NaN/Inf"),
    "constant": (dict(img=np.zeros((3, 4, 5), np.int16)), "image is empty (constant)", "varying", "every voxel = 0"),
    "fractional label": (dict(lab=np.full((3, 4, 5), 1.5, np.float32)), "non-integer", "integers", "fractional"),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_failure_is_reported_with_file_case_expected_found(tmp_path, kind):
    kwargs, what, expected, found = CASES[kind]
    btcv_case(tmp_path / "src", "0001")
    btcv_case(tmp_path / "src", "0002", **kwargs)
    err = failing(tmp_path)
    assert len(err.problems) == 1, str(err)
    p = err.problems[0]
    assert p.case == "btcv_0002" and "0002" in p.file
    assert what in p.what and expected in p.expected and found in p.found, str(p)
    assert f"case btcv_0002: {p.file}: {p.what}" in str(err) and "nothing was written" in str(err)


def test_missing_and_unreadable_files(tmp_path):
    btcv_case(tmp_path / "src", "0001")
    btcv_case(tmp_path / "src", "0002")
    (tmp_path / "src" / "RawData" / "Training" / "label" / "label0002.nii.gz").unlink()
    (tmp_path / "src" / "RawData" / "Training" / "img" / "img0001.nii.gz").write_bytes(b"not a nifti")
    err = failing(tmp_path)
    found = {(p.case, p.what.split(" (")[0]) for p in err.problems}
    assert found == {("btcv_0001", "unreadable CT"), ("btcv_0002", "missing label file")}


def test_missing_channel_of_a_multichannel_case(tmp_path):
    name = "BraTS2021_00001"
    for ch in ("flair", "t1", "t2"):                              # t1ce missing
        write(tmp_path / "src" / name / f"{name}_{ch}.nii.gz", np.arange(60, dtype=np.int16).reshape(3, 4, 5))
    write(tmp_path / "src" / name / f"{name}_seg.nii.gz", np.zeros((3, 4, 5), np.uint8))
    err = failing(tmp_path, "brats21")
    assert [(p.case, p.what) for p in err.problems] == [(name, "missing T1ce file")]
    assert err.problems[0].file.endswith("_t1ce.nii.gz")


def test_all_problems_of_all_cases_are_reported_together(tmp_path):
    btcv_case(tmp_path / "src", "0001", lab=np.full((3, 4, 5), 99, np.uint8))
    btcv_case(tmp_path / "src", "0002")
    btcv_case(tmp_path / "src", "0003", lab_kw=dict(spacing=(1.0, 0.8, 2.5)))
    btcv_case(tmp_path / "src", "0004", img=np.zeros((3, 4, 5), np.int16))
    err = failing(tmp_path)
    assert [p.case for p in err.problems] == ["btcv_0003", "btcv_0001", "btcv_0004"]  # headers first
    assert str(err).count("\n  - ") == 3
    assert [p.name for p in tmp_path.iterdir()] == ["src"] or not any((tmp_path / "raw").iterdir())


def test_validate_raw_passes_a_phantom_and_lists_every_problem_of_a_broken_folder(tmp_path):
    folder = make_phantom("brats21", tmp_path / "raw", cases=3, size=24)
    summary = validate_raw(folder)
    assert summary["cases"] == 3 and summary["spacing_min"] == [1.0, 1.0, 1.0]
    assert set(summary["voxels_per_label"]) == {"0", "1", "2", "3"}
    assert summary["label_names"]["1"] == "edema"

    ids = summary["case_ids"]
    (folder / "imagesTr" / f"{ids[0]}_0002.nii.gz").unlink()                 # a missing channel
    lab = sitk.ReadImage(str(folder / "labelsTr" / f"{ids[1]}.nii.gz"))
    arr = sitk.GetArrayFromImage(lab)
    arr[0, 0, 0] = 7
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(lab)
    sitk.WriteImage(bad, str(folder / "labelsTr" / f"{ids[1]}.nii.gz"))       # a foreign label value
    (folder / "imagesTr" / "stray_0000.nii.gz").write_bytes(b"x")             # an image without label
    dj = json.loads((folder / "dataset.json").read_text())
    dj["numTraining"] = 4
    (folder / "dataset.json").write_text(json.dumps(dj))
    with pytest.raises(DatasetError) as info:
        validate_raw(folder)
    whats = sorted((p.case, p.what) for p in info.value.problems)
    assert whats == sorted([(ids[0], "missing T1ce file"), (ids[1], "label values outside the label map"),
                            ("stray", "image without a label or channel index out of range"),
                            ("-", "numTraining disagrees with labelsTr")])
    assert "nothing was written" not in str(info.value)


def test_validate_raw_on_a_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        validate_raw(tmp_path / "nope")
