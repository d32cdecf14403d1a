"""Deterministic synthetic datasets shaped like the four paper tasks, written as nnU-Net raw data.

:func:`make_phantom` renders each case (:mod:`phantom_abdomen` for the CT tasks,
:mod:`phantom_brain` for BraTS21), writes it in the task's *public download layout* (BTCV's
``RawData/Training``, AMOS22's ``imagesTr`` + ``dataset.json`` with an MRI case to be skipped and
mixed orientations, KiTS19's permuted axes and affine, BraTS21's per-case folders with
non-contiguous ids and public label values), then runs the same converter as the real data
(:func:`harness.datasets.conversion.convert`). So every phantom run also exercises the conversion.

Determinism: case ``i`` is drawn from ``numpy.random.default_rng([seed, task, i])`` (PCG64, stable
across platforms), so a case does not depend on how many cases are requested. A case missing a
class it should hold (possible only at very small sizes) is redrawn from the next stream.
The phantoms are scaled-down anatomy: ``size`` is the field of view in mm (default 64, so about
64 voxels per axis after resampling to 1 mm), spacing varies per case (KiTS19's slice thickness
the most, BraTS21 1 mm isotropic like the real release).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np

from harness.datasets import nifti, phantom_abdomen, phantom_brain
from harness.datasets.conversion import convert, is_complete, layout_module
from harness.datasets.spec import PAPER_TASKS, TaskSpec, task_spec
from harness.errors import UserError

DEFAULT_CASES = 12
DEFAULT_SIZE = 64
MIN_SIZE, MAX_SIZE = 16, 128
GENERATOR_VERSION = 5  # bump when the rendering or the written dataset.json changes, so that stale
                       # phantoms are rebuilt (5: BraTS21 in plain labels, not regions)
_TASK_STREAM = {t: i for i, t in enumerate(PAPER_TASKS)}


def phantom_spec(task: str) -> TaskSpec:
    """The phantom dataset of a paper task; accepts ``btcv`` or ``phantom-btcv``."""
    spec = task_spec(task)
    return spec if spec.phantom else task_spec(f"phantom-{spec.task}")


def _check_args(cases, size, seed):
    if isinstance(cases, bool) or not isinstance(cases, (int, np.integer)) or cases < 1:
        raise UserError(f"cases must be a positive integer, got {cases!r}")
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not MIN_SIZE <= size <= MAX_SIZE:
        raise UserError(f"size must be an integer in [{MIN_SIZE}, {MAX_SIZE}] (mm), got {size!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed!r}")


def render_case(task: str, index: int, size: int = DEFAULT_SIZE, seed: int = 0):
    """One phantom case in LPS array order: (list of channel arrays, public label, spacing (z, y, x)).

    The label holds the values of the public download (BraTS21: 1 NCR, 2 ED, 4 ET).
    """
    spec = phantom_spec(task)
    _check_args(1, size, seed)
    for attempt in range(8):
        rng = np.random.default_rng([int(seed), _TASK_STREAM[spec.task], int(index), attempt])
        if spec.task == "brats21":
            images, label, spacing, expected = phantom_brain.render(rng, int(size), int(index))
        else:
            image, label, spacing, expected = phantom_abdomen.render(spec.task, rng, int(size), int(index))
            images = [image]
        if expected <= set(np.unique(label).tolist()):
            return images, label, spacing
    raise RuntimeError(f"{spec.name}: case {index} at size {size} lost a class in 8 draws; use a larger size")


def _to_images(images, label, spacing, rng):
    # An arbitrary table position, like a scanner's; the direction is the identity (LPS).
    shape = np.array(label.shape)
    origin_zyx = -(shape - 1) / 2 * np.array(spacing) + rng.normal(0, 20, 3).round(2)
    geo = dict(spacing=tuple(spacing[::-1]), origin=tuple(origin_zyx[::-1]), direction=np.eye(3))
    return ([nifti.from_array(a, **geo) for a in images], nifti.from_array(label.astype(np.uint8), **geo))


def write_phantom_source(task: str, root: str | os.PathLike, cases: int = DEFAULT_CASES,
                         size: int = DEFAULT_SIZE, seed: int = 0, progress: bool = False) -> list[str]:
    """Write ``cases`` phantom cases in the public download layout of ``task`` under ``root``."""
    spec = phantom_spec(task)
    _check_args(cases, size, seed)
    root = Path(root)
    mod = layout_module(spec)
    ids = mod.phantom_source_ids(int(cases))
    items = enumerate(ids)
    if progress:
        from tqdm import tqdm
        items = tqdm(list(items), desc=f"phantom {spec.task}", unit="case", leave=False,
                     disable=None)                     # no bar when stderr is not a terminal
    for i, sid in items:
        images, label, spacing = render_case(spec.task, i, size, seed)
        geo_rng = np.random.default_rng([int(seed), _TASK_STREAM[spec.task], i, 99])
        imgs, lab = _to_images(images, label, spacing, geo_rng)
        if spec.task == "amos22" and i % 3 == 2:  # AMOS mixes orientations; stored RAS-like here
            imgs, lab = [nifti.reorient(im, "RAS") for im in imgs], nifti.reorient(lab, "RAS")
        mod.write_source_case(root, sid, imgs, lab)
    if spec.task == "amos22":  # one MRI case (id >= 500) that the converter must leave out
        images, label, spacing = render_case(spec.task, 10_000, size, seed)
        mri = [np.clip((images[0].astype(np.float32) + 300) * 1.5, 0, None).astype(np.int16)]
        imgs, lab = _to_images(mri, label, spacing, np.random.default_rng([int(seed), 1, 10_000]))
        mod.write_source_case(root, mod.MRI_PHANTOM_ID, imgs, lab)
        mod.write_source_index(root, ids + [mod.MRI_PHANTOM_ID])
    else:
        mod.write_source_index(root, ids)
    return ids


def make_phantom(task: str, raw_root: str | os.PathLike, cases: int | None = None,
                 size: int | None = None, seed: int = 0, *, source_dir: str | os.PathLike | None = None,
                 progress: bool = False, quiet: bool = True) -> Path:
    """Write the phantom of ``task`` to ``raw_root/<folder>`` (e.g. ``Dataset901_PhantomBTCV``).

    Args:
        task: ``btcv``, ``amos22``, ``kits19``, ``brats21`` or ``phantom-<task>``.
        raw_root: the nnU-Net raw root.
        cases: number of training cases (default 12).
        size: field of view in mm, about the voxels per axis at 1 mm (16..128, default 64).
        seed: generator seed (non-negative).
        source_dir: keep the public-layout files there (default: a temporary folder, removed).
        progress: show progress bars. quiet: do not print the conversion summary.

    Returns the dataset folder. Does nothing when it already holds the same phantom
    (same cases, size, seed and generator version, recorded in ``dataset.json``).

    >>> make_phantom("kits19", "work/nnUNet_raw", cases=4, size=32)  # doctest: +SKIP
    PosixPath('work/nnUNet_raw/Dataset903_PhantomKiTS19')
    """
    spec = phantom_spec(task)
    cases = DEFAULT_CASES if cases is None else cases
    size = DEFAULT_SIZE if size is None else size
    _check_args(cases, size, seed)
    raw_root = Path(raw_root).expanduser()
    out = raw_root / spec.folder
    params = {"cases": int(cases), "size": int(size), "seed": int(seed), "version": GENERATOR_VERSION}
    if is_complete(out, spec, match={"phantom": params}):
        return out
    raw_root.mkdir(parents=True, exist_ok=True)
    # Jobs started together (one per model) may all ask for the same phantom: one builds it, the
    # others wait on the lock and then find it complete.
    with _lock(raw_root / f".{spec.folder}.lock"):
        if is_complete(out, spec, match={"phantom": params}):
            return out
        extra = {"phantom": params}
        if source_dir is not None:
            write_phantom_source(spec.task, source_dir, cases, size, seed, progress)
            return convert(spec.name, source_dir, raw_root, progress=progress, quiet=quiet,
                           dataset_json_extra=extra)
        with tempfile.TemporaryDirectory(prefix=f".{spec.folder}.source.", dir=raw_root) as src:
            write_phantom_source(spec.task, src, cases, size, seed, progress)
            return convert(spec.name, src, raw_root, progress=progress, quiet=quiet,
                           dataset_json_extra=extra)


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive advisory lock (``fcntl.flock``) held for the duration of the block."""
    import fcntl
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
