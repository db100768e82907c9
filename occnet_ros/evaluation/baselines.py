"""Baselines that a robot would use instead of the network, on the very same observed points.

* :func:`convex_hull`: the convex hull of the observed points (closed, convex; it can never fill the
  unseen back beyond the points, and it bridges concavities).
* :func:`poisson`: screened Poisson surface reconstruction (open3d) of the observed points, with
  normals estimated from ``k`` nearest neighbours and oriented towards the camera that saw each point,
  then density trimming (vertices supported by few samples are removed, so the surface is usually
  open, not watertight).

Both take points in the input frame (e.g. the first camera's optical frame, metres) and return a
``trimesh.Trimesh`` in that frame. Inputs they cannot handle (too few points, all points on a plane,
non-finite values, an empty result) raise :class:`BaselineError` with the reason; nothing is faked.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d
import trimesh
from scipy.spatial import ConvexHull, QhullError


class BaselineError(RuntimeError):
    """A baseline could not produce a mesh from this input (message says why)."""


@dataclass
class HullConfig:
    """``min_points``: fewer observed points than this is an error (at least 4 for a 3D hull)."""

    min_points: int = 4

    def validate(self) -> None:
        if self.min_points < 4:
            raise ValueError(f"min_points must be >= 4, got {self.min_points}")


@dataclass
class PoissonConfig:
    """Screened Poisson settings. ``depth``: octree depth (grid at most ``2**depth`` per axis);
    ``scale``: reconstruction cube / sample bounding cube; ``normal_knn``: neighbours for the normal
    estimate; ``density_quantile``: vertices whose Poisson density is below this quantile are removed
    (0 keeps the closed surface); ``min_points``: fewer points is an error; ``n_threads``: 1 keeps the
    result deterministic."""

    depth: int = 8
    scale: float = 1.1
    normal_knn: int = 20
    density_quantile: float = 0.05
    min_points: int = 30
    n_threads: int = 1

    def validate(self) -> None:
        if not 1 <= self.depth <= 12:
            raise ValueError(f"depth must be in [1, 12], got {self.depth}")
        if not 0.0 <= self.density_quantile < 1.0:
            raise ValueError(f"density_quantile must be in [0, 1), got {self.density_quantile}")
        if self.normal_knn < 3 or self.min_points < max(self.normal_knn, 4):
            raise ValueError("need normal_knn >= 3 and min_points >= max(normal_knn, 4)")
        if self.scale < 1.0:
            raise ValueError(f"scale must be >= 1, got {self.scale}")


def _check_points(points: np.ndarray, min_points: int, method: str) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise BaselineError(f"{method}: points must have shape (N, 3), got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise BaselineError(f"{method}: points contain NaN or inf")
    if p.shape[0] < min_points:
        raise BaselineError(f"{method}: needs at least {min_points} points, got {p.shape[0]}")
    return p


def convex_hull(points: np.ndarray, config: HullConfig | None = None) -> trimesh.Trimesh:
    """Convex hull of points (N, 3), input frame, metres -> closed mesh with outward normals, same frame.

    Raises BaselineError for fewer than ``min_points`` points or (nearly) coplanar points."""
    cfg = config or HullConfig()
    cfg.validate()
    p = _check_points(points, cfg.min_points, "convex hull")
    try:
        hull = ConvexHull(p)
    except QhullError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BaselineError(f"convex hull: points are degenerate (coplanar or collinear): {first}") from e
    if hull.volume <= 0:
        raise BaselineError("convex hull: zero volume")
    faces = hull.simplices.astype(np.int64)
    # orient every face outwards: its normal must point away from the hull's centroid
    tri = p[faces]
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    centroid = p[hull.vertices].mean(axis=0)
    flip = np.sum(normal * (tri[:, 0] - centroid), axis=1) < 0
    faces[flip] = faces[flip][:, ::-1]
    used, inverse = np.unique(faces, return_inverse=True)
    return trimesh.Trimesh(vertices=p[used], faces=inverse.reshape(-1, 3), process=False)


def estimate_oriented_normals(points: np.ndarray, viewpoints: np.ndarray, knn: int) -> np.ndarray:
    """Unit normals (N, 3) of points (N, 3) from a PCA of ``knn`` neighbours, flipped to face their
    sensor: ``viewpoints`` is (3,) (one camera) or (N, 3) (the camera that saw each point)."""
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(knn=knn))
    n = np.asarray(pcd.normals, dtype=np.float64)
    to_cam = np.broadcast_to(np.asarray(viewpoints, dtype=np.float64), points.shape) - points
    flip = np.sum(n * to_cam, axis=1) < 0
    n[flip] = -n[flip]
    return n


def poisson(points: np.ndarray, viewpoints: np.ndarray | tuple = (0.0, 0.0, 0.0),
            config: PoissonConfig | None = None) -> trimesh.Trimesh:
    """Screened Poisson reconstruction of points (N, 3), input frame, metres -> mesh, same frame.

    viewpoints: (3,) camera centre, or (N, 3) per-point camera centres (fused views), input frame.
    Raises BaselineError for too few / non-finite points or an empty result."""
    cfg = config or PoissonConfig()
    cfg.validate()
    p = _check_points(points, cfg.min_points, "poisson")
    vp = np.asarray(viewpoints, dtype=np.float64)
    if vp.shape not in ((3,), p.shape) or not np.all(np.isfinite(vp)):
        raise BaselineError(f"poisson: viewpoints must be (3,) or {p.shape} and finite, got {vp.shape}")
    if np.linalg.matrix_rank(p - p.mean(axis=0), tol=1e-9 * max(1.0, np.abs(p).max())) < 3:
        raise BaselineError("poisson: points are degenerate (coplanar or collinear)")
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
    pcd.normals = o3d.utility.Vector3dVector(estimate_oriented_normals(p, vp, cfg.normal_knn))
    with o3d.utility.VerbosityContextManager(o3d.utility.VerbosityLevel.Error):
        mesh, dens = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
            pcd, depth=cfg.depth, scale=cfg.scale, n_threads=cfg.n_threads)
    dens = np.asarray(dens)
    if cfg.density_quantile > 0 and dens.size:
        mesh.remove_vertices_by_mask(dens < np.quantile(dens, cfg.density_quantile))
    mesh.remove_unreferenced_vertices()
    v, f = np.asarray(mesh.vertices), np.asarray(mesh.triangles, dtype=np.int64)
    if len(f) == 0:
        raise BaselineError("poisson: reconstruction is empty")
    return trimesh.Trimesh(vertices=v, faces=f, process=False)
