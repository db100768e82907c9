"""A per-object cached occupancy-probability grid: fast approximate queries without the network.

MISE leaves a full corner grid of probabilities behind (:func:`occnet_ros.reconstruction.mise.mise_values`); keeping it
lets a query be answered by trilinear interpolation (tens of millions of points per second on one
core) instead of a network pass.

Exactness, stated: with ``R`` cells per axis over ``[-box_half, box_half]^3`` (cell edge
``2 * box_half / R`` canonical units, 0.86 % of the box edge at R = 128):

* at a corner the network evaluated, the grid holds the network's probability (float32);
* MISE evaluates every corner of every finest-level cell that the surface crosses (as the coarser
  levels see it), so near the surface the grid is the full-resolution field; corners MISE skipped hold
  values interpolated from coarser levels, where MISE assumed the cell has no surface;
* between corners the answer is the trilinear interpolation, so ``grid >= threshold`` agrees with the
  marching-cubes mesh of the same grid along grid edges (and within a cell up to the difference between
  trilinear and marching-cubes interpolation); it is not the network value there;
* points outside the box get 0, as in the exact query.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occnet_ros.geometry import all_columns

BOX_TOLERANCE = 1e-5
"""Relative slack of the box test (same as the exact query): points within it count as inside."""


@dataclass(frozen=True)
class OccupancyGrid:
    """``values``: (R+1, R+1, R+1) float32 probabilities at the corners ``-box_half + i * 2 * box_half / R``
    (index order x, y, z; canonical frame). ``box_half``: half edge of the box, canonical units."""

    values: np.ndarray
    box_half: float

    def __post_init__(self):
        v = self.values
        if v.ndim != 3 or len(set(v.shape)) != 1 or v.shape[0] < 2:
            raise ValueError(f"values must be a cubic (R+1)^3 grid with R >= 1, got {v.shape}")
        if v.dtype != np.float32 or not v.flags.c_contiguous:
            object.__setattr__(self, "values", np.ascontiguousarray(v, dtype=np.float32))
        if not self.box_half > 0:
            raise ValueError(f"box_half must be > 0, got {self.box_half}")

    @property
    def resolution(self) -> int:
        """R, the number of cells per axis."""
        return self.values.shape[0] - 1

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)

    def interpolate(self, points: np.ndarray) -> np.ndarray:
        """points (M, 3) canonical -> (M,) float32 trilinear probabilities; 0 outside the box and for
        non-finite points."""
        p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
        out = np.zeros(p.shape[0], dtype=np.float32)
        lim = self.box_half * (1.0 + BOX_TOLERANCE)
        with np.errstate(invalid="ignore"):
            inside = all_columns(np.abs(p) <= lim)
        idx = np.flatnonzero(inside)
        if idx.size == 0:
            return out
        r = self.resolution
        n = r + 1
        u = (p[idx] + np.float32(self.box_half)) * np.float32(r / (2.0 * self.box_half))
        np.clip(u, 0.0, float(r), out=u)
        i0 = np.minimum(u.astype(np.int64), r - 1)  # lower corner; u = R falls in the last cell
        f = u - i0.astype(np.float32)
        fx, fy, fz = f[:, 0], f[:, 1], f[:, 2]
        base = (i0[:, 0] * n + i0[:, 1]) * n + i0[:, 2]
        flat = self.values.reshape(-1)

        def lerp_z(b: np.ndarray) -> np.ndarray:
            v0 = flat[b]
            return v0 + fz * (flat[b + 1] - v0)

        y0 = lerp_z(base)
        y0 += fy * (lerp_z(base + n) - y0)
        y1 = lerp_z(base + n * n)
        y1 += fy * (lerp_z(base + n * n + n) - y1)
        out[idx] = y0 + fx * (y1 - y0)
        return out
