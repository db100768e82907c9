"""The deterministic view protocol of the evaluation: which points every method gets.

World frame: the object frame of :mod:`occnet_ros.data.mesh_sources` (z up, metres), the object
centred in x/y at the origin and resting on a table plane z = 0.

Cameras (tabletop): every camera looks at the centre of the object's bounding box from
``distance_m`` away, ``elevation_deg`` above the horizontal, at azimuth ``azimuth_deg`` (the angle
around world z of the camera position, from +x towards +y). If the object would not fit in the image
at that distance, the distance is increased until its bounding sphere fits (with ``fit_margin``).

* 1 view: camera 0 at ``azimuth_deg``.
* k fused views (e.g. 4): cameras at ``azimuth_deg + i * fused_step_deg``, i = 0..k-1; view 0 is the
  very same observation as in the 1-view setting (per-view seeds). Convention: the fused points are
  expressed in camera 0's optical frame, ``viewpoint`` is camera 0's centre (the origin), ``up`` is
  gravity-up in camera 0's frame; so normalisation treats the fused cloud as if camera 0 saw it all.
  ``point_viewpoints`` holds the centre of the camera that saw each point (for normal orientation).

What else the sensor shows (for :mod:`occnet_ros.reconstruction.known_empty`): each view's noisy depth crop (the
object's box plus ``context`` times its size on every side) as a :class:`DepthView` posed in camera 0's
frame, and the support plane fitted (RANSAC with the up vector, the node's default
:class:`~occnet_ros.perception.segmentation.SegmentationConfig` plane settings) to the table pixels of those crops.

Sensor: :class:`~occnet_ros.geometry.PinholeCamera` and
:class:`~occnet_ros.data.virtual_camera.DepthNoise` defaults (640x480, range-dependent noise, holes,
edge artefacts), a perfect segmenter, the table occluding the base. Each view's cloud is then cleaned
as the node cleans it (:func:`occnet_ros.perception.cloud_filter.clean_cloud`, statistical outlier removal; in
that camera's frame) before fusion, identically for every method (``clean_enabled: false`` feeds the
raw noisy points). Seeds per (seed, object name,
view index) via CRC32 of the name, so results do not depend on the order of objects.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import trimesh

from occnet_ros.perception.cloud_filter import CleanConfig, clean_cloud
from occnet_ros.data.mesh_sources import EVALUATION_OBJECTS, UPRIGHT_ROTATIONS, data_root, load_mesh
from occnet_ros.data.virtual_camera import DepthNoise, ObjectScene, in_reference_camera, look_at_pose, observe_view
from occnet_ros.geometry import PinholeCamera, Plane, RigidTransform
from occnet_ros.reconstruction.known_empty import DepthView
from occnet_ros.perception.segmentation import SegmentationConfig, fit_support_plane

MESH_SUFFIXES = (".obj", ".stl", ".ply", ".off", ".glb")
"""Mesh file types accepted on the command line (whatever trimesh reads; OBJ/STL/PLY are tested)."""


class ProtocolError(ValueError):
    """An object or view setting that the protocol cannot produce (unknown name, empty view...)."""


@dataclass
class ViewProtocolConfig:
    """Camera placement and sensor of the protocol; see the module docstring. Angles in degrees,
    lengths in metres. ``table``: a table plane occludes the object's base; ``noise``: the virtual
    camera's default sensor noise (False: clean depth); ``min_points``: fewer observed points is an
    error (the view missed the object); ``clean``: the per-view cloud cleaning (``clean_enabled``);
    ``context``: depth kept around the object's projected box, as a fraction of the box's larger side
    (see :func:`~occnet_ros.data.virtual_camera.observe_view`)."""

    distance_m: float = 0.6
    elevation_deg: float = 30.0
    azimuth_deg: float = 30.0
    fused_step_deg: float = 90.0
    fit_margin: float = 1.15
    table: bool = True
    noise: bool = True
    min_points: int = 10
    clean_enabled: bool = True
    clean: CleanConfig = field(default_factory=CleanConfig)
    seed: int = 0
    context: float = 0.5

    def validate(self) -> None:
        self.clean.validate()
        if not 0.0 <= self.context <= 4.0:
            raise ValueError(f"context must be in [0, 4], got {self.context}")
        if self.distance_m <= 0:
            raise ValueError(f"distance_m must be > 0, got {self.distance_m}")
        if not 0.0 < self.elevation_deg < 90.0:
            raise ValueError(f"elevation_deg must be in (0, 90), got {self.elevation_deg}")
        if self.fit_margin < 1.0:
            raise ValueError(f"fit_margin must be >= 1, got {self.fit_margin}")
        if self.min_points < 3:
            raise ValueError(f"min_points must be >= 3, got {self.min_points}")


@dataclass
class EvalObject:
    """A ground-truth object: ``mesh`` in the world frame (metres, resting on z = 0, centred in x/y);
    ``source``: where it came from (file path); ``scale``: the scale applied when loading."""

    name: str
    mesh: trimesh.Trimesh
    source: str
    scale: float


@dataclass
class Observation:
    """What every method gets for one object and view setting.

    ``points``: (N, 3) float32, camera 0 optical frame, metres. ``up``: (3,) gravity-up in that frame.
    ``viewpoint``: (3,) camera 0 centre in that frame (zeros). ``point_viewpoints``: (N, 3) float32,
    centre of the camera that saw each point, same frame. ``input_to_world``: (4, 4) camera 0 pose
    (optical -> world). ``camera_poses``: the (4, 4) optical -> world pose of every view.
    ``depth_views``: every view's depth crop, posed in camera 0's frame; ``support_plane``: the table
    plane in camera 0's frame (None without a table or when no plane was found)."""

    name: str
    n_views: int
    points: np.ndarray
    up: np.ndarray
    viewpoint: np.ndarray
    point_viewpoints: np.ndarray
    input_to_world: np.ndarray
    camera_poses: list[np.ndarray] = field(default_factory=list)
    depth_views: list[DepthView] = field(default_factory=list)
    support_plane: Plane | None = None

    def to_world(self, points: np.ndarray) -> np.ndarray:
        """(M, 3) input-frame points -> (M, 3) float64 world points."""
        return RigidTransform.from_matrix(self.input_to_world).apply(points)

    def mesh_to_world(self, mesh: trimesh.Trimesh) -> trimesh.Trimesh:
        """A copy of an input-frame mesh in the world frame."""
        return trimesh.Trimesh(self.to_world(mesh.vertices), np.asarray(mesh.faces), process=False)

    def mesh_from_world(self, mesh: trimesh.Trimesh) -> trimesh.Trimesh:
        """A copy of a world-frame mesh in the input frame (camera 0 optical)."""
        v = RigidTransform.from_matrix(self.input_to_world).inverse().apply(mesh.vertices)
        return trimesh.Trimesh(v, np.asarray(mesh.faces), process=False)


