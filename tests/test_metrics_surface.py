"""The fast surface path equals the reference engine (``surface-distance``) to 1e-9."""
from __future__ import annotations

import numpy as np
import pytest

from harness.metrics import surface

KEYS_D = ("distances_gt_to_pred", "distances_pred_to_gt")


def _compare(a: np.ndarray, b: np.ndarray, spacing) -> None:
    ref = surface.reference_distances(a, b, spacing)
    fast = surface.fast_distances(a, b, spacing)
    for k in ref:
        assert ref[k].shape == fast[k].shape, k
    for k in KEYS_D:
        np.testing.assert_allclose(fast[k], ref[k], rtol=0, atol=1e-9)
    # Surfels at (nominally) tied distances may be listed in another order: compare the total
    # surfel area at each distance, which is all that any metric reads.
    for dk, ak in (("distances_gt_to_pred", "surfel_areas_gt"),
                   ("distances_pred_to_gt", "surfel_areas_pred")):
        np.testing.assert_allclose(np.sort(fast[ak]), np.sort(ref[ak]), rtol=0, atol=1e-9)
        for d in (ref, fast):
            d["_levels"], inv = np.unique(np.round(d[dk], 9), return_inverse=True)
            d["_area_at"] = np.bincount(inv, weights=d[ak])
        np.testing.assert_array_equal(fast["_levels"], ref["_levels"])
        np.testing.assert_allclose(fast["_area_at"], ref["_area_at"], rtol=1e-9, atol=1e-9)
    for tol in (0.5, 1.0, 2.0):
        assert surface.surface_dice_from(fast, tol) == pytest.approx(
            surface.surface_dice_from(ref, tol), abs=1e-9)
    for pct in (50, 95, 100):
        assert surface.robust_hausdorff_from(fast, pct) == pytest.approx(
            surface.robust_hausdorff_from(ref, pct), abs=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_random_masks_anisotropic(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(3, 18, 3))
    a = rng.random(shape) < rng.uniform(0.05, 0.7)
    b = rng.random(shape) < rng.uniform(0.05, 0.7)
    a.flat[0] = b.flat[-1] = True
    spacing = (1.0, 1.0, 1.0) if seed % 4 == 0 else tuple(rng.uniform(0.3, 5.0, 3))
    _compare(a, b, spacing)


def test_smooth_objects_touching_the_border():
    # Two overlapping blobs that fill faces, edges and corners of the array.
    z, y, x = np.meshgrid(*[np.arange(n) for n in (14, 22, 18)], indexing="ij")
    a = ((z - 3) ** 2 / 40 + (y - 4) ** 2 / 90 + (x - 2) ** 2 / 60) <= 1.0
    b = ((z - 5) ** 2 / 50 + (y - 6) ** 2 / 70 + (x - 4) ** 2 / 80) <= 1.0
    a[:, :, -1] = True
    b[-1, :, :] |= y[-1] > 10
    for spacing in ((2.5, 0.8, 0.8), (0.7, 1.3, 3.0), (1.0, 1.0, 1.0)):
        _compare(a, b, spacing)
    full = np.ones((6, 7, 5), bool)
    _compare(full, full, (1.5, 0.5, 1.0))


def test_far_apart_objects_and_single_voxels():
    a = np.zeros((30, 8, 9), bool)
    b = a.copy()
    a[1, 2, 3] = True
    b[27, 5, 6] = True
    _compare(a, b, (3.0, 0.6, 0.9))


def test_two_dimensional_masks():
    rng = np.random.default_rng(7)
    a = rng.random((25, 19)) < 0.3
    b = rng.random((25, 19)) < 0.5
    _compare(a, b, (0.8, 1.7))


def test_neighbour_codes_match_the_library_correlation():
    from scipy import ndimage
    from surface_distance import lookup_tables

    rng = np.random.default_rng(3)
    m = rng.random((5, 6, 7)) < 0.5
    padded = np.zeros(tuple(n + 1 for n in m.shape), np.uint8)
    padded[:-1, :-1, :-1] = m
    lib = ndimage.correlate(padded, lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL, mode="constant", cval=0)
    np.testing.assert_array_equal(surface._codes(m), lib)
