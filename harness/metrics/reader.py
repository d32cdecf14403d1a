"""The one NIfTI reader of the evaluation: SimpleITK, array axis order (z, y, x), spacing to match.

SimpleITK's ``GetArrayFromImage`` returns the voxels as (z, y, x) while ``GetSpacing()`` is
(x, y, z); the spacing is reversed here so that it always follows the array's axes (KiTS19, whose
first array axis is the slice axis in nibabel order, is the usual trap). This mirrors nnU-Net v2's
``SimpleITKIO``, which also reports spacing in array order. Origin and direction stay in
SimpleITK's (x, y, z) order: they are only compared, never used for computing.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Volume:
    array: np.ndarray
    spacing: tuple[float, ...]     # mm, array axis order
    origin: tuple[float, ...]      # SimpleITK physical order (x, y, z)
    path: Path
    direction: tuple[float, ...] = ()  # SimpleITK GetDirection: row-major cosines, (x, y, z) order


def read_nifti(path: str | Path, case: str | None = None, role: str = "image") -> Volume:
    """Read one segmentation/image; errors name the file, the case and what is wrong."""
    import SimpleITK as sitk

    path = Path(path)
    where = f"{role} of case {case!r} ({path})" if case else f"{role} {path}"
    if not path.is_file():
        raise FileNotFoundError(f"{where}: file not found")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"{where}: cannot be read as NIfTI ({str(exc).strip().splitlines()[-1]})") from exc
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{where}: has {img.GetNumberOfComponentsPerPixel()} components per voxel, "
                         "a label map has one")
    array = sitk.GetArrayFromImage(img)
    spacing = tuple(float(s) for s in reversed(img.GetSpacing()))
    if not all(s > 0 and np.isfinite(s) for s in spacing):
        raise ValueError(f"{where}: invalid spacing {spacing}")
    return Volume(array, spacing, tuple(float(o) for o in img.GetOrigin()), path,
                  tuple(float(d) for d in img.GetDirection()))


def write_nifti(path: str | Path, array: np.ndarray, spacing: tuple[float, ...],
                origin: tuple[float, ...] | None = None,
                direction: tuple[float, ...] | None = None) -> Path:
    """Write an array (axis order z, y, x) with a spacing in array order, atomically; origin and
    direction, if given, in SimpleITK order (as :class:`Volume` holds them)."""
    import SimpleITK as sitk

    from harness.io import atomic_path

    img = sitk.GetImageFromArray(array)
    img.SetSpacing(tuple(float(s) for s in reversed(spacing)))
    if origin is not None:
        img.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        img.SetDirection(tuple(float(d) for d in direction))
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), True)
    return Path(path)