def evaluation_object(name: str) -> EvalObject:
    """One object of the named evaluation set (``EVALUATION_OBJECTS``), loaded by ``load_mesh``."""
    if name not in EVALUATION_OBJECTS:
        raise ProtocolError(f"unknown evaluation object {name!r}; known: {sorted(EVALUATION_OBJECTS)}")
    rel, scale = EVALUATION_OBJECTS[name]
    path = data_root() / rel
    return EvalObject(name=name, mesh=load_mesh(path, scale, UPRIGHT_ROTATIONS.get(name)), source=str(path), scale=float(scale))


def mesh_file_object(path: str | Path, scale: float = 1.0, name: str | None = None) -> EvalObject:
    """A user mesh file (OBJ/STL/PLY...; its units times ``scale`` must be metres, z up), centred in
    x/y and put on the table by ``load_mesh``. ``name`` defaults to the file stem."""
    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ProtocolError(f"{path}: unsupported mesh type {path.suffix!r}; use one of {MESH_SUFFIXES}")
    if not path.is_file():
        raise ProtocolError(f"mesh file not found: {path}")
    if not scale > 0:
        raise ProtocolError(f"mesh scale must be > 0, got {scale}")
    try:
        mesh = load_mesh(path, scale)
    except ValueError as e:
        raise ProtocolError(str(e)) from e
    return EvalObject(name=name or path.stem, mesh=mesh, source=str(path), scale=float(scale))


