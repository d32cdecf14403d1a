"""BTCV (Multi-Atlas Labeling Beyond the Cranial Vault, abdomen): the public download layout.

Layout (as read by MedNeXt's ``Task017_AbdominalOrganSegmentation.py``):
``RawData/Training/img/imgXXXX.nii.gz`` and ``RawData/Training/label/labelXXXX.nii.gz``; 30
labelled CT cases (ids 0001-0010, 0021-0040), 13 organs labelled 1..13 as in
:data:`harness.datasets.spec.ABDOMEN_13`. ``RawData/Testing`` has no labels and is not converted.
Converted case ids are ``btcv_XXXX``.
"""
from __future__ import annotations

import re
from pathlib import Path

from harness.datasets import nifti
from harness.datasets.errors import Problem
from harness.datasets.validate import CaseFiles

_IMG = re.compile(r"^img(\d{4})\.nii\.gz$")
_LAB = re.compile(r"^label(\d{4})\.nii\.gz$")


def _training_dir(source: Path) -> Path:
    for cand in (source / "RawData" / "Training", source / "Training", source):
        if (cand / "img").is_dir() or (cand / "label").is_dir():
            return cand
    return source / "RawData" / "Training"


def discover(source: Path) -> tuple[list[CaseFiles], list[str], list[Problem]]:
    """Cases under ``source`` (the folder holding ``RawData``, or ``RawData`` itself)."""
    train = _training_dir(source)
    if not (train / "img").is_dir():
        return [], [], [Problem("-", str(train / "img"), "image folder not found",
                                "RawData/Training/img", "none")]
    imgs = {m.group(1) for p in (train / "img").iterdir() if (m := _IMG.match(p.name))}
    labs = ({m.group(1) for p in (train / "label").iterdir() if (m := _LAB.match(p.name))}
            if (train / "label").is_dir() else set())
    cases = [CaseFiles(f"btcv_{i}", [train / "img" / f"img{i}.nii.gz"],
                       train / "label" / f"label{i}.nii.gz", ["CT"])
             for i in sorted(imgs | labs)]
    return cases, [], []


def phantom_source_ids(n: int) -> list[str]:
    """The real training ids first (0001-0010, 0021-0040), then onwards from 0041."""
    ids = list(range(1, 11)) + list(range(21, 41))
    ids += list(range(41, 41 + max(0, n - len(ids))))
    return [f"{i:04d}" for i in ids[:n]]


def write_source_case(root: Path, source_id: str, images: list, label) -> None:
    train = root / "RawData" / "Training"
    nifti.write(images[0], train / "img" / f"img{source_id}.nii.gz")
    nifti.write(label, train / "label" / f"label{source_id}.nii.gz")


def write_source_index(root: Path, source_ids: list[str]) -> None:
    """BTCV ships no index file."""
