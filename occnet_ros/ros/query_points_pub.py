"""``reconstruction_node``'s ``query_points`` topic: the points of recent ``query_occupancy`` requests with
the probabilities answered (sensor_msgs/PointCloud2, :mod:`occnet_ros.viewer.query_points`), for viewers.

The service callback only hands the request's point buffer and the answer over (:meth:`QueryPointsPublisher.offer`:
a subscriber count, a reference swap and a guard-condition trigger, no copy) and returns; the message is built and
published afterwards by the reconstruction node's executor (not the service's thread), so the answer is never delayed
by it.
Requests that arrive while one waits replace it (the newest is published). Nothing is done without subscribers.
"""
from __future__ import annotations

import threading

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import QoSProfile
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header

from occnet_ros.ros.conversions import cloud_message
from occnet_ros.viewer.query_points import MAX_QUERY_POINTS, query_cloud

TOPIC = "query_points"


class QueryPointsPublisher:
    """Publishes offered queries on :data:`TOPIC` (relative, remappable). ``frame_of_objects()`` names the
    frame of a request with an empty frame_id (the objects' frame)."""

    def __init__(self, node, frame_of_objects, max_points: int = MAX_QUERY_POINTS):
        self.node = node
        self.max_points = max_points
        self._frame_of_objects = frame_of_objects
        self.publisher = node.create_publisher(PointCloud2, TOPIC, QoSProfile(depth=1))
        self._pending = None
        self._lock = threading.Lock()
        self.published = 0
        self._trigger = node.create_guard_condition(self._publish, callback_group=MutuallyExclusiveCallbackGroup())

    def offer(self, flat_points, probabilities, frame_id: str) -> bool:
        """From the service callback: ``flat_points`` (the request's float32 buffer, metres, ``frame_id``;
        empty = the objects' frame), ``probabilities`` (one per point). Returns whether it was taken (a
        subscriber exists)."""
        if self.publisher.get_subscription_count() == 0:
            return False
        with self._lock:
            self._pending = (flat_points, probabilities, frame_id)
        self._trigger.trigger()
        return True

    def _publish(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is None:
            return
        flat_points, probabilities, frame_id = pending
        try:
            layout, data = query_cloud(flat_points, probabilities, self.max_points)
        except ValueError as e:  # the service answered a request whose sizes disagree: a bug, reported
            self.node.get_logger().error(f"query_points not published: {e}", throttle_duration_sec=5.0)
            return
        header = Header(frame_id=frame_id or self._frame_of_objects(), stamp=self.node.get_clock().now().to_msg())
        self.publisher.publish(cloud_message(layout, data, header))
        self.published += 1
