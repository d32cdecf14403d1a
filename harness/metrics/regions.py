"""The classes and regions each task is scored on, as data (label values after conversion).

Follows the converted label maps of the project (BTCV 1..13, AMOS22 1..15, KiTS19 1 kidney /
2 tumour, BraTS21 remapped as nnU-Net does: 1 oedema, 2 necrosis, 3 enhancing tumour) and the
classes the official MedNeXt evaluation (``region_based_evaluation.py``) scored:

- BTCV, AMOS22: every organ label on its own;
- KiTS19: label 1 and label 2 separately (MedNeXt's ``get_kits19_regions``) -- these two make the
  paper's mean -- plus the official KiTS19 composite kidney+tumour = labels {1, 2}, stored beside
  them but outside the paper's mean (``in_paper_mean=False``);
- BraTS21: whole tumour (1,2,3), tumour core (2,3), enhancing tumour (3), in that order.

Phantom datasets (``phantom-<task>``) are scored exactly like their task.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS = ("btcv", "amos22", "kits19", "brats21")


@dataclass(frozen=True)
class Region:
    """One scored class: a union of label values, and whether it enters the paper's mean."""
    name: str
    labels: tuple[int, ...]
    in_paper_mean: bool = True

    def __post_init__(self):
        if not self.labels or any(int(v) <= 0 for v in self.labels):
            raise ValueError(f"region {self.name!r}: labels must be positive, got {self.labels!r}")

    def mask(self, seg: np.ndarray) -> np.ndarray:
        """Boolean mask of the voxels whose label lies in this region."""
        if len(self.labels) == 1:
            return seg == self.labels[0]
        return np.isin(seg, self.labels)


def _singles(names: list[str]) -> tuple[Region, ...]:
    return tuple(Region(name, (i,)) for i, name in enumerate(names, start=1))


_BTCV = _singles([
    "spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver", "stomach",
    "aorta", "inferior_vena_cava", "portal_splenic_vein", "pancreas", "right_adrenal",
    "left_adrenal",
])
_AMOS22 = _singles([
    "spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver", "stomach",
    "aorta", "postcava", "pancreas", "right_adrenal", "left_adrenal", "duodenum", "bladder",
    "prostate_uterus",
])
_KITS19 = (
    Region("kidney", (1,)),
    Region("tumour", (2,)),
    Region("kidney+tumour", (1, 2), in_paper_mean=False),
)
_BRATS21 = (
    Region("WT", (1, 2, 3)),
    Region("TC", (2, 3)),
    Region("ET", (3,)),
)
_REGIONS = {"btcv": _BTCV, "amos22": _AMOS22, "kits19": _KITS19, "brats21": _BRATS21}


def task_of(dataset: str) -> str:
    """The paper task a dataset is scored as: ``phantom-kits19`` -> ``kits19``."""
    task = dataset[len("phantom-"):] if dataset.startswith("phantom-") else dataset
    if task not in _REGIONS:
        raise ValueError(f"unknown dataset {dataset!r}; known tasks: {', '.join(TASKS)} "
                         "(optionally prefixed 'phantom-')")
    return task


def regions_for(dataset: str) -> tuple[Region, ...]:
    """All scored regions of a dataset (paper classes first, extras after)."""
    return _REGIONS[task_of(dataset)]


def paper_classes(dataset: str) -> tuple[str, ...]:
    """Names of the classes whose mean is the paper's per-dataset score."""
    return tuple(r.name for r in regions_for(dataset) if r.in_paper_mean)


def max_label(dataset: str) -> int:
    """Largest label value a segmentation of this dataset may contain."""
    return max(max(r.labels) for r in regions_for(dataset))
