"""Configuration of the ``sim_camera`` node (pure Python; the node maps it onto ROS parameters).

ROS parameter names are the dotted paths of the fields (``camera.noise.sigma_a``); the YAML file
``config/sim_camera.yaml`` nests them under ``sim_camera: ros__parameters:``. Every parameter has a
description in :data:`PARAMETER_DESCRIPTIONS`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from occnet_ros.config_io import flatten, from_dict, unflatten
from occnet_ros.sim.camera import CameraConfig
from occnet_ros.sim.scene import SceneConfig

__all__ = ["PARAMETER_DESCRIPTIONS", "SimCameraNodeConfig", "config_from_parameters", "describe", "flatten",
           "unflatten", "up_in_camera"]


@dataclass
class SimCameraNodeConfig:
    """Everything the ``sim_camera`` node reads at start (see :data:`PARAMETER_DESCRIPTIONS`)."""

    rate_hz: float = 1.0
    frame_id: str = "camera_color_optical_frame"
    world_frame: str = "world"
    max_frames: int = 0
    reliable: bool = True
    ground_truth_dir: str = ""
    record_bag: str = ""
    scene: SceneConfig = field(default_factory=SceneConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)

    def validate(self) -> None:
        if not 0.01 <= self.rate_hz <= 100.0:
            raise ValueError(f"rate_hz must be within [0.01, 100], got {self.rate_hz}")
        if not self.frame_id or self.frame_id.startswith("/"):
            raise ValueError(f"frame_id must be a non-empty frame name without a leading '/', got {self.frame_id!r}")
        if not self.world_frame or self.world_frame.startswith("/") or self.world_frame == self.frame_id:
            raise ValueError(f"world_frame must be a frame name without a leading '/', other than frame_id, "
                             f"got {self.world_frame!r}")
        if self.max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, got {self.max_frames}")


PARAMETER_DESCRIPTIONS: dict[str, str] = {
    "rate_hz": "frames published per second (0.01..100); rendering a 640x480 frame takes ~0.3 s of CPU",
    "frame_id": "frame id of every published message (the camera optical frame: x right, y down, z forward)",
    "world_frame": "frame of the camera_pose messages: the simulated world (z up, metres; the table top at "
                   "z = 0.625); camera_pose is the pose of frame_id in it at each frame's stamp",
    "max_frames": "stop after publishing this many frames and exit (0 = run until shut down)",
    "reliable": "publish with RELIABLE QoS (matches every subscriber) instead of BEST_EFFORT",
    "ground_truth_dir": "if not empty: write <id>_<name>.ply (object frame) and poses.json (camera and "
                        "object poses, updated every frame) into this directory",
    "record_bag": "if not empty: also record every published message into a new rosbag2 bag (MCAP) at this "
                  "path (a directory that must not exist yet), for occnet_replay",
    "scene.seed": "seed of the object choice, placement and sensor noise",
    "scene.objects": "evaluation objects on the table, in mask-id order (empty = num_objects drawn from seed)",
    "scene.num_objects": "number of objects drawn when scene.objects is empty",
    "scene.area": "[x, y] size of the table-top rectangle (m, centred on the table) holding the objects",
    "scene.min_gap": "smallest clearance between two objects' footprints, m",
    "scene.settle_steps": "physics steps (240 Hz) run after placing the objects (0 = exact resting poses)",
    "camera.width": "image width, pixels",
    "camera.height": "image height, pixels",
    "camera.fx": "focal length along x, pixels",
    "camera.fy": "focal length along y, pixels",
    "camera.cx": "principal point x, pixels (negative = image centre)",
    "camera.cy": "principal point y, pixels (negative = image centre)",
    "camera.near": "renderer near clip plane, m",
    "camera.far": "renderer far clip plane, m",
    "camera.min_range": "smallest depth the sensor returns, m",
    "camera.max_range": "largest depth the sensor returns, m",
    "camera.target": "[x, y, z] world point the camera looks at, m (table top is at z = 0.625)",
    "camera.distance": "distance from the camera to the target, m",
    "camera.elevation_deg": "camera elevation above the horizontal seen from the target, degrees",
    "camera.azimuth_deg": "camera azimuth around the target at stamp 0, degrees (0 = from world +x)",
    "camera.orbit_deg_per_s": "azimuth change per second: a slow orbit around the table (0 = fixed camera)",
    "camera.rgb_noise": "standard deviation of Gaussian colour noise, 0..255 units",
    "camera.noise.enabled": "simulate depth sensor artefacts (false = perfect depth)",
    "camera.noise.sigma_a": "depth noise standard deviation at zero range, m",
    "camera.noise.sigma_b": "range-dependent depth noise: sigma(z) = sigma_a + sigma_b * z^2, 1/m",
    "camera.noise.missing_fraction": "fraction of pixels with no depth, dropped independently",
    "camera.noise.max_blobs": "missing-depth blobs per frame: uniform integer in [0, max_blobs]",
    "camera.noise.blob_radius_px": "[min, max] radius of a missing-depth blob, pixels",
    "camera.noise.edge_threshold": "depth jump to a neighbour that marks a discontinuity pixel, m",
    "camera.noise.edge_dropout_prob": "probability that a discontinuity pixel has no depth",
    "camera.noise.flying_pixel_prob": "probability that a discontinuity pixel takes a depth between the "
                                      "two surfaces (a flying pixel)",
    "camera.noise.flying_max_offset": "largest depth shift of a flying pixel, m",
}


def describe(name: str) -> str:
    """Description of parameter ``name``. Depth-noise fields added to
    :class:`occnet_ros.data.virtual_camera.DepthNoise` after this table was written get a generic one."""
    if name in PARAMETER_DESCRIPTIONS:
        return PARAMETER_DESCRIPTIONS[name]
    if name.startswith("camera.noise."):
        return f"depth noise setting '{name.rsplit('.', 1)[1]}' (DepthNoise in occnet_ros/data/virtual_camera.py)"
    raise KeyError(f"parameter {name!r} has no description")


def config_from_parameters(values: dict[str, Any], where: str = "parameters") -> SimCameraNodeConfig:
    """Validated config from {dotted name: value}; raises ConfigError naming the bad parameter."""
    return from_dict(SimCameraNodeConfig, unflatten(values), where=where)


def up_in_camera(config: SimCameraNodeConfig | CameraConfig) -> list[float]:
    """Gravity-up [x, y, z] in the simulated camera's optical frame (unit vector). The camera looks at
    its target without roll, so this is ``(0, -cos(elevation), -sin(elevation))`` for the whole orbit:
    pass it as the reconstruction node's ``up`` parameter."""
    cam = config.camera if isinstance(config, SimCameraNodeConfig) else config
    pose = cam.pose_at(0.0)
    return [float(v) for v in pose[:3, :3].T @ (0.0, 0.0, 1.0)]
