"""A test-side ROS peer of the reconstruction node running in another process: publishes a scene's frames
(optionally mangled), keeps the node's outputs, calls the query service. Imports rclpy: use it only from
tests that need ROS (after ``pytest.importorskip("rclpy")``)."""
from __future__ import annotations

import array
import time

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from occnet_ros.msg import ReconstructedObjectArray
from occnet_ros.ros import conversions
from occnet_ros.srv import QueryOccupancy
from ros_helpers import wait_until

FRAME = "camera_color_optical_frame"


def header(stamp_s: float, frame_id: str = FRAME) -> Header:
    """A header stamped ``stamp_s`` seconds (may be negative)."""
    h = Header(frame_id=frame_id)
    sec = int(np.floor(stamp_s))
    h.stamp.sec, h.stamp.nanosec = sec, int(round((stamp_s - sec) * 1e9)) % 1_000_000_000
    return h


class Client:
    """This process's ROS side: publishes scene frames, keeps the latest outputs, calls the service."""

    def __init__(self, domain_id: int):
        self.ctx = Context()
        rclpy.init(context=self.ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("test_client", context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=5)
        self.pubs = {name: self.node.create_publisher(t, name, qos) for name, t in
                     (("points", PointCloud2), ("mask", Image), ("image", Image), ("camera_info", CameraInfo))}
        self.objects: list[ReconstructedObjectArray] = []
        self.markers: list[MarkerArray] = []
        self.node.create_subscription(ReconstructedObjectArray, "objects", self.objects.append, qos)
        self.node.create_subscription(MarkerArray, "markers", self.markers.append, qos)
        self.query_client = self.node.create_client(QueryOccupancy, "query_occupancy")

    def spin(self, seconds: float = 0.05) -> None:
        self.executor.spin_once(timeout_sec=seconds)

    def scene_messages(self, scene, stamp_s: float, mask_encoding: str = "mono16") -> dict:
        """The four messages of one frame of ``scene`` stamped ``stamp_s``: camera_info, mask, image, points."""
        h = header(stamp_s)
        return {"camera_info": conversions.camera_info(scene.camera, h),
                "mask": conversions.array_to_image(scene.mask, mask_encoding, h),
                "image": conversions.array_to_image(scene.rgb, "rgb8", h),
                "points": conversions.arrays_to_pointcloud2(scene.xyz, None, h)}

    def publish(self, msgs: dict) -> None:
        """Publish the given messages (topic -> message), the cloud last; a topic mapped to None is skipped."""
        for topic in ("camera_info", "mask", "image", "points"):
            if msgs.get(topic) is not None:
                self.pubs[topic].publish(msgs[topic])

    def publish_scene(self, scene, stamp_s, mangle_cloud=None, mangle_mask=None):
        """One frame (camera_info, mask, image, points) stamped ``stamp_s``; ``mangle_*`` edit a message."""
        msgs = self.scene_messages(scene, stamp_s)
        for topic, mangle in (("mask", mangle_mask), ("points", mangle_cloud)):
            if mangle is not None:
                mangle(msgs[topic])
        self.publish(msgs)
        return msgs["points"].header

    def objects_at(self, stamp_s):
        for msg in reversed(self.objects):
            if abs(conversions.stamp_to_sec(msg.header.stamp) - stamp_s) < 1e-6:
                return msg
        return None

    def feed_until_objects(self, scene, stamp_s, timeout):
        """Publish the scene at stamp ``stamp_s`` every 0.5 s until objects of that stamp arrive."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.publish_scene(scene, stamp_s)
            if wait_until(lambda: self.objects_at(stamp_s) is not None, 0.5, spin=self.spin):
                return self.objects_at(stamp_s)
        return None

    def request(self, points, object_ids=(), frame_id="") -> QueryOccupancy.Request:
        req = QueryOccupancy.Request()
        req.header.frame_id = frame_id
        req.points = array.array("f", np.asarray(points, np.float32).reshape(-1).tobytes())
        req.object_ids = array.array("I", np.asarray(object_ids, np.uint32).tobytes())
        return req

    def call(self, req: QueryOccupancy.Request, timeout: float = 10.0):
        assert self.query_client.wait_for_service(timeout_sec=timeout), "query_occupancy not available"
        fut = self.query_client.call_async(req)
        assert wait_until(fut.done, timeout, spin=self.spin), "no answer from query_occupancy"
        return fut.result()

    def query(self, points, object_ids=(), frame_id="", timeout=10.0):
        return self.call(self.request(points, object_ids, frame_id), timeout)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)
