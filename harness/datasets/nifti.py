"""The one NIfTI seam of the dataset code: SimpleITK (the reader nnU-Net v2 picks for ``.nii.gz``).

Axis order, stated once: a SimpleITK image is indexed (i, j, k) = (x, y, z) and its ``GetSize``,
``GetSpacing``, ``GetOrigin`` follow that order; ``GetArrayFromImage`` returns the numpy array in
the reverse order, (z, y, x). Here ``Geometry.size`` and ``Geometry.spacing`` are in SimpleITK
(x, y, z) order and ``Geometry.shape`` / ``Geometry.array_spacing`` in numpy array order, so a
spacing always travels with the axis order it belongs to (nnU-Net's ``SimpleITKIO`` reports
``spacing`` in array order too).

World coordinates are ITK's LPS (x to the patient's left, y posterior, z superior). Converted
datasets are reoriented to the closest LPS orientation (:func:`reorient_lps`): the direction
matrix becomes the identity for axis-aligned scans, only axes are permuted/flipped, no voxel is
resampled, and every voxel keeps its world position. This removes the KiTS19 quirk (slices on
the first array axis and a permuted affine) without changing the anatomy's geometry.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from harness.io import atomic_path

SPACING_ATOL = 1e-3     # mm; headers written by different tools round spacing differently
ORIGIN_ATOL = 1e-3      # mm
DIRECTION_ATOL = 1e-4   # cosines


@dataclass(frozen=True)
class Geometry:
    """Grid of an image in SimpleITK order: size, spacing (mm), origin (mm, LPS), direction (3x3)."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    components: int = 1

    @property
    def shape(self) -> tuple[int, ...]:
        """Numpy array shape (z, y, x)."""
        return tuple(reversed(self.size))

    @property
    def array_spacing(self) -> tuple[float, ...]:
        """Spacing per numpy array axis (z, y, x)."""
        return tuple(reversed(self.spacing))

    def differences(self, other: "Geometry") -> list[tuple[str, str, str]]:
        """``(field, self's value, other's value)`` for every field that disagrees beyond tolerance."""
        out = []
        if self.size != other.size:
            out.append(("shape", _fmt(self.shape), _fmt(other.shape)))
        checks = (("spacing", self.spacing, other.spacing, SPACING_ATOL),
                  ("origin", self.origin, other.origin, ORIGIN_ATOL),
                  ("direction", self.direction, other.direction, DIRECTION_ATOL))
        for name, a, b, atol in checks:
            if len(a) != len(b) or not np.allclose(a, b, rtol=1e-5, atol=atol):
                out.append((name, _fmt(a), _fmt(b)))
        return out


def _fmt(values) -> str:
    # "+ 0.0" turns -0.0 into 0.0 so that messages do not show "-0"
    return "(" + ", ".join(f"{v + 0.0:.6g}" if isinstance(v, float) else str(v) for v in values) + ")"


def geometry(img: sitk.Image) -> Geometry:
    return Geometry(size=tuple(img.GetSize()), spacing=tuple(img.GetSpacing()),
                    origin=tuple(img.GetOrigin()), direction=tuple(img.GetDirection()),
                    components=img.GetNumberOfComponentsPerPixel())


def read_geometry(path: str | os.PathLike) -> Geometry:
    """The header's geometry without reading the voxels (raises ``RuntimeError`` if unreadable)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return Geometry(size=tuple(reader.GetSize()), spacing=tuple(reader.GetSpacing()),
                    origin=tuple(reader.GetOrigin()), direction=tuple(reader.GetDirection()),
                    components=reader.GetNumberOfComponents())


def count_nonfinite(path: str | os.PathLike) -> int:
    """Number of NaN/Inf voxels stored in a NIfTI file (0 for integer data).

    SimpleITK's NIfTI reader turns NaN and Inf into 0 (verified with SimpleITK 2.5.7), so a check
    on its arrays cannot see them; nibabel reads the stored values unchanged, so it is used here,
    for this one question, and only when the stored type is floating point.
    """
    import nibabel as nib
    img = nib.load(str(path))
    if img.get_data_dtype().kind != "f":
        return 0
    return int(np.count_nonzero(~np.isfinite(np.asarray(img.dataobj.get_unscaled()))))


def read(path: str | os.PathLike) -> sitk.Image:
    """Read an image (raises ``RuntimeError`` from SimpleITK if unreadable)."""
    return sitk.ReadImage(str(path))


def to_array(img: sitk.Image) -> np.ndarray:
    """The voxels as a numpy array in (z, y, x) order (a copy)."""
    return sitk.GetArrayFromImage(img)


def from_array(arr: np.ndarray, like: sitk.Image | Geometry | None = None, *,
               spacing=None, origin=None, direction=None) -> sitk.Image:
    """An image from a (z, y, x) array; geometry copied from ``like`` or given in (x, y, z) order."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    if like is not None:
        geo = like if isinstance(like, Geometry) else geometry(like)
        if geo.shape != tuple(arr.shape):
            raise ValueError(f"array shape {arr.shape} does not match the geometry's {geo.shape}")
        spacing, origin, direction = (spacing or geo.spacing, origin or geo.origin,
                                      direction or geo.direction)
    if spacing is not None:
        img.SetSpacing(tuple(float(s) for s in spacing))
    if origin is not None:
        img.SetOrigin(tuple(float(o) for o in origin))
    if direction is not None:
        img.SetDirection(tuple(float(d) for d in np.asarray(direction).ravel()))
    return img


def with_geometry(img: sitk.Image, ref: sitk.Image) -> sitk.Image:
    """A copy of ``img`` with the spacing, origin and direction of ``ref`` (same size required)."""
    out = sitk.Image(img)
    out.CopyInformation(ref)
    return out


def reorient(img: sitk.Image, orientation: str) -> sitk.Image:
    """Permute/flip axes (no resampling) so that index axes run toward ``orientation``'s letters.

    DICOM-style letters, one per index axis (x, y, z): ``"LPS"`` gives the identity direction,
    ``"IPL"`` is KiTS19's on-disk layout, ``"RAS"`` flips x and y.
    """
    return sitk.DICOMOrient(img, orientation)


def reorient_lps(img: sitk.Image) -> sitk.Image:
    """Permute/flip axes so that index axes run toward L, P, S (identity direction if axis-aligned)."""
    if np.allclose(img.GetDirection(), np.eye(img.GetDimension()).ravel()):
        return img
    return reorient(img, "LPS")


def write(img: sitk.Image, path: str | os.PathLike, compression_level: int = 1) -> Path:
    """Write ``img`` atomically as (gzipped) NIfTI; level 1 is fast and nearly as small as 6."""
    with atomic_path(path) as tmp:
        sitk.WriteImage(img, str(tmp), True, compression_level)
    return Path(path)


def voxel_world_coordinates(img: sitk.Image, index_xyz: np.ndarray) -> np.ndarray:
    """World (LPS, mm) coordinates of integer voxel indices given as rows of (i, j, k)."""
    d = np.asarray(img.GetDirection()).reshape(img.GetDimension(), img.GetDimension())
    s = np.asarray(img.GetSpacing())
    o = np.asarray(img.GetOrigin())
    return o + (np.asarray(index_xyz, dtype=float) * s) @ d.T
