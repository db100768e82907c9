"""A virtual depth camera by ray casting (open3d ``RaycastingScene``), with RealSense-like noise.

Frames: the *world* frame is the object frame of the data generator (z up, table plane z = 0, metres).
The camera *optical* frame has x right, y down, z forward (ROS ``*_optical_frame`` convention). A pose
is a (4, 4) float64 optical-to-world transform. The camera is a :class:`~occnet_ros.geometry.PinholeCamera`:
pixel (u, v) = (column, row) looks along ((u - cx) / fx, (v - cy) / fy, 1) in the optical frame; depth is
the optical z, metres.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import open3d as o3d
import trimesh
from scipy import ndimage

from occnet_ros.geometry import PinholeCamera, RigidTransform


@dataclass
class DepthNoise:
    """Depth sensor artefacts. All lengths metres; sigma(z) = sigma_a + sigma_b * z^2."""

    enabled: bool = True
    sigma_a: float = 0.0005
    sigma_b: float = 0.003
    missing_fraction: float = 0.02
    """fraction of pixels dropped independently"""
    max_blobs: int = 2
    """missing blobs per view: uniform integer in [0, max_blobs]"""
    blob_radius_px: tuple[float, float] = (2.0, 8.0)
    edge_threshold: float = 0.02
    """a depth jump to a 4-neighbour larger than this marks a discontinuity pixel"""
    edge_dropout_prob: float = 0.3
    flying_pixel_prob: float = 0.3
    """discontinuity pixels that take a depth between their own and the far neighbour's"""
    flying_max_offset: float = 0.03
    """largest depth shift of a flying pixel: farther ones are assumed removed by the segmenter's depth
    crop (they would dominate the min/max extent used by the normalisation)"""

    def validate(self) -> None:
        for name in ("sigma_a", "sigma_b", "edge_threshold", "flying_max_offset"):
            if getattr(self, name) < 0:
                raise ValueError(f"noise.{name} must be >= 0")
        for name in ("missing_fraction", "edge_dropout_prob", "flying_pixel_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"noise.{name} must be in [0, 1]")
        if self.max_blobs < 0 or not 0 < self.blob_radius_px[0] <= self.blob_radius_px[1]:
            raise ValueError("noise.max_blobs must be >= 0 and blob_radius_px an increasing positive pair")


def look_at_pose(eye, target, world_up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) optical-to-world pose of a camera at ``eye`` looking at ``target`` (world, metres),
    image "up" towards ``world_up``."""
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    if np.linalg.norm(z) < 1e-9:
        raise ValueError("look_at_pose: eye and target coincide")
    z /= np.linalg.norm(z)
    x = np.cross(z, np.asarray(world_up, dtype=np.float64))
    if np.linalg.norm(x) < 1e-9:
        raise ValueError("look_at_pose: viewing direction is parallel to world_up")
    x /= np.linalg.norm(x)
    pose = np.eye(4)
    pose[:3, :3] = np.stack([x, np.cross(z, x), z], axis=1)
    pose[:3, 3] = eye
    return pose


def in_reference_camera(points: np.ndarray, pose: np.ndarray, reference_pose: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Points seen by the camera at ``pose``, expressed in the optical frame of the camera at
    ``reference_pose`` (how views are fused: the evaluation protocol and the training data).

    points: (N, 3) metres, optical frame of ``pose``; poses: (4, 4) optical -> world.
    Returns the (N, 3) float64 points and the (3,) centre of camera ``pose``, both in the reference frame.
    """
    to_ref = RigidTransform.from_matrix(reference_pose).inverse() @ RigidTransform.from_matrix(pose)
    return to_ref.apply(points), to_ref.translation.copy()


def sample_tabletop_pose(rng: np.random.Generator, target, distance_range=(0.35, 1.2),
                         elevation_deg_range=(10.0, 65.0), max_roll_deg: float = 5.0) -> np.ndarray:
    """Random tabletop camera pose (4, 4): at a distance in ``distance_range`` (m) from ``target``,
    looking down by an elevation angle in ``elevation_deg_range``, random azimuth, roll about the
    optical axis uniform in +-``max_roll_deg``."""
    d = rng.uniform(*distance_range)
    el = np.radians(rng.uniform(*elevation_deg_range))
    az = rng.uniform(0.0, 2 * np.pi)
    target = np.asarray(target, dtype=np.float64)
    eye = target + d * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    pose = look_at_pose(eye, target)
    roll = np.radians(rng.uniform(-max_roll_deg, max_roll_deg))
    c, s = np.cos(roll), np.sin(roll)
    pose[:3, :3] = pose[:3, :3] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return pose


class RayScene:
    """Meshes (world frame, metres) in an open3d ray-casting scene; ``ids[i]`` is mesh i's id."""

    def __init__(self, meshes: list[trimesh.Trimesh]):
        self.scene = o3d.t.geometry.RaycastingScene()
        self.ids = [self.scene.add_triangles(o3d.core.Tensor(np.asarray(m.vertices, np.float32)),
                                             o3d.core.Tensor(np.asarray(m.faces, np.uint32)))
                    for m in meshes]


def table_mesh(half_size: float = 2.0, z: float = -1e-4) -> trimesh.Trimesh:
    """A square table plane (two triangles) at height z, facing up."""
    h = half_size
    v = np.array([[-h, -h, z], [h, -h, z], [h, h, z], [-h, h, z]])
    return trimesh.Trimesh(v, np.array([[0, 1, 2], [0, 2, 3]]), process=False)


def _cast(scene: RayScene, camera: PinholeCamera, pose: np.ndarray, roi=None):
    """Depth (h, w) float32 (NaN: no hit) and geometry ids (h, w) int64 (-1: none) of the pixels
    rows r0:r1, cols c0:c1 (``roi``; whole image if None)."""
    r0, r1, c0, c1 = roi if roi is not None else (0, camera.height, 0, camera.width)
    v, u = np.mgrid[r0:r1, c0:c1]
    dirs_w = camera.rays(v, u).reshape(-1, 3) @ pose[:3, :3].T
    rays = np.concatenate([np.broadcast_to(pose[:3, 3], dirs_w.shape), dirs_w], axis=1)
    ans = scene.scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))
    t = ans["t_hit"].numpy().reshape(u.shape)  # in units of the ray direction, whose z is 1
    gid = ans["geometry_ids"].numpy().astype(np.int64).reshape(u.shape)
    hit = np.isfinite(t)
    gid[~hit] = -1
    return np.where(hit, t, np.nan).astype(np.float32), gid


