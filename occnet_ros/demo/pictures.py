"""Pictures of a demo run: input cloud, reconstruction and ground truth side by side (no ROS).

Meshes are drawn with PyBullet's CPU renderer (a private DIRECT client per call), point clouds by a
z-buffered splat in numpy, both through the same pinhole :class:`View`, so the three panels of a row
show the same thing from the same place. Everything here takes geometry in the *world* frame (z up,
metres); callers map camera-frame data with the camera pose.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pybullet
import trimesh

from occnet_ros.data.virtual_camera import look_at_pose
from occnet_ros.geometry import PinholeCamera, RigidTransform
from occnet_ros.sim.camera import gl_projection, gl_view

__all__ = ["View", "orbit_view", "render_meshes", "splat_points", "panel_figure", "MAX_RENDER_FACES"]

MAX_RENDER_FACES = 40_000
"""Meshes with more faces are decimated for drawing only (the renderer refuses very large meshes)."""

BACKGROUND = np.array([255, 255, 255], dtype=np.uint8)


@dataclass(frozen=True)
class View:
    """A virtual pinhole camera: ``intrinsics`` and ``pose`` (4, 4) optical-to-world, metres."""

    intrinsics: PinholeCamera
    pose: np.ndarray


def orbit_view(target: np.ndarray, distance: float, azimuth_deg: float, elevation_deg: float,
               width: int = 320, height: int = 240, fov_y_deg: float = 40.0) -> View:
    """A view looking at ``target`` (world, metres) from ``distance`` at the given azimuth (0 = from
    world +x) and elevation, ``width`` x ``height`` pixels with vertical field of view ``fov_y_deg``."""
    f = 0.5 * height / np.tan(np.radians(0.5 * fov_y_deg))
    intr = PinholeCamera(width=width, height=height, fx=f, fy=f, cx=0.5 * (width - 1), cy=0.5 * (height - 1))
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    t = np.asarray(target, dtype=np.float64)
    eye = t + distance * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return View(intrinsics=intr, pose=look_at_pose(eye, t))


def _drawable(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    if len(mesh.faces) <= MAX_RENDER_FACES:
        return mesh
    import open3d as o3d

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(mesh.vertices)),
                                  o3d.utility.Vector3iVector(np.asarray(mesh.faces)))
    m = m.simplify_quadric_decimation(MAX_RENDER_FACES)
    return trimesh.Trimesh(np.asarray(m.vertices), np.asarray(m.triangles), process=False)


def render_meshes(meshes: list[trimesh.Trimesh], colors: list[tuple[float, float, float]], view: View,
                  near: float = 0.02, far: float = 10.0) -> np.ndarray:
    """Shaded image (H, W, 3) uint8 of ``meshes`` (world frame, metres) in RGB ``colors`` (0..1) seen
    from ``view``; white where nothing is drawn. Meshes without faces are skipped."""
    intr = view.intrinsics
    client = pybullet.connect(pybullet.DIRECT)
    try:
        for mesh, color in zip(meshes, colors):
            if mesh is None or len(mesh.faces) == 0:
                continue
            m = _drawable(mesh)
            shape = pybullet.createVisualShape(
                pybullet.GEOM_MESH, vertices=np.asarray(m.vertices).tolist(),
                indices=np.asarray(m.faces).reshape(-1).astype(int).tolist(),
                rgbaColor=[*color, 1.0], physicsClientId=client)
            if shape < 0:
                raise RuntimeError("PyBullet refused a mesh to draw")
            pybullet.createMultiBody(0, -1, shape, physicsClientId=client)
        light = -view.pose[:3, 2] + np.array([0.0, 0.0, 1.0])  # from behind the viewer, above
        _, _, rgba, _, seg = pybullet.getCameraImage(
            intr.width, intr.height, viewMatrix=gl_view(view.pose),
            projectionMatrix=gl_projection(intr, near, far), lightDirection=light.tolist(),
            renderer=pybullet.ER_TINY_RENDERER, physicsClientId=client)
    finally:
        pybullet.disconnect(physicsClientId=client)
    img = np.asarray(rgba, dtype=np.uint8).reshape(intr.height, intr.width, 4)[:, :, :3].copy()
    img[np.asarray(seg).reshape(intr.height, intr.width) < 0] = BACKGROUND
    return img


def splat_points(points: np.ndarray, colors: np.ndarray, view: View, radius_px: int = 1) -> np.ndarray:
    """Image (H, W, 3) uint8 of points (N, 3) world frame, metres, with colours (N, 3) uint8, seen from
    ``view``: each point a (2 r + 1)^2 pixel square centred on its pixel (:meth:`PinholeCamera.pixels`;
    points that project outside the image or lie within 1 mm of the camera plane are not drawn),
    nearest point wins; white background."""
    intr = view.intrinsics
    img = np.broadcast_to(BACKGROUND, (intr.height, intr.width, 3)).copy()
    q = RigidTransform.from_matrix(view.pose).inverse().apply(points)  # world -> optical
    v, u, keep = intr.pixels(q)
    keep &= q[:, 2] > 1e-3
    q, u, v, c = q[keep], u[keep], v[keep], np.asarray(colors, dtype=np.uint8).reshape(-1, 3)[keep]
    offsets = np.arange(-radius_px, radius_px + 1)
    du, dv = (a.reshape(-1, 1) for a in np.meshgrid(offsets, offsets))
    uu, vv = (u[None] + du).reshape(-1), (v[None] + dv).reshape(-1)
    z = np.broadcast_to(q[:, 2], (len(du), len(q))).reshape(-1)
    src = np.broadcast_to(np.arange(len(q)), (len(du), len(q))).reshape(-1)
    ok = (uu >= 0) & (uu < intr.width) & (vv >= 0) & (vv < intr.height)
    pix, z, src = (vv * intr.width + uu)[ok], z[ok], src[ok]
    order = np.lexsort((z, pix))  # by pixel, nearest first
    pix, src = pix[order], src[order]
    first = np.ones(len(pix), dtype=bool)
    first[1:] = pix[1:] != pix[:-1]
    img.reshape(-1, 3)[pix[first]] = c[src[first]]
    return img


def panel_figure(path, rows: list[list[tuple[str, np.ndarray]]], title: str, dpi: int = 100) -> None:
    """Save a grid of titled images to ``path`` (PNG): ``rows[i][j] = (caption, image (H, W, 3) uint8)``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    h, w = rows[0][0][1].shape[:2]
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(n_cols * w / dpi, n_rows * h / dpi * 1.12 + 0.4),
                             dpi=dpi, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.axis("off")
            if j < len(row):
                caption, img = row[j]
                ax.imshow(img)
                ax.set_title(caption, fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _to_world(mesh: trimesh.Trimesh | None, camera_pose: np.ndarray) -> trimesh.Trimesh | None:
    return None if mesh is None else mesh.copy().apply_transform(camera_pose)


def _cloud_world(points: np.ndarray, rgb: np.ndarray, select: np.ndarray, camera_pose: np.ndarray):
    sel = select & np.all(np.isfinite(points), axis=-1)
    return RigidTransform.from_matrix(camera_pose).apply(points[sel]), rgb[sel]


def _views(centre: np.ndarray, radius: float, camera_pose: np.ndarray, size: tuple[int, int]):
    """The camera's own direction and a view from 90 degrees to its side (shows the unseen back)."""
    eye = camera_pose[:3, 3]
    az = np.degrees(np.arctan2(eye[1] - centre[1], eye[0] - centre[0]))
    el = np.degrees(np.arctan2(eye[2] - centre[2], np.linalg.norm(eye[:2] - centre[:2])))
    dist = 0.8 * radius / np.sin(np.radians(20.0))  # the bounding sphere nearly fills the 40 deg view
    return [("camera view", orbit_view(centre, dist, az, el, *size)),
            ("side view (+90 deg)", orbit_view(centre, dist, az + 90.0, max(el, 25.0), *size))]


def comparison_rows(points_world: np.ndarray, colors: np.ndarray, recon: list[trimesh.Trimesh],
                    gt: list[trimesh.Trimesh], mesh_colors: list, camera_pose: np.ndarray,
                    size: tuple[int, int] = (320, 240), recon_caption: str = "reconstruction",
                    gt_caption: str = "ground truth") -> list[list[tuple[str, np.ndarray]]]:
    """Two rows (camera view, side view) x three panels (input cloud, reconstruction, ground truth).
    All geometry in the world frame; the views frame the ground-truth meshes."""
    verts = np.concatenate([m.vertices for m in gt if len(m.vertices)] or [points_world])
    lo, hi = verts.min(axis=0), verts.max(axis=0)
    centre, radius = 0.5 * (lo + hi), max(0.5 * float(np.linalg.norm(hi - lo)), 0.02)
    rows = []
    for name, view in _views(centre, radius, camera_pose, size):
        rows.append([(f"input points, {name}", splat_points(points_world, colors, view)),
                     (f"{recon_caption}, {name}", render_meshes(recon, mesh_colors, view)),
                     (f"{gt_caption}, {name}", render_meshes(gt, mesh_colors, view))])
    return rows


def object_picture(path, title: str, points: np.ndarray, rgb: np.ndarray, mask: np.ndarray, object_id: int,
                   recon: trimesh.Trimesh | None, gt: trimesh.Trimesh, color, camera_pose: np.ndarray) -> None:
    """PNG of one object: its masked input points, its reconstruction and its ground truth, from the
    camera and from the side. ``points`` (H, W, 3), ``rgb`` (H, W, 3) uint8, ``mask`` (H, W), ``recon``
    and ``gt``: camera optical frame, metres; ``camera_pose``: (4, 4) optical-to-world."""
    pts, cols = _cloud_world(points, rgb, mask == object_id, camera_pose)
    rows = comparison_rows(pts, cols, [_to_world(recon, camera_pose)], [_to_world(gt, camera_pose)], [color], camera_pose)
    panel_figure(path, rows, title)


def overview_picture(path, title: str, points: np.ndarray, rgb: np.ndarray, mask: np.ndarray,
                     recon: list[trimesh.Trimesh], gt: list[trimesh.Trimesh], colors: list,
                     camera_pose: np.ndarray) -> None:
    """PNG of the whole scene: the camera image and, from the camera and from the side, the input
    cloud's object pixels (mask > 0), all reconstructions and all ground-truth meshes (same colour =
    same object). Arguments as :func:`object_picture`, one list entry per object."""
    pts, cols = _cloud_world(points, rgb, mask > 0, camera_pose)
    rows = comparison_rows(pts, cols, [_to_world(m, camera_pose) for m in recon],
                           [_to_world(m, camera_pose) for m in gt], colors, camera_pose,
                           size=(400, 300))
    h, w = rows[0][0][1].shape[:2]
    rows.insert(0, [("camera image (rgb8)", _resize(rgb, w, h)),
                    ("depth (points z, black = missing)", _resize(depth_image(points[..., 2], mask > 0), w, h)),
                    ("instance mask (mono16)", _resize(mask_image(mask, colors), w, h))])
    panel_figure(path, rows, title)


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    from PIL import Image as PILImage

    return np.asarray(PILImage.fromarray(img).resize((w, h), PILImage.NEAREST))


def depth_image(depth: np.ndarray, focus: np.ndarray | None = None) -> np.ndarray:
    """(H, W) metres (NaN = missing) -> (H, W, 3) uint8 viridis; the colour range spans the depths of
    the ``focus`` pixels ((H, W) bool, e.g. the objects; None = all) +- 10 cm; missing pixels black."""
    import matplotlib

    d = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(d)
    img = np.zeros(d.shape + (3,), dtype=np.uint8)
    sel = ok & focus if focus is not None and (ok & focus).any() else ok
    if ok.any():
        lo, hi = np.percentile(d[sel], [1, 99]) + np.array([-0.1, 0.1])
        t = np.clip((d[ok] - lo) / max(hi - lo, 1e-6), 0, 1)
        img[ok] = (matplotlib.colormaps["viridis"](t)[:, :3] * 255).astype(np.uint8)
    return img


def mask_image(mask: np.ndarray, colors: list) -> np.ndarray:
    """(H, W) instance ids -> (H, W, 3) uint8: id k in ``colors[k - 1]`` (RGB 0..1), 0 light grey."""
    lut = np.full((max(int(mask.max()), len(colors)) + 1, 3), 225, dtype=np.uint8)
    for k, c in enumerate(colors, start=1):
        lut[k] = (np.asarray(c) * 255).astype(np.uint8)
    return lut[np.asarray(mask, dtype=np.int64)]
