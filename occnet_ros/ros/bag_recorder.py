"""Recording rclpy messages into a rosbag2 bag (MCAP): each message serialized as a publisher sends it
(``rclpy.serialization.serialize_message``) and written with its type's definition (:mod:`occnet_ros.bag.writer`),
so the bag replays in ``occnet_replay``, Foxglove and ``ros2 bag play``. Thread-safe."""
from __future__ import annotations

import threading
from pathlib import Path

from occnet_ros.ros.bag_messages import msgtype_of, serialize
from occnet_ros.bag.writer import BagWriter


class MessageRecorder:
    """A new bag at ``path`` (must not exist); :meth:`record` one message on a topic at ``time_ns``."""

    def __init__(self, path: str | Path, storage: str = "mcap"):
        self.writer = BagWriter(path, storage)
        self.path = self.writer.path
        self._lock = threading.Lock()
        self._closed = False

    def record(self, topic: str, msg, time_ns: int) -> None:
        """Write ``msg`` (an rclpy message) on ``topic`` (its full name, e.g. ``/points``) at bag time
        ``time_ns``; the topic is registered with the message's type on first use."""
        data = serialize(msg)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"bag {self.path} is closed")
            if not self.writer.has_topic(topic):
                self.writer.add_topic(topic, msgtype_of(msg))
            self.writer.write(topic, time_ns, data)

    @property
    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.writer.counts)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.writer.close()
