"""Signed-distance building blocks for procedural shapes: primitives, solids of revolution, extrusions,
and constructive solid geometry (CSG).

All coordinates are metres in the object frame (z up, the table is z = 0). ``sdf(points)`` takes
(N, 3) float64 and returns (N,) float64, negative inside. For primitives and polygonal solids the value
is the exact Euclidean distance; for CSG combinations it is the usual min/max bound (its sign, and so
``contains``, is exact in every case).
"""
from __future__ import annotations

import numpy as np
import trimesh
from skimage import measure

_CHUNK = 32768


def _as_points(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {p.shape}")
    return p


class Shape:
    """A solid defined by a signed distance function; subclasses implement ``_sdf`` and ``bounds``."""

    def _sdf(self, p: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def bounds(self) -> np.ndarray:  # pragma: no cover - abstract
        """(2, 3) float64 [min corner, max corner], metres; contains the whole solid."""
        raise NotImplementedError

    def sdf(self, points: np.ndarray) -> np.ndarray:
        """points: (N, 3) metres, object frame -> (N,) float64 signed distance (bound), negative inside."""
        p = _as_points(points)
        if len(p) <= _CHUNK:
            return self._sdf(p)
        return np.concatenate([self._sdf(p[i:i + _CHUNK]) for i in range(0, len(p), _CHUNK)])

    def contains(self, points: np.ndarray) -> np.ndarray:
        """points: (N, 3) float64 metres, object frame (z up) -> (N,) bool, True strictly inside."""
        return self.sdf(points) < 0.0

    def mesh(self, resolution: int = 64) -> trimesh.Trimesh:
        """Watertight triangle mesh of the zero level set (marching cubes), metres, object frame.

        resolution: number of grid cells along the longest side of ``bounds``.
        """
        if resolution < 8:
            raise ValueError(f"mesh resolution must be >= 8, got {resolution}")
        lo, hi = self.bounds
        voxel = float(np.max(hi - lo)) / resolution
        # an off-grid offset keeps grid nodes off flat faces (exact zeros make degenerate triangles)
        lo = lo - 2.0371 * voxel
        n = np.ceil((hi + 2 * voxel - lo) / voxel).astype(int) + 1
        axes = [lo[i] + voxel * np.arange(n[i]) for i in range(3)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        values = self.sdf(grid).reshape(tuple(n))
        verts, faces, _, _ = measure.marching_cubes(values, level=0.0, spacing=(voxel,) * 3)
        # marching cubes already shares vertices between faces; trimesh's vertex merging would fuse
        # nearly coincident vertices of tiny triangles and open the surface, so do not process
        m = trimesh.Trimesh(verts + lo, faces, process=False)
        if m.volume < 0:
            m.invert()
        return m


class Sphere(Shape):
    def __init__(self, center, radius: float):
        self.center = np.asarray(center, dtype=np.float64)
        self.radius = float(radius)

    def _sdf(self, p):
        return np.linalg.norm(p - self.center, axis=1) - self.radius

    @property
    def bounds(self):
        return np.stack([self.center - self.radius, self.center + self.radius])


class Ellipsoid(Shape):
    """Axis-aligned ellipsoid; the value is a distance bound, the sign is exact."""

    def __init__(self, center, radii):
        self.center = np.asarray(center, dtype=np.float64)
        self.radii = np.asarray(radii, dtype=np.float64)

    def _sdf(self, p):
        q = p - self.center
        k0 = np.linalg.norm(q / self.radii, axis=1)
        k1 = np.maximum(np.linalg.norm(q / self.radii**2, axis=1), 1e-12)
        return k0 * (k0 - 1.0) / k1

    @property
    def bounds(self):
        return np.stack([self.center - self.radii, self.center + self.radii])


class Box(Shape):
    """Axis-aligned box with optional rounded edges (``rounding`` metres <= smallest half extent)."""

    def __init__(self, center, half_extents, rounding: float = 0.0):
        self.center = np.asarray(center, dtype=np.float64)
        self.half = np.asarray(half_extents, dtype=np.float64)
        self.rounding = float(rounding)
        if self.rounding < 0 or self.rounding > self.half.min():
            raise ValueError("rounding must be in [0, smallest half extent]")

    def _sdf(self, p):
        q = np.abs(p - self.center) - (self.half - self.rounding)
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        inside = np.minimum(q.max(axis=1), 0.0)
        return outside + inside - self.rounding

    @property
    def bounds(self):
        return np.stack([self.center - self.half, self.center + self.half])


class Torus(Shape):
    """Torus with axis ``axis`` (0, 1 or 2) through ``center``; major radius R, minor radius r."""

    def __init__(self, center, major: float, minor: float, axis: int = 2):
        self.center = np.asarray(center, dtype=np.float64)
        self.major, self.minor, self.axis = float(major), float(minor), int(axis)

    def _sdf(self, p):
        q = p - self.center
        a = q[:, self.axis]
        rho = np.linalg.norm(np.delete(q, self.axis, axis=1), axis=1)
        return np.hypot(rho - self.major, a) - self.minor

    @property
    def bounds(self):
        ext = np.full(3, self.major + self.minor)
        ext[self.axis] = self.minor
        return np.stack([self.center - ext, self.center + ext])


def polygon_sdf_2d(q: np.ndarray, verts: np.ndarray, closed: bool = True) -> np.ndarray:
    """Signed distance from 2D points to a simple polygon (even-odd rule), negative inside.

    q: (N, 2); verts: (M, 2) polygon vertices in order. With ``closed=False`` the edge from the last
    vertex back to the first is left out of both the distance and the crossing test (used for
    solids of revolution, where that edge is the axis).
    """
    a = verts
    b = np.roll(verts, -1, axis=0)
    if not closed:
        a, b = a[:-1], b[:-1]
    e = b - a  # (M, 2)
    w = q[:, None, :] - a[None, :, :]  # (N, M, 2)
    ee = np.maximum((e * e).sum(axis=1), 1e-30)
    t = np.clip((w * e[None]).sum(axis=2) / ee[None], 0.0, 1.0)
    d = w - t[..., None] * e[None]
    dist = np.sqrt((d * d).sum(axis=2).min(axis=1))
    # crossing number with a ray towards +x
    y = q[:, 1:2]
    cond = (a[None, :, 1] > y) != (b[None, :, 1] > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = a[None, :, 0] + (y - a[None, :, 1]) * e[None, :, 0] / e[None, :, 1]
    crossings = np.sum(cond & (q[:, 0:1] < x_cross), axis=1)
    inside = (crossings % 2) == 1
    return np.where(inside, -dist, dist)


class Revolution(Shape):
    """Solid of revolution about the vertical axis through (cx, cy).

    ``profile``: (M, 2) polyline (rho, z) in metres, rho >= 0, starting and ending on the axis
    (rho = 0); the solid is the region it encloses together with the axis, swept around the axis.
    Hollow objects (cups) are profiles that go up the outside, over the rim and down the inside.
    """

    def __init__(self, profile, cx: float = 0.0, cy: float = 0.0):
        prof = np.asarray(profile, dtype=np.float64)
        if prof.ndim != 2 or prof.shape[1] != 2 or len(prof) < 3:
            raise ValueError("profile must be (M>=3, 2)")
        if prof[0, 0] != 0.0 or prof[-1, 0] != 0.0 or np.any(prof[:, 0] < 0):
            raise ValueError("profile must start and end on the axis (rho = 0) with rho >= 0")
        self.profile = prof
        self.cx, self.cy = float(cx), float(cy)

    def _sdf(self, p):
        rho = np.hypot(p[:, 0] - self.cx, p[:, 1] - self.cy)
        return polygon_sdf_2d(np.stack([rho, p[:, 2]], axis=1), self.profile, closed=False)

    @property
    def bounds(self):
        r = self.profile[:, 0].max()
        z = self.profile[:, 1]
        return np.array([[self.cx - r, self.cy - r, z.min()], [self.cx + r, self.cy + r, z.max()]])


class Extrusion(Shape):
    """Vertical prism: a simple 2D polygon (x, y) extruded over z in [z0, z1]."""

    def __init__(self, polygon, z0: float, z1: float):
        self.polygon = np.asarray(polygon, dtype=np.float64)
        self.z0, self.z1 = float(z0), float(z1)
        if self.polygon.ndim != 2 or self.polygon.shape[1] != 2 or len(self.polygon) < 3:
            raise ValueError("polygon must be (M>=3, 2)")
        if not self.z1 > self.z0:
            raise ValueError("extrusion needs z1 > z0")

    def _sdf(self, p):
        d2 = polygon_sdf_2d(p[:, :2], self.polygon)
        dz = np.abs(p[:, 2] - 0.5 * (self.z0 + self.z1)) - 0.5 * (self.z1 - self.z0)
        outside = np.hypot(np.maximum(d2, 0.0), np.maximum(dz, 0.0))
        return outside + np.minimum(np.maximum(d2, dz), 0.0)

    @property
    def bounds(self):
        lo, hi = self.polygon.min(axis=0), self.polygon.max(axis=0)
        return np.array([[lo[0], lo[1], self.z0], [hi[0], hi[1], self.z1]])


class Transformed(Shape):
    """``shape`` moved by a rigid transform: world = rotation @ local + translation."""

    def __init__(self, shape: Shape, rotation, translation):
        self.shape = shape
        self.rotation = np.asarray(rotation, dtype=np.float64)
        self.translation = np.asarray(translation, dtype=np.float64)

    def _sdf(self, p):
        return self.shape._sdf((p - self.translation) @ self.rotation)

    @property
    def bounds(self):
        lo, hi = self.shape.bounds
        corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1).T
        w = corners @ self.rotation.T + self.translation
        return np.stack([w.min(axis=0), w.max(axis=0)])


class Union(Shape):
    def __init__(self, *parts: Shape):
        if not parts:
            raise ValueError("Union needs at least one part")
        self.parts = parts

    def _sdf(self, p):
        return np.min([s._sdf(p) for s in self.parts], axis=0)

    @property
    def bounds(self):
        b = np.stack([s.bounds for s in self.parts])
        return np.stack([b[:, 0].min(axis=0), b[:, 1].max(axis=0)])


class Difference(Shape):
    """``a`` with ``b`` cut away."""

    def __init__(self, a: Shape, b: Shape):
        self.a, self.b = a, b

    def _sdf(self, p):
        return np.maximum(self.a._sdf(p), -self.b._sdf(p))

    @property
    def bounds(self):
        return self.a.bounds


class Intersection(Shape):
    def __init__(self, a: Shape, b: Shape):
        self.a, self.b = a, b

    def _sdf(self, p):
        return np.maximum(self.a._sdf(p), self.b._sdf(p))

    @property
    def bounds(self):
        ba, bb = self.a.bounds, self.b.bounds
        return np.stack([np.maximum(ba[0], bb[0]), np.minimum(ba[1], bb[1])])


def rotation_x(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)
