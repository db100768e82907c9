"""Frame transforms through tf2 where ``tf2_ros`` exists (a ROS 2 distribution); without it only the
identity between equal frames is known, and asking for anything else raises :class:`TransformError`."""
from __future__ import annotations

import importlib.util

import numpy as np

from occnet_ros.ros.conversions import transform_to_matrix


class TransformError(RuntimeError):
    """A transform that cannot be looked up (message says which and why)."""


def tf2_available() -> bool:
    """True when the real tf2_ros package can be imported."""
    return importlib.util.find_spec("tf2_ros") is not None


class TransformLookup:
    """tf2 buffer + listener on ``node`` when tf2_ros is importable. ``timeout``: seconds to wait."""

    def __init__(self, node, timeout: float = 0.2):
        self.timeout = float(timeout)
        self._buffer = None
        self._listener = None
        if tf2_available():
            import tf2_ros

            self._buffer = tf2_ros.Buffer(node=node)
            self._listener = tf2_ros.TransformListener(self._buffer, node, spin_thread=False)

    @property
    def available(self) -> bool:
        return self._buffer is not None

    def matrix(self, target: str, source: str, stamp=None) -> np.ndarray:
        """(4, 4) transform taking points from ``source`` to ``target`` frame, at ``stamp``
        (builtin_interfaces/Time; None = latest). Raises :class:`TransformError`."""
        if target == source:
            return np.eye(4)
        if self._buffer is None:
            raise TransformError(f"cannot transform from '{source}' to '{target}': tf2_ros is not available")
        from rclpy.duration import Duration
        from rclpy.time import Time

        when = Time() if stamp is None else Time.from_msg(stamp)
        try:
            t = self._buffer.lookup_transform(target, source, when, timeout=Duration(seconds=self.timeout))
        except Exception as e:  # tf2 LookupException, ExtrapolationException, ...
            raise TransformError(f"no transform from '{source}' to '{target}': {e}") from e
        return transform_to_matrix(t.transform)


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(4, 4) transform applied to points (N, 3) -> (N, 3) float32."""
    p = np.asarray(points, np.float64).reshape(-1, 3)
    return (p @ matrix[:3, :3].T + matrix[:3, 3]).astype(np.float32)
