"""A client for ``query_occupancy`` (occnet_ros/QueryOccupancy) that does not lose calls.

A service call over DDS can go unanswered without any error on either side: a new client's first request
may reach the server before the server has matched the client's response reader (rmw_fastrtps waits
100 ms for that match, then drops the response with a "failed to send response (timeout)" warning), and
under load a request or a response can be pushed out of a keep-last-10 history (the service's request
queue holds the requests of every client; every client's response reader receives the responses to every
client of the service and discards the others' only when it takes them). ``Client.call`` and
``wait_for_service()`` do not guard against either. :class:`OccupancyQueryClient` re-sends the request
when no answer arrives within ``attempt_timeout_s`` (queries are idempotent reads; an answer to any
attempt is accepted) until ``deadline_s``, and reads responses through a deeper history
(:attr:`OccupancyQueryClient.RESPONSE_DEPTH`).

Typical use in a planner::

    from occnet_ros.ros.query_client import OccupancyQueryClient, QueryRefused, QueryTimeout

    occ = OccupancyQueryClient(node)                        # node: any rclpy Node
    probs, ids = occ.query(points, frame_id="base_link")    # points: (M, 3) float32, metres
"""
from __future__ import annotations

import array
import threading
import time

import numpy as np
from rclpy.callback_groups import CallbackGroup, MutuallyExclusiveCallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from occnet_ros.srv import QueryOccupancy


class QueryError(RuntimeError):
    """A ``query_occupancy`` call that produced no usable answer."""


class QueryTimeout(QueryError):
    """No answer before the deadline: the service was not available, or no attempt was answered.

    ``attempts``: requests sent (0 when the service never became available); ``service_available``:
    whether the service was seen at all."""

    def __init__(self, message: str, attempts: int, service_available: bool):
        super().__init__(message)
        self.attempts = attempts
        self.service_available = service_available


class QueryRefused(QueryError):
    """The server answered ``success = false``; ``reason`` is its message (e.g. too many points, NaN in
    the points, an unknown object id, no transform from the query frame). Re-sending will not help."""

    def __init__(self, reason: str):
        super().__init__(f"query_occupancy refused: {reason}")
        self.reason = reason


