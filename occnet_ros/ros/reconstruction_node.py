"""``reconstruction_node``: point clouds (+ instance masks, colour images) in, reconstructed objects,
RViz markers and an occupancy query service out.

Topics (relative names, remappable): subscribes ``points`` (sensor_msgs/PointCloud2), ``mask``
(sensor_msgs/Image, instance labels), ``image`` (sensor_msgs/Image, rgb8/bgr8), ``camera_info`` and, for the
object map, ``camera_pose`` (geometry_msgs/PoseStamped), all with sensor-data QoS (reliability:
``sensor_reliability``); publishes ``objects`` (occnet_ros/ReconstructedObjectArray) and ``markers``
(visualization_msgs/MarkerArray); serves ``query_occupancy`` (occnet_ros/QueryOccupancy).

Threads and processes: subscription callbacks only store the newest messages (:class:`FrameSync`, bounded); one
worker thread takes the newest complete frame (which partners a cloud waits for:
:class:`~occnet_ros.perception.live_frames.LiveFrames`), looks up what needs the node (the cloud's pose in
``world_frame``, the camera's pose by tf2) and hands the messages to the
:class:`~occnet_ros.ros.frame_processor.FrameProcessor`, which decodes, segments, reconstructs and serializes the frame;
the worker then publishes the bytes and swaps the frame's objects into the :class:`ObjectStore`. With
``reconstruction_process`` (the default) the processor runs in a process of its own
(:mod:`occnet_ros.ros.reconstruction_process`), so the reconstruction's Python never holds this process's GIL;
otherwise in the worker thread. The service (:mod:`occnet_ros.ros.query_service`) has a node and a thread of its own
(:class:`~occnet_ros.ros.query_service.QueryServer`, started with the node) and answers from the store's snapshot while
a frame is reconstructed, decoding with this process's copy of the network through a one-call graph
(:mod:`occnet_ros.network.query_graph`). Mesh decimation and marching cubes run in worker processes
(``mesh.decimate_in_worker``, :mod:`occnet_ros.perception.decimation_worker`), started by whichever process
reconstructs. The ``reconstruction_node`` command (:mod:`occnet_ros.ros.node_entry`) sets the process up (GIL switch
interval, malloc, numpy's BLAS, the garbage collector) and spins the node.

Per frame: objects are always published; markers only while ``markers`` has subscribers. Without
``world_frame`` every frame is reconstructed on its own and its messages are built per frame; with it the
node keeps an object map (:mod:`occnet_ros.perception.map_pipeline`) in that frame, publishes every map
object each frame, reuses the messages of objects that did not change and re-sends markers only for changed
objects (or to a new listener).
"""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from occnet_ros.geometry import RigidTransform
from occnet_ros.perception.heap_release import HeapRelease
from occnet_ros.perception.priority import lower_thread_priority
from occnet_ros.perception.decimation_worker import DecimationWorkerError
from occnet_ros.perception.parallel_decimation import ParallelDecimation
from occnet_ros.perception.frame_sync import FrameSync, SyncedFrame
from occnet_ros.perception.mesh_ops import fast_or_open3d_decimation
from occnet_ros.msg import ReconstructedObjectArray
from occnet_ros.perception.object_store import ObjectStore
from occnet_ros.perception.pointcloud2 import CloudFormatError
from occnet_ros.ros.conversions import MessageError, stamp_to_sec
from occnet_ros.ros.frame_input import cloud_pose_from_topic
from occnet_ros.ros.frame_processor import FrameOutcome, FrameProcessor, FrameRequest, cloud_header, load_reconstructor
from occnet_ros.ros.node_params import NODE_NAME, NodeParams, ParamError, declare_parameters
from occnet_ros.ros.query_service import QueryServer
from occnet_ros.ros.reconstruction_process import ReconstructionProcess, ReconstructionProcessError
from occnet_ros.perception.live_frames import LiveFrames
from occnet_ros.ros.tf_lookup import TransformError, TransformLookup, tf2_available
from occnet_ros.ros.world_pose import LatestPose, resolve_pose_source
from occnet_ros.perception.segmentation import SegmentationError

NODE_KEEP_FREE_BYTES = 128 << 20
"""With the reconstruction in its own process: free bytes the node's C heaps may hold before the worker trims them
after a frame (:class:`~occnet_ros.perception.heap_release.HeapRelease`). Under the benchmark's load they held 38-65 MB
free after each frame, so this trims only when fragmentation grows."""