def _seed_of(seed: int, name: str, view: int) -> list[int]:
    return [int(seed), zlib.crc32(name.encode("utf-8")), int(view)]


def camera_poses(mesh: trimesh.Trimesh, n_views: int, config: ViewProtocolConfig,
                 intrinsics: PinholeCamera | None = None) -> list[np.ndarray]:
    """The (4, 4) optical -> world poses of the ``n_views`` protocol cameras for ``mesh`` (world);
    ``intrinsics``: the camera (None: the :class:`PinholeCamera` defaults)."""
    cfg = config
    cfg.validate()
    if n_views < 1:
        raise ProtocolError(f"n_views must be >= 1, got {n_views}")
    intr = intrinsics or PinholeCamera()
    lo, hi = np.asarray(mesh.bounds, dtype=np.float64)
    target = 0.5 * (lo + hi)
    radius = 0.5 * float(np.linalg.norm(hi - lo))
    half_fov = min(np.arctan2(intr.width / 2, intr.fx), np.arctan2(intr.height / 2, intr.fy))
    distance = max(cfg.distance_m, cfg.fit_margin * radius / np.sin(half_fov))
    el = np.radians(cfg.elevation_deg)
    poses = []
    for i in range(n_views):
        az = np.radians(cfg.azimuth_deg + i * cfg.fused_step_deg)
        eye = target + distance * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        poses.append(look_at_pose(eye, target, (0.0, 0.0, 1.0)))
    return poses


def observe_object(obj: EvalObject, n_views: int, config: ViewProtocolConfig | None = None,
                   intrinsics: PinholeCamera | None = None) -> Observation:
    """Observe ``obj`` with the protocol's ``n_views`` cameras (``intrinsics``; None: the
    :class:`PinholeCamera` defaults) and fuse into camera 0's frame."""
    cfg = config or ViewProtocolConfig()
    intr = intrinsics or PinholeCamera()
    noise = DepthNoise(enabled=cfg.noise)
    poses = camera_poses(obj.mesh, n_views, cfg, intr)
    scene = ObjectScene(obj.mesh, table=cfg.table)
    pts, vps, up0, views, table = [], [], None, [], []
    for i, pose in enumerate(poses):
        rng = np.random.default_rng(_seed_of(cfg.seed, obj.name, i))
        seen = observe_view(scene, pose, intr, noise, rng, context=cfg.context)
        p, up = seen.points, seen.up
        to_ref = RigidTransform.from_matrix(poses[0]).inverse() @ RigidTransform.from_matrix(pose)
        views.append(DepthView(seen.depth, intr, seen.roi_origin, to_ref))
        table.append(to_ref.apply(seen.table_points))
        if cfg.clean_enabled:
            p = clean_cloud(p, cfg.clean).points
        if i == 0:
            up0 = up
        p0, centre = in_reference_camera(p, pose, poses[0])
        pts.append(p0)
        vps.append(np.broadcast_to(centre, (p.shape[0], 3)))
    points = np.concatenate(pts).astype(np.float32)
    if points.shape[0] < cfg.min_points:
        raise ProtocolError(f"{obj.name}: the {n_views}-view observation has {points.shape[0]} points, "
                            f"fewer than {cfg.min_points} (object out of view or occluded?)")
    plane = fit_support_plane(np.concatenate(table), SegmentationConfig(),
                              np.random.default_rng(_seed_of(cfg.seed, obj.name, 0) + [1]), up0)
    return Observation(name=obj.name, n_views=n_views, points=points, up=np.asarray(up0, np.float64),
                       viewpoint=np.zeros(3), point_viewpoints=np.concatenate(vps).astype(np.float32),
                       input_to_world=poses[0], camera_poses=poses, depth_views=views, support_plane=plane)
