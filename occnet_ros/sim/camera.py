"""The simulated RGB-D camera: PyBullet's CPU renderer, linearised depth, sensor noise, instance mask.

Frames: the camera *optical* frame has x right, y down, z forward (ROS ``*_optical_frame``), metres.
A camera pose is the (4, 4) optical-to-world transform. The camera is a
:class:`~occnet_ros.geometry.PinholeCamera`: pixel (u, v) = (column, row), pixel centres at integer
coordinates, looks along ((u - cx) / fx, (v - cy) / fy, 1); depth is the optical z (metres along the
optical axis, not along the ray).

The projection matrix handed to the renderer is built from the intrinsics, so the published
``CameraInfo`` is exact. Depth noise, missing pixels and edge artefacts are those of the training
data's virtual camera (:func:`occnet_ros.data.virtual_camera.apply_depth_noise`), so the simulated
sensor is the sensor the network was trained for.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pybullet

from occnet_ros.data.virtual_camera import DepthNoise, apply_depth_noise, look_at_pose
from occnet_ros.geometry import PinholeCamera
from occnet_ros.sim.scene import TABLE_TOP_Z, TabletopScene

__all__ = ["CameraConfig", "RGBDFrame", "SimCamera", "gl_projection", "gl_view", "linearize_depth"]


@dataclass
class CameraConfig:
    """The simulated camera.

    Intrinsics: ``width`` x ``height`` pixels, focal lengths ``fx``, ``fy`` and principal point ``cx``,
    ``cy`` in pixels (negative = image centre, ``(width - 1) / 2``). Default: a RealSense-D435-like
    640x480 colour-aligned depth stream. ``near``/``far``: clip planes of the renderer, metres.
    ``min_range``/``max_range``: depths the sensor returns, metres (others are missing).

    Placement: the camera looks at ``target`` (world, metres) from ``distance`` metres, ``elevation_deg``
    above the horizontal, from azimuth ``azimuth_deg`` (0 = from world +x, 90 = from +y), turning by
    ``orbit_deg_per_s`` degrees per second of stamp time (0 = fixed camera).

    ``noise``: depth artefacts (``noise.enabled: false`` = perfect depth). ``rgb_noise``: standard
    deviation of Gaussian colour noise, in 0..255 units.
    """

    width: int = 640
    height: int = 480
    fx: float = 615.0
    fy: float = 615.0
    cx: float = -1.0
    cy: float = -1.0
    near: float = 0.05
    far: float = 5.0
    min_range: float = 0.15
    max_range: float = 3.0
    target: tuple[float, float, float] = (0.0, 0.0, TABLE_TOP_Z + 0.05)
    distance: float = 0.75
    elevation_deg: float = 40.0
    azimuth_deg: float = -90.0
    orbit_deg_per_s: float = 0.0
    noise: DepthNoise = field(default_factory=DepthNoise)
    rgb_noise: float = 2.0

    def validate(self) -> None:
        if not (8 <= self.width <= 4096 and 8 <= self.height <= 4096):
            raise ValueError(f"image size must be within 8..4096 pixels, got {self.width}x{self.height}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"fx and fy must be > 0, got {self.fx}, {self.fy}")
        if not 0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")
        if not 0 <= self.min_range < self.max_range:
            raise ValueError(f"need 0 <= min_range < max_range, got {self.min_range}, {self.max_range}")
        if self.distance <= 0:
            raise ValueError(f"distance must be > 0, got {self.distance}")
        if not -89.0 <= self.elevation_deg <= 89.0:
            raise ValueError(f"elevation_deg must be within [-89, 89], got {self.elevation_deg}")
        if self.rgb_noise < 0:
            raise ValueError(f"rgb_noise must be >= 0, got {self.rgb_noise}")
        self.noise.validate()

    def intrinsics(self) -> PinholeCamera:
        """The pinhole camera (pixels); a negative ``cx``/``cy`` means the image centre."""
        cx = self.cx if self.cx >= 0 else 0.5 * (self.width - 1)
        cy = self.cy if self.cy >= 0 else 0.5 * (self.height - 1)
        return PinholeCamera(width=self.width, height=self.height, fx=self.fx, fy=self.fy, cx=cx, cy=cy)

    def pose_at(self, t: float) -> np.ndarray:
        """(4, 4) float64 optical-to-world pose at stamp time ``t`` seconds (orbit: azimuth turns)."""
        az = np.radians(self.azimuth_deg + self.orbit_deg_per_s * t)
        el = np.radians(self.elevation_deg)
        target = np.asarray(self.target, dtype=np.float64)
        eye = target + self.distance * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        return look_at_pose(eye, target)


def gl_view(camera_pose: np.ndarray) -> list[float]:
    """OpenGL view matrix (world -> GL eye: x right, y up, z backward) of an optical-to-world pose
    (4, 4), as the 16 column-major floats PyBullet takes."""
    gl_to_world = np.asarray(camera_pose, dtype=np.float64) @ np.diag([1.0, -1.0, -1.0, 1.0])
    return np.linalg.inv(gl_to_world).T.reshape(-1).tolist()


def gl_projection(intr: PinholeCamera, near: float, far: float) -> list[float]:
    """OpenGL projection matrix (16 column-major floats) with which PyBullet's TinyRenderer draws at
    pixel (u, v) (row 0 at the top, as PyBullet returns images) what the pinhole ``intr`` maps there
    (pixel centres at integer coordinates)."""
    w, h = intr.width, intr.height
    p = np.zeros((4, 4))
    p[0, 0] = 2.0 * intr.fx / w
    # PyBullet's TinyRenderer samples pixel (u, v) at window coordinates (u, h - 1 - v) rather than at
    # the pixel centres (u + 0.5, h - v - 0.5): shift the principal point by that half pixel.
    p[0, 2] = 1.0 - 2.0 * intr.cx / w
    p[1, 1] = 2.0 * intr.fy / h
    p[1, 2] = 2.0 * (intr.cy + 1.0) / h - 1.0
    p[2, 2] = -(far + near) / (far - near)
    p[2, 3] = -2.0 * far * near / (far - near)
    p[3, 2] = -1.0
    return p.T.reshape(-1).tolist()


def linearize_depth(buffer: np.ndarray, near: float, far: float) -> np.ndarray:
    """OpenGL depth buffer (H, W) in [0, 1] -> (H, W) float32 optical z, metres; NaN where nothing was
    drawn (buffer at the far plane)."""
    d = np.asarray(buffer, dtype=np.float64)
    z = far * near / (far - d * (far - near))
    return np.where(d < 1.0 - 1e-7, z, np.nan).astype(np.float32)


@dataclass
class RGBDFrame:
    """One simulated frame, everything pixel-aligned (H rows, W columns).

    ``rgb``: (H, W, 3) uint8. ``depth``: (H, W) float32 optical z, metres, NaN = missing (after noise).
    ``points``: (H, W, 3) float32 organized cloud in the camera optical frame, metres, NaN = missing.
    ``mask``: (H, W) uint16 instance ids (object index + 1, 0 = table/background), from the clean
    render (a perfect segmenter), defined also where depth is missing. ``camera_pose``: (4, 4)
    optical-to-world. ``up``: (3,) gravity-up in the optical frame. ``stamp``: seconds (the time
    the pose was taken at); ``index``: frame counter.
    """

    index: int
    stamp: float
    rgb: np.ndarray
    depth: np.ndarray
    points: np.ndarray
    mask: np.ndarray
    intrinsics: PinholeCamera
    camera_pose: np.ndarray
    up: np.ndarray


class SimCamera:
    """Renders :class:`RGBDFrame` s of a :class:`TabletopScene`. Noise is drawn from a generator seeded
    by ``(seed, frame index)``, so a frame is reproducible from its index alone."""

    def __init__(self, scene: TabletopScene, config: CameraConfig | None = None, seed: int = 0):
        self.scene = scene
        self.config = config or CameraConfig()
        self.config.validate()
        self.seed = int(seed)
        self.intrinsics = self.config.intrinsics()
        self._projection = gl_projection(self.intrinsics, self.config.near, self.config.far)

    def render_clean(self, camera_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Noise-free render from ``camera_pose`` (4, 4) -> rgb (H, W, 3) uint8, depth (H, W) float32
        metres (NaN where nothing is drawn), mask (H, W) uint16 instance ids."""
        intr = self.intrinsics
        light = camera_pose[:3, 3] - np.asarray(self.config.target) + np.array([0.0, 0.0, 1.0])
        _, _, rgba, buf, seg = pybullet.getCameraImage(
            intr.width, intr.height, viewMatrix=gl_view(camera_pose), projectionMatrix=self._projection,
            lightDirection=light.tolist(), shadow=0, renderer=pybullet.ER_TINY_RENDERER,
            physicsClientId=self.scene.client)
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(intr.height, intr.width, 4)[:, :, :3].copy()
        depth = linearize_depth(np.asarray(buf).reshape(intr.height, intr.width),
                                self.config.near, self.config.far)
        mask = self.scene.instance_mask(np.asarray(seg).reshape(intr.height, intr.width))
        return rgb, depth, mask

    def render(self, stamp: float = 0.0, index: int = 0) -> RGBDFrame:
        """The frame at stamp time ``stamp`` seconds (sets the orbit angle) with frame counter ``index``
        (seeds the noise)."""
        cfg = self.config
        pose = cfg.pose_at(stamp)
        rgb, depth, mask = self.render_clean(pose)
        rng = np.random.default_rng([self.seed, int(index)])
        depth = apply_depth_noise(depth, rng, cfg.noise)
        depth[(depth < cfg.min_range) | (depth > cfg.max_range)] = np.nan
        if cfg.rgb_noise > 0:
            noisy = rgb.astype(np.float32) + rng.normal(0.0, cfg.rgb_noise, rgb.shape).astype(np.float32)
            rgb = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        points = self.intrinsics.unproject(depth)
        up = pose[:3, :3].T @ np.array([0.0, 0.0, 1.0])
        return RGBDFrame(index=int(index), stamp=float(stamp), rgb=rgb, depth=depth, points=points,
                         mask=mask, intrinsics=self.intrinsics, camera_pose=pose, up=up)
