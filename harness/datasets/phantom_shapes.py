"""Geometry primitives for the phantoms: a voxel grid in millimetres, blobs, tubes, smooth fields.

Everything is evaluated at physical positions (mm, relative to the centre of the field of view),
so the same anatomy description gives the same shapes at any spacing. The grid can sample each
slice at several positions along z (``sub``): averaging the intensities of those sub-slices gives
the partial-volume blur of a thick slice, while the label is taken at the slice centre.

Axis order is numpy's (z, y, x); world axes follow ITK's LPS (x to the patient's left,
y posterior, z superior).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Grid:
    """Voxel centres of a (nz, ny, nx) volume with ``sub`` samples per slice along z."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]   # (z, y, x) mm
    sub: int = 1

    def __post_init__(self):
        nz, ny, nx = self.shape
        sz, sy, sx = self.spacing
        zc = (np.arange(nz) - (nz - 1) / 2) * sz
        offsets = ((np.arange(self.sub) + 0.5) / self.sub - 0.5) * sz
        self.z = (zc[:, None] + offsets[None, :]).ravel()          # (nz * sub,)
        self.y = (np.arange(ny) - (ny - 1) / 2) * sy
        self.x = (np.arange(nx) - (nx - 1) / 2) * sx
        self.fine_shape = (nz * self.sub, ny, nx)

    @property
    def extent(self) -> np.ndarray:
        """Half the field of view per axis (z, y, x) in mm."""
        return np.array(self.shape) * np.array(self.spacing) / 2

    def window(self, centre, half):
        """Index slices and coordinates (z, y, x) of the fine grid within ``centre +- half`` (mm)."""
        out = []
        for axis, c, h in zip((self.z, self.y, self.x), centre, half):
            lo = np.searchsorted(axis, c - h, side="left")
            hi = np.searchsorted(axis, c + h, side="right")
            out.append((slice(lo, hi), axis[lo:hi]))
        return out


def rotation(angles) -> np.ndarray:
    """Rotation matrix from three small angles (radians) about z, y, x (applied in (z, y, x) order)."""
    a, b, c = angles
    rz = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rx = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass
class Wobble:
    """A smooth radial perturbation that depends on direction only (so scaled copies nest)."""

    amps: np.ndarray      # (k,)
    freqs: np.ndarray     # (k, 3)
    phases: np.ndarray    # (k,)

    @classmethod
    def random(cls, rng: np.random.Generator, amplitude: float, terms: int = 4) -> "Wobble":
        dirs = rng.normal(size=(terms, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        return cls(amps=rng.uniform(0.3, 1.0, terms) * amplitude / np.sqrt(terms),
                   freqs=dirs * rng.uniform(1.5, 3.5, (terms, 1)),
                   phases=rng.uniform(0, 2 * np.pi, terms))

    def radius(self, unit: list[np.ndarray]) -> np.ndarray:
        f32 = np.float32
        r = np.ones(np.broadcast_shapes(*(u.shape for u in unit)), f32)
        for a, f, p in zip(self.amps, self.freqs, self.phases):
            r += f32(a) * np.sin(f32(f[0]) * unit[0] + f32(f[1]) * unit[1] + f32(f[2]) * unit[2] + f32(p))
        return r

    @property
    def max_amplitude(self) -> float:
        return float(np.abs(self.amps).sum())


def blob_ratio(grid: Grid, centre, radii, rot=None, wobble: Wobble | None = None, reach: float = 1.0):
    """Index slices and the field |q| / r(direction) of a perturbed ellipsoid (inside where < 1).

    Thresholding the same field at several levels gives nested copies of the shape, scaled about
    its centre, for the cost of one evaluation; ``reach`` is the largest level needed.
    """
    radii = np.asarray(radii, np.float64)
    extent = radii.max() * reach * (1 + (wobble.max_amplitude if wobble else 0)) + 1e-6
    (sz, z), (sy, y), (sx, x) = grid.window(centre, (extent,) * 3)
    if min(len(z), len(y), len(x)) == 0:
        return (sz, sy, sx), np.full((len(z), len(y), len(x)), np.inf, np.float32)
    f32 = np.float32
    d = [(z - centre[0]).astype(f32)[:, None, None], (y - centre[1]).astype(f32)[None, :, None],
         (x - centre[2]).astype(f32)[None, None, :]]
    r = np.eye(3) if rot is None else np.asarray(rot)
    q = [(f32(r[0, i]) * d[0] + f32(r[1, i]) * d[1] + f32(r[2, i]) * d[2]) / f32(radii[i]) for i in range(3)]
    norm = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2])
    if wobble is None:
        return (sz, sy, sx), norm
    inv = 1.0 / np.maximum(norm, f32(1e-6))
    return (sz, sy, sx), norm / wobble.radius([q[0] * inv, q[1] * inv, q[2] * inv])


def blob(grid: Grid, centre, radii, rot=None, wobble: Wobble | None = None, scale: float = 1.0):
    """Mask of a perturbed ellipsoid: returns (index slices, bool mask) on the fine grid.

    ``centre`` and ``radii`` are (z, y, x) mm; ``scale`` shrinks/grows the shape about its centre
    (shapes with the same wobble and a smaller scale lie inside).
    """
    region, ratio = blob_ratio(grid, centre, radii, rot, wobble, reach=scale)
    return region, ratio < scale


def tube(grid: Grid, points, radii):
    """Mask of a tube along a polyline (points (n, 3) in (z, y, x) mm, radius per point)."""
    pts = np.asarray(points, float)
    rad = np.broadcast_to(np.asarray(radii, float), (len(pts),))
    lo, hi = pts.min(0) - rad.max(), pts.max(0) + rad.max()
    (sz, z), (sy, y), (sx, x) = grid.window((lo + hi) / 2, (hi - lo) / 2)
    shape = (len(z), len(y), len(x))
    if min(shape) == 0:
        return (sz, sy, sx), np.zeros(shape, bool)
    p = [z[:, None, None], y[None, :, None], x[None, None, :]]
    best = np.full(shape, np.inf)
    for a, b, ra, rb in zip(pts[:-1], pts[1:], rad[:-1], rad[1:]):
        ab = b - a
        t = ((p[0] - a[0]) * ab[0] + (p[1] - a[1]) * ab[1] + (p[2] - a[2]) * ab[2]) / max(ab @ ab, 1e-9)
        t = np.clip(t, 0.0, 1.0)
        dist = np.sqrt(sum((p[i] - a[i] - t * ab[i]) ** 2 for i in range(3)))
        np.minimum(best, dist - (ra + t * (rb - ra)), out=best)
    return (sz, sy, sx), best < 0


def smooth_field(shape, spacing, rng: np.random.Generator, wavelength=(40.0, 120.0),
                 terms: int = 6) -> np.ndarray:
    """A smooth random field (zero mean, about unit amplitude) from separable low-frequency cosines."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    field = np.zeros(shape, np.float32)
    for _ in range(terms):
        parts = []
        for ax in axes:
            k = 2 * np.pi / rng.uniform(*wavelength)
            parts.append(np.cos(k * ax + rng.uniform(0, 2 * np.pi)).astype(np.float32))
        field += rng.uniform(0.5, 1.0) * parts[0][:, None, None] * parts[1][None, :, None] * parts[2][None, None, :]
    return field * np.float32(np.sqrt(2.0 / terms) * 2)


def paint(volume: np.ndarray, region, mask: np.ndarray, value: int, under=None) -> None:
    """Set ``volume[region][mask] = value``; with ``under`` only where the volume holds those values."""
    view = volume[region]
    if under is not None:
        mask = mask & np.isin(view, under)
    view[mask] = value
