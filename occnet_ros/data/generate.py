"""Generation of training samples: one object -> several partial views -> canonical inputs and labelled
queries. Used by :mod:`occnet_ros.data.dataset` (configuration, caching, batching).

The samples of one object are its single views (one per successful view), then
``fused_samples_per_object`` fused samples (2 or more of its views in one cloud, as the evaluation fuses
them; see :func:`_fused_samples`). Each sample:

* ``inputs``: (n_input_points, 3) canonical units, the observed (noisy, partial, segmented; optionally
  cleaned by :func:`occnet_ros.perception.cloud_filter.clean_cloud`) depth points normalised by
  :func:`occnet_ros.reconstruction.normalization.canonical_frame_from_observation` (the ONE normalisation);
* ``queries``: (n_query_uniform + n_query_near_surface, 3) canonical units: first uniform in the box
  ``[-BOX_HALF, BOX_HALF]^3``, then near the full true surface (Gaussian offsets, sigma in canonical units);
* ``occupancies``: (n_queries,) bool, exact inside labels of the float16-rounded query coordinates (with
  thin walls thickened when ``thin_wall_dilation`` > 0: :mod:`occnet_ros.data.thin_walls`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial.transform import Rotation

from occnet_ros.perception.cloud_filter import clean_cloud
from occnet_ros.data.mesh_sources import data_root, load_training_mesh, make_watertight, mesh_contains
from occnet_ros.data.shapes import FAMILIES, sample_shape
from occnet_ros.data.shapes_household import HOUSEHOLD_FAMILIES
from occnet_ros.data.thin_walls import thin_wall_labels
from occnet_ros.data.virtual_camera import ObjectScene, in_reference_camera, observe, sample_tabletop_pose
from occnet_ros.reconstruction.normalization import BOX_HALF, NormalizationError, canonical_frame_from_observation

FAMILY_CODES = sorted(set(FAMILIES) - {"hollow_box"} - set(HOUSEHOLD_FAMILIES)) + ["random_urdf", "user_mesh",
                                                                                  "hollow_box", *HOUSEHOLD_FAMILIES]
"""Index -> family name of the ``family`` array of a dataset ("random_urdf": a pybullet_data random_urdfs
mesh; "user_mesh": a mesh from ``DataConfig.mesh_dirs``; new names are appended, so cached data keep
their meaning)."""

MAX_VIEW_TRIES = 6


@dataclass
class GenStats:
    """Counters of one generation run (``fused_views``: fused samples made)."""

    objects: int = 0
    mesh_objects: int = 0
    meshes_repaired: int = 0
    meshes_skipped: int = 0
    views: int = 0
    views_failed: int = 0
    fused_views: int = 0

    def as_array(self) -> np.ndarray:
        """The counters in field order (stored in the cache shards)."""
        return np.array([getattr(self, f.name) for f in fields(self)], dtype=np.int64)

    @staticmethod
    def from_array(a: np.ndarray) -> "GenStats":
        return GenStats(*[int(v) for v in a])

    def add(self, other: "GenStats") -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))


@dataclass
class ObjectSamples:
    """All samples of one object: V single views then F fused samples (S = V + F rows)."""

    inputs: np.ndarray          # (S, n_in, 3) float16
    queries: np.ndarray         # (S, n_q, 3) float16
    occupancies: np.ndarray     # (S, n_q) bool
    frame_scale: np.ndarray     # (S,) float32 metres per canonical unit
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
    """A mesh object (random_urdfs or mesh_dirs): random orientation, rescaled to a tabletop size ->
    (mesh or None if unusable, its family name)."""
    path, scale = mesh_paths[int(rng.integers(len(mesh_paths)))]
    family = "random_urdf" if (data_root() / "random_urdfs") in Path(path).parents else "user_mesh"
    rot = Rotation.random(random_state=rng).as_matrix()
    mesh = load_training_mesh(path, scale, rot)
    size = rng.uniform(*cfg.mesh_size_range)
    mesh.apply_scale(size / float(mesh.extents.max()))
    stats.mesh_objects += 1
    fixed = make_watertight(mesh)
    if fixed is None:
        stats.meshes_skipped += 1
        return None, family
    if fixed is not mesh:
        stats.meshes_repaired += 1
    return fixed, family


def _subsample(pts: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n of the points, without replacement (fewer than n: padded by resampling)."""
    idx = rng.permutation(len(pts))[:n]
    if len(idx) < n:
        idx = np.concatenate([idx, rng.integers(0, len(pts), n - len(idx))])
    return pts[idx]


def _queries(cfg, frame, pose, surface, sigmas, rng):
    """Queries of one sample whose inputs are in the optical frame of the camera at ``pose`` (world ->
    canonical via ``frame``): uniform in the box, then ``surface`` (world) offset by N(0, sigma).
    Returns (n_q, 3) float16 canonical and the (n_q, 3) float64 world coordinates of those rounded values."""
    q_u = rng.uniform(-BOX_HALF, BOX_HALF, (cfg.n_query_uniform, 3))
    surf_opt = (surface - pose[:3, 3]) @ pose[:3, :3]  # world -> optical
    q_s = frame.to_canonical(surf_opt) + rng.standard_normal((len(surface), 3)) * sigmas[:, None]
    q = np.concatenate([q_u, q_s]).astype(np.float16)
    # label the float16-rounded coordinates, so stored points and labels agree exactly
    q_opt = frame.from_canonical(q.astype(np.float64)).astype(np.float64)
    return q, q_opt @ pose[:3, :3].T + pose[:3, 3]


