"""``sim_camera``: a simulated RGB-D camera with an instance segmenter, as a ROS 2 node.

Publishes, every ``1 / rate_hz`` seconds, with one stamp and frame id (``frame_id``, the camera optical
frame: x right, y down, z forward):

* ``points`` (sensor_msgs/PointCloud2): organized (height x width) cloud, fields x, y, z (FLOAT32,
  metres) and rgb (PCL packed), NaN where the sensor has no depth;
* ``image`` (sensor_msgs/Image, rgb8);
* ``mask`` (sensor_msgs/Image, mono16): instance ids, object index + 1, 0 = table/background; an
  object keeps its id for the node's lifetime;
* ``camera_info`` (sensor_msgs/CameraInfo): the exact pinhole intrinsics, no distortion;
* ``camera_pose`` (geometry_msgs/PoseStamped): the pose of ``frame_id`` in ``world_frame`` (z up) at the
  frame's stamp, for reconstruction_node's object map (``world_frame``, ``pose_source`` topic).

With ``record_bag`` set, every published message is also written (serialized as published, bag time = its
stamp) into a new rosbag2 MCAP bag (:mod:`occnet_ros.ros.bag_recorder`), closed when the node stops; replay it
with ``occnet_replay``.

The scene (PyBullet, DIRECT mode) and all parameters are described in
:mod:`occnet_ros.sim.node_config` and ``config/sim_camera.yaml``; parameters are read once at start.
Rendering runs on a worker thread, so the executor stays free (parameter services, shutdown).

QoS: RELIABLE by default (matches reliable and best-effort subscribers), keep last 2. Published best effort
(``reliable: false``), its 640x480 clouds (~5 MB) reach a best-effort subscriber only when this node runs with the
package's Fast DDS profile (``config/fastdds_profile.xml``: a 32 MiB shared-memory segment; ``occnet_launch`` and
``occnet_demo`` set it): with Fast DDS's default 512 KiB segment none arrived.
"""
from __future__ import annotations

import sys
import threading
import time

import rclpy
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from occnet_ros.config_io import ConfigError
from occnet_ros.ros import conversions
from occnet_ros.ros.shutdown import until_shutdown
from occnet_ros.sim.camera import RGBDFrame, SimCamera
from occnet_ros.sim.ground_truth import ground_truth, write_ground_truth
from occnet_ros.sim.node_config import (
    SimCameraNodeConfig, config_from_parameters, describe, flatten,
)
from occnet_ros.sim.scene import TabletopScene

NODE_NAME = "sim_camera"


def declare_parameters(node: Node) -> SimCameraNodeConfig:
    """Declare every parameter (defaults: :class:`SimCameraNodeConfig`) with its description, read the
    values given at start and validate them. Raises ConfigError naming the bad parameter."""
    defaults = flatten(SimCameraNodeConfig())
    values = {}
    for name, default in defaults.items():
        descriptor = ParameterDescriptor(description=describe(name), read_only=True,
                                         dynamic_typing=True)
        values[name] = node.declare_parameter(name, default, descriptor).value
    return config_from_parameters(values, where=f"{node.get_name()} parameters")


def rgbd_messages(frame: RGBDFrame, header: Header) -> tuple[PointCloud2, Image, Image, CameraInfo]:
    """(points, image, mask, camera_info) of ``frame``, all with ``header``."""
    cloud = conversions.arrays_to_pointcloud2(frame.points, frame.rgb, header)
    image = conversions.array_to_image(frame.rgb, "rgb8", header)
    mask = conversions.array_to_image(frame.mask, "mono16", header)
    info = conversions.camera_info(frame.intrinsics, header)
    return cloud, image, mask, info