def check_startup(params: NodeParams) -> None:
    """Problems that must stop the node before it loads anything (raises :class:`ParamError`)."""
    if params.checkpoint and not Path(params.checkpoint).expanduser().is_file():
        raise ParamError(f"parameter 'checkpoint': file not found: {params.checkpoint}")
    if params.world_frame and params.pose_source == "tf" and not tf2_available():
        raise ParamError(f"parameter 'pose_source' = 'tf' (with world_frame '{params.world_frame}') needs tf2_ros, "
                         "which is not installed here; set pose_source to topic and publish camera_pose")


class ReconstructionNode(Node):
    """The node. Raises :class:`ParamError` (bad parameters) or the loader's errors at construction."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.params = declare_parameters(self)
        check_startup(self.params)
        p = self.params
        self.reconstructor = load_reconstructor(p)  # here: the network the queries decode with
        # traced now, not on the first query (occnet_ros.network.query_graph); its absence is said in the ready line
        query_graph = self.reconstructor.query_graph.get()
        self.tf = TransformLookup(self, p.tf_timeout)
        self.pose_source = resolve_pose_source(p.world_frame, p.pose_source, self.tf.available)
        self.decimation = None  # in-process reconstruction: worker processes, so Open3D does not hold this GIL
        self.processor: FrameProcessor | ReconstructionProcess
        if p.reconstruction_process:
            self.processor = ReconstructionProcess(p, self.pose_source, self.reconstructor.model,
                                                   self.reconstructor.query_graph, nice=p.worker_nice,
                                                   warn=lambda m: self.get_logger().error(m))
            try:
                self.processor.start()
            except DecimationWorkerError as e:  # says which parameter
                raise ParamError(str(e)) from e
            except ReconstructionProcessError as e:
                raise ParamError(f"parameter 'reconstruction_process' = true, but the process did not start ({e}); "
                                 f"set it to false to reconstruct in the node's own process") from e
        else:
            if p.mesh.max_faces > 0 and p.mesh.decimate_in_worker:
                self.decimation = ParallelDecimation(p.mesh.decimation_workers,
                                                     warn=lambda m: self.get_logger().warning(m), nice=p.worker_nice)
                try:
                    self.decimation.start()  # spawned and Open3D imported now, not on the first mesh
                except DecimationWorkerError as e:
                    raise ParamError(f"parameter 'mesh.decimate_in_worker' = true, but the worker process did not "
                                     f"start ({e}); set it to false to decimate in the node's own process") from e
            self.processor = FrameProcessor(p, self.reconstructor, self.decimation or fast_or_open3d_decimation,
                                            self.pose_source, objects_at_once=False)  # queries share this GIL
        self.latest_pose = LatestPose(p.world_frame)
        self.store = ObjectStore()
        self.heap = HeapRelease()
        if p.reconstruction_process:
            # the reconstruction's heap churn happens in its process, which trims after each frame; this process keeps
            # the buffers it frees (clouds, a frame's request and answer) for the next frame (keep_freed_buffers in
            # main), up to a bound
            self.heap.keep_free_bytes = NODE_KEEP_FREE_BYTES
        self.sync = FrameSync(["points", "mask", "image", "pose"], "points", p.sync.tolerance, history=3)
        self._camera_info: CameraInfo | None = None
        self._info_lock = threading.Lock()
        self._stop = threading.Event()
        self.frames_done = 0
        self.marker_ids: frozenset[int] = frozenset()
        """The object ids whose markers the last published marker message left shown."""
        self._partner_topics: dict[str, str] = {}
        """Partner stream -> the resolved name of the topic its subscription reads."""
        self.frames = LiveFrames(self.sync, p.segmentation.mode, p.color_from_image, self.pose_source == "topic",
                                 p.sync.stream_timeout, p.sync.tolerance,
                                 lambda text: self.get_logger().warning(text), p.log_throttle_sec,
                                 publishers=self._partner_publishers)

        sensors = MutuallyExclusiveCallbackGroup()
        qos = QoSProfile(depth=qos_profile_sensor_data.depth, history=qos_profile_sensor_data.history,
                         durability=qos_profile_sensor_data.durability,
                         reliability=(ReliabilityPolicy.RELIABLE if p.sensor_reliability == "reliable"
                                      else qos_profile_sensor_data.reliability))
        self.create_subscription(PointCloud2, "points", self._on_points, qos, callback_group=sensors)
        subs = {"mask": self.create_subscription(Image, "mask", self._on_mask, qos, callback_group=sensors),
                "image": self.create_subscription(Image, "image", self._on_image, qos, callback_group=sensors)}
        self.create_subscription(CameraInfo, "camera_info", self._on_info, qos, callback_group=sensors)
        if self.pose_source == "topic":
            subs["pose"] = self.create_subscription(PoseStamped, "camera_pose", self._on_pose, qos,
                                                    callback_group=sensors)
        self._partner_topics = {stream: sub.topic_name for stream, sub in subs.items()}
        out_qos = QoSProfile(depth=2)
        self.pub_objects = self.create_publisher(ReconstructedObjectArray, "objects", out_qos)
        self.pub_markers = self.create_publisher(MarkerArray, "markers", out_qos) if p.publish_markers else None
        self.query_server = QueryServer(self, p, self.store, self.latest_pose, self.tf, bool(self.pose_source))
        self.queries = self.query_server.service
        self.worker = threading.Thread(target=self._work, name="reconstruction_worker", daemon=True)
        self.worker.start()
        tests = (("support plane", p.known_empty.support_plane), ("free space", p.known_empty.free_space))
        empty = " + ".join(name for name, on in tests if on) or "off"
        r = p.reconstruction
        up_text = (f"{p.world_frame} +z" if p.world_frame else str([round(v, 3) for v in p.up]) if p.explicit_up()
                   else "estimated from the support plane")
        self.get_logger().info(
            f"ready: device {self.reconstructor.device}, precision {str(self.reconstructor.dtype).removeprefix('torch.')} "
            f"(decoder {str(self.reconstructor.decoder_dtype).removeprefix('torch.')}), segmentation {p.segmentation.mode}, "
            f"mesh {r.resolution0}x2^{r.upsampling_steps}, threshold {self.reconstructor.threshold:.3f}, "
            f"max faces {p.mesh.max_faces or 'unlimited'}, reuse tolerance {r.reuse_tolerance}, "
            f"reconstruction {'in process ' + str(self.processor.pid) if p.reconstruction_process else 'in this process'}, "
            f"queries {p.query_mode} "
            f"({'one-call decoder' if query_graph else 'eager decoder: ' + self.reconstructor.query_graph.note}), "
            f"known-empty space {empty}, "
            f"{self._heap_text()}, "
            f"up {up_text}, "
            f"{'object map in ' + p.world_frame + ', poses from ' + self.pose_source if self.pose_source else 'no map'}, "
            f"tf2 {'available' if self.tf.available else 'not available'}")

    def _partner_publishers(self, stream: str) -> int:
        """Publishers of a partner stream's topic now (:class:`LiveFrames` waits for a partner that has some from the
        first cloud on); 0 before its subscription exists, and once the node or its context is shut down (rclpy's
        InvalidHandle / RCLError: nothing is waited for then)."""
        topic = self._partner_topics.get(stream)
        if topic is None or self._stop.is_set():
            return 0
        try:
            return self.count_publishers(topic)
        except RuntimeError:
            if rclpy.ok(context=self.context):
                raise
            return 0

    def _heap_text(self) -> str:
        """The ready line's account of the C heap after each frame (HeapRelease)."""
        if not self.heap.available:
            return "heap kept: " + self.heap.note
        if self.heap.keep_free_bytes and self.heap.free_bytes() is not None:
            return f"heap returned after a frame beyond {self.heap.keep_free_bytes >> 20} MiB free"
        return "heap returned after each frame"

    # ------------------------------------------------------------ callbacks: store only

    def _on_points(self, msg: PointCloud2) -> None:
        self.sync.push("points", stamp_to_sec(msg.header.stamp), msg)

    def _on_mask(self, msg: Image) -> None:
        if self.params.segmentation.mode != "geometric":
            self.sync.push("mask", stamp_to_sec(msg.header.stamp), msg)

    def _on_image(self, msg: Image) -> None:
        if self.params.color_from_image:
            self.sync.push("image", stamp_to_sec(msg.header.stamp), msg)

    def _on_pose(self, msg: PoseStamped) -> None:
        self.sync.push("pose", stamp_to_sec(msg.header.stamp), msg)

    def _on_info(self, msg: CameraInfo) -> None:
        with self._info_lock:
            self._camera_info = msg

    # ------------------------------------------------------------ worker

    def _work(self) -> None:
        # before the first network call: the reconstructor's compute threads (and torch's), started by this thread on
        # its first call, inherit the priority
        if lower_thread_priority(self.params.worker_nice) is None and self.params.worker_nice:
            self.get_logger().info("worker_nice not applied: no per-thread priorities here")
        version = self.sync.version
        while not self._stop.is_set():
            version = self.sync.wait(version, 0.05)
            frame = self.frames.take()
            if frame is None:
                continue
            try:
                self._process(frame)
            except (CloudFormatError, MessageError, SegmentationError, TransformError) as e:
                self.get_logger().warning(f"dropped frame at {frame.stamp:.3f}: {e}",
                                          throttle_duration_sec=self.params.log_throttle_sec)
            except Exception as e:  # keep serving: a bug in one frame must not kill the node
                if self._stop.is_set():
                    break
                self.get_logger().error(f"frame at {frame.stamp:.3f} failed: {type(e).__name__}: {e}",
                                        throttle_duration_sec=self.params.log_throttle_sec)
            self.heap.release()  # the frame's garbage freed, and memory returned (keep_free_bytes); dropped frames too

    def _cloud_to_world(self, frame: SyncedFrame, header) -> RigidTransform | None:
        """The cloud frame's pose in world_frame (None without a map); raises MessageError / TransformError
        when the frame has none (no camera_pose within sync.tolerance, a bad pose, no tf2 transform)."""
        if not self.pose_source:
            return None
        if self.pose_source == "tf":
            return self.tf.transform(self.params.world_frame, header.frame_id, header.stamp)
        return cloud_pose_from_topic(frame.items, self.params.world_frame, self.params.sync.tolerance)

    def _camera_pose(self, header, info) -> RigidTransform | str | None:
        """The camera_info frame's pose in the cloud frame from tf2, the failed lookup's reason, or None where
        none is needed (no camera_info frame, or the cloud's own)."""
        cam = info.header.frame_id if info is not None else ""
        if not cam or cam == header.frame_id:
            return None
        try:
            return self.tf.transform(header.frame_id, cam, header.stamp)
        except TransformError as e:  # e.g. depth vs colour optical frame: origins centimetres apart
            return str(e)

    def _report(self, outcome: FrameOutcome) -> None:
        """Log what the processor said about a frame: one call site per kind, so each kind keeps its own
        rate limit (log_throttle_sec)."""
        throttle = self.params.log_throttle_sec
        for kind, text in outcome.logs:
            if kind == "input":
                self.get_logger().warning(f"frame {outcome.stamp:.3f}: {text}", throttle_duration_sec=throttle)
            elif kind == "skipped":
                self.get_logger().info(f"frame {outcome.stamp:.3f}: {text}", throttle_duration_sec=throttle)
            elif kind == "up_warning":
                self.get_logger().warning(text, throttle_duration_sec=throttle)
            elif kind == "decimation":
                self.get_logger().warning(text)
            else:  # up_info: the gravity tracker rate-limits its own messages
                self.get_logger().info(text)

    def _process(self, frame: SyncedFrame) -> None:
        t0 = time.perf_counter()
        with self._info_lock:
            info = self._camera_info
        header = cloud_header(frame.items)
        cloud_to_world = self._cloud_to_world(frame, header)
        listeners = self.pub_markers.get_subscription_count() if self.pub_markers is not None else 0
        request = FrameRequest(frame.items, frame.stamp, info, cloud_to_world, self._camera_pose(header, info),
                               listeners)
        outcome = self.processor.process(request, should_stop=self._stop.is_set)
        if cloud_to_world is not None:
            self.latest_pose.set(header.frame_id, cloud_to_world)
        self._report(outcome)
        if outcome.cancelled:
            return
        self.store.replace(outcome.stored, outcome.frame_id, frame.stamp)
        self.pub_objects.publish(outcome.objects)
        if outcome.markers is not None:
            self.pub_markers.publish(outcome.markers)
        self.marker_ids = outcome.marker_ids
        self.frames_done += 1
        self.get_logger().info(
            f"frame {frame.stamp:.3f}: {outcome.summary} in {time.perf_counter() - t0:.2f} s "
            f"(dropped frames so far: {self.sync.dropped})", throttle_duration_sec=1.0)

    def destroy_node(self) -> None:
        """The service's node and thread first (:class:`QueryServer`), then this node."""
        server = getattr(self, "query_server", None)
        if server is not None:
            server.close()
        super().destroy_node()

    def stop(self, timeout: float = 3.0) -> bool:
        """Ask the worker to stop after the current object; True if it ended within ``timeout`` s."""
        self._stop.set()
        if isinstance(self.processor, ReconstructionProcess):  # a frame running there gets up to 1 s, then is cut short
            self.processor.close(timeout_s=min(timeout, 1.0))
        self.worker.join(timeout)
        ended = not self.worker.is_alive()
        if self.decimation is not None:  # bounded; a decimation still running is cut short
            self.decimation.close(timeout_s=1.0 if ended else 0.1)
        return ended


if __name__ == "__main__":
    from occnet_ros.ros.node_entry import main

    sys.exit(main())
