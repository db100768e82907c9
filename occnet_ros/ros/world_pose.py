"""The pose of each cloud's frame in ``world_frame``, for the object map: from tf2 where ``tf2_ros`` exists, or
from the ``camera_pose`` topic (geometry_msgs/PoseStamped, paired with the cloud by stamp). The latest pose also
serves queries given in the cloud's frame."""
from __future__ import annotations

import threading

import numpy as np

from occnet_ros.geometry import RigidTransform, TransformError
from occnet_ros.ros.conversions import MessageError, pose_to_transform

QUATERNION_TOLERANCE = 1e-3
"""Largest | |q| - 1 | of a camera_pose quaternion: a non-unit quaternion is a broken pose, not a rotation."""


def resolve_pose_source(world_frame: str, pose_source: str, tf_available: bool) -> str:
    """"" (no world_frame: no map), "tf" or "topic"; ``pose_source`` auto = tf where tf2_ros exists."""
    if not world_frame:
        return ""
    if pose_source == "auto":
        return "tf" if tf_available else "topic"
    return pose_source


def pose_stamped_to_transform(msg, world_frame: str) -> RigidTransform:
    """A geometry_msgs/PoseStamped of the cloud's frame in ``world_frame`` -> that transform (cloud -> world).
    Raises :class:`MessageError` naming the field for a pose in another frame, a non-finite value or a
    quaternion that is not of unit length."""
    if msg.header.frame_id != world_frame:
        raise MessageError(f"camera_pose header.frame_id is '{msg.header.frame_id}', not world_frame "
                           f"'{world_frame}'")
    o = msg.pose.orientation
    norm = float(np.linalg.norm([o.x, o.y, o.z, o.w]))
    if not np.isfinite(norm) or abs(norm - 1.0) > QUATERNION_TOLERANCE:
        raise MessageError(f"camera_pose pose.orientation is not a unit quaternion (norm {norm:.6g})")
    return pose_to_transform(msg.pose)


class LatestPose:
    """The newest pose of a cloud frame in world, thread-safe (the worker writes, the query service reads)."""

    def __init__(self, world_frame: str):
        self.world_frame = world_frame
        self._lock = threading.Lock()
        self._frame_id = ""
        self._pose: RigidTransform | None = None

    def set(self, frame_id: str, cloud_to_world: RigidTransform) -> None:
        with self._lock:
            self._frame_id, self._pose = frame_id, cloud_to_world

    def transform(self, target: str, source: str) -> RigidTransform:
        """Transform from ``source`` to ``target`` when one is world_frame and the other the frame of the
        newest cloud; raises :class:`TransformError` otherwise."""
        with self._lock:
            frame_id, pose = self._frame_id, self._pose
        if target == source:
            return RigidTransform()
        if pose is not None and (target, source) == (self.world_frame, frame_id):
            return pose
        if pose is not None and (target, source) == (frame_id, self.world_frame):
            return pose.inverse()
        known = f"'{frame_id}' (the newest cloud's frame)" if pose is not None else "none yet"
        raise TransformError(f"no pose from '{source}' to '{target}': the poses known are of {known} in "
                             f"'{self.world_frame}'")
