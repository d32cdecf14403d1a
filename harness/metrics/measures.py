"""DSC, surface Dice and HD95 of one boolean mask pair, with the empty-mask rule applied here only.

Public functions take boolean arrays in array axis order and a spacing in the same order (for
SimpleITK images that is ``GetSpacing()`` reversed: see ``harness.metrics.reader``). The rule
(``harness.metrics.definitions``): both masks empty -> NaN; one empty -> 0 for DSC and surface
Dice, the image diagonal in mm for HD95. Only two non-empty masks reach the surface engine, so the
``np.Inf``/``np.NaN`` branches of ``surface-distance`` 0.1 (broken under NumPy 2) never run.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .definitions import TOLERANCE_MM
from .surface import robust_hausdorff_from, surface_dice_from, surface_distances

BOTH_EMPTY, REF_EMPTY, PRED_EMPTY, NOT_EMPTY = "both", "ref", "pred", "none"


def empty_state(ref: np.ndarray, pred: np.ndarray) -> str:
    """Which of the two masks is empty: ``both``, ``ref``, ``pred`` or ``none``."""
    r, p = bool(ref.any()), bool(pred.any())
    return NOT_EMPTY if r and p else BOTH_EMPTY if not (r or p) else REF_EMPTY if not r else PRED_EMPTY


def worst_distance(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """The HD95 given when exactly one mask is empty: the image diagonal in mm."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def empty_value(state: str, kind: str, worst: float | None = None) -> float | None:
    """The value the empty-mask rule gives, or None when both masks are non-empty.

    ``kind`` is ``"overlap"`` (DSC, surface Dice: 0 on one empty) or ``"distance"`` (worst on one
    empty; ``worst`` must then be given).
    """
    if state == NOT_EMPTY:
        return None
    if state == BOTH_EMPTY:
        return float("nan")
    if kind == "overlap":
        return 0.0
    if kind == "distance":
        if worst is None:
            raise ValueError("a distance metric with one empty mask needs the worst value")
        return float(worst)
    raise ValueError(f"unknown metric kind {kind!r}")


def _as_bool(name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != bool:
        raise ValueError(f"{name} must be a boolean array, got dtype {a.dtype}")
    return a


def _pair(ref, pred) -> tuple[np.ndarray, np.ndarray]:
    ref, pred = _as_bool("ref", ref), _as_bool("pred", pred)
    if ref.shape != pred.shape:
        raise ValueError(f"shapes differ: ref {ref.shape}, pred {pred.shape}")
    return ref, pred


def _spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    sp = tuple(float(s) for s in spacing)
    if len(sp) != ndim or not all(s > 0 and math.isfinite(s) for s in sp):
        raise ValueError(f"spacing {tuple(spacing)} must hold {ndim} positive values in array axis order")
    return sp


def dice(ref, pred) -> float:
    """Volumetric Dice 2|A&B| / (|A|+|B|); NaN when both are empty, 0 when one is."""
    ref, pred = _pair(ref, pred)
    tp = int(np.count_nonzero(ref & pred))
    total = int(np.count_nonzero(ref)) + int(np.count_nonzero(pred))
    return float("nan") if total == 0 else 2.0 * tp / total


def surface_dice(ref, pred, spacing: Sequence[float], tolerance: float = TOLERANCE_MM,
                 engine: str = "fast") -> float:
    """Surface Dice at ``tolerance`` (mm, in the units of ``spacing``) after DeepMind's definition."""
    ref, pred = _pair(ref, pred)
    sp = _spacing(spacing, ref.ndim)
    if not tolerance >= 0:
        raise ValueError(f"tolerance {tolerance!r} must be >= 0")
    v = empty_value(empty_state(ref, pred), "overlap")
    if v is not None:
        return v
    return surface_dice_from(surface_distances(ref, pred, sp, engine), tolerance)


def hd95(ref, pred, spacing: Sequence[float], worst: float | None = None,
         engine: str = "fast") -> float:
    """95th-percentile Hausdorff distance in mm (area weighted, max of the two directions).

    One empty mask gives ``worst``, by default the image diagonal ``worst_distance(shape, spacing)``.
    """
    ref, pred = _pair(ref, pred)
    sp = _spacing(spacing, ref.ndim)
    v = empty_value(empty_state(ref, pred), "distance",
                    worst_distance(ref.shape, sp) if worst is None else worst)
    if v is not None:
        return v
    return robust_hausdorff_from(surface_distances(ref, pred, sp, engine), 95.0)
