"""Each converter on a miniature public-download layout written here (no real data involved).

KiTS19 is written with nibabel and the real release's permuted affine, independently of the
SimpleITK seam, and the converted geometry is checked voxel by voxel in world coordinates.
"""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from harness.datasets import DatasetError, convert


def write_sitk(path, arr, spacing=(0.8, 0.8, 2.5), origin=(0.0, 0.0, 0.0), direction=None):
    """Write a (z, y, x) array; spacing/origin in SimpleITK (x, y, z) order."""
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), True)
    return path


def read(path):
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), img


def ct(rng, shape=(4, 6, 7)):
    return rng.integers(-1000, 1000, shape).astype(np.int16)


def labels(rng, values, shape=(4, 6, 7)):
    return rng.choice(np.array(values, np.uint8), shape)


def world_values(path):
    """{RAS world coordinate (rounded) -> voxel value} of every voxel of a NIfTI file (nibabel)."""
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    idx = np.indices(data.shape).reshape(3, -1).T
    xyz = nib.affines.apply_affine(img.affine, idx).round(3)
    return {tuple(p): v for p, v in zip(xyz.tolist(), data.ravel().tolist())}


def test_btcv_layout_converts_and_rerun_is_a_noop(tmp_path, capsys):
    rng = np.random.default_rng(0)
    train = tmp_path / "src" / "RawData" / "Training"
    src = {}
    for i in ("0001", "0002", "0021"):
        src[i] = (ct(rng), labels(rng, range(14)))
        write_sitk(train / "img" / f"img{i}.nii.gz", src[i][0], origin=(1.0, 2.0, 3.0))
        write_sitk(train / "label" / f"label{i}.nii.gz", src[i][1], origin=(1.0, 2.0, 3.0))
    out = convert("btcv", tmp_path / "src", tmp_path / "raw", progress=False)
    assert out == tmp_path / "raw" / "Dataset501_BTCV"
    dj = json.loads((out / "dataset.json").read_text())
    assert dj["numTraining"] == 3 and dj["channel_names"] == {"0": "CT"} and dj["labels"]["aorta"] == 8
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == [
        "btcv_0001_0000.nii.gz", "btcv_0002_0000.nii.gz", "btcv_0021_0000.nii.gz"]
    for i, (img, lab) in src.items():
        a, a_img = read(out / "imagesTr" / f"btcv_{i}_0000.nii.gz")
        b, b_img = read(out / "labelsTr" / f"btcv_{i}.nii.gz")
        assert np.array_equal(a, img) and np.array_equal(b, lab) and b.dtype == np.uint8
        assert a_img.GetSpacing() == b_img.GetSpacing() == pytest.approx((0.8, 0.8, 2.5))
        assert a_img.GetOrigin() == pytest.approx((1.0, 2.0, 3.0))
    printed = capsys.readouterr().out
    assert "3 cases" in printed and "spacing mm (z, y, x)" in printed and "aorta" in printed
    assert dj["conversion"]["voxels_per_label"]["8"] == sum(int((l == 8).sum()) for _, l in src.values())

    stamp = (out / "labelsTr" / "btcv_0001.nii.gz").stat().st_mtime_ns
    assert convert("btcv", tmp_path / "src", tmp_path / "raw", progress=False) == out
    assert "nothing to do" in capsys.readouterr().out
    assert (out / "labelsTr" / "btcv_0001.nii.gz").stat().st_mtime_ns == stamp


def _amos_source(root, rng, label_keys=16):
    ras = (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)  # AMOS mixes orientations
    cases = {"0001": None, "0002": ras, "0507": None}
    for i, direction in cases.items():
        write_sitk(root / "imagesTr" / f"amos_{i}.nii.gz", ct(rng), direction=direction)
        write_sitk(root / "labelsTr" / f"amos_{i}.nii.gz", labels(rng, range(16)), direction=direction)
    write_sitk(root / "imagesVa" / "amos_0100.nii.gz", ct(rng))
    write_sitk(root / "labelsVa" / "amos_0100.nii.gz", labels(rng, range(16)))
    (root / "dataset.json").write_text(json.dumps({"labels": {str(k): f"l{k}" for k in range(label_keys)}}))


def test_amos22_keeps_ct_cases_reorients_and_adds_validation_on_request(tmp_path):
    rng = np.random.default_rng(1)
    _amos_source(tmp_path / "amos22", rng)
    out = convert("amos22", tmp_path / "amos22", tmp_path / "raw", progress=False, quiet=True)
    dj = json.loads((out / "dataset.json").read_text())
    assert dj["conversion"]["case_ids"] == ["amos_0001", "amos_0002"]  # MRI (id >= 500) left out
    assert dj["conversion"]["skipped"] == ["amos_0507 (MRI)"] and dj["numTraining"] == 2
    # the RAS-stored case is reoriented to LPS without moving any voxel in the world
    converted = out / "labelsTr" / "amos_0002.nii.gz"
    assert read(converted)[1].GetDirection() == pytest.approx(np.eye(3).ravel())
    assert world_values(converted) == world_values(tmp_path / "amos22" / "labelsTr" / "amos_0002.nii.gz")

    out_va = convert("amos22", tmp_path / "amos22", tmp_path / "raw_va", include_validation=True,
                     progress=False, quiet=True)
    assert json.loads((out_va / "dataset.json").read_text())["numTraining"] == 3
    assert (out_va / "labelsTr" / "amos_0100.nii.gz").is_file()
    with pytest.raises(ValueError, match="amos22 only"):
        convert("btcv", tmp_path / "amos22", tmp_path / "raw_x", include_validation=True)


