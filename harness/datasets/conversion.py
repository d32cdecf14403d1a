"""Public download layout -> nnU-Net v2 raw dataset (``DatasetNNN_Name/imagesTr, labelsTr, dataset.json``).

The task modules (:mod:`btcv`, :mod:`amos22`, :mod:`kits19`, :mod:`brats21`) only know where their
files are; this module does the rest the same way for all four, as nnU-Net's own conversion
scripts do per task (``Dataset137_BraTS21.py``, ``Dataset218_Amos2022_task1.py``):

1. every case is checked (:mod:`harness.datasets.validate`): headers of all cases first, then
   the voxels; problems are collected and reported together;
2. each case is read once with SimpleITK, its label values remapped (BraTS21), the geometry of
   the first channel copied onto the other channels and the label (they agree within tolerance,
   so nnU-Net's exact checks pass), the axes reoriented to LPS (:func:`nifti.reorient_lps`),
   and written into a temporary folder that becomes ``raw_root/<folder>`` only when every case
   passed (:func:`harness.io.atomic_dir`); an existing folder is replaced only if it carries the
   marker of a folder this harness made (:mod:`harness.ownership`), never a folder of the user's;
3. a summary (cases, shapes, spacing range, voxels per label) is printed and stored in
   ``dataset.json`` under ``"conversion"``.

Differences from nnU-Net's scripts: they copy files as they are; here every output is
reoriented to LPS, which leaves the world geometry unchanged and makes KiTS19's permuted
affine ordinary (the metrics then need no per-dataset axis handling).
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np

from harness.datasets import nifti
from harness.errors import UserError
from harness.datasets.errors import DatasetError, Problem
from harness.datasets.spec import TaskSpec, task_spec
from harness.datasets.validate import (CaseFiles, Summary, check_headers, check_image_values,
                                       check_label_values)
from harness.io import atomic_dir, write_json
from harness.ownership import mark_created, require_owned


def layout_module(spec: TaskSpec):
    """The module that knows the public download layout of ``spec.task``."""
    return importlib.import_module(f"harness.datasets.{spec.task}")


def expected_files(spec: TaskSpec, case_ids) -> list[str]:
    files = [f"labelsTr/{c}.nii.gz" for c in case_ids]
    files += [f"imagesTr/{c}_{i:04d}.nii.gz" for c in case_ids for i in range(spec.num_channels)]
    return files


def is_complete(folder: Path, spec: TaskSpec, case_ids=None, match: dict | None = None) -> bool:
    """Whether ``folder`` holds a finished conversion (of ``case_ids``, with ``match`` in dataset.json)."""
    try:
        dj = json.loads((folder / "dataset.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    done = dj.get("conversion", {}).get("case_ids")
    if not isinstance(done, list) or dj.get("numTraining") != len(done):
        return False
    if case_ids is not None and sorted(done) != sorted(case_ids):
        return False
    if any(dj.get(k) != v for k, v in (match or {}).items()):
        return False
    return all((folder / f).is_file() for f in expected_files(spec, done))


def convert(task: str, source_dir: str | os.PathLike, raw_root: str | os.PathLike,
            include_validation: bool = False, *, progress: bool = True, quiet: bool = False,
            dataset_json_extra: dict | None = None) -> Path:
    """Convert the public download of ``task`` in ``source_dir`` to ``raw_root/<folder>``.

    Args:
        task: ``btcv``, ``amos22``, ``kits19``, ``brats21`` (or their phantoms, which use the same
            layout and are written to the phantom's folder).
        source_dir: the downloaded dataset (see each task module for the expected layout).
        raw_root: the nnU-Net raw root (``nnUNet_raw``).
        include_validation: AMOS22 only: add the validation split (``imagesVa``/``labelsVa``).
        progress: show a progress bar.
        quiet: do not print the summary.
        dataset_json_extra: extra keys stored in ``dataset.json`` (and required to match for the
            re-run no-op).

    Returns the dataset folder. Raises :class:`DatasetError` listing every problem; then nothing
    is written. Re-running on a complete output does nothing.

    Example: ``convert("kits19", "~/kits19", "work/nnUNet_raw")``.
    """
    spec = task_spec(task)
    source = Path(source_dir).expanduser()
    out = Path(raw_root).expanduser() / spec.folder
    if not source.is_dir():
        raise DatasetError(str(source), [Problem("-", str(source), "source folder not found",
                                                 "a folder", "none")], "nothing was written")
    if include_validation and spec.task != "amos22":
        raise UserError(f"include_validation applies to amos22 only, not {spec.name!r}")
    mod = layout_module(spec)
    cases, skipped, problems = (mod.discover(source, include_validation) if spec.task == "amos22"
                                else mod.discover(source))
    if not cases and not problems:
        problems.append(Problem("-", str(source), "no cases found", spec.source_layout, "nothing"))
    extra = dict(dataset_json_extra or {})
    ids = [c.case for c in cases]
    if not problems and is_complete(out, spec, ids, extra):
        if not quiet:
            print(f"{out}: complete ({len(ids)} cases), nothing to do")
        return out

    # An existing folder is replaced only if this converter made it: a folder of the user's with
    # the same name is never deleted (harness.ownership).
    require_owned(out, "replace")

    # Pass 1: headers of every case (cheap), so that layout problems show up at once.
    geos: dict[str, nifti.Geometry] = {}
    for case in cases:
        found, geo = check_headers(case, source)
        problems += found
        if not found and geo is not None:
            geos[case.case] = geo

    # Pass 2: voxels; written only while no problem at all has been seen.
    summary = Summary(spec)
    allowed = sorted(spec.source_label_map)
    with atomic_dir(out) as tmp:
        (tmp / "imagesTr").mkdir()
        (tmp / "labelsTr").mkdir()
        for case in _bar(cases, progress and len(cases) > 1, f"convert {spec.name}"):
            if case.case not in geos:
                continue
            found, written = _convert_case(case, spec, source, tmp, allowed, write=not problems)
            problems += found
            if written is not None:
                summary.add(case.case, *written)
        if problems:
            raise DatasetError(str(source), problems, "nothing was written")
        info = summary.to_dict()
        info["source"] = ("phantom generator (harness.datasets.phantom), via the public layout"
                          if "phantom" in extra else str(source))
        info["skipped"] = skipped
        dj = spec.dataset_json(len(cases), **extra, conversion=info)
        write_json(tmp / "dataset.json", dj)
        mark_created(tmp, f"converted dataset {spec.name}")
    if not quiet:
        print(summary.format())
        if skipped:
            print(f"  skipped {len(skipped)}: {', '.join(skipped[:8])}{' ...' if len(skipped) > 8 else ''}")
    return out


def _convert_case(case: CaseFiles, spec: TaskSpec, source: Path, out: Path, allowed, write: bool):
    """Check one case's voxels and (if ``write``) write it; returns problems and summary data."""
    rel = lambda p: str(Path(p).relative_to(source)) if str(p).startswith(str(source)) else str(p)
    problems: list[Problem] = []
    images = []
    for path in case.channels:
        img = nifti.read(path)
        problems += check_image_values(case.case, nifti.to_array(img), rel(path), nifti.count_nonfinite(path))
        images.append(img)
    lab_img = nifti.read(case.label)
    lab = nifti.to_array(lab_img)
    found, counts = check_label_values(case.case, lab, allowed, rel(case.label),
                                       nifti.count_nonfinite(case.label))
    problems += found
    if problems or not write:
        return problems, None
    lut = np.zeros(max(spec.source_label_map) + 1, dtype=np.uint8)
    for src, dst in spec.source_label_map.items():
        lut[src] = dst
    ref = images[0]
    label = nifti.from_array(lut[lab.astype(np.int64)], ref)
    label = nifti.reorient_lps(label)
    for i, img in enumerate(images):
        img = nifti.reorient_lps(img if i == 0 else nifti.with_geometry(img, ref))
        nifti.write(img, out / "imagesTr" / f"{case.case}_{i:04d}.nii.gz")
    nifti.write(label, out / "labelsTr" / f"{case.case}.nii.gz")
    mapped = {int(spec.source_label_map[v]): c for v, c in counts.items()}
    return [], (nifti.geometry(label), mapped)


def _bar(items, enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm import tqdm
    # disable=None: no bar when stderr is not a terminal (logs, pipes), only the messages
    return tqdm(items, desc=desc, unit="case", leave=False, file=sys.stderr, disable=None)
