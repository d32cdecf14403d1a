"""Per-case metrics on hand-computable shapes, the empty-mask rule, regions and the reader."""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness.metrics import (METRICS, dice, hd95, paper_classes, read_nifti, regions_for,
                             surface_dice, task_of, worst_distance, write_nifti)
from harness.metrics import measures, surface


def cube(shape=(24, 24, 24), lo=(2, 2, 2), size=(20, 20, 20)):
    m = np.zeros(shape, bool)
    m[tuple(slice(a, a + s) for a, s in zip(lo, size))] = True
    return m


def sphere(shape, centre, radius, spacing=(1.0, 1.0, 1.0)):
    grids = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(shape, centre, spacing)],
                        indexing="ij")
    return sum(g ** 2 for g in grids) <= radius ** 2


# --- DSC -------------------------------------------------------------------------------------
def test_dice_of_cubes_shifted_by_one_voxel():
    a = cube((8, 8, 8), (0, 0, 0), (4, 4, 4))
    b = cube((8, 8, 8), (1, 0, 0), (4, 4, 4))
    assert dice(a, b) == pytest.approx(2 * 48 / 128)     # overlap 3x4x4 of two 64-voxel cubes
    assert dice(a, a) == 1.0


def test_dice_requires_boolean_same_shape():
    with pytest.raises(ValueError, match="boolean"):
        dice(np.ones((2, 2, 2), np.uint8), np.ones((2, 2, 2), bool))
    with pytest.raises(ValueError, match="shapes differ"):
        dice(np.ones((2, 2, 2), bool), np.ones((2, 2, 3), bool))


# --- surface Dice and HD95 on known shapes ----------------------------------------------------
@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_identical_masks_are_perfect(engine):
    a = sphere((20, 20, 20), (9.5, 9.5, 9.5), 6)
    assert surface_dice(a, a, (1, 1, 1), engine=engine) == 1.0
    assert hd95(a, a, (0.5, 1, 2), engine=engine) == 0.0


def test_cube_surface_area_matches_surface_distance_definition():
    # A 5^3 voxel cube has 131.7 mm^2 of surfels in DeepMind's definition (corners are
    # bevelled), not the 150 mm^2 of its voxel faces; a 2 mm spacing on axis 0 scales the faces
    # normal to axes 1 and 2 by 2.
    a = cube((7, 7, 7), (1, 1, 1), (5, 5, 5))
    d = surface.fast_distances(a, a, (1.0, 1.0, 1.0))
    assert d["surfel_areas_gt"].sum() == pytest.approx(131.7, abs=0.05)
    flat = surface.fast_distances(cube(size=(20, 20, 20)), cube(size=(20, 20, 20)), (1, 1, 1))
    stretched = surface.fast_distances(cube(size=(20, 20, 20)), cube(size=(20, 20, 20)), (2, 1, 1))
    # Large cube: the area is close to 6 * 20^2 voxel faces; stretching axis 0 doubles four faces.
    assert flat["surfel_areas_gt"].sum() == pytest.approx(6 * 400, rel=0.03)
    assert stretched["surfel_areas_gt"].sum() == pytest.approx(2 * 400 + 4 * 800, rel=0.03)


@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_spacing_follows_array_axis_order(engine):
    # A 20^3 cube shifted by one voxel along axis 0 (2.5 mm there) or along axis 2 (0.5 mm):
    # the faces normal to the shift move by that axis's spacing, everything else stays.
    spacing = (2.5, 1.0, 0.5)
    a = cube()
    along0 = cube(lo=(3, 2, 2))
    along2 = cube(lo=(2, 2, 3))
    assert hd95(a, along0, spacing, engine=engine) == pytest.approx(2.5)
    assert hd95(a, along2, spacing, engine=engine) == pytest.approx(0.5)
    assert surface_dice(a, along2, spacing, 1.0, engine=engine) == 1.0   # 0.5 mm <= 1 mm
    moved = surface_dice(a, along0, spacing, 1.0, engine=engine)          # 2.5 mm > 1 mm
    assert 0.5 < moved < 0.95
    assert surface_dice(a, along0, spacing, 2.5, engine=engine) == 1.0   # tolerance is inclusive


def test_concentric_spheres():
    # Radii 10 and 13 mm on a 1 mm grid: every surface point is about 3 mm from the other surface.
    shape, c = (34, 34, 34), (16.5, 16.5, 16.5)
    inner, outer = sphere(shape, c, 10.0), sphere(shape, c, 13.0)
    assert hd95(inner, outer, (1, 1, 1)) == pytest.approx(3.0, abs=0.6)
    assert surface_dice(inner, outer, (1, 1, 1), 1.0) == 0.0
    assert surface_dice(inner, outer, (1, 1, 1), 5.0) == 1.0
    # Surfel areas of a voxelised sphere exceed the smooth sphere of equal volume by ~8% (the
    # staircase is not smoothed away): between 1.0x and 1.1x.
    area = surface.fast_distances(inner, inner, (1, 1, 1))["surfel_areas_gt"].sum()
    r_eq = (3 * inner.sum() / (4 * math.pi)) ** (1 / 3)
    assert 1.0 < area / (4 * math.pi * r_eq ** 2) < 1.1
    # The same physical spheres sampled at 0.5 x 1 x 2 mm keep about the same distances.
    sp = (0.5, 1.0, 2.0)
    shape2 = (68, 34, 17)
    c2 = tuple((n - 1) / 2 for n in shape2)
    i2, o2 = sphere(shape2, c2, 10.0, sp), sphere(shape2, c2, 13.0, sp)
    assert hd95(i2, o2, sp) == pytest.approx(3.0, abs=1.1)