def render_depth(meshes: list[trimesh.Trimesh] | RayScene, camera: PinholeCamera,
                 pose: np.ndarray) -> np.ndarray:
    """(H, W) float32 depth image, metres (optical z), NaN where no surface is hit."""
    scene = meshes if isinstance(meshes, RayScene) else RayScene(list(meshes))
    return _cast(scene, camera, np.asarray(pose, dtype=np.float64))[0]


def apply_depth_noise(depth: np.ndarray, rng: np.random.Generator, noise: DepthNoise) -> np.ndarray:
    """Noisy copy of a clean depth image (H, W) float32 metres (NaN = no return); see :class:`DepthNoise`."""
    d = np.asarray(depth, dtype=np.float64).copy()
    if not noise.enabled:
        return d.astype(np.float32)
    h, w = d.shape
    # discontinuities: the 4-neighbour with the largest depth difference (a missing return counts as far)
    far = np.where(np.isfinite(d), d, 1e3)
    pad = np.pad(far, 1, mode="edge")
    nbrs = np.stack([pad[:-2, 1:-1], pad[2:, 1:-1], pad[1:-1, :-2], pad[1:-1, 2:]])
    diff = np.abs(nbrs - far[None])
    k = diff.argmax(axis=0)
    jump = np.take_along_axis(diff, k[None], 0)[0]
    nb = np.take_along_axis(nbrs, k[None], 0)[0]
    edge = np.isfinite(d) & (jump > noise.edge_threshold)
    flying = edge & (rng.random((h, w)) < noise.flying_pixel_prob) & (nb < 1e3 - 1)
    alpha = rng.uniform(0.1, 0.9, (h, w))
    shift = np.clip(alpha * (nb - d), -noise.flying_max_offset, noise.flying_max_offset)
    d = np.where(flying, d + shift, d)
    d = d + rng.standard_normal((h, w)) * (noise.sigma_a + noise.sigma_b * np.nan_to_num(d) ** 2)
    drop = rng.random((h, w)) < noise.missing_fraction
    drop |= edge & ~flying & (rng.random((h, w)) < noise.edge_dropout_prob)
    vv, uu = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(0, noise.max_blobs + 1))):
        r = rng.uniform(*noise.blob_radius_px)
        cv, cu = rng.uniform(0, h), rng.uniform(0, w)
        drop |= (vv - cv) ** 2 + (uu - cu) ** 2 < r * r
    d[drop] = np.nan
    return d.astype(np.float32)


class ObjectScene:
    """One object mesh (world = object frame, resting on z = 0), optionally on a table plane."""

    def __init__(self, mesh: trimesh.Trimesh, table: bool = True):
        self.mesh = mesh
        self.bounds = np.asarray(mesh.bounds, dtype=np.float64)
        self.rays = RayScene([mesh, table_mesh()] if table else [mesh])
        self.object_id = self.rays.ids[0]
        self.table_id = self.rays.ids[1] if table else None