class SimCameraNode(Node):
    """The node; rendering and publishing happen on :attr:`worker` until :meth:`stop`."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.config = declare_parameters(self)
        cfg = self.config
        self.scene = TabletopScene(cfg.scene)
        self.camera = SimCamera(self.scene, cfg.camera, seed=cfg.scene.seed)
        qos = QoSProfile(depth=2, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE if cfg.reliable else ReliabilityPolicy.BEST_EFFORT)
        self.pub_points = self.create_publisher(PointCloud2, "points", qos)
        self.pub_image = self.create_publisher(Image, "image", qos)
        self.pub_mask = self.create_publisher(Image, "mask", qos)
        self.pub_info = self.create_publisher(CameraInfo, "camera_info", qos)
        self.pub_pose = self.create_publisher(PoseStamped, "camera_pose", qos)
        self.recorder = None
        if cfg.record_bag:  # after the publishers: a bad path stops the node at start
            from occnet_ros.bag.reader import BagError
            from occnet_ros.ros.bag_recorder import MessageRecorder

            try:
                self.recorder = MessageRecorder(cfg.record_bag)
            except BagError as e:
                raise ValueError(f"parameter 'record_bag': {e}") from e
        self.frames_published = 0
        self.error: Exception | None = None
        self.finished = threading.Event()
        self._stop = threading.Event()
        self._t0 = self.get_clock().now()
        names = ", ".join(f"{o.id}={o.name}" for o in self.scene.objects)
        self.get_logger().info(
            f"simulated {cfg.camera.width}x{cfg.camera.height} RGB-D camera at {cfg.rate_hz} Hz in frame "
            f"'{cfg.frame_id}'; objects (mask id=name): {names}"
            + (f"; ground truth -> {cfg.ground_truth_dir}" if cfg.ground_truth_dir else "")
            + (f"; recording -> {cfg.record_bag}" if cfg.record_bag else ""))
        self.worker = threading.Thread(target=self._run, name="sim_camera_render", daemon=True)
        self.worker.start()

    def publish_frame(self, index: int) -> float:
        """Render, publish and (optionally) write ground truth for frame ``index``; returns the render
        time in seconds."""
        now = self.get_clock().now()
        stamp_s = (now - self._t0).nanoseconds * 1e-9
        t = time.perf_counter()
        frame = self.camera.render(stamp=stamp_s, index=index)
        render_s = time.perf_counter() - t
        header = Header(frame_id=self.config.frame_id, stamp=now.to_msg())
        cloud, image, mask, info = rgbd_messages(frame, header)
        if self.config.ground_truth_dir:
            gt = ground_truth(self.scene, frame.camera_pose)
            write_ground_truth(self.config.ground_truth_dir, gt, frame.camera_pose,
                               stamp=now.nanoseconds * 1e-9, frame_id=self.config.frame_id,
                               frame_index=index, meshes=index == 0,
                               extra={"render_time_s": render_s, "up_camera": frame.up.tolist()})
        pose = PoseStamped(header=Header(frame_id=self.config.world_frame, stamp=header.stamp))
        pose.pose = conversions.pose_from_rt(frame.camera_pose[:3, :3], frame.camera_pose[:3, 3])
        for pub, msg in ((self.pub_info, info), (self.pub_pose, pose), (self.pub_image, image),
                         (self.pub_mask, mask), (self.pub_points, cloud)):
            pub.publish(msg)
            if self.recorder is not None:  # bag time = the frame's stamp, as a recorder on this clock sees it
                self.recorder.record(pub.topic_name, msg, now.nanoseconds)
        return render_s

    def _run(self) -> None:
        period = 1.0 / self.config.rate_hz
        next_t = time.monotonic()
        index = 0
        try:
            while not self._stop.is_set() and rclpy.ok(context=self.context):
                render_s = self.publish_frame(index)
                index += 1
                self.frames_published = index
                if index == 1:
                    self.get_logger().info(f"first frame published (render {render_s:.2f} s)")
                if self.config.max_frames and index >= self.config.max_frames:
                    self.get_logger().info(f"published {index} frames (max_frames); stopping")
                    break
                next_t += period
                delay = next_t - time.monotonic()
                if delay < 0:  # slower than the rate: do not try to catch up
                    next_t = time.monotonic()
                self._stop.wait(max(0.0, delay))
        except Exception as e:  # noqa: BLE001 - report and let main() exit non-zero
            if not self._stop.is_set():
                self.get_logger().error(f"rendering failed: {type(e).__name__}: {e}")
                self.error = e
        finally:
            self.finished.set()

    def stop(self) -> None:
        """Stop the worker (waits for the frame in progress) and close the scene."""
        self._stop.set()
        if self.worker.is_alive() and threading.current_thread() is not self.worker:
            self.worker.join(timeout=10.0)
        if self.recorder is not None and not self.worker.is_alive():
            self.recorder.close()  # metadata.yaml and the MCAP summary: the bag is complete from here on
        self.scene.close()


def main(args: list[str] | None = None) -> int:
    """Console script ``sim_camera``: run the node until SIGINT (or ``max_frames``)."""
    rclpy.init(args=args if args is not None else sys.argv)
    node = None
    code = 0
    try:
        try:
            node = SimCameraNode()
        except (ConfigError, ValueError) as e:
            print(f"sim_camera: bad configuration: {e}", file=sys.stderr)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        with until_shutdown():
            while rclpy.ok() and not node.finished.is_set():
                executor.spin_once(timeout_sec=0.1)
            if node.error is not None:
                code = 1
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