def _fused_samples(cfg, rng, views: list, mesh, sigmas, stats: GenStats) -> list:
    """``cfg.fused_samples_per_object`` samples, each fusing k random distinct ``views`` ((points, pose,
    up): the object's successful views, points in their optical frame, cleaned if configured), k uniform
    in [2, min(fused_max_views, len(views))]. Fused as the evaluation protocol does it: in the optical
    frame of the first chosen camera, with its up vector, viewpoint at the origin. None if < 2 views.
    Returns (inputs float16, queries float16, world queries, scale) per sample."""
    out = []
    if len(views) < 2:
        return out
    k_max = min(cfg.fused_max_views, len(views))
    for _ in range(cfg.fused_samples_per_object):
        k = int(rng.integers(2, k_max + 1))
        chosen = rng.choice(len(views), size=k, replace=False)
        _, pose0, up0 = views[chosen[0]]
        fused = np.concatenate([in_reference_camera(views[c][0], views[c][1], pose0)[0]
                                for c in chosen]).astype(np.float32)
        # cannot fail: each of these views normalised on its own, and fusing only widens the extent
        frame = canonical_frame_from_observation(fused, up0)
        x = frame.to_canonical(_subsample(fused, cfg.n_input_points, rng)).astype(np.float16)
        surface = sample_surface(mesh, cfg.n_query_near_surface, rng)
        q, q_world = _queries(cfg, frame, pose0, surface, sigmas, rng)
        out.append((x, q, q_world, frame.scale))
        stats.fused_views += 1
    return out


def generate_object(cfg, rng: np.random.Generator, mesh_paths: list) -> ObjectSamples:
    """Generate the samples of one random object (``cfg``: DataConfig): ``cfg.views_per_object`` single
    views, then ``cfg.fused_samples_per_object`` fused ones (:func:`_fused_samples`).

    mesh_paths: (path, scale) training meshes to draw from with probability ``cfg.mesh_fraction``.
    Each view's cloud is cleaned first if ``cfg.clean_inputs`` (as the evaluation and the node do).
    Views with fewer than ``cfg.min_view_points`` points are re-drawn (at most MAX_VIEW_TRIES times,
    then dropped, so V may be smaller than views_per_object).
    """
    stats = GenStats(objects=1)
    mesh, contains, family = None, None, None
    if mesh_paths and rng.random() < cfg.mesh_fraction:
        mesh, name = _mesh_object(cfg, rng, mesh_paths, stats)
        if mesh is not None:
            family = FAMILY_CODES.index(name)
            contains = lambda p, m=mesh: mesh_contains(m, p)  # noqa: E731
    if mesh is None:
        shape = sample_shape(rng, weights=cfg.family_weights)
        mesh = shape.mesh(cfg.mesh_resolution)
        contains, family = shape.contains, FAMILY_CODES.index(shape.family)
    scene = ObjectScene(mesh, table=cfg.table)
    lo, hi = mesh.bounds
    n_s = cfg.n_query_near_surface
    surface = sample_surface(mesh, n_s * cfg.views_per_object, rng)
    sigmas = np.repeat(np.asarray(cfg.near_surface_sigmas, dtype=np.float64),
                       -(-n_s // len(cfg.near_surface_sigmas)))[:n_s]
    inputs, queries, world_queries, scales, views = [], [], [], [], []
    intr = cfg.camera
    for v in range(cfg.views_per_object):
        for _ in range(MAX_VIEW_TRIES):
            target = 0.5 * (lo + hi) + rng.normal(0.0, 0.1, 3) * (hi - lo)
            pose = sample_tabletop_pose(rng, target, cfg.distance_range, cfg.elevation_deg_range,
                                        cfg.max_roll_deg)
            pts, up = observe(scene, pose, intr, cfg.noise, rng, cfg.table_leak_prob)
            if cfg.clean_inputs:
                pts = clean_cloud(pts, cfg.clean).points
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
        views.append((pts, pose, up))
        inputs.append(frame.to_canonical(_subsample(pts, cfg.n_input_points, rng)).astype(np.float16))
        q, q_world = _queries(cfg, frame, pose, surface[v * n_s:(v + 1) * n_s], sigmas, rng)
        queries.append(q)
        world_queries.append(q_world)
        scales.append(frame.scale)
    if cfg.fused_samples_per_object > 0:
        for x, q, q_world, scale in _fused_samples(cfg, rng, views, mesh, sigmas, stats):
            inputs.append(x)
            queries.append(q)
            world_queries.append(q_world)
            scales.append(scale)
    n_q = cfg.n_query_uniform + n_s
    if not inputs:
        return ObjectSamples(np.zeros((0, cfg.n_input_points, 3), np.float16), np.zeros((0, n_q, 3), np.float16),
                             np.zeros((0, n_q), bool), np.zeros(0, np.float32), family, stats)
    q_world = np.concatenate(world_queries)
    occ = contains(q_world)
    if cfg.thin_wall_dilation > 0:
        occ = thin_wall_labels(q_world, occ, mesh, contains, cfg.thin_wall_dilation,
                               cfg.thin_wall_max_thickness)
    occ = occ.reshape(len(inputs), n_q)
    return ObjectSamples(np.stack(inputs), np.stack(queries), occ, np.asarray(scales, np.float32),
                         family, stats)
