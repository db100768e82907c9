"""Messages of one synchronised frame -> the frame pipeline's :class:`FrameInput`: the one decoding path of
``reconstruction_node`` (live) and ``occnet_replay`` (rosbag2 recordings).

``items`` are the stamp-paired messages of a :class:`~occnet_ros.perception.frame_sync.SyncedFrame`
(``points``: sensor_msgs/PointCloud2; ``mask``, ``image``: sensor_msgs/Image; ``pose``:
geometry_msgs/PoseStamped), ``camera_info`` the newest sensor_msgs/CameraInfo. Required input (the cloud; the
mask in ``segmentation.mode: mask``) that cannot be used raises; optional input costs only what it adds and is
reported as a problem (docs/DEVELOPING.md, "Input the node cannot trust").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from occnet_ros.geometry import PinholeCamera, RigidTransform, TransformError
from occnet_ros.perception.frame_pipeline import FrameInput
from occnet_ros.perception.gravity import GravityTracker
from occnet_ros.perception.segmentation import SegmentationError
from occnet_ros.ros.conversions import (MessageError, camera_info_to_intrinsics, image_to_mask, image_to_rgb,
                                        pointcloud2_to_cloud)
from occnet_ros.ros.node_params import NodeParams
from occnet_ros.ros.world_pose import pose_stamped_to_transform


@dataclass
class DecodedFrame:
    """The arrays of one frame's messages. ``header``: the cloud's std_msgs/Header; ``xyz`` (H, W, 3)
    organized or (N, 3) float32 in ``header.frame_id``, metres, NaN = no return; ``cloud_rgb`` same leading
    shape x 3 uint8 or None; ``mask`` (h, w) int64 labels or None; ``image`` (h, w, 3) uint8 RGB or None;
    ``intrinsics``: the camera_info's pinhole camera or None; ``problems``: what optional input could not be
    used, and what that costs."""

    header: Any
    xyz: np.ndarray
    cloud_rgb: np.ndarray | None
    mask: np.ndarray | None
    image: np.ndarray | None
    intrinsics: PinholeCamera | None
    problems: list[str]

    def frame_input(self, stamp: float, up: np.ndarray, viewpoint: np.ndarray,
                    camera_to_cloud: RigidTransform | None) -> FrameInput:
        """The pipeline's input: ``stamp`` s; ``up`` (3,) gravity-up and ``viewpoint`` (3,) camera centre
        (metres) in the cloud frame; ``camera_to_cloud``: the camera_info camera's pose in the cloud frame or
        None when unknown."""
        return FrameInput(xyz=self.xyz, stamp=stamp, cloud_rgb=self.cloud_rgb, mask=self.mask, image=self.image,
                          intrinsics=self.intrinsics, up=up, viewpoint=viewpoint, camera_to_cloud=camera_to_cloud)


def decode_frame_messages(items: Mapping[str, Any], camera_info, params: NodeParams,
                          warn: Callable[[str], None] | None = None) -> DecodedFrame:
    """Decode ``items`` (``points`` required) with the node's converters. ``warn`` gets the problems with
    optional input as one line (before a projection problem raises). Raises
    :class:`~occnet_ros.perception.pointcloud2.CloudFormatError` (cloud), :class:`MessageError` (an empty
    ``header.frame_id``; a mask that ``segmentation.mode: mask`` needs) or :class:`SegmentationError` (an
    unorganized cloud that cannot be projected into the mask of another camera frame)."""
    cloud = items["points"]
    header = cloud.header
    if not header.frame_id:
        raise MessageError("PointCloud2 has an empty header.frame_id")
    decoded = pointcloud2_to_cloud(cloud)
    problems = [f"no colour from the cloud: {decoded.rgb_problem}"] if decoded.rgb_problem else []
    mask = image = intrinsics = None
    if "mask" in items:
        try:
            mask = image_to_mask(items["mask"])
        except MessageError as e:
            if params.segmentation.mode == "mask":
                raise MessageError(f"mask: {e}") from e
            problems.append(f"mask unusable ({e}): segmented geometrically")
    if "image" in items:
        try:
            image = image_to_rgb(items["image"])
        except MessageError as e:
            problems.append(f"image unusable ({e}): no colour from it")
    if camera_info is not None:
        try:
            intrinsics = camera_info_to_intrinsics(camera_info)
        except MessageError as e:
            problems.append(f"camera_info unusable ({e}): no free-space carving, no mask projection")
    if problems and warn is not None:
        warn("; ".join(problems))
    xyz = decoded.xyz
    if intrinsics is not None and mask is not None and xyz.ndim == 2:
        if camera_info.header.frame_id and camera_info.header.frame_id != header.frame_id:
            raise SegmentationError(
                f"unorganized cloud in '{header.frame_id}' cannot be projected into the mask of camera "
                f"frame '{camera_info.header.frame_id}'; publish the cloud in the camera frame")
    return DecodedFrame(header, xyz, decoded.rgb, mask, image, intrinsics, problems)


def cloud_pose_from_topic(items: Mapping[str, Any], world_frame: str, tolerance: float) -> RigidTransform:
    """The cloud frame's pose in ``world_frame`` from the frame's ``pose`` item (geometry_msgs/PoseStamped),
    for the object map. Raises :class:`MessageError` when the frame has no pose or a bad one."""
    msg = items.get("pose")
    if msg is None:
        raise MessageError(f"no camera_pose within sync.tolerance = {tolerance} s of the cloud's stamp "
                           f"(object map in '{world_frame}')")
    return pose_stamped_to_transform(msg, world_frame)


class UpAndCamera:
    """Gravity-up and the camera's place in the cloud frame, the one way ``reconstruction_node`` and the replay
    find them. Up from the node's :class:`~occnet_ros.perception.gravity.GravityTracker` (world_frame's +z with the
    object map; else parameter ``up`` when set, checked against the support plane; else estimated from the support
    plane), with its own random stream seeded by ``seed``, so the segmentation's RANSAC stream is unchanged. The
    camera: the cloud frame's origin when camera_info names the cloud's frame; else its pose from
    ``lookup(cloud_frame, camera_frame, stamp) -> RigidTransform`` (tf2 in the node; None where there is none, as in
    the replay), unknown (centre at the origin, pose None) when that fails or is absent. ``log(level, text)`` gets
    the tracker's messages and the failed lookups ("info" / "warning")."""

    def __init__(self, params: NodeParams, log: Callable[[str, str], None] = lambda level, text: None,
                 lookup: Callable[[str, str, Any], RigidTransform] | None = None):
        self.gravity = GravityTracker(params.gravity, params.explicit_up(), params.segmentation.plane_max_tilt_deg,
                                      params.log_throttle_sec)
        self.rng = np.random.default_rng(params.seed)
        self.log = log
        self.lookup = lookup

    def __call__(self, cloud_frame: str, camera_info, cloud_to_world: RigidTransform | None = None,
                 xyz: np.ndarray | None = None, stamp: Any = None
                 ) -> tuple[np.ndarray, np.ndarray, RigidTransform | None]:
        """(up (3,), camera centre (3,) metres, camera pose or None) in the cloud frame; ``xyz``: the frame's
        points (cloud frame, metres, NaN = no return) for the support plane, None = the estimate in use;
        ``stamp``: the cloud's stamp, for ``lookup``."""
        cam = camera_info.header.frame_id if camera_info is not None else ""
        viewpoint, pose = np.zeros(3), None
        if cam == cloud_frame:
            pose = RigidTransform()
        elif cam and self.lookup is not None:
            try:
                pose = self.lookup(cloud_frame, cam, stamp)
                viewpoint = pose.translation
            except TransformError as e:  # e.g. depth vs colour optical frame: origins centimetres apart
                self.log("warning", f"camera centre unknown, using the cloud frame's origin: {e}")
        world_up = None
        if cloud_to_world is not None:  # the object map: world_frame's +z
            world_up = cloud_to_world.inverse().apply_direction(np.array([0.0, 0.0, 1.0]))
        decision = (self.gravity.without_points(world_up) if xyz is None
                    else self.gravity.decide(xyz, viewpoint, self.rng, world_up))
        if decision.message is not None:  # rate-limited by the tracker itself
            self.log(decision.level, decision.message)
        return decision.up, viewpoint, pose
