"""``viewer_node``: a live 3D view of ``reconstruction_node`` in a web browser (Rerun's web viewer), where RViz
cannot run. Off unless started (``viewer_node``, ``occnet_demo --viewer``); prints the page address at start.

Subscribes (relative names, remappable, parameters ``*_topic``): ``objects`` (occnet_ros/ReconstructedObjectArray,
taken raw and decoded with numpy: :mod:`occnet_ros.viewer.objects_cdr`), ``points`` (sensor_msgs/PointCloud2,
sensor-data QoS, at most ``max_cloud_rate`` per second decoded, subsampled to ``max_cloud_points``),
``query_points`` (the node's recent queries with their probabilities) and ``camera_pose``
(geometry_msgs/PoseStamped, to place a cloud that is not in the fixed frame, e.g. with the object map).
Everything shown is converted once here (:mod:`occnet_ros.viewer.scene`) and logged by
:class:`~occnet_ros.viewer.rerun_sink.RerunSink`. Data in a frame other than the fixed ``frame`` that cannot
be placed is not shown (warned, throttled).
"""
from __future__ import annotations

import sys
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import PointCloud2

from occnet_ros.msg import ReconstructedObjectArray
from occnet_ros.perception.pointcloud2 import CloudFormatError
from occnet_ros.ros.conversions import cloud_layout, pointcloud2_to_cloud, stamp_to_sec
from occnet_ros.ros.shutdown import end_program, spin_until_shutdown
from occnet_ros.viewer.config import NODE_NAME, PARAMETERS, ViewerConfig, ViewerParamError, viewer_config
from occnet_ros.viewer.objects_cdr import decode_object_array
from occnet_ros.viewer.rerun_sink import RerunSink, ViewerStartError
from occnet_ros.viewer.scene import PoseHistory, StampedPose, even_indices, query_point_arrays, subsample_cloud


def declare_parameters(node: Node) -> ViewerConfig:
    """Declare every parameter (description, read-only) and return the validated values
    (:class:`ViewerParamError` names a bad one)."""
    from rcl_interfaces.msg import ParameterDescriptor

    values = {}
    for name, info in PARAMETERS.items():
        desc = ParameterDescriptor(name=name, description=info.doc, read_only=True, dynamic_typing=True)
        try:
            values[name] = node.declare_parameter(name, info.default, desc).value
        except Exception as e:  # rclpy's InvalidParameterValue / TypeException for a bad override
            raise ViewerParamError(f"parameter '{name}': {e}") from e
    return viewer_config(values)


class ViewerNode(Node):
    """The node; raises :class:`ViewerParamError` or :class:`ViewerStartError` at construction."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.config = c = declare_parameters(self)
        self.sink = RerunSink(c)
        if c.frame:
            self.sink.set_frame(c.frame)
        self.poses = PoseHistory()
        self._last_cloud = -float("inf")
        self.skipped = {"clouds_rate": 0, "clouds_frame": 0, "queries_frame": 0}
        self.create_subscription(ReconstructedObjectArray, c.objects_topic, self._on_objects, QoSProfile(depth=2),
                                 raw=True)
        if c.cloud_topic:
            self.create_subscription(PointCloud2, c.cloud_topic, self._on_cloud, qos_profile_sensor_data)
        if c.query_topic:
            self.create_subscription(PointCloud2, c.query_topic, self._on_query, QoSProfile(depth=2))
        if c.pose_topic and c.cloud_topic:
            self.create_subscription(PoseStamped, c.pose_topic, self._on_pose, qos_profile_sensor_data)
        self.get_logger().info(f"web viewer: open {self.sink.url} (fixed frame "
                               f"{c.frame or 'from the first objects message'})")

    def _warn(self, text: str) -> None:
        self.get_logger().warning(text, throttle_duration_sec=self.config.log_throttle_sec)

    def _fixed_frame(self, frame_id: str) -> str:
        if self.sink.frame is None:
            self.sink.set_frame(frame_id)
            self.get_logger().info(f"fixed frame: '{frame_id}' (from the first objects message)")
        return self.sink.frame

    def _on_objects(self, data: bytes) -> None:
        try:
            arr = decode_object_array(data)
        except ValueError as e:  # ObjectsDecodeError or bad face indices
            self._warn(f"objects message not shown: {e}")
            return
        fixed = self._fixed_frame(arr.frame_id)
        shown = [o for o in arr.objects if o.frame_id == fixed]
        if len(shown) < len(arr.objects):
            self._warn(f"{len(arr.objects) - len(shown)} object(s) not in the fixed frame '{fixed}' not shown")
        self.sink.log_objects(arr.stamp, shown)

    def _on_cloud(self, msg: PointCloud2) -> None:
        now = time.monotonic()
        if now - self._last_cloud < 1.0 / self.config.max_cloud_rate:
            self.skipped["clouds_rate"] += 1
            return
        frame, stamp = msg.header.frame_id, stamp_to_sec(msg.header.stamp)
        if self.sink.frame is None:
            self.skipped["clouds_frame"] += 1
            return  # the fixed frame is not known yet
        pose = None
        if frame != self.sink.frame:
            pose = self.poses.find(stamp, self.sink.frame, self.config.pose_tolerance)
            if pose is None:
                self.skipped["clouds_frame"] += 1
                self._warn(f"cloud in '{frame}' not shown: no {self.config.pose_topic or 'camera pose topic'} "
                           f"in '{self.sink.frame}' within {self.config.pose_tolerance} s of its stamp")
                return
        self._last_cloud = now
        try:
            decoded = pointcloud2_to_cloud(msg)
        except CloudFormatError as e:
            self._warn(f"cloud not shown: {e}")
            return
        points, colors = subsample_cloud(decoded.xyz, decoded.rgb, self.config.max_cloud_points)
        self.sink.log_cloud(stamp, points, colors, pose)

    def _on_query(self, msg: PointCloud2) -> None:
        frame = msg.header.frame_id
        if self.sink.frame is None or frame != self.sink.frame:
            self.skipped["queries_frame"] += 1
            self._warn(f"query points in '{frame}' not shown: the fixed frame is '{self.sink.frame}'")
            return
        try:
            points, prob = query_point_arrays(msg.data, cloud_layout(msg))
        except CloudFormatError as e:
            self._warn(f"query points not shown: {e}")
            return
        if points.shape[0] > self.config.max_query_points:
            idx = even_indices(points.shape[0], self.config.max_query_points)
            points, prob = points[idx], prob[idx]
        self.sink.log_query(stamp_to_sec(msg.header.stamp), points, prob)

    def _on_pose(self, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        try:
            self.poses.add(StampedPose(stamp_to_sec(msg.header.stamp), msg.header.frame_id,
                                       np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w])))
        except ValueError as e:
            self._warn(f"{self.config.pose_topic} ignored: {e}")


def main(args=None) -> int:
    """Run the viewer until SIGINT; exit code 2 for bad parameters or servers that cannot start."""
    rclpy.init(args=args)
    try:
        node = ViewerNode()
    except (ViewerParamError, ViewerStartError) as e:
        print(f"{NODE_NAME}: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    print(f"{NODE_NAME}: open {node.sink.url}", flush=True)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        spin_until_shutdown(executor)  # SIGINT lands in this thread's wait, not in a take of an objects message
    finally:
        node.sink.close()
        end_program(executor, node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
