"""Which messages make the node's next frame: the newest cloud and the partner streams it waits for (pure
Python, no ROS).

A cloud's partners are the instance mask (segmentation modes ``mask`` and ``auto``), the colour image
(``color_from_image``) and, for an object map fed by the ``camera_pose`` topic, the pose. A partner is waited for
while it delivers (a message within ``stream_timeout``, :meth:`FrameSync.active
<occnet_ros.perception.frame_sync.FrameSync.active>`); the mask always in mode ``mask``, where a cloud without its
mask cannot be segmented. A partner whose stamps have paired with no cloud for longer than ``stream_timeout`` is
no longer waited for, and is reported (rate-limited, with the closest stamp offset seen), so one stale stream
never blocks the others. :class:`LiveFrames` holds that policy over the node's :class:`FrameSync`; the bag replay
(:mod:`occnet_ros.bag.timeline`) pairs offline and has its own.
"""
from __future__ import annotations

import math
import time
from typing import Callable

from occnet_ros.perception.frame_sync import FrameSync, SyncedFrame

__all__ = ["LiveFrames", "PARTNER_EFFECTS"]

PARTNER_EFFECTS = {
    "mask": {"mask": "frames are dropped (segmentation.mode is mask)", "auto": "segmenting geometrically meanwhile"},
    "image": "meshes get no colour from the image meanwhile",
    "pose": "frames are dropped: the object map needs each cloud's camera_pose",
}
"""What the node does without each partner stream, as its warning says it."""


class LiveFrames:
    """The newest complete frame of ``sync`` (streams ``points`` and the partners below).

    segmentation_mode: ``mask``, ``auto`` or ``geometric`` (no mask partner); color_from_image: the image is a
    partner; pose_from_topic: the pose is a partner (object map without tf2); stream_timeout, tolerance: the
    ``sync.*`` parameters, s; warn(text): where reports of stale partners go, at most once per ``throttle_s`` per
    stream; clock: the time the sync's pushes are stamped with (time.monotonic, as FrameSync's default)."""

    def __init__(self, sync: FrameSync, segmentation_mode: str, color_from_image: bool, pose_from_topic: bool,
                 stream_timeout: float, tolerance: float, warn: Callable[[str], None], throttle_s: float,
                 clock: Callable[[], float] = time.monotonic):
        if segmentation_mode not in ("mask", "auto", "geometric"):
            raise ValueError(f"segmentation_mode must be mask, auto or geometric, got {segmentation_mode!r}")
        self.sync = sync
        self.segmentation_mode = segmentation_mode
        self.stream_timeout = float(stream_timeout)
        self.tolerance = float(tolerance)
        self.warn = warn
        self.throttle_s = float(throttle_s)
        self.clock = clock
        self._reported: dict[str, float] = {}
        self.partners: list[tuple[str, bool]] = []
        """(stream, whether clouds wait for it even while it does not deliver), in pairing order."""
        if segmentation_mode != "geometric":
            self.partners.append(("mask", segmentation_mode == "mask"))
        if color_from_image:
            self.partners.append(("image", False))
        if pose_from_topic:  # a cloud taken without its pose is dropped, with why
            self.partners.append(("pose", False))

    def take(self) -> SyncedFrame | None:
        """The newest complete frame, or None (nothing new, or its partners not yet here); stale partners are
        reported once the frame is taken without them."""
        now = self.clock()
        required, optional, stale = [], [], []
        for stream, always in self.partners:
            waits = always or self.sync.active(stream, self.stream_timeout, now)
            if waits and self.sync.unpaired_for(stream, now) > self.stream_timeout:
                stale.append(stream)
                waits = False
            (required if waits else optional).append(stream)
        offsets = {stream: self.sync.closest_offset(stream) for stream in stale}  # before take() consumes
        frame = self.sync.take(required, optional, min_age=max(2 * self.tolerance, 0.1), now=now)
        for stream in stale:
            if frame is not None and stream not in frame.items:
                self._report_unpaired(stream, offsets[stream], now)
        return frame

    def _report_unpaired(self, stream: str, offset: float | None, now: float) -> None:
        """Warn (once per ``throttle_s`` per stream) that ``stream`` pairs with no cloud; ``offset``: the closest
        stamp offset seen (its stamp minus the newest cloud's, s), None when it held nothing."""
        if now - self._reported.get(stream, -math.inf) < self.throttle_s:
            return
        self._reported[stream] = now
        seen = f"closest stamp offset {offset:+.3f} s" if offset is not None else "none held"
        effect = PARTNER_EFFECTS[stream]
        if isinstance(effect, dict):
            effect = effect[self.segmentation_mode]
        topic = "camera_pose" if stream == "pose" else stream
        self.warn(f"'{topic}' has paired with no cloud for {self.sync.unpaired_for(stream, now):.1f} s ({seen}; "
                  f"sync.tolerance {self.tolerance} s): {effect}; check the publishers' clocks and stamps")
