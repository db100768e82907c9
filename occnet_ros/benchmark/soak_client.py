"""The soak's ROS side (:mod:`occnet_ros.benchmark.soak`): a client spun on its own thread that counts the node's
``objects`` messages (read raw) and calls ``query_occupancy`` at a steady rate, one call at a time, each with a
deadline. rclpy is imported when a client is built, so the report code stays importable without ROS."""
from __future__ import annotations

import array
import threading
import time
from collections import Counter

import numpy as np

from occnet_ros.benchmark.soak_sampling import objects_count

NAMESPACE = "/occnet_soak"
"""The namespace of the soak's processes and topics."""


class SoakClient:
    """This process's ROS side, spun on its own thread: counts ``objects`` (raw) and ``camera_pose``
    messages, keeps the first ``objects`` message that holds objects (serialized), and the service client."""

    def __init__(self, domain_id: int):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile

        from occnet_ros.msg import ReconstructedObjectArray
        from occnet_ros.srv import QueryOccupancy

        self.rclpy, self.msg_type, self.srv_type = rclpy, ReconstructedObjectArray, QueryOccupancy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("occnet_soak_client", namespace=NAMESPACE, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.frames: list[tuple[float, float, int]] = []  # (monotonic arrival, age s, objects)
        self.camera_frames: list[float] = []
        self.first_objects: bytes | None = None
        self.node.create_subscription(ReconstructedObjectArray, "objects", self._on_objects, QoSProfile(depth=10),
                                      raw=True)
        self.node.create_subscription(PoseStamped, "camera_pose", self._on_pose, QoSProfile(depth=10))
        self.client = self.node.create_client(QueryOccupancy, "query_occupancy")
        self.thread = threading.Thread(target=self._spin, name="soak_spin", daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # the context was shut down under it: the end
            pass

    def _on_objects(self, data: bytes) -> None:
        now, t = time.time(), time.monotonic()
        stamp, n = objects_count(data)
        with self.lock:
            self.frames.append((t, now - stamp, n))
            if self.first_objects is None and n > 0:
                self.first_objects = bytes(data)

    def _on_pose(self, _msg) -> None:
        with self.lock:
            self.camera_frames.append(time.monotonic())

    def first_objects_msg(self):
        from rclpy.serialization import deserialize_message

        return deserialize_message(self.first_objects, self.msg_type)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(3.0)
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


class QueryLoop:
    """Calls ``query_occupancy`` at ``rate`` Hz, one call at a time (a late call is not made up), on a thread;
    :attr:`records` (monotonic start, latency s or NaN, status), :attr:`failures` (message -> count) and
    :attr:`late` (start, latency) of calls answered after their deadline (the loop goes on meanwhile)."""

    def __init__(self, client: SoakClient, point_sets: list[np.ndarray], rate: float, deadline: float):
        self.client, self.point_sets, self.period, self.deadline = client, point_sets, 1.0 / rate, deadline
        self.records: list[tuple[float, float, str]] = []
        self.failures: Counter = Counter()
        self.late: list[tuple[float, float]] = []
        self._overdue: list = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="soak_queries", daemon=True)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(self.deadline + 2.0)
        for f in self._overdue:  # never answered
            if not f.done():
                self.client.client.remove_pending_request(f)

    def _run(self) -> None:
        k, nxt = 0, time.monotonic()
        while not self._stop.is_set():
            wait = nxt - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                break
            nxt = max(nxt + self.period, time.monotonic())
            self._call(self.point_sets[k % len(self.point_sets)])
            k += 1

    def _call(self, pts: np.ndarray) -> None:
        req = self.client.srv_type.Request()
        req.points = array.array("f", pts.tobytes())
        done = threading.Event()
        t0 = time.monotonic()
        future = self.client.client.call_async(req)
        future.add_done_callback(lambda _f: done.set())
        why = None
        if not done.wait(self.deadline):
            rec = (t0, float("nan"), "timeout")
            self._overdue.append(future)
            future.add_done_callback(lambda _f: self._on_late(t0))
        else:
            res = future.result()
            rec = (t0, time.monotonic() - t0, "ok")
            if res is None or not res.success or len(res.probabilities) != pts.shape[0]:
                rec = rec[:2] + ("failed",)
                why = "no response" if res is None else (f"success={res.success}, {len(res.probabilities)} "
                                                         f"answers: {res.message}")
        with self.lock:
            self.records.append(rec)
            if why:
                self.failures[why[:200]] += 1


    def _on_late(self, t0: float) -> None:
        with self.lock:
            self.late.append((t0, time.monotonic() - t0))
