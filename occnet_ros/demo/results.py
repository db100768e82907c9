"""What a demo run collects (no ROS types): per-frame inputs, reconstructed objects and timings."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import trimesh

from occnet_ros.sim.ground_truth import GroundTruthObject

__all__ = ["DemoRun", "FrameResult", "ObjectResult"]


@dataclass
class ObjectResult:
    """One object as the reconstruction node published it. ``mesh``: camera optical frame, metres;
    ``reconstruction_time``: seconds the node spent on it; ``num_observed_points``: its input points."""

    id: int
    label: str
    mesh: trimesh.Trimesh
    num_observed_points: int
    reconstruction_time: float


@dataclass
class FrameResult:
    """One reconstructed frame. ``stamp``: seconds (message stamp); ``latency_s``: wall time from the
    stamp to receiving the objects; ``node_latency_s``: from the stamp to the node publishing them
    (None if unknown); ``points``: (H, W, 3) float32 input cloud (camera optical frame,
    metres, NaN = missing), ``rgb``: (H, W, 3) uint8, ``mask``: (H, W) uint16 (None if not received)."""

    stamp: float
    objects: list[ObjectResult]
    latency_s: float
    node_latency_s: float | None = None
    points: np.ndarray | None = None
    rgb: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclass
class DemoRun:
    """A finished run. ``ground_truth``: objects with ``pose_camera`` for the frames' (fixed) camera;
    ``camera_pose``: (4, 4) optical-to-world; ``timings``: seconds (see :mod:`occnet_ros.demo.report`);
    ``render_times``: the camera's render time per frame, s; ``deserialize_times``: s per received
    object array, turning the message into Python objects;
    ``info``: what ran (weights, resolution, ...), copied into the report."""

    frames: list[FrameResult]
    ground_truth: list[GroundTruthObject]
    camera_pose: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    render_times: list[float] = field(default_factory=list)
    deserialize_times: list[float] = field(default_factory=list)
    info: dict = field(default_factory=dict)
