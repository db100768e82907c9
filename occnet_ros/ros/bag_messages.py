"""rclpy glue of the bag tools: recorded CDR bytes <-> the rclpy message classes, so the node's own converters
(:mod:`occnet_ros.ros.conversions`) decode what a bag holds exactly as they decode what a subscription delivers.
"""
from __future__ import annotations

import importlib
from typing import Any

from rclpy.serialization import deserialize_message, serialize_message

from occnet_ros.ros.conversions import stamp_to_sec


class BagMessageError(ValueError):
    """A recorded message that cannot be turned into its rclpy message; the text names topic and type."""


INPUT_TYPES = {
    "points": "sensor_msgs/msg/PointCloud2",
    "mask": "sensor_msgs/msg/Image",
    "image": "sensor_msgs/msg/Image",
    "camera_info": "sensor_msgs/msg/CameraInfo",
    "pose": "geometry_msgs/msg/PoseStamped",
}
"""The node's input streams and the message type each takes."""

OUTPUT_TYPES = {
    "objects": "occnet_ros/msg/ReconstructedObjectArray",
    "markers": "visualization_msgs/msg/MarkerArray",
}
"""The node's output topics and their message types."""


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Type``; :class:`BagMessageError` when it is not installed."""
    parts = msgtype.split("/")
    if len(parts) != 3 or parts[1] != "msg" or not all(parts):
        raise BagMessageError(f"'{msgtype}' is not a message type name of the form pkg/msg/Type")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[2])
    except (ImportError, AttributeError) as e:
        raise BagMessageError(f"message type '{msgtype}' is not installed here ({e})") from e


def deserialize(data: bytes, msgtype: str, topic: str) -> Any:
    """The rclpy message of the recorded ``data``; :class:`BagMessageError` naming ``topic`` for bytes that
    are not a ``msgtype``."""
    cls = message_class(msgtype)
    try:
        return deserialize_message(data, cls)
    except Exception as e:  # rclpy raises RuntimeError/ValueError/... from the C type support
        raise BagMessageError(f"topic '{topic}': {len(data)} bytes are not a valid {msgtype} "
                              f"({type(e).__name__}: {e})") from e


def serialize(msg) -> bytes:
    """CDR bytes of an rclpy message (what a publisher sends)."""
    return serialize_message(msg)


def header_stamp(msg, topic: str) -> float:
    """``msg.header.stamp`` in seconds; :class:`BagMessageError` for a message without a header."""
    header = getattr(msg, "header", None)
    if header is None:
        raise BagMessageError(f"topic '{topic}': {type(msg).__name__} has no header to pair by stamp")
    return stamp_to_sec(header.stamp)


def msgtype_of(msg) -> str:
    """``pkg/msg/Type`` of an rclpy message object."""
    module = type(msg).__module__.split(".")[0]
    return f"{module}/msg/{type(msg).__name__}"
