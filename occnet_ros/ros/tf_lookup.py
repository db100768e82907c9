"""Frame transforms through tf2 where ``tf2_ros`` exists (a ROS 2 distribution); without it only the
identity between equal frames is known, and asking for anything else raises :class:`TransformError`
(:class:`occnet_ros.geometry.TransformError`, re-exported here)."""
from __future__ import annotations

import importlib.util

from occnet_ros.geometry import RigidTransform, TransformError
from occnet_ros.ros.conversions import MessageError, transform_msg_to_rigid

__all__ = ["TransformError", "TransformLookup", "tf2_available"]


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

    def transform(self, target: str, source: str, stamp=None) -> RigidTransform:
        """The transform taking points from the ``source`` to the ``target`` frame (``T_target_source``),
        at ``stamp`` (builtin_interfaces/Time; None = latest). Raises :class:`TransformError`."""
        if target == source:
            return RigidTransform()
        if self._buffer is None:
            raise TransformError(f"cannot transform from '{source}' to '{target}': tf2_ros is not available")
        from rclpy.duration import Duration
        from rclpy.time import Time

        when = Time() if stamp is None else Time.from_msg(stamp)
        try:
            t = self._buffer.lookup_transform(target, source, when, timeout=Duration(seconds=self.timeout))
        except Exception as e:  # tf2 LookupException, ExtrapolationException, ...
            raise TransformError(f"no transform from '{source}' to '{target}': {e}") from e
        try:
            return transform_msg_to_rigid(t.transform)
        except MessageError as e:
            raise TransformError(f"transform from '{source}' to '{target}' is unusable: {e}") from e