def test_surface_arguments_are_validated():
    a = cube((8, 8, 8), (1, 1, 1), (3, 3, 3))
    with pytest.raises(ValueError, match="spacing"):
        surface_dice(a, a, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hd95(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        surface_dice(a, a, (1, 1, 1), tolerance=-1)
    with pytest.raises(ValueError, match="engine"):
        surface_dice(a, a, (1, 1, 1), engine="medpy")


# --- the empty-mask rule --------------------------------------------------------------------
@pytest.fixture
def library_never_called(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the surface engine was reached with an empty mask")
    monkeypatch.setattr(measures, "surface_distances", boom)


def test_both_empty_gives_nan(library_never_called):
    e = np.zeros((6, 7, 8), bool)
    assert math.isnan(dice(e, e))
    assert math.isnan(surface_dice(e, e, (1, 1, 1)))
    assert math.isnan(hd95(e, e, (1, 1, 1)))


@pytest.mark.parametrize("which", ["ref", "pred"])
def test_one_empty_gives_zero_and_the_worst_distance(which, library_never_called):
    e = np.zeros((240, 240, 155), bool)
    full = e.copy()
    full[100:110, 100:110, 70:80] = True
    ref, pred = (e, full) if which == "ref" else (full, e)
    assert dice(ref, pred) == 0.0
    assert surface_dice(ref, pred, (1, 1, 1)) == 0.0
    # BraTS's own worst value: the diagonal of a 240x240x155 volume at 1 mm.
    assert hd95(ref, pred, (1, 1, 1)) == pytest.approx(373.12866, abs=1e-4)
    assert hd95(ref, pred, (1, 1, 1), worst=999.0) == 999.0


def test_worst_distance_uses_spacing_in_array_order():
    assert worst_distance((10, 20, 30), (2.0, 1.0, 0.5)) == pytest.approx(math.sqrt(20**2 + 20**2 + 15**2))


def test_surface_engine_refuses_empty_masks():
    e = np.zeros((5, 5, 5), bool)
    f = cube((5, 5, 5), (1, 1, 1), (2, 2, 2))
    for engine in ("fast", "reference"):
        with pytest.raises(ValueError, match="non-empty"):
            surface.surface_distances(f, e, (1, 1, 1), engine)


def test_metric_metadata_states_direction_and_empty_rule():
    assert METRICS["dsc"].higher_is_better and METRICS["dsc"].one_empty == "zero"
    assert not METRICS["hd95"].higher_is_better and METRICS["hd95"].one_empty == "worst"
    assert {"nsd_phys", "nsd_mednext_code"} <= set(METRICS)


# --- regions ----------------------------------------------------------------------------------
def test_region_counts_and_phantoms():
    assert len(regions_for("btcv")) == 13 and len(regions_for("amos22")) == 15
    assert regions_for("phantom-amos22") == regions_for("amos22")
    assert task_of("phantom-kits19") == "kits19"
    with pytest.raises(ValueError, match="unknown dataset"):
        task_of("lits")
    assert [r.labels for r in regions_for("btcv")] == [(i,) for i in range(1, 14)]
    assert regions_for("btcv")[5].name == "liver" and regions_for("amos22")[14].name == "prostate_uterus"


def test_brats_regions_from_converted_labels():
    seg = np.array([0, 1, 2, 3])            # background, oedema, necrosis, enhancing
    masks = {r.name: r.mask(seg).tolist() for r in regions_for("brats21")}
    assert list(masks) == ["WT", "TC", "ET"]
    assert masks["WT"] == [False, True, True, True]
    assert masks["TC"] == [False, False, True, True]
    assert masks["ET"] == [False, False, False, True]


def test_kits_regions_medneXt_code_and_official_composite():
    seg = np.array([0, 1, 2])
    masks = {r.name: r.mask(seg).tolist() for r in regions_for("kits19")}
    assert masks == {"kidney": [False, True, False], "tumour": [False, False, True],
                     "kidney+tumour": [False, True, True]}
    assert paper_classes("kits19") == ("kidney", "tumour")
    assert paper_classes("brats21") == ("WT", "TC", "ET")


# --- the reader -------------------------------------------------------------------------------
def test_reader_spacing_follows_array_axes(tmp_path):
    import nibabel as nib

    # nibabel: array axes (x, y, z) with zooms in that order; SimpleITK returns (z, y, x).
    data = np.arange(6 * 5 * 4, dtype=np.uint8).reshape(6, 5, 4)
    img = nib.Nifti1Image(data, np.diag([0.7, 0.8, 2.0, 1.0]))
    nib.save(img, tmp_path / "a.nii.gz")
    vol = read_nifti(tmp_path / "a.nii.gz", "a")
    assert vol.array.shape == (4, 5, 6)
    assert vol.spacing == pytest.approx((2.0, 0.8, 0.7))
    np.testing.assert_array_equal(vol.array, data.transpose(2, 1, 0))
    write_nifti(tmp_path / "b.nii.gz", vol.array, vol.spacing)
    again = read_nifti(tmp_path / "b.nii.gz")
    assert again.spacing == pytest.approx(vol.spacing)
    np.testing.assert_array_equal(again.array, vol.array)


def test_reader_errors_name_file_and_case(tmp_path):
    with pytest.raises(FileNotFoundError, match="case 'c7'.*missing.nii.gz"):
        read_nifti(tmp_path / "missing.nii.gz", "c7", "prediction")
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    with pytest.raises(ValueError, match="case 'c8'.*bad.nii.gz.*cannot be read"):
        read_nifti(bad, "c8")
