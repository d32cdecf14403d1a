"""Datasets: the four paper tasks (BTCV, AMOS22, KiTS19, BraTS21) and their synthetic phantoms.

Public API (names kept stable for the training harness):

- :data:`TASKS`, :func:`task_spec` -- per-dataset facts (nnU-Net id and folder, channels, labels,
  regions, number of network outputs); see :mod:`harness.datasets.spec`.
- :func:`convert` -- public download layout -> nnU-Net v2 raw dataset, validated first.
- :func:`make_phantom` -- a deterministic synthetic dataset in the task's public layout, converted.
- :func:`validate_raw` -- check an nnU-Net raw dataset; :class:`DatasetError` lists every problem.
- :func:`make_splits`, :func:`write_splits` -- seeded 5-fold split as ``splits_final.json``.

SimpleITK is imported only when a function that reads or writes images is called.
"""
from __future__ import annotations

from harness.datasets.errors import DatasetError, Problem
from harness.datasets.spec import PAPER_TASKS, TASKS, TaskSpec, task_spec
from harness.datasets.splits import check_splits, make_splits, read_splits, write_splits

__all__ = ["TASKS", "PAPER_TASKS", "TaskSpec", "task_spec", "DatasetError", "Problem", "convert",
           "make_phantom", "validate_raw", "make_splits", "write_splits", "read_splits",
           "check_splits", "raw_case_ids"]


def convert(task, source_dir, raw_root, include_validation=False, **kwargs):
    """See :func:`harness.datasets.conversion.convert`."""
    from harness.datasets.conversion import convert as _convert
    return _convert(task, source_dir, raw_root, include_validation, **kwargs)


def make_phantom(task, raw_root, cases=None, size=None, seed=0, **kwargs):
    """See :func:`harness.datasets.phantom.make_phantom`."""
    from harness.datasets.phantom import make_phantom as _make
    return _make(task, raw_root, cases, size, seed, **kwargs)


def validate_raw(folder, task=None, progress=False):
    """See :func:`harness.datasets.validate.validate_raw`."""
    from harness.datasets.validate import validate_raw as _validate
    return _validate(folder, task, progress)


def raw_case_ids(folder) -> list[str]:
    """Case ids of a raw dataset (the ``labelsTr`` files), sorted."""
    from pathlib import Path
    return sorted(p.name[: -len(".nii.gz")] for p in (Path(folder) / "labelsTr").glob("*.nii.gz"))