class OccupancyQueryClient:
    """Calls ``query_occupancy`` through a client of ``node``, re-sending a request that is not answered.

    Two ways of use are supported:

    * ``node`` is in an executor that spins in another thread (e.g. a ``MultiThreadedExecutor`` in a
      background thread, or a callback of a ``MultiThreadedExecutor`` calling :meth:`query`): the executor
      delivers the responses and :meth:`query` only waits for them. The client has its own callback group,
      so a callback of the node's default (mutually exclusive) group may call :meth:`query`. Any number of
      threads may call :meth:`query` at the same time.
    * ``node`` is in no executor: :meth:`query` spins the node itself, in the calling thread, on a private
      single-threaded executor, until its answer arrives (so the node's other callbacks run in that thread
      meanwhile), and leaves the node in no executor afterwards. In this way the node must be used by one
      thread at a time (rclpy's rule for spinning a node).

    Not supported: calling :meth:`query` from a callback of a ``SingleThreadedExecutor`` that spins
    ``node``, or while the node's executor is not spinning: nothing delivers the answer, and the call ends
    in :class:`QueryTimeout` at its deadline. (``rclpy.spin_until_future_complete`` is not used for a node
    that is already in an executor: it would move the node to another executor.)

    ``service_name`` resolves like any rclpy name (relative names in the node's namespace);
    ``callback_group``: for the client's responses (default: a new mutually exclusive group).
    """

    RESPONSE_DEPTH = 100
    """History depth of the client's request writer and response reader (rclpy's default for services
    is 10). Every response of the service reaches every client's reader, so with many clients a depth of
    10 can lose this client's answer before it is taken."""

    def __init__(self, node: Node, service_name: str = "query_occupancy",
                 callback_group: CallbackGroup | None = None, response_depth: int | None = None):
        self._node = node
        depth = self.RESPONSE_DEPTH if response_depth is None else int(response_depth)
        if depth < 1:
            raise ValueError(f"response_depth must be >= 1, got {depth}")
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        self._client = node.create_client(QueryOccupancy, service_name, qos_profile=qos,
                                          callback_group=callback_group or MutuallyExclusiveCallbackGroup())
        self._spin_lock = threading.Lock()  # one thread spins the private executor at a time
        self._executor: SingleThreadedExecutor | None = None

    @property
    def service_name(self) -> str:
        """The service's name as given (resolved by rclpy in the node's namespace)."""
        return self._client.srv_name

    @property
    def client(self):
        """The underlying rclpy client (for introspection; call through :meth:`query`)."""
        return self._client

    def wait_for_service(self, timeout_s: float) -> bool:
        """True once a server of the service is visible (checked every 10 ms), False after ``timeout_s``.
        :meth:`query` does this itself; a visible server may still lose the first request or its answer."""
        end = time.monotonic() + timeout_s
        while not self._client.service_is_ready():
            if time.monotonic() >= end or not self._node.context.ok():
                return False
            time.sleep(0.01)
        return True

    def query(self, points, frame_id: str = "", object_ids=(), deadline_s: float = 2.0,
              attempt_timeout_s: float = 0.5, with_sources: bool = False
              ) -> tuple[np.ndarray, np.ndarray] | tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Occupancy of ``points`` from the reconstructed objects.

        ``points``: (M, 3) array-like, metres, in ``frame_id`` (empty: the frame the objects are published
        in; another frame is moved by the server with its newest pose / tf2 transform, or refused).
        ``object_ids``: restrict to these object ids (empty: all current objects). Waits for the service,
        sends the request, and sends it again each ``attempt_timeout_s`` seconds without an answer, until
        ``deadline_s`` seconds after the call (waiting for the service included); the first answer to any
        attempt is returned. Choose ``attempt_timeout_s`` above the expected answer time (large queries, a
        busy node): an early re-send only costs the server a duplicate answer.

        Returns ``(probabilities, object_ids)``: (M,) float32 occupancy probabilities in [0, 1] (0 where
        no object covers the point) and (M,) int64 ids of the object that gave each (-1 where none); with
        ``with_sources`` also (M,) uint8 what each answer rests on (``QueryOccupancy.Response.SOURCE_*``: 0 no
        object, 1 the network alone, 2 observed empty, 3 observed surface).
        Raises :class:`QueryRefused` (the server's reason), :class:`QueryTimeout`, :class:`QueryError` (an
        answer of the wrong length), ``ValueError`` (``points`` not (M, 3), bad ids or times).
        """
        pts = np.asarray(points, dtype=np.float32)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f"points must have shape (M, 3), got {pts.shape}")
        ids = np.asarray(object_ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() > np.iinfo(np.uint32).max):
            raise ValueError(f"object_ids must be in [0, 2^32), got {ids.tolist()}")
        if not deadline_s > 0 or not attempt_timeout_s > 0:
            raise ValueError(f"deadline_s and attempt_timeout_s must be > 0, got {deadline_s}, {attempt_timeout_s}")
        request = QueryOccupancy.Request()
        request.header.frame_id = frame_id
        request.points = array.array("f", np.ascontiguousarray(pts).tobytes())
        request.object_ids = array.array("I", ids.astype(np.uint32).tobytes())

        deadline = time.monotonic() + deadline_s
        if not self.wait_for_service(max(0.0, deadline - time.monotonic())):
            raise QueryTimeout(f"service '{self.service_name}' not available within {deadline_s} s", 0, False)
        executor = self._node.executor
        external = executor is not None and executor is not self._executor and self._node in executor.get_nodes()
        if external:
            response, attempts = self._call(request, deadline, attempt_timeout_s, None)
        else:
            if not self._spin_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise QueryTimeout(f"no answer from '{self.service_name}' within {deadline_s} s (another "
                                   "thread was spinning this client's node)", 0, True)
            try:
                response, attempts = self._call(request, deadline, attempt_timeout_s, self._private_executor())
            finally:
                self._spin_lock.release()
        if response is None:
            hint = " (is the node's executor spinning in another thread?)" if external else ""
            raise QueryTimeout(f"no answer from '{self.service_name}' within {deadline_s} s after {attempts} "
                               f"attempt(s){hint}", attempts, True)
        if not response.success:
            raise QueryRefused(response.message)
        probs = np.array(response.probabilities, dtype=np.float32)
        oids = np.array(response.object_ids, dtype=np.int64)
        if len(probs) != len(pts) or len(oids) != len(pts):
            raise QueryError(f"answer has {len(probs)} probabilities and {len(oids)} ids for {len(pts)} points")
        if not with_sources:
            return probs, oids
        sources = np.frombuffer(bytes(response.source), dtype=np.uint8).copy()
        if len(sources) != len(pts):
            raise QueryError(f"answer has {len(sources)} sources for {len(pts)} points")
        return probs, oids, sources

    def _private_executor(self) -> SingleThreadedExecutor:
        if self._executor is None:
            self._executor = SingleThreadedExecutor(context=self._node.context)
        return self._executor

    def _call(self, request, deadline: float, attempt_timeout_s: float,
              spin: SingleThreadedExecutor | None):
        """Send ``request`` every ``attempt_timeout_s`` until an attempt is answered or ``deadline``;
        ``spin``: the executor to spin here (None: another thread's executor delivers the answers).
        Returns (response or None, attempts)."""
        answered = threading.Event()
        futures = []
        if spin is not None:
            spin.add_node(self._node)
        try:
            next_send = time.monotonic()
            while True:
                answered.clear()
                for fut in futures:
                    if fut.done():
                        return fut.result(), len(futures)
                now = time.monotonic()
                if now >= deadline:
                    return None, len(futures)
                if not self._node.context.ok():
                    raise QueryError("the node's rclpy context was shut down during the query")
                if now >= next_send:
                    fut = self._client.call_async(request)
                    fut.add_done_callback(lambda _: answered.set())
                    futures.append(fut)
                    next_send = now + attempt_timeout_s
                    continue  # answered already?
                wait = min(next_send, deadline) - now
                if spin is not None:
                    spin.spin_once(timeout_sec=wait)
                else:
                    answered.wait(wait)
        finally:
            for fut in futures:  # a late answer to an abandoned attempt is dropped by rclpy
                self._client.remove_pending_request(fut)
            if spin is not None:
                spin.remove_node(self._node)
                self._node.executor = None

    def close(self) -> None:
        """Destroy the client (and the private executor); the node stays."""
        if self._executor is not None:
            self._executor.shutdown(timeout_sec=1.0)
            self._executor = None
        self._node.destroy_client(self._client)

    def __enter__(self) -> "OccupancyQueryClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
