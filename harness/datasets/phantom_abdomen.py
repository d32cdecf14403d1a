"""Synthetic abdominal CT cases (BTCV-, AMOS22- and KiTS19-shaped), in Hounsfield-like units.

A body (fat, muscle wall, visceral fat), spine (vertebral bodies and discs, the posterior arch
around the spinal canal), paraspinal and psoas muscles and bowel loops with gas are unlabelled
context; the organs of the task are perturbed ellipsoids and tubes placed in a plausible layout
(LPS: the patient's right is -x, posterior +y, superior +z) with per-case jitter of position, size,
orientation and shape. Several organs share intensity ranges (liver / spleen / muscle; both
kidneys; aorta / IVC / portal vein; pancreas / adrenals / duodenum / bowel), so a model must use
position and shape. Contrast enhancement varies per case. Thick slices are sampled at several z
positions and averaged (partial volume), then an in-plane blur, an additive low-frequency shading
and Gaussian noise are applied.

KiTS19: both kidneys are label 1 (cortex and medulla), a tumour (label 2, sometimes with a
necrotic centre) sits on the surface of one kidney, overlapping it and bulging out; some cases
have a cyst, labelled kidney as in KiTS19. AMOS22: the field of view reaches the pelvis (bladder,
prostate/uterus) and the gallbladder is absent in some cases (as after cholecystectomy).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from harness.datasets.phantom_shapes import (Grid, Wobble, blob, blob_ratio, paint, rotation, smooth_field,
                                             tube)
from harness.datasets.spec import ABDOMEN_13, AMOS_15

# name: (HU, texture amplitude, enhanced by contrast)
TISSUES = {
    "air": (-1000, 0, False), "fat": (-100, 10, False), "muscle": (50, 8, False),
    "bone": (450, 60, False), "bowel": (30, 15, False), "gas": (-800, 40, False),
    "liver": (62, 8, True), "spleen": (55, 6, True), "kidney": (165, 10, True),
    "medulla": (110, 8, True), "gallbladder": (12, 4, False), "esophagus": (40, 6, False),
    "stomach": (30, 12, False), "aorta": (190, 6, True), "ivc": (140, 6, True),
    "portal": (165, 6, True), "pancreas": (45, 10, False), "adrenal": (35, 5, False),
    "duodenum": (35, 12, False), "bladder": (8, 3, False), "prostate": (42, 6, False),
    "tumor": (85, 22, False), "necrosis": (25, 10, False), "cyst": (10, 3, False),
    "disc": (90, 8, False), "csf": (15, 4, False),
}
TISSUE_IDS = {name: i for i, name in enumerate(TISSUES)}

# Organs in paint order (later ones overwrite). Positions (u, v, w): u * body half-width along x
# (+ = patient's left), v * body half-depth along y (+ = posterior), w * half-height along z.
# blob: centre, radii (u, v, w units); tube: points, radius (u units).
ORGANS = (
    ("liver", "blob", (-0.42, -0.02, 0.50), (0.42, 0.55, 0.40), "liver"),
    ("spleen", "blob", (0.56, 0.42, 0.50), (0.15, 0.22, 0.22), "spleen"),
    ("stomach", "blob", (0.33, -0.22, 0.44), (0.24, 0.26, 0.24), "stomach"),
    ("right_kidney", "blob", (-0.38, 0.50, -0.08), (0.12, 0.15, 0.26), "kidney"),
    ("left_kidney", "blob", (0.38, 0.50, 0.04), (0.12, 0.15, 0.26), "kidney"),
    ("pancreas", "tube", ((-0.18, 0.02, 0.10), (0.05, 0.14, 0.16), (0.36, 0.22, 0.27)), 0.07, "pancreas"),
    ("duodenum", "tube", ((-0.12, -0.08, 0.22), (-0.32, -0.02, 0.14), (-0.33, 0.04, -0.06),
                          (-0.15, 0.10, -0.16), (0.06, 0.12, -0.14)), 0.055, "duodenum"),
    ("gallbladder", "blob", (-0.30, -0.38, 0.22), (0.08, 0.10, 0.14), "gallbladder"),
    ("portal_and_splenic_vein", "tube", ((-0.30, 0.04, 0.40), (-0.10, 0.12, 0.26), (0.20, 0.22, 0.29),
                                         (0.48, 0.32, 0.42)), 0.035, "portal"),
    ("inferior_vena_cava", "tube", ((-0.14, 0.30, 1.10), (-0.14, 0.33, 0.0), (-0.10, 0.38, -1.10)), 0.065, "ivc"),
    ("aorta", "tube", ((0.06, 0.42, 1.10), (0.05, 0.40, 0.0), (0.03, 0.38, -1.10)), 0.06, "aorta"),
    ("esophagus", "tube", ((0.04, 0.42, 1.10), (0.08, 0.30, 0.70), (0.16, 0.06, 0.52)), 0.05, "esophagus"),
    ("right_adrenal_gland", "blob", (-0.24, 0.44, 0.30), (0.05, 0.05, 0.08), "adrenal"),
    ("left_adrenal_gland", "blob", (0.25, 0.44, 0.32), (0.05, 0.05, 0.08), "adrenal"),
    ("bladder", "blob", (0.0, -0.35, -0.80), (0.20, 0.22, 0.17), "bladder"),
    ("prostate_uterus", "blob", (0.0, -0.02, -0.90), (0.10, 0.11, 0.10), "prostate"),
)
PELVIS = {"bladder", "prostate_uterus"}
# Tissue-map values of the organ parts (values < 32 are the unlabelled tissues above).
SLOTS = {name: 32 + i for i, name in enumerate(
    [o[0] for o in ORGANS] + ["stomach_gas", "right_kidney_medulla", "left_kidney_medulla",
                               "tumor", "necrosis", "cyst"])}

# Per task: (in-plane spacing range, slice spacing range, labelled organ -> label value).

ALIASES = {"postcava": "inferior_vena_cava"}
TASKS = {
    "btcv": ((0.7, 1.0), (1.5, 3.0), {n: i for i, n in enumerate(ABDOMEN_13, 1)}),
    "amos22": ((0.65, 0.95), (1.25, 2.5), {ALIASES.get(n, n): i for i, n in enumerate(AMOS_15, 1)}),
    "kits19": ((0.6, 1.0), (1.0, 4.0), {"right_kidney": 1, "left_kidney": 1}),
}


def _organs_for(task: str, rng: np.random.Generator, index: int) -> list:
    labelled = TASKS[task][2]
    out = []
    for name, kind, pos, size, tissue in ORGANS:
        if name in PELVIS and task != "amos22":
            continue
        if name == "duodenum" and task != "amos22":
            continue  # BTCV/KiTS: left to the bowel loops (unlabelled)
        if task == "amos22" and name == "gallbladder" and index > 0 and rng.random() < 0.15:
            continue  # resected
        if task == "amos22" and name not in PELVIS:  # abdomen squeezed upward, pelvis below
            pos = tuple((p[0], p[1], 0.30 + 0.65 * p[2]) for p in pos) if kind == "tube" else \
                (pos[0], pos[1], 0.30 + 0.65 * pos[2])
            size = size if kind == "tube" else (size[0], size[1], 0.65 * size[2])
        out.append((name, kind, pos, size, tissue, labelled.get(name, 0)))
    return out


def render(task: str, rng: np.random.Generator, size: int, index: int):
    """One case in LPS array order (z, y, x).

    Returns (int16 HU image, uint8 label, spacing (z, y, x), the label values that must be present).
    """
    inplane, slices, _ = TASKS[task]
    px = rng.uniform(*inplane)
    sz = float(np.exp(rng.uniform(*np.log(slices))))  # log-uniform: thin and thick slices both occur
    fov = np.array([size * rng.uniform(0.85, 1.0), size * rng.uniform(0.78, 0.9), size * rng.uniform(0.92, 1.0)])
    spacing = (sz, px, px)
    shape = tuple(max(8, int(round(f / s))) for f, s in zip(fov, spacing))
    sub = int(np.clip(round(sz / px), 1, 3)) | 1  # odd: the label is read at the middle sample
    grid = Grid(shape, spacing, sub)
    half = grid.extent
    body = np.array([half[0] * 0.95, half[1] * rng.uniform(0.80, 0.92), half[2] * rng.uniform(0.84, 0.95)])
    shift = rng.normal(0, 0.03, 3)

    def mm(uvw):
        u, v, w = np.asarray(uvw, float) + shift
        return np.array([w * body[0], v * body[1], u * body[2]])

    def mm_radii(ruvw, scale=1.0):
        ru, rv, rw = ruvw
        r = np.array([rw * body[0], rv * body[1], ru * body[2]]) * scale
        return np.maximum(r, np.array(spacing) * (0.85, 1.2, 1.2))

    tis = np.zeros(grid.fine_shape, np.uint8)
    T = TISSUE_IDS
    body_w = Wobble.random(rng, 0.05)
    long = (body[0] * 3, body[1], body[2])
    region, ratio = blob_ratio(grid, (0, 0, 0), long, wobble=body_w)
    for scale, tissue in ((1.0, "fat"), (0.93, "muscle"), (0.86, "fat")):
        paint(tis, region, ratio < scale, T[tissue])
    for side in (-1, 1):
        paint(tis, *blob(grid, mm((0.22 * side, 0.80, 0)), (body[0] * 3, 0.13 * body[1], 0.15 * body[2])),
              T["muscle"])
        pts = [mm((0.12 * side, 0.55, 0.1)), mm((0.28 * side, 0.42, -1.1))]
        paint(tis, *tube(grid, pts, [max(0.06 * body[2], 1.2 * px), max(0.10 * body[2], 1.2 * px)]), T["muscle"])
    _spine(grid, tis, mm, max(0.14 * body[2], 1.5 * px), px, rng)
    for _ in range(int(rng.integers(10, 16))):  # bowel loops fill the free space
        c = mm((rng.uniform(-0.6, 0.6), rng.uniform(-0.7, 0.2), rng.uniform(-1.0, 0.4)))
        r = mm_radii(rng.uniform(0.08, 0.16, 3))
        w = Wobble.random(rng, 0.15)
        paint(tis, *blob(grid, c, r, rotation(rng.normal(0, 0.3, 3)), w), T["bowel"])
        if rng.random() < 0.7:
            paint(tis, *blob(grid, c + rng.normal(0, 0.3, 3) * r, r * 0.45, wobble=w), T["gas"],
                  under=[T["bowel"]])

    label_of = np.zeros(256, np.uint8)
    placed = {}
    organs = _organs_for(task, rng, index)
    expected = {0} | {lab for *_, lab in organs if lab} | ({2} if task == "kits19" else set())
    for name, kind, pos, size_, tissue, lab in organs:
        if kind == "blob":
            c = mm(pos) + rng.normal(0, 0.03, 3) * body
            r = mm_radii(size_, rng.uniform(0.85, 1.15, 3))
            rot = rotation(rng.normal(0, 0.12, 3))
            w = Wobble.random(rng, 0.12)
            region, mask = blob(grid, c, r, rot, w)
            placed[name] = (c, r, rot, w)
        else:
            pts = [mm(p) + rng.normal(0, 0.02, 3) * body for p in pos]
            rad = max(size_ * body[2] * rng.uniform(0.85, 1.15), 0.9 * px, 0.6 * sz)
            region, mask = tube(grid, pts, rad)
        slot = SLOTS[name]  # each organ part has its own value, so labels stay per organ
        label_of[slot] = lab
        paint(tis, region, mask, slot)
        if name == "stomach":  # gas in the stomach is still stomach
            c, r, rot, w = placed[name]
            sub_region, sub_mask = blob(grid, c + np.array([0.4, -0.5, 0]) * r, r * 0.35)
            paint(tis, sub_region, sub_mask, SLOTS["stomach_gas"], under=[slot])
            label_of[SLOTS["stomach_gas"]] = lab
        if name in ("right_kidney", "left_kidney"):  # medulla: same label, darker
            c, r, rot, w = placed[name]
            paint(tis, *blob(grid, c, r, rot, w, scale=0.55), SLOTS[name + "_medulla"], under=[slot])
            label_of[SLOTS[name + "_medulla"]] = lab
    if task == "kits19":
        _kits_lesions(grid, tis, placed, rng, label_of, px)

    mid = sub // 2
    tis_c = tis.reshape(shape[0], sub, *shape[1:])[:, mid]
    label = label_of[tis_c]
    image = _intensities(tis, tis_c, shape, sub, spacing, rng)
    return image, label, spacing, expected


def _spine(grid, tis, mm, r, px, rng):
    """Vertebral column: bodies split by intervertebral discs, and behind them the posterior arch
    around the spinal canal (CSF). Proportions of the lumbar spine scaled to the body radius ``r``:
    a segment (body + disc) is about 1.75 r high, a disc about 0.4 r thick."""
    T = TISSUE_IDS
    top, bottom = mm((0, 0.64, 1.2)), mm((0, 0.62, -1.2))
    paint(tis, *tube(grid, [top, bottom], r), T["bone"])
    back = np.array([0.0, 1.3 * r, 0.0])           # +y is posterior
    paint(tis, *tube(grid, [top + back, bottom + back], 0.8 * r), T["bone"])
    paint(tis, *tube(grid, [top + back, bottom + back], max(0.45 * r, 0.8 * px)), T["csf"],
          under=[T["bone"]])
    period, thick = 1.75 * r * rng.uniform(0.9, 1.1), max(0.4 * r, 0.6 * px)
    z_lo, z_hi = sorted((bottom[0], top[0]))
    for z in np.arange(z_lo + rng.uniform(0, period), z_hi, period):
        t = (z - top[0]) / (bottom[0] - top[0])
        centre = top + t * (bottom - top) - np.array([0.0, 0.1 * r, 0.0])   # in the body only
        paint(tis, *blob(grid, centre, (thick / 2, 0.95 * r, 1.05 * r)), T["disc"], under=[T["bone"]])


def _slot_tissue(slot_name: str) -> str:
    if slot_name.endswith("_medulla"):
        return "medulla"
    if slot_name == "stomach_gas":
        return "gas"
    for name, _, _, _, tissue in ORGANS:
        if name == slot_name:
            return tissue
    return slot_name  # tumor, necrosis, cyst


def _kits_lesions(grid, tis, placed, rng, label_of, px):
    side = "right_kidney" if rng.random() < 0.5 else "left_kidney"
    c, r, rot, w = placed[side]
    direction = rng.normal(size=3)
    direction[2] = abs(direction[2]) * np.sign(c[2] or 1)  # bulge laterally rather than medially
    direction /= np.linalg.norm(direction)
    surface = c + direction * r * 0.9
    rt = r.mean() * rng.uniform(0.5, 1.0)
    tr = np.maximum(np.full(3, rt) * rng.uniform(0.8, 1.2, 3), np.array(grid.spacing) * (0.9, 1.5, 1.5))
    tw = Wobble.random(rng, 0.15)
    paint(tis, *blob(grid, surface, tr, rotation(rng.normal(0, 0.5, 3)), tw), SLOTS["tumor"])
    label_of[SLOTS["tumor"]] = 2
    if rng.random() < 0.5:
        paint(tis, *blob(grid, surface, tr, wobble=tw, scale=0.45), SLOTS["necrosis"], under=[SLOTS["tumor"]])
        label_of[SLOTS["necrosis"]] = 2
    if rng.random() < 0.35:  # a cyst: fluid, but labelled kidney (KiTS19 convention)
        other = "left_kidney" if side == "right_kidney" else "right_kidney"
        c2, r2, _, _ = placed[other]
        d2 = rng.normal(size=3)
        d2 /= np.linalg.norm(d2)
        rc = np.maximum(r2.mean() * rng.uniform(0.2, 0.4), np.array(grid.spacing) * (0.9, 1.5, 1.5))
        paint(tis, *blob(grid, c2 + d2 * r2 * 0.7, rc), SLOTS["cyst"])
        label_of[SLOTS["cyst"]] = 1


def _intensities(tis, tis_c, shape, sub, spacing, rng):
    enh = rng.uniform(0.7, 1.3)
    hu = np.zeros(256, np.float32)
    tex = np.zeros(256, np.float32)
    for name, tid in TISSUE_IDS.items():
        h, t, e = TISSUES[name]
        hu[tid] = (40 + (h - 40) * enh if e else h) + rng.normal(0, 4 if name != "air" else 0)
        tex[tid] = t
    for slot_name, sid in SLOTS.items():
        base = TISSUE_IDS[_slot_tissue(slot_name)]
        hu[sid] = hu[base] + rng.normal(0, 3)
        tex[sid] = tex[base]
    fine = hu[tis].reshape(shape[0], sub, *shape[1:]).mean(1)
    fine += tex[tis_c] * smooth_field(shape, spacing, rng, wavelength=(6.0, 20.0), terms=5)
    fine += rng.uniform(5, 20) * smooth_field(shape, spacing, rng, wavelength=(80.0, 250.0), terms=3)
    fine = ndimage.gaussian_filter(fine, sigma=(0, 0.5, 0.5), mode="nearest")
    fine += rng.normal(0, rng.uniform(8, 20), shape).astype(np.float32)
    return np.clip(np.round(fine), -1024, 3071).astype(np.int16)