def _roi(bounds: np.ndarray, camera: PinholeCamera, pose: np.ndarray, pad: int = 4, context: float = 0.0):
    """(r0, r1, c0, c1) pixel box around the projection of ``bounds``, ``pad`` pixels plus ``context``
    times the box's larger side on every side, clipped to the image."""
    corners = np.array(np.meshgrid(*zip(*bounds), indexing="ij")).reshape(3, -1).T
    c = (corners - pose[:3, 3]) @ pose[:3, :3]  # world -> optical
    if np.any(c[:, 2] <= 1e-3):
        return 0, camera.height, 0, camera.width
    u, v = camera.project(c)
    if context > 0:
        pad += int(np.ceil(context * max(u.max() - u.min(), v.max() - v.min())))
    w, h = camera.width, camera.height
    c0, c1 = int(np.clip(np.floor(u.min()) - pad, 0, w)), int(np.clip(np.ceil(u.max()) + pad + 1, 0, w))
    r0, r1 = int(np.clip(np.floor(v.min()) - pad, 0, h)), int(np.clip(np.ceil(v.max()) + pad + 1, 0, h))
    return r0, r1, c0, c1


@dataclass
class ViewObservation:
    """What one depth view gives. ``points``: (N, 3) float32 segmented object points, optical frame,
    metres; ``up``: (3,) gravity-up in the optical frame; ``depth``: (h, w) float32 the noisy depth crop
    the points came from (NaN = no return), its pixel (0, 0) at ``roi_origin`` (row, column) of the full
    image; ``table_points``: (M, 3) float32 the noisy points of the table pixels in the crop."""

    points: np.ndarray
    up: np.ndarray
    depth: np.ndarray
    roi_origin: tuple[int, int]
    table_points: np.ndarray


def observe(mesh: trimesh.Trimesh | ObjectScene, pose: np.ndarray, camera: PinholeCamera,
            noise: DepthNoise, rng: np.random.Generator, table_leak_prob: float = 0.0
            ) -> tuple[np.ndarray, np.ndarray]:
    """(points, up) of :func:`observe_view` (no context around the object)."""
    v = observe_view(mesh, pose, camera, noise, rng, table_leak_prob)
    return v.points, v.up


def observe_view(mesh: trimesh.Trimesh | ObjectScene, pose: np.ndarray, camera: PinholeCamera,
                 noise: DepthNoise, rng: np.random.Generator, table_leak_prob: float = 0.0,
                 context: float = 0.0) -> ViewObservation:
    """Segmented depth points of one object as a depth camera at ``pose`` sees it.

    Only pixels whose ray hits the object (a perfect segmenter on the clean image) are kept, after
    noise; with ``table_leak_prob`` > 0, table pixels within 2 px of the object are mis-segmented
    into the cloud with that probability (only those within 3 cm in depth of the object pixels next to
    them, i.e. at its base, not the table seen far behind it). A table plane (if the scene has one) occludes the base.

    Only a crop of the image is rendered: the object's bounding box projected, plus 4 pixels and
    ``context`` times the crop's larger side on every side (0: the points are the same as with
    :func:`observe`; more: room for the depth around the object, e.g. for free-space tests). Returns
    a :class:`ViewObservation` (points may be empty).
    """
    scene = mesh if isinstance(mesh, ObjectScene) else ObjectScene(mesh)
    pose = np.asarray(pose, dtype=np.float64)
    up = pose[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    r0, r1, c0, c1 = _roi(scene.bounds, camera, pose, context=context)
    if r1 <= r0 or c1 <= c0:
        empty = np.zeros((0, 3), np.float32)
        return ViewObservation(empty, up, np.zeros((0, 0), np.float32), (r0, c0), empty)
    depth, gid = _cast(scene.rays, camera, pose, (r0, r1, c0, c1))
    mask = gid == scene.object_id
    if table_leak_prob > 0 and scene.table_id is not None:
        ring = ndimage.binary_dilation(mask, iterations=2) & (gid == scene.table_id)
        nearest_obj = ndimage.minimum_filter(np.where(mask, depth, np.inf), size=5)
        ring &= np.abs(depth - nearest_obj) < 0.03
        mask |= ring & (rng.random(mask.shape) < table_leak_prob)
    noisy = apply_depth_noise(depth, rng, noise)
    xyz = camera.unproject(noisy, (r0, c0))
    pts = xyz[mask & np.isfinite(noisy)]
    table = xyz[(gid == scene.table_id) & np.isfinite(noisy)] if scene.table_id is not None else xyz[:0, 0]
    return ViewObservation(pts.astype(np.float32), up, noisy, (r0, c0), table.reshape(-1, 3).astype(np.float32))
