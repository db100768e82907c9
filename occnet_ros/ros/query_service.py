"""``reconstruction_node``'s ``query_occupancy`` service (occnet_ros/QueryOccupancy): occupancy probabilities at
arbitrary points, answered from the :class:`~occnet_ros.perception.object_store.ObjectStore` snapshot by
:func:`~occnet_ros.perception.query.answer_query`.

:class:`QueryServer` gives the service a node of its own (``<node name>_query``, in the node's namespace and
context; the service keeps its name, ``query_occupancy`` resolved in that namespace) spun by a SingleThreadedExecutor
in a thread of its own, so a request goes from DDS to the handler in that one thread, never through the node's
executor, and is answered while the reconstruction worker and the subscriptions are busy. Measured against the
service in its own callback group on the node's 3-thread MultiThreadedExecutor (``occnet_bench``'s under-load runs:
10k points at 20 calls/s while frames of 4 objects are reconstructed, 2-core AMD EPYC, 2 alternated rounds of 3 x 500
calls, run alone in a diagnostic harness): p99 14.8-18.5 ms against 17.5-28.4 ms, 15 against 47 calls over 20 ms in
3000, and the node's Python threads used 149-155 against 210-217 ms of CPU per second (rclpy's multi-threaded
executor rebuilds its wait set in Python and hands every callback to a pool thread). Every client's requests wait in
one reliable queue (:data:`SERVICE_QOS`). A request that cannot be answered gets ``success=false`` and the reason; an
internal error costs that one answer, never the service. Answered requests are offered to the ``query_points`` topic
(:class:`~occnet_ros.ros.query_points_pub.QueryPointsPublisher`, on the node itself) for viewers. Points in another
frame than the objects' are moved with the newest cloud's pose in ``world_frame`` (object map) or the latest tf2
transform (where tf2_ros exists); otherwise such requests are refused. A remap rule for the service aimed at the node
by name must name ``<node name>_query``; unqualified remaps (``query_occupancy:=...``) apply as before.
"""
from __future__ import annotations

import array
import threading

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from occnet_ros.geometry import TransformError
from occnet_ros.perception.object_store import ObjectStore
from occnet_ros.perception.query import answer_query, refused
from occnet_ros.ros.node_params import NodeParams
from occnet_ros.ros.query_points_pub import QueryPointsPublisher
from occnet_ros.ros.shutdown import until_shutdown
from occnet_ros.ros.tf_lookup import TransformLookup
from occnet_ros.ros.world_pose import LatestPose
from occnet_ros.srv import QueryOccupancy

SERVICE_NAME = "query_occupancy"
QUERY_NODE_SUFFIX = "_query"
"""The service's node is named the reconstruction node's name plus this."""

SERVICE_QOS = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
"""QoS of ``query_occupancy``: requests of every client wait in one reliable keep-last queue this deep (the default
keep-last 10 silently drops requests of many concurrent clients: 20 fresh clients x 10 calls lost 5 of 200 requests
before they reached the callback)."""


class QueryService:
    """The service on ``node``. ``store``: the objects answered from; ``latest_pose``: the newest cloud's pose in
    world_frame (object map, else unused); ``tf``: tf2 lookups; ``use_pose``: whether the node keeps an object map
    (its pose source is set); ``owner``: the node whose logger reports requests and which publishes ``query_points``
    (default ``node``)."""

    def __init__(self, node, params: NodeParams, store: ObjectStore, latest_pose: LatestPose, tf: TransformLookup,
                 use_pose: bool, owner=None):
        self.node = node
        self.log = (owner or node).get_logger()
        self.params = params
        self.store = store
        self.latest_pose = latest_pose
        self.tf = tf
        self.use_pose = use_pose
        self._lock = threading.Lock()
        self.received = 0
        """Requests that reached the callback (each is logged at debug level)."""
        # recent queries for viewers, published after the answer and only while someone listens
        self.query_points = QueryPointsPublisher(owner or node, lambda: store.snapshot().frame_id)
        node.create_service(QueryOccupancy, SERVICE_NAME, self.handle, qos_profile=SERVICE_QOS,
                            callback_group=MutuallyExclusiveCallbackGroup())

    def handle(self, request, response):
        """The service callback: QueryOccupancy request -> the filled response."""
        with self._lock:
            self.received += 1
            n = self.received
        log = self.log
        throttle = self.params.log_throttle_sec
        log.debug(f"query_occupancy request {n}: {len(request.points) // 3} point(s) in '{request.header.frame_id}'")
        try:
            ans = answer_query(self.store, request.points, request.header.frame_id, request.object_ids,
                               self.transform, self.params.query_max_points, self.params.query_mode,
                               with_sources=True)
        except Exception as e:  # a bug must cost one answer, never the service
            ans = refused(f"internal error: {type(e).__name__}: {e}")
            log.error(f"query_occupancy request {n} failed: {type(e).__name__}: {e}", throttle_duration_sec=throttle)
        response.success, response.message = ans.success, ans.message
        response.probabilities = array.array("f", ans.probabilities.astype(np.float32).tobytes())
        response.object_ids = array.array("q", ans.object_ids.astype(np.int64).tobytes())
        response.source = array.array("B", ans.sources.astype(np.uint8).tobytes())
        if ans.success:  # no copy, no message built here: that happens in the publisher's own callback
            self.query_points.offer(request.points, ans.probabilities, request.header.frame_id)
        else:
            log.warning(f"query_occupancy refused: {ans.message}", throttle_duration_sec=throttle)
        return response

    def transform(self, target: str, source: str):
        """Query points in another frame: the newest cloud's pose in world_frame (object map), else tf2."""
        if self.use_pose:
            try:
                return self.latest_pose.transform(target, source)
            except TransformError:
                if not self.tf.available:
                    raise
        return self.tf.transform(target, source)


class QueryServer:
    """:class:`QueryService` on a node of its own, spun in a thread of its own (module docstring); started at
    construction. ``owner``: the reconstruction node (name, namespace, context, logger, ``query_points``); the other
    arguments as :class:`QueryService`'s. :meth:`close` stops the thread and destroys the service's node."""

    def __init__(self, owner, params: NodeParams, store: ObjectStore, latest_pose: LatestPose, tf: TransformLookup,
                 use_pose: bool):
        name = owner.get_name() + QUERY_NODE_SUFFIX
        # the local remap names the node even where a global one (a launch file's name=...) renames every node
        self.node = Node(name, namespace=owner.get_namespace(), context=owner.context,
                         cli_args=["--ros-args", "-r", f"__node:={name}"], start_parameter_services=False)
        self.service = QueryService(self.node, params, store, latest_pose, tf, use_pose, owner=owner)
        self.executor = SingleThreadedExecutor(context=owner.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, name="query_occupancy", daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        with until_shutdown(self.node.context):
            self.executor.spin()

    def close(self, timeout: float = 1.0) -> bool:
        """Stop answering; True if the thread ended within ``timeout`` s."""
        self.executor.shutdown(timeout_sec=timeout)
        self.thread.join(timeout)
        self.node.destroy_node()
        return not self.thread.is_alive()
