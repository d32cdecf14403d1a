"""Seeded k-fold cross-validation splits, written as nnU-Net's ``splits_final.json``.

Convention: nnU-Net v2's own (``nnunetv2/utilities/crossval_split.py``, used by
``nnUNetTrainer.do_split`` with seed 12345 on the sorted case ids), i.e. scikit-learn's
``KFold(n_splits, shuffle=True, random_state=seed)``: the sorted ids are shuffled once by NumPy's
legacy ``RandomState(seed).shuffle`` (its stream is frozen by NumPy's compatibility policy, so
the split is the same on every machine and version), then cut into ``n_folds`` consecutive
chunks, the first ``n % n_folds`` chunks one case longer. Each fold's ``train`` and ``val`` are
listed in sorted order. The result is exactly the split nnU-Net would make by itself, so a
``splits_final.json`` written here and one nnU-Net writes agree; writing it ourselves makes
every model (nnU-Net or not) use the same file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from harness.errors import UserError
from harness.io import write_json


def make_splits(case_ids, n_folds: int = 5, seed: int = 12345) -> list[dict]:
    """Seeded ``n_folds``-fold split of ``case_ids``: ``[{"train": [...], "val": [...]}, ...]``.

    Args:
        case_ids: the case identifiers (any order; they are sorted first). Must be unique strings.
        n_folds: number of folds (>= 2, <= number of cases). 5 gives nnU-Net's 80:20 folds.
        seed: the shuffle seed; 12345 is nnU-Net's.

    >>> make_splits(["a", "b", "c", "d", "e"], n_folds=5)[0]["val"]
    ['a']
    """
    ids = [str(c) for c in case_ids]
    if len(set(ids)) != len(ids):
        dupes = sorted({c for c in ids if ids.count(c) > 1})
        raise UserError(f"case_ids contain duplicates: {dupes}")
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise UserError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    if len(ids) < n_folds:
        raise UserError(f"n_folds={n_folds} needs at least {n_folds} cases, got {len(ids)}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise UserError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    ids = sorted(ids)
    order = np.arange(len(ids))
    np.random.RandomState(int(seed)).shuffle(order)
    sizes = np.full(n_folds, len(ids) // n_folds)
    sizes[: len(ids) % n_folds] += 1
    splits, start = [], 0
    for size in sizes:
        val_idx = set(order[start:start + size].tolist())
        start += size
        splits.append({"train": [c for i, c in enumerate(ids) if i not in val_idx],
                       "val": [c for i, c in enumerate(ids) if i in val_idx]})
    return splits


def check_splits(splits, case_ids=None) -> None:
    """Raise ``ValueError`` unless ``splits`` is a list of disjoint ``{"train", "val"}`` folds.

    With ``case_ids``, also require every fold to cover exactly those cases.
    """
    if not isinstance(splits, list) or not splits:
        raise ValueError(f"splits must be a non-empty list of folds, got {type(splits).__name__}")
    expected = None if case_ids is None else {str(c) for c in case_ids}
    all_val: list[str] = []
    for k, fold in enumerate(splits):
        if not isinstance(fold, dict) or set(fold) != {"train", "val"}:
            raise ValueError(f"fold {k} must be a dict with keys 'train' and 'val', got {fold!r}")
        train, val = set(fold["train"]), set(fold["val"])
        if not val:
            raise ValueError(f"fold {k} has no validation case")
        if train & val:
            raise ValueError(f"fold {k}: cases both in train and val: {sorted(train & val)}")
        if expected is not None and train | val != expected:
            missing, extra = sorted(expected - train - val), sorted((train | val) - expected)
            raise ValueError(f"fold {k} does not cover the cases: missing {missing}, unknown {extra}")
        all_val.extend(fold["val"])
    if len(set(all_val)) != len(all_val):
        raise ValueError("a case is in the validation set of two folds")


def write_splits(path: str | os.PathLike, splits: list[dict]) -> Path:
    """Check ``splits`` and write them atomically as nnU-Net's ``splits_final.json``."""
    check_splits(splits)
    clean = [{"train": [str(c) for c in f["train"]], "val": [str(c) for c in f["val"]]} for f in splits]
    return write_json(path, clean)


def read_splits(path: str | os.PathLike, case_ids=None) -> list[dict]:
    """Read and check a ``splits_final.json`` (``UserError`` naming the file if it is malformed)."""
    path = Path(path)
    try:
        splits = json.loads(path.read_text())
        check_splits(splits, case_ids)
    except (OSError, json.JSONDecodeError, ValueError) as err:
        raise UserError(f"{path}: not a valid splits file: {err}") from err
    return splits
