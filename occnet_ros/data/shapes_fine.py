"""Shape pieces for thin-walled and large procedural objects: a plan-rounded prism, a uniform scaling, a
thin shell profile for solids of revolution, and :class:`FineShape`, whose mesh resolves its thinnest wall.

All lengths are metres in the object frame (z up, the table is z = 0). Every ``sdf`` here is a distance
*bound*: its sign is exact and its magnitude never exceeds the true distance to the surface, which is what
the narrow-band meshing of :class:`FineShape` relies on (the primitives of
:mod:`occnet_ros.data.shapes_sdf` and their unions, differences and rigid moves all have that property).
"""
from __future__ import annotations

import numpy as np
import trimesh
from skimage import measure

from occnet_ros.data.shapes_sdf import Shape

__all__ = ["RoundedPrism", "Scaled", "FineShape", "shell_profile", "MAX_MESH_CELLS"]

MAX_MESH_CELLS = 512
"""Largest number of marching-cubes cells along the longest side of a :class:`FineShape` mesh."""
_BLOCK = 8  # cells per side of a narrow-band block


class RoundedPrism(Shape):
    """Vertical prism over a rectangle with rounded corners (in plan only): ``|x - cx| <= hx``,
    ``|y - cy| <= hy`` with corner arcs of radius ``corner`` (0 <= corner <= min(hx, hy)), for
    ``z0 <= z <= z1``. Exact signed distance."""

    def __init__(self, center_xy, half_xy, corner: float, z0: float, z1: float):
        self.center = np.asarray(center_xy, dtype=np.float64).reshape(2)
        self.half = np.asarray(half_xy, dtype=np.float64).reshape(2)
        self.corner, self.z0, self.z1 = float(corner), float(z0), float(z1)
        if np.any(self.half <= 0) or not 0.0 <= self.corner <= self.half.min():
            raise ValueError(f"RoundedPrism needs half_xy > 0 and 0 <= corner <= min(half_xy), got "
                             f"half_xy={self.half}, corner={self.corner}")
        if not self.z1 > self.z0:
            raise ValueError(f"RoundedPrism needs z1 > z0, got z0={self.z0}, z1={self.z1}")

    def _sdf(self, p):
        q = np.abs(p[:, :2] - self.center) - (self.half - self.corner)
        d2 = np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0) - self.corner
        dz = np.abs(p[:, 2] - 0.5 * (self.z0 + self.z1)) - 0.5 * (self.z1 - self.z0)
        return np.hypot(np.maximum(d2, 0.0), np.maximum(dz, 0.0)) + np.minimum(np.maximum(d2, dz), 0.0)

    @property
    def bounds(self):
        return np.array([[*(self.center - self.half), self.z0], [*(self.center + self.half), self.z1]])


class Scaled(Shape):
    """``shape`` scaled uniformly by ``factor`` > 0 about the origin (an object resting on z = 0 still
    does); the distance scales with it."""

    def __init__(self, shape: Shape, factor: float):
        if not factor > 0:
            raise ValueError(f"scale factor must be > 0, got {factor}")
        self.shape, self.factor = shape, float(factor)

    def _sdf(self, p):
        return self.factor * self.shape._sdf(p / self.factor)

    @property
    def bounds(self):
        return self.factor * self.shape.bounds


