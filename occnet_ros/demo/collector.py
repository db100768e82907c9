"""The demo's listening node: keeps the camera's recent frames and pairs each published object array
with the input frame it was reconstructed from (imports rclpy).

The reconstruction node works on the newest frame *it has received* whenever it becomes free, so a
result refers to a frame that may be many camera periods old. Holding every frame would cost ~6.5 MB per
640x480 frame, so the held inputs are bounded: the frames of the last ``margin`` seconds, plus frames
*pinned* as candidates for the node's next pick. ``objects`` is taken raw (serialized bytes) so it is
seen at once, with the publisher's timestamp P: the node is about to pick its newest received frame,
whose stamp lies in [P - lag, P] (lag: how far the node's input runs behind, measured from earlier
results); the held frames with stamps from P - margin on are pinned, and the next two to arrive.
``margin`` starts at ``initial_margin_s`` and then follows the largest lag seen (times 1.5, plus two
periods). Deserializing the meshes (``shape_msgs/Mesh``, one Python object per vertex) can take
seconds; it happens afterwards, in :meth:`Collector.process_pending`, and is timed.
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import trimesh

from occnet_ros.demo.results import FrameResult, ObjectResult
from occnet_ros.sim.ground_truth import POSES_FILE

__all__ = ["Collector", "stamp_key"]

INPUT_TOPICS = ("points", "image", "mask")


def stamp_key(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds (exact dictionary key)."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class Collector:
    """Subscribes (relative names, in ``namespace``) to the camera's ``points``, ``image``, ``mask``
    and the node's ``objects``; :attr:`frames` fills with matched :class:`FrameResult` s.
    ``period_s``: the camera's frame period; ``gt_dir``: where the camera writes poses.json (read for
    its ``render_time_s``)."""

    def __init__(self, namespace: str, gt_dir: Path, period_s: float, initial_margin_s: float = 10.0,
                 max_margin_s: float = 30.0):
        import rclpy
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2

        from occnet_ros.msg import ReconstructedObjectArray

        self._rclpy = rclpy
        self._msg_type = ReconstructedObjectArray
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("occnet_demo_collector", namespace=namespace or None, context=self.context)
        self.executor = rclpy.executors.SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.gt_dir = gt_dir
        self.period_ns = int(period_s * 1e9)
        self.margin_ns = int(max(initial_margin_s, 2 * period_s) * 1e9)
        self.max_margin_ns = int(max_margin_s * 1e9)
        self.max_lag_ns = 0
        self.last_published: int | None = None
        self.inputs: OrderedDict[int, dict] = OrderedDict()
        self.pinned: set[int] = set()
        self.pin_next = 0
        self.pending: list[tuple[bytes, int, float, int | None]] = []
        self.frames: list[FrameResult] = []
        self.unmatched = 0
        self.non_mask_labels = 0
        self.deserialize_s: list[float] = []
        self.render_times: dict[int, float] = {}
        self.first_points: float | None = None
        self.first_objects: float | None = None
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(PointCloud2, "points", lambda m: self._store("points", m), qos)
        self.node.create_subscription(Image, "image", lambda m: self._store("image", m), qos)
        self.node.create_subscription(Image, "mask", lambda m: self._store("mask", m), qos)
        self.node.create_subscription(ReconstructedObjectArray, "objects", self._on_objects, QoSProfile(depth=10),
                                      raw=True)

    def _store(self, topic: str, msg) -> None:
        if topic == "points":
            if self.first_points is None:
                self.first_points = time.monotonic()
            self._read_render_time()
        key = stamp_key(msg.header.stamp)
        if key not in self.inputs:
            self.inputs[key] = {}
            if self.pin_next > 0:
                self.pinned.add(key)
                self.pin_next -= 1
        self.inputs[key][topic] = msg
        oldest = max(self.inputs) - self.margin_ns
        for k in [k for k in self.inputs if k < oldest and k not in self.pinned]:
            del self.inputs[k]

    def _read_render_time(self) -> None:
        try:
            doc = json.loads((self.gt_dir / POSES_FILE).read_text())
            self.render_times[int(doc["frame_index"])] = float(doc["render_time_s"])
        except (OSError, ValueError, KeyError):
            pass  # not written yet, or being replaced: the next frame will tell

    def _on_objects(self, data: bytes, info) -> None:
        received = time.time()
        if self.first_objects is None:
            self.first_objects = time.monotonic()
        published = int(info["source_timestamp"])
        self.pinned |= {k for k in self.inputs if k >= published - self.margin_ns}
        self.pin_next = 2
        self.pending.append((data, published, received, self.last_published))
        self.last_published = published

    def spin_once(self, timeout: float = 0.1) -> None:
        self.executor.spin_once(timeout_sec=timeout)
        self.process_pending()

    def process_pending(self) -> None:
        """Deserialize the received object arrays and pair them with their held input frames."""
        from rclpy.serialization import deserialize_message

        while self.pending:
            data, published, received, previous = self.pending.pop(0)
            t0 = time.perf_counter()
            msg = deserialize_message(data, self._msg_type)
            self.deserialize_s.append(time.perf_counter() - t0)
            key = stamp_key(msg.header.stamp)
            if previous is not None and previous > key:  # picked when the previous result was published
                self.max_lag_ns = max(self.max_lag_ns, previous - key)
                self.margin_ns = int(min(self.max_margin_ns,
                                         max(1.5 * self.max_lag_ns + 2 * self.period_ns, 2 * self.period_ns)))
            held = self.inputs.get(key, {})
            if not all(t in held for t in INPUT_TOPICS):
                self.unmatched += 1
            elif any(not o.label.startswith("mask_") for o in msg.objects):
                self.non_mask_labels += 1  # ids would not be mask ids: not comparable with ground truth
            else:
                self.frames.append(frame_result(msg, held, published * 1e-9, received))
            self.pinned = {k for k in self.pinned if k > key}  # the node never goes back in time
            self.inputs.pop(key, None)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def frame_result(msg, held: dict, published: float, received: float) -> FrameResult:
    """A ReconstructedObjectArray and its input messages -> :class:`FrameResult` (arrays).
    ``published``/``received``: seconds (system clock) the array was published / arrived."""
    from occnet_ros.ros.conversions import (
        image_to_mask, image_to_rgb, mesh_msg_to_arrays, pointcloud2_to_arrays, stamp_to_sec,
    )

    xyz, _ = pointcloud2_to_arrays(held["points"])
    objects = []
    for o in msg.objects:
        v, f = mesh_msg_to_arrays(o.mesh)
        mesh = trimesh.Trimesh(v, f, process=False)
        if len(o.vertex_colors) == len(v) and len(v):  # colours from the image: kept in the PLY files
            rgba = np.array([(c.r, c.g, c.b, c.a) for c in o.vertex_colors], dtype=np.float64)
            mesh.visual.vertex_colors = np.clip(np.rint(rgba * 255), 0, 255).astype(np.uint8)
        objects.append(ObjectResult(id=int(o.id), label=o.label, mesh=mesh,
                                    num_observed_points=int(o.num_observed_points),
                                    reconstruction_time=float(o.reconstruction_time)))
    stamp = stamp_to_sec(msg.header.stamp)
    return FrameResult(stamp=stamp, objects=objects, latency_s=received - stamp, node_latency_s=published - stamp,
                       points=xyz, rgb=image_to_rgb(held["image"]),
                       mask=image_to_mask(held["mask"]).astype(np.uint16))
