"""Synthetic BraTS-like cases: four co-registered MRI contrasts of a skull-stripped brain with a glioma.

The brain (white matter, cortical and deep grey matter, ventricles and outer CSF) is built from
perturbed ellipsoids, 1 mm isotropic like the real release, background exactly 0. The tumour is
nested as in BraTS: necrotic core (NCR, public label 1) inside the enhancing rim (ET, label 4)
inside the oedema (ED, label 2); the nesting is exact because the core and rim share one
direction-only perturbation at two scales. Some cases have a non-enhancing tumour (no ET), as in
lower-grade gliomas, so empty enhancing-tumour references occur.

Relative intensities per contrast (FLAIR, T1, T1ce, T2) follow the usual appearance: oedema bright
on FLAIR and T2, the rim bright on T1ce only, necrosis dark on T1/T1ce and bright on T2, CSF
suppressed on FLAIR; on any single contrast some tumour parts match normal tissue (the rim
matches grey matter on T1, oedema matches CSF on T2), so all four contrasts and the context are
needed. Per contrast: a gain, a multiplicative bias field, a slight blur (partial volume) and
Rician noise inside the brain.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from harness.datasets.phantom_shapes import Grid, Wobble, blob, blob_ratio, paint, rotation, smooth_field, tube

BG, CSF, GM, WM, ED, ET, NCR, WMH, VESSEL = range(9)
# rows: tissue; columns: FLAIR, T1, T1ce, T2 (white matter on T1 = 1)
CONTRAST = np.array([
    [0.00, 0.00, 0.00, 0.00],   # background
    [0.15, 0.25, 0.25, 1.30],   # CSF
    [0.75, 0.70, 0.72, 0.70],   # grey matter
    [0.60, 1.00, 1.00, 0.45],   # white matter
    [1.25, 0.60, 0.62, 1.05],   # oedema
    [1.00, 0.68, 1.45, 0.80],   # enhancing tumour
    [0.80, 0.35, 0.35, 1.20],   # necrosis
    [1.10, 0.80, 0.80, 0.95],   # white-matter hyperintensity (not tumour: FLAIR distractor)
    [0.55, 0.70, 1.40, 0.60],   # vessel / choroid plexus (not tumour: enhances on T1ce)
], np.float32)
TEXTURE = np.array([0, 0.02, 0.04, 0.03, 0.06, 0.08, 0.06, 0.04, 0.04], np.float32)
PUBLIC_LABEL = np.array([0, 0, 0, 0, 2, 4, 1, 0, 0], np.uint8)  # BraTS download values


def render(rng: np.random.Generator, size: int, index: int):
    """One case: four int16 channels (FLAIR, T1, T1ce, T2), the uint8 public label, spacing (z, y, x)
    and the label values that must be present."""
    spacing = (1.0, 1.0, 1.0)
    shape = (int(round(size * rng.uniform(0.72, 0.8))), int(size), int(round(size * rng.uniform(0.82, 0.9))))
    grid = Grid(shape, spacing)
    half = grid.extent
    brain = half * np.array([0.86, 0.88, 0.86]) * rng.uniform(0.9, 1.0, 3)
    tis = np.zeros(shape, np.uint8)
    bw = Wobble.random(rng, 0.05)
    region, ratio = blob_ratio(grid, (0, 0, 0), brain, wobble=bw)
    paint(tis, region, ratio < 1, CSF)
    paint(tis, region, ratio < 0.95, GM)
    paint(tis, *blob(grid, (0, 0, 0), brain * 0.83, wobble=Wobble.random(rng, 0.12, terms=6)), WM,
          under=[GM])
    for side in (-1, 1):
        c = np.array([0.08, -0.05, 0.10 * side]) * brain + rng.normal(0, 0.02, 3) * brain
        paint(tis, *blob(grid, c, brain * np.array([0.05, 0.18, 0.05]) * 2, rotation(rng.normal(0, 0.1, 3)),
                         Wobble.random(rng, 0.1)), GM)          # deep grey matter
        c = np.array([0.15, -0.05, 0.09 * side]) * brain + rng.normal(0, 0.02, 3) * brain
        paint(tis, *blob(grid, c, brain * np.array([0.14, 0.38, 0.08]),
                         rotation(rng.normal(0, 0.1, 3)), Wobble.random(rng, 0.1)), CSF)  # ventricle

    for _ in range(int(rng.integers(2, 5))):  # small FLAIR-bright lesions that are not tumour
        c = rng.uniform(-0.5, 0.5, 3) * brain
        paint(tis, *blob(grid, c, np.maximum(brain * rng.uniform(0.03, 0.07, 3), 1.2),
                         wobble=Wobble.random(rng, 0.2)), WMH, under=[WM])
    for side in (-1, 1):  # enhancing vessels along the ventricles (choroid plexus)
        pts = [np.array([0.1, y, 0.1 * side]) * brain + rng.normal(0, 0.02, 3) * brain for y in (-0.3, 0.0, 0.3)]
        paint(tis, *tube(grid, pts, max(0.025 * brain.mean(), 0.8)), VESSEL)
    brain_mask = tis > 0
    side = rng.choice([-1, 1])
    centre = np.array([rng.uniform(-0.2, 0.3), rng.uniform(-0.3, 0.3), side * rng.uniform(0.2, 0.4)]) * brain
    r_ed = brain.mean() * rng.uniform(0.35, 0.55) * rng.uniform(0.85, 1.15, 3)
    ed_w, core_w = Wobble.random(rng, 0.22), Wobble.random(rng, 0.15)
    r_tc = np.maximum(r_ed * rng.uniform(0.45, 0.65), 2.5)
    core_c = centre + rng.normal(0, 0.1, 3) * r_ed
    rot = rotation(rng.normal(0, 0.5, 3))
    tumour = np.zeros(shape, np.uint8)
    paint(tumour, *blob(grid, centre, r_ed, rot, ed_w), ED)
    # Same shape at three scales: nested exactly. The margins keep each shell at least ~1.5 voxels
    # thick (the perturbation can shrink a radius to 1 - amplitude), so the nesting survives voxels.
    thin = 1.6 / (r_tc.min() * (1 - core_w.max_amplitude))
    outer, inner = max(1.3, 1 + thin), max(0.15, min(rng.uniform(0.4, 0.7), 1 - thin))
    region, ratio = blob_ratio(grid, core_c, r_tc, rot, core_w, reach=outer)
    paint(tumour, region, ratio < outer, ED)  # oedema surrounds the core
    enhancing = index == 0 or rng.random() > 0.08
    paint(tumour, region, ratio < 1.0, ET if enhancing else NCR)
    paint(tumour, region, ratio < inner, NCR)
    tumour[~brain_mask] = 0
    tis = np.where(tumour > 0, tumour, tis)

    label = PUBLIC_LABEL[tis]
    channels = []
    tex = smooth_field(shape, spacing, rng, wavelength=(5.0, 15.0), terms=5)
    for ch in range(4):
        contrast = CONTRAST[:, ch] * rng.uniform(0.95, 1.05, len(CONTRAST)).astype(np.float32)
        img = contrast[tis] + TEXTURE[tis] * tex
        img = ndimage.gaussian_filter(img, 0.6, mode="constant")
        img *= np.exp(0.15 * smooth_field(shape, spacing, rng, wavelength=(80.0, 250.0), terms=3))
        sigma = rng.uniform(0.025, 0.05)
        noisy = np.sqrt((img + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)
        img = np.where(brain_mask, noisy, 0) * rng.uniform(400, 1200)
        channels.append(np.clip(np.round(img), 0, 32767).astype(np.int16))
    return channels, label, spacing, {0, 1, 2, 4} if enhancing else {0, 1, 2}
