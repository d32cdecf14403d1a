"""Phantoms: determinism, the public layouts they are written in, classes, channels, spacing, and
the properties that make them learnable but not trivial (tiny sizes, a few cases each)."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from harness.datasets import make_phantom, task_spec, validate_raw
from harness.datasets.phantom import render_case, write_phantom_source


def arrays(folder, case, channels=1):
    imgs = [sitk.ReadImage(str(folder / "imagesTr" / f"{case}_{k:04d}.nii.gz")) for k in range(channels)]
    lab = sitk.ReadImage(str(folder / "labelsTr" / f"{case}.nii.gz"))
    return [sitk.GetArrayFromImage(i) for i in imgs], sitk.GetArrayFromImage(lab), lab


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    sizes = {"btcv": 32, "amos22": 32, "kits19": 32, "brats21": 40}
    return {t: make_phantom(t, root, cases=4, size=s, seed=3) for t, s in sizes.items()}


@pytest.mark.parametrize("task", ["btcv", "amos22", "kits19", "brats21"])
def test_phantom_is_a_valid_raw_dataset_with_every_class(phantoms, task):
    spec = task_spec(f"phantom-{task}")
    folder = phantoms[task]
    assert folder.name == spec.folder
    summary = validate_raw(folder)
    assert summary["cases"] == 4
    assert {int(v) for v, n in summary["voxels_per_label"].items() if n} == set(spec.label_values)
    dj = json.loads((folder / "dataset.json").read_text())
    assert dj["phantom"] == {"cases": 4, "size": 32 if task != "brats21" else 40, "seed": 3,
                             "version": dj["phantom"]["version"]}
    assert len(dj["channel_names"]) == spec.num_channels
    assert dj["labels"] == spec.labels and "regions_class_order" not in dj   # plain labels
    assert all(isinstance(v, int) for v in dj["labels"].values())
    labels = [sitk.ReadImage(str(p)) for p in sorted((folder / "labelsTr").iterdir())]
    spacings = [tuple(lab.GetSpacing()[::-1]) for lab in labels]
    size = dj["phantom"]["size"]
    for lab in labels:  # the field of view is at most `size` mm per axis
        assert (np.array(lab.GetSize()) * np.array(lab.GetSpacing()) <= size + max(lab.GetSpacing())).all()
    if task == "brats21":
        assert set(spacings) == {(1.0, 1.0, 1.0)}
    else:  # anisotropic, varying from case to case, thick slices
        assert len(set(spacings)) == 4 and all(s[1] == s[2] for s in spacings)
        assert all(s[0] > s[1] for s in spacings) or task == "kits19"


def test_ct_phantoms_are_in_hounsfield_units_and_need_context(phantoms):
    folder = phantoms["btcv"]
    for case in json.loads((folder / "dataset.json").read_text())["conversion"]["case_ids"]:
        (img,), lab, _ = arrays(folder, case)
        assert img.min() < -900 and img.max() > 300            # air and bone
        mean = {v: img[lab == v].mean() for v in (1, 2, 3, 6)}
        assert abs(mean[2] - mean[3]) < 40                      # both kidneys look alike ...
        x = {v: np.argwhere(lab == v)[:, 2].mean() for v in (2, 3, 6, 1)}
        assert x[2] < x[3] and x[6] < x[1]                      # ... the patient's right is -x (LPS)
        assert abs(mean[6] - mean[1]) < 40                      # liver and spleen too


def test_the_spine_is_bone_around_a_canal_with_discs_not_a_bright_cylinder():
    # After CT clipping, bone and enhanced kidney share the top of the intensity range: the spine
    # must be told apart by its shape (canal, discs), as in real CT.
    (img,), lab, spacing = render_case("kits19", 0, 64, seed=2)
    bone = img > 300
    assert not (bone & (lab > 0)).any()
    with_canal = sum(bool((ndimage.binary_fill_holes(bone[z]) & (img[z] < 60)).any())
                     for z in range(img.shape[0]) if bone[z].any())
    # a thin arch in thick, noisy slices, and discs forming the canal's front wall in theirs
    assert with_canal >= 0.3 * sum(bool(bone[z].any()) for z in range(img.shape[0]))
    profile = [int(bone[z].sum()) for z in range(img.shape[0]) if bone[z].any()]
    assert min(profile) < 0.9 * max(profile)                # discs interrupt the vertebral bodies


def test_kits_tumour_touches_a_kidney_and_brats_regions_are_nested(phantoms):
    for case in json.loads((phantoms["kits19"] / "dataset.json").read_text())["conversion"]["case_ids"]:
        _, lab, _ = arrays(phantoms["kits19"], case)
        assert (ndimage.binary_dilation(lab == 2) & (lab == 1)).any()
    six = ndimage.generate_binary_structure(3, 1)
    folder = phantoms["brats21"]
    for case in json.loads((folder / "dataset.json").read_text())["conversion"]["case_ids"]:
        chans, lab, _ = arrays(folder, case, 4)
        brain = chans[0] > 0
        assert (lab[~brain] == 0).all()
        core = np.isin(lab, (2, 3))
        # oedema (1) surrounds the core inside the brain; the enhancing rim (3) surrounds necrosis (2)
        assert not (ndimage.binary_dilation(core, six) & (lab == 0) & brain).any()
        if (lab == 3).any():
            assert not (ndimage.binary_dilation(lab == 2, six) & np.isin(lab, (0, 1)) & brain).any()
        et_mean = [c[lab == 3].mean() / c[lab == 1].mean() for c in chans] if (lab == 3).any() else None
        if et_mean:
            assert np.argmax(et_mean) == 2                      # the rim enhances on T1ce


def test_rendering_is_deterministic_and_independent_of_the_case_count(tmp_path):
    a, b = render_case("kits19", 1, 24, seed=5), render_case("kits19", 1, 24, seed=5)
    assert np.array_equal(a[0][0], b[0][0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    c = render_case("kits19", 1, 24, seed=6)
    assert a[1].shape != c[1].shape or not np.array_equal(a[1], c[1])
    two = make_phantom("btcv", tmp_path / "two", cases=2, size=24)
    three = make_phantom("phantom-btcv", tmp_path / "three", cases=3, size=24)
    for case in ("btcv_0001", "btcv_0002"):
        x, y = arrays(two, case), arrays(three, case)
        assert np.array_equal(x[0][0], y[0][0]) and np.array_equal(x[1], y[1])
        assert x[2].GetOrigin() == y[2].GetOrigin() and x[2].GetSpacing() == y[2].GetSpacing()


def test_make_phantom_is_a_noop_when_complete_and_rebuilds_on_new_parameters(tmp_path):
    out = make_phantom("kits19", tmp_path, cases=3, size=24)
    label = out / "labelsTr" / "case_00000.nii.gz"
    stamp = label.stat().st_mtime_ns
    assert make_phantom("kits19", tmp_path, cases=3, size=24) == out
    assert label.stat().st_mtime_ns == stamp
    make_phantom("kits19", tmp_path, cases=3, size=24, seed=1)
    assert json.loads((out / "dataset.json").read_text())["phantom"]["seed"] == 1
    left = sorted(p.name for p in tmp_path.iterdir())                   # no temporary left behind
    assert left == [f".{out.name}.lock", out.name]


def test_phantoms_are_written_in_the_public_layouts(tmp_path):
    write_phantom_source("kits19", tmp_path / "kits", cases=2, size=24)
    img = nib.load(str(tmp_path / "kits" / "data" / "case_00001" / "imaging.nii.gz"))
    seg = nib.load(str(tmp_path / "kits" / "data" / "case_00001" / "segmentation.nii.gz"))
    assert nib.aff2axcodes(img.affine) == nib.aff2axcodes(seg.affine) == ("I", "P", "L")
    zooms = img.header.get_zooms()
    assert zooms[1] == zooms[2] and img.shape == seg.shape      # (slices, H, W), zooms (slice, px, px)
    _, lab, _ = render_case("kits19", 1, 24)
    assert img.shape[0] == lab.shape[0]
    assert json.loads((tmp_path / "kits" / "data" / "kits.json").read_text())[1] == {"case_id": "case_00001"}

    write_phantom_source("amos22", tmp_path / "amos", cases=3, size=24)
    names = sorted(p.name for p in (tmp_path / "amos" / "imagesTr").iterdir())
    assert names == ["amos_0001.nii.gz", "amos_0002.nii.gz", "amos_0003.nii.gz", "amos_0540.nii.gz"]
    assert nib.aff2axcodes(nib.load(str(tmp_path / "amos" / "imagesTr" / "amos_0003.nii.gz")).affine) == ("R", "A", "S")

    ids = write_phantom_source("brats21", tmp_path / "brats", cases=4, size=24)
    assert ids == ["00000", "00001", "00003", "00004"]
    assert sorted(p.name for p in (tmp_path / "brats" / "BraTS2021_00003").iterdir()) == [
        f"BraTS2021_00003_{c}.nii.gz" for c in ("flair", "seg", "t1", "t1ce", "t2")]
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "brats" / "BraTS2021_00000" / "BraTS2021_00000_seg.nii.gz")))
    assert set(np.unique(seg)) == {0, 1, 2, 4}                   # public values, remapped on conversion

    write_phantom_source("btcv", tmp_path / "btcv", cases=1, size=24)
    assert (tmp_path / "btcv" / "RawData" / "Training" / "label" / "label0001.nii.gz").is_file()


@pytest.mark.parametrize("kwargs,match", [({"cases": 0}, "cases"), ({"size": 8}, "size"),
                                          ({"seed": -1}, "seed"), ({"size": 24.5}, "size")])
def test_bad_phantom_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_phantom("btcv", tmp_path, **kwargs)
    with pytest.raises(ValueError, match="unknown dataset"):
        make_phantom("lits", tmp_path)


def test_concurrent_requests_for_one_phantom_build_it_once(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: make_phantom("btcv", tmp_path, cases=2, size=20), range(2)))
    assert outs[0] == outs[1] and validate_raw(outs[0])["cases"] == 2
