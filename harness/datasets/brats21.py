"""BraTS 2021 (adult glioma, four MRI contrasts): the public download layout.

Layout: ``BraTS2021_XXXXX/BraTS2021_XXXXX_{flair,t1,t1ce,t2,seg}.nii.gz``, directly in the source
folder or inside ``BraTS2021_Training_Data/`` or ``RSNA_ASNR_MICCAI_BraTS2021_TrainingData/``;
ids are not contiguous. Channels are written as ``_0000.._0003`` = FLAIR, T1, T1ce, T2. Labels
1 NCR, 2 ED, 4 ET are remapped as nnU-Net's ``Dataset137_BraTS21`` does (2->1, 1->2, 4->3) so
that the regions are whole tumour (1, 2, 3), tumour core (2, 3), enhancing tumour (3); the map
lives in :data:`harness.datasets.spec.TASKS` (``source_label_map``), the remap in
:mod:`harness.datasets.conversion`. ``dataset.json`` names the three labels (edema, necrosis,
enhancing tumour), what the official MedNeXt trainers train on; the regions are formed when
scoring, or for region training (an option) when a run loads the data.
"""
from __future__ import annotations

import re
from pathlib import Path

from harness.datasets import nifti
from harness.datasets.errors import Problem
from harness.datasets.validate import CaseFiles

_CASE = re.compile(r"^BraTS2021_\d{5}$")
CHANNELS = ("flair", "t1", "t1ce", "t2")
_SUBDIRS = ("BraTS2021_Training_Data", "RSNA_ASNR_MICCAI_BraTS2021_TrainingData")


def _case_dirs(source: Path) -> list[Path]:
    roots = [source] + [source / s for s in _SUBDIRS if (source / s).is_dir()]
    found = {d.name: d for r in roots for d in r.iterdir() if d.is_dir() and _CASE.match(d.name)}
    return [found[k] for k in sorted(found)]


def discover(source: Path) -> tuple[list[CaseFiles], list[str], list[Problem]]:
    cases = [CaseFiles(d.name, [d / f"{d.name}_{c}.nii.gz" for c in CHANNELS],
                       d / f"{d.name}_seg.nii.gz", ["FLAIR", "T1", "T1ce", "T2"])
             for d in _case_dirs(source)]
    return cases, [], []


def phantom_source_ids(n: int) -> list[str]:
    """Non-contiguous ids, as in the real release (every third number is missing)."""
    return [f"{i + i // 2:05d}" for i in range(n)]


def write_source_case(root: Path, source_id: str, images: list, label) -> None:
    name = f"BraTS2021_{source_id}"
    for c, img in zip(CHANNELS, images):
        nifti.write(img, root / name / f"{name}_{c}.nii.gz")
    nifti.write(label, root / name / f"{name}_seg.nii.gz")


def write_source_index(root: Path, source_ids: list[str]) -> None:
    """BraTS ships no index file."""