def shell_profile(centre: np.ndarray, thickness: float) -> np.ndarray:
    """Profile (rho, z) of a thin shell of revolution for :class:`~occnet_ros.data.shapes_sdf.Revolution`.

    centre: (M, 2) centre line of the wall, metres, starting on the axis (rho = 0) with a horizontal first
        segment (the floor) and ending at the rim; its radius of curvature must exceed ``thickness / 2``.
    thickness: wall thickness, metres, measured along the normal (mitred corners keep it at every vertex).
    Returns the closed polygon: the side below/outside the centre line from the axis to the rim, a
    half-round cap over the rim, the side above/inside back to the axis.
    """
    c = np.asarray(centre, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2 or len(c) < 2 or c[0, 0] != 0.0 or c[1, 1] != c[0, 1]:
        raise ValueError("shell centre line must be (M >= 2, 2), start on the axis with a horizontal segment")
    seg = np.diff(c, axis=0)
    length = np.linalg.norm(seg, axis=1)
    if np.any(length <= 0):
        raise ValueError("shell centre line has repeated points")
    tang = seg / length[:, None]
    seg_n = np.stack([tang[:, 1], -tang[:, 0]], axis=1)  # right of the direction of travel: below/outside
    n = np.concatenate([seg_n[:1], seg_n[:-1] + seg_n[1:], seg_n[-1:]])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    cos_half = np.ones(len(c))
    cos_half[1:-1] = np.einsum("ij,ij->i", n[1:-1], seg_n[1:])
    if np.any(cos_half < 0.5):
        raise ValueError("shell centre line turns by more than 120 degrees at a vertex")
    off = 0.5 * thickness * n / cos_half[:, None]
    outer, inner = c + off, c - off
    a0 = np.arctan2(n[-1, 1], n[-1, 0])
    cap_a = a0 + np.linspace(0.0, np.pi, 9)[1:-1]  # from the outer side over the tip to the inner side
    cap = c[-1] + 0.5 * thickness * np.stack([np.cos(cap_a), np.sin(cap_a)], axis=1)
    prof = np.concatenate([outer, cap, inner[::-1]])
    prof[0, 0] = prof[-1, 0] = 0.0
    if np.any(prof[:, 0] < 0):
        raise ValueError("shell profile crosses the axis")
    return prof


class FineShape(Shape):
    """A shape whose mesh resolves walls of ``min_feature`` metres: ``mesh(resolution)`` uses at least
    ``resolution`` cells along the longest side, and cells no larger than ``min_feature / 1.5`` (at most
    :data:`MAX_MESH_CELLS` along the longest side), evaluated only near the surface. ``contains`` and
    ``sdf`` are those of ``shape`` (exact labels); ``family`` is set by the sampler."""

    def __init__(self, shape: Shape, min_feature: float):
        if not min_feature > 0:
            raise ValueError(f"min_feature must be > 0, got {min_feature}")
        self.shape, self.min_feature = shape, float(min_feature)

    def _sdf(self, p):
        return self.shape._sdf(p)

    @property
    def bounds(self):
        return self.shape.bounds

    def voxel_size(self, resolution: int) -> float:
        """Marching-cubes cell edge, metres, of ``mesh(resolution)``."""
        extent = float(np.max(np.diff(self.bounds, axis=0)))
        return max(min(extent / resolution, self.min_feature / 1.5), extent / MAX_MESH_CELLS)

    def mesh(self, resolution: int = 64) -> trimesh.Trimesh:
        """Watertight marching-cubes mesh of the zero level set, metres, object frame; see the class."""
        if resolution < 8:
            raise ValueError(f"mesh resolution must be >= 8, got {resolution}")
        lo, hi = self.bounds
        h = self.voxel_size(resolution)
        lo = lo - 2.0371 * h  # off-grid, as Shape.mesh: no grid node exactly on a flat face
        n_blocks = np.ceil((hi + 2 * h - lo) / (_BLOCK * h)).astype(int)
        n = n_blocks * _BLOCK + 1  # grid nodes per axis
        # coarse pass: the distance bound at each block centre; blocks farther from the surface than
        # their half diagonal hold no surface and one sign
        axes_c = [lo[i] + _BLOCK * h * (np.arange(n_blocks[i]) + 0.5) for i in range(3)]
        centres = np.stack(np.meshgrid(*axes_c, indexing="ij"), axis=-1).reshape(-1, 3)
        coarse = self.sdf(centres).reshape(tuple(n_blocks)).astype(np.float32)
        active = np.abs(coarse) <= 0.5 * np.sqrt(3.0) * _BLOCK * h * (1 + 1e-6)
        values = np.repeat(np.repeat(np.repeat(coarse, _BLOCK, 0), _BLOCK, 1), _BLOCK, 2)
        values = np.pad(values, ((0, 1), (0, 1), (0, 1)), mode="edge")
        # fine pass: every node of an active block (its faces included), each node once
        node_mask = np.zeros(tuple(n), dtype=bool)
        for b in np.argwhere(active):
            s = b * _BLOCK
            node_mask[s[0]:s[0] + _BLOCK + 1, s[1]:s[1] + _BLOCK + 1, s[2]:s[2] + _BLOCK + 1] = True
        idx = np.argwhere(node_mask)
        values[tuple(idx.T)] = self.sdf(lo + h * idx).astype(np.float32)
        verts, faces, _, _ = measure.marching_cubes(values, level=0.0, spacing=(h,) * 3)
        m = trimesh.Trimesh(verts + lo, faces, process=False)
        if m.volume < 0:
            m.invert()
        return m
