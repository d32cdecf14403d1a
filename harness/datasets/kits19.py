"""KiTS19 (kidney and kidney tumour, CT): the public download layout and its axis quirk.

Layout (repository neheller/kits19): ``data/case_XXXXX/imaging.nii.gz`` and
``data/case_XXXXX/segmentation.nii.gz`` (+ ``data/kits.json``); labels 0 background, 1 kidney,
2 tumour; 210 labelled cases, the 90 test cases have no segmentation and are skipped.

The quirk: the array is stored as (slices, H, W) with a permuted affine (nibabel axcodes
``('I', 'P', 'L')``, zooms ``(slice, px, px)``), so SimpleITK reports size/spacing in that order
and numpy gets (W, H, slices). The converter reorients every case to LPS
(:func:`harness.datasets.nifti.reorient_lps`): arrays become (slices, H, W) in numpy order with
spacing (slice, px, px), identity direction, and each voxel keeps its world position. The phantom
writes its cases with the same quirk (:func:`to_kits_orientation`), so the conversion is
exercised on it.

The official MedNeXt pipeline copied these files unchanged, so its 2D configuration (slices along
axis 0 of SimpleITK's array) cut KiTS19 into sagittal slices; the converted files keep that fact
as :attr:`harness.datasets.spec.TaskSpec.slicing`.
"""
from __future__ import annotations

import re
from pathlib import Path

from harness.datasets import nifti
from harness.datasets.errors import Problem
from harness.datasets.validate import CaseFiles

_CASE = re.compile(r"^case_\d{5}$")
KITS_ORIENTATION = "IPL"  # DICOM-style letters: index axis 0 runs Inferior, 1 Posterior, 2 Left


def _data_dir(source: Path) -> Path:
    return source / "data" if (source / "data").is_dir() else source


def discover(source: Path) -> tuple[list[CaseFiles], list[str], list[Problem]]:
    """Cases under ``source`` (the repository root holding ``data/``, or ``data/`` itself)."""
    data = _data_dir(source)
    cases, skipped = [], []
    for d in sorted(p for p in data.iterdir() if p.is_dir() and _CASE.match(p.name)):
        if not (d / "segmentation.nii.gz").exists():
            skipped.append(f"{d.name} (no segmentation: test case)")
            continue
        cases.append(CaseFiles(d.name, [d / "imaging.nii.gz"], d / "segmentation.nii.gz", ["CT"]))
    return cases, skipped, []


def to_kits_orientation(img):
    """Store an image the way KiTS19 does: (slices, H, W) on disk, permuted affine."""
    return nifti.reorient(img, KITS_ORIENTATION)


def phantom_source_ids(n: int) -> list[str]:
    return [f"{i:05d}" for i in range(n)]


def write_source_case(root: Path, source_id: str, images: list, label) -> None:
    case = root / "data" / f"case_{source_id}"
    nifti.write(to_kits_orientation(images[0]), case / "imaging.nii.gz")
    nifti.write(to_kits_orientation(label), case / "segmentation.nii.gz")


def write_source_index(root: Path, source_ids: list[str]) -> None:
    """A ``kits.json`` with the case ids (the real one also holds clinical data)."""
    from harness.io import write_json
    write_json(root / "data" / "kits.json", [{"case_id": f"case_{i}"} for i in source_ids])