def test_amos22_rejects_a_foreign_label_map(tmp_path):
    _amos_source(tmp_path / "amos22", np.random.default_rng(2), label_keys=14)
    with pytest.raises(DatasetError, match=r"label map is not AMOS22's \(expected keys 0..15"):
        convert("amos22", tmp_path / "amos22", tmp_path / "raw", progress=False)
    assert not (tmp_path / "raw" / "Dataset502_AMOS22").exists()


def test_kits19_permuted_affine_gives_consistent_lps_geometry(tmp_path):
    rng = np.random.default_rng(3)
    slices, px, n_sl, h, w = 2.5, 0.75, 5, 6, 7
    affine = np.array([[0, 0, -px, 0], [0, -px, 0, 0], [-slices, 0, 0, 0], [0, 0, 0, 1]], float)
    img = rng.integers(-500, 500, (n_sl, h, w)).astype(np.int16)   # (slices, H, W) as in KiTS19
    seg = np.zeros((n_sl, h, w), np.uint8)
    seg[1:4, 1:3, 2:6] = 1
    seg[2, 1, 5] = 2
    case = tmp_path / "kits19" / "data" / "case_00000"
    case.mkdir(parents=True)
    nib.save(nib.Nifti1Image(img, affine), str(case / "imaging.nii.gz"))
    nib.save(nib.Nifti1Image(seg, affine), str(case / "segmentation.nii.gz"))
    (tmp_path / "kits19" / "data" / "case_00210").mkdir()  # test case: imaging only
    nib.save(nib.Nifti1Image(img, affine), str(tmp_path / "kits19" / "data" / "case_00210" / "imaging.nii.gz"))
    assert nib.aff2axcodes(affine) == ("I", "P", "L")

    out = convert("kits19", tmp_path / "kits19", tmp_path / "raw", progress=False, quiet=True)
    dj = json.loads((out / "dataset.json").read_text())
    assert dj["conversion"]["case_ids"] == ["case_00000"] and len(dj["conversion"]["skipped"]) == 1
    o_img, o_seg = out / "imagesTr" / "case_00000_0000.nii.gz", out / "labelsTr" / "case_00000.nii.gz"
    a_img, a_seg = nib.load(str(o_img)), nib.load(str(o_seg))
    assert np.allclose(a_img.affine, a_seg.affine) and a_img.shape == a_seg.shape
    assert nib.aff2axcodes(a_seg.affine) == ("L", "P", "S")
    assert a_seg.header.get_zooms() == pytest.approx((px, px, slices))
    arr, s_img = read(o_seg)                          # SimpleITK: numpy (z, y, x)
    assert arr.shape == (n_sl, h, w)
    assert s_img.GetSpacing()[::-1] == pytest.approx((slices, px, px))
    assert dj["conversion"]["spacing_min"] == pytest.approx([slices, px, px])
    # every voxel keeps its world position and value, for image and label alike
    assert world_values(o_seg) == world_values(case / "segmentation.nii.gz")
    assert world_values(o_img) == world_values(case / "imaging.nii.gz")
    assert dj["conversion"]["voxels_per_label"] == {"0": int((seg == 0).sum()), "1": 23, "2": 1}


def test_brats21_channels_in_order_and_labels_remapped(tmp_path):
    rng = np.random.default_rng(4)
    root = tmp_path / "brats" / "BraTS2021_Training_Data"
    segs = {}
    for cid in ("00000", "00002"):
        name = f"BraTS2021_{cid}"
        for k, ch in enumerate(("flair", "t1", "t1ce", "t2")):
            write_sitk(root / name / f"{name}_{ch}.nii.gz",
                       (rng.integers(0, 50, (4, 5, 6)) + 1000 * (k + 1)).astype(np.int16), spacing=(1, 1, 1))
        segs[cid] = labels(rng, [0, 1, 2, 4], (4, 5, 6))
        write_sitk(root / name / f"{name}_seg.nii.gz", segs[cid], spacing=(1, 1, 1))
    out = convert("brats21", tmp_path / "brats", tmp_path / "raw", progress=False, quiet=True)
    dj = json.loads((out / "dataset.json").read_text())
    assert dj["labels"] == {"background": 0, "edema": 1, "necrosis": 2, "enhancing_tumor": 3}
    assert "regions_class_order" not in dj and dj["numTraining"] == 2
    for cid, seg in segs.items():
        got = read(out / "labelsTr" / f"BraTS2021_{cid}.nii.gz")[0]
        expected = np.select([seg == 2, seg == 1, seg == 4], [1, 2, 3], 0)   # ED 1, NCR 2, ET 3
        assert np.array_equal(got, expected)
        for k in range(4):  # _0000.._0003 = flair, t1, t1ce, t2
            chan = read(out / "imagesTr" / f"BraTS2021_{cid}_{k:04d}.nii.gz")[0]
            assert 1000 * (k + 1) <= chan.min() and chan.max() < 1000 * (k + 1) + 50
