"""Generation of training samples: one object -> several partial views -> canonical inputs and labelled
queries. Used by :mod:`occnet_ros.data.dataset` (configuration, caching, batching).

Every sample is one view of one object:

* ``inputs``: (n_input_points, 3) canonical units, the observed (noisy, partial, segmented) depth points
  normalised by :func:`occnet_ros.normalization.canonical_frame_from_observation` (the ONE normalisation);
* ``queries``: (n_query_uniform + n_query_near_surface, 3) canonical units: first uniform in the box
  ``[-BOX_HALF, BOX_HALF]^3``, then near the full true surface (Gaussian offsets, sigma in canonical units);
* ``occupancies``: (n_queries,) bool, exact inside labels of the float16-rounded query coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from occnet_ros.data.mesh_sources import load_training_mesh, make_watertight, mesh_contains
from occnet_ros.data.shapes import FAMILIES, sample_shape
from occnet_ros.data.virtual_camera import ObjectScene, observe, sample_tabletop_pose
from occnet_ros.normalization import BOX_HALF, NormalizationError, canonical_frame_from_observation

FAMILY_CODES = sorted(FAMILIES) + ["random_urdf"]
"""Index -> family name of the ``family`` array of a dataset."""

MAX_VIEW_TRIES = 6


@dataclass
class GenStats:
    """Counters of one generation run."""

    objects: int = 0
    mesh_objects: int = 0
    meshes_repaired: int = 0
    meshes_skipped: int = 0
    views: int = 0
    views_failed: int = 0

    def as_array(self) -> np.ndarray:
        return np.array([self.objects, self.mesh_objects, self.meshes_repaired, self.meshes_skipped,
                         self.views, self.views_failed], dtype=np.int64)

    @staticmethod
    def from_array(a: np.ndarray) -> "GenStats":
        return GenStats(*[int(v) for v in a])

    def add(self, other: "GenStats") -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))


@dataclass
class ObjectSamples:
    """All samples of one object (V views)."""

    inputs: np.ndarray          # (V, n_in, 3) float16
    queries: np.ndarray         # (V, n_q, 3) float16
    occupancies: np.ndarray     # (V, n_q) bool
    frame_scale: np.ndarray     # (V,) float32 metres per canonical unit
    family: int
    stats: GenStats = field(default_factory=GenStats)


def sample_surface(mesh: trimesh.Trimesh, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) float64 points uniform on the surface of ``mesh`` (area-weighted), deterministic in rng."""
    tri = np.asarray(mesh.triangles)
    area = np.asarray(mesh.area_faces, dtype=np.float64)
    f = rng.choice(len(tri), size=n, p=area / area.sum())
    a, b = rng.random((2, n))
    flip = a + b > 1
    a[flip], b[flip] = 1 - a[flip], 1 - b[flip]
    t = tri[f]
    return t[:, 0] + a[:, None] * (t[:, 1] - t[:, 0]) + b[:, None] * (t[:, 2] - t[:, 0])


def _mesh_object(cfg, rng, mesh_paths, stats: GenStats):
    """A random_urdfs object: random orientation, rescaled to a tabletop size; None if unusable."""
    path, scale = mesh_paths[int(rng.integers(len(mesh_paths)))]
    rot = Rotation.random(random_state=rng).as_matrix()
    mesh = load_training_mesh(path, scale, rot)
    size = rng.uniform(*cfg.mesh_size_range)
    mesh.apply_scale(size / float(mesh.extents.max()))
    stats.mesh_objects += 1
    fixed = make_watertight(mesh)
    if fixed is None:
        stats.meshes_skipped += 1
        return None
    if fixed is not mesh:
        stats.meshes_repaired += 1
    return fixed


def generate_object(cfg, rng: np.random.Generator, mesh_paths: list) -> ObjectSamples:
    """Generate the ``cfg.views_per_object`` samples of one random object (``cfg``: DataConfig).

    mesh_paths: (path, scale) training meshes to draw from with probability ``cfg.mesh_fraction``.
    Views with fewer than ``cfg.min_view_points`` points are re-drawn (at most MAX_VIEW_TRIES times,
    then dropped, so V may be smaller than views_per_object).
    """
    stats = GenStats(objects=1)
    mesh, contains, family = None, None, None
    if mesh_paths and rng.random() < cfg.mesh_fraction:
        mesh = _mesh_object(cfg, rng, mesh_paths, stats)
        if mesh is not None:
            family = FAMILY_CODES.index("random_urdf")
            contains = lambda p, m=mesh: mesh_contains(m, p)  # noqa: E731
    if mesh is None:
        shape = sample_shape(rng)
        mesh = shape.mesh(cfg.mesh_resolution)
        contains, family = shape.contains, FAMILY_CODES.index(shape.family)
    scene = ObjectScene(mesh, table=cfg.table)
    lo, hi = mesh.bounds
    n_u, n_s = cfg.n_query_uniform, cfg.n_query_near_surface
    surface = sample_surface(mesh, n_s * cfg.views_per_object, rng)
    sigmas = np.repeat(np.asarray(cfg.near_surface_sigmas, dtype=np.float64),
                       -(-n_s // len(cfg.near_surface_sigmas)))[:n_s]
    inputs, queries, world_queries, scales = [], [], [], []
    intr = cfg.camera
    for v in range(cfg.views_per_object):
        for _ in range(MAX_VIEW_TRIES):
            target = 0.5 * (lo + hi) + rng.normal(0.0, 0.1, 3) * (hi - lo)
            pose = sample_tabletop_pose(rng, target, cfg.distance_range, cfg.elevation_deg_range,
                                        cfg.max_roll_deg)
            pts, up = observe(scene, pose, intr, cfg.noise, rng, cfg.table_leak_prob)
            if len(pts) >= cfg.min_view_points:
                try:
                    frame = canonical_frame_from_observation(pts, up)
                    break
                except NormalizationError:
                    pass
            stats.views_failed += 1
        else:
            continue
        stats.views += 1
        n_in = cfg.n_input_points
        idx = rng.permutation(len(pts))[:n_in]
        if len(idx) < n_in:  # pad by resampling
            idx = np.concatenate([idx, rng.integers(0, len(pts), n_in - len(idx))])
        inputs.append(frame.to_canonical(pts[idx]).astype(np.float16))
        # queries: uniform in the box, and true-surface points offset by N(0, sigma) (canonical units)
        q_u = rng.uniform(-BOX_HALF, BOX_HALF, (n_u, 3))
        surf_opt = (surface[v * n_s:(v + 1) * n_s] - pose[:3, 3]) @ pose[:3, :3]  # world -> optical
        q_s = frame.to_canonical(surf_opt) + rng.standard_normal((n_s, 3)) * sigmas[:, None]
        q = np.concatenate([q_u, q_s]).astype(np.float16)
        queries.append(q)
        # label the float16-rounded coordinates, so stored points and labels agree exactly
        q_opt = frame.from_canonical(q.astype(np.float64)).astype(np.float64)
        world_queries.append(q_opt @ pose[:3, :3].T + pose[:3, 3])
        scales.append(frame.scale)
    n_q = n_u + n_s
    if not inputs:
        return ObjectSamples(np.zeros((0, cfg.n_input_points, 3), np.float16), np.zeros((0, n_q, 3), np.float16),
                             np.zeros((0, n_q), bool), np.zeros(0, np.float32), family, stats)
    occ = contains(np.concatenate(world_queries)).reshape(len(inputs), n_q)
    return ObjectSamples(np.stack(inputs), np.stack(queries), occ, np.asarray(scales, np.float32),
                         family, stats)
