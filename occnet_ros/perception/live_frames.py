"""Which messages make the node's next frame: the newest cloud and the partner streams it waits for (pure
Python, no ROS).

A cloud's partners are the instance mask (segmentation modes ``mask`` and ``auto``), the colour image
(``color_from_image``) and, for an object map fed by the ``camera_pose`` topic, the pose. A partner is waited for
while it delivers (a message within ``stream_timeout``, :meth:`FrameSync.active
<occnet_ros.perception.frame_sync.FrameSync.active>`); the mask always in mode ``mask``, where a cloud without its
mask cannot be segmented. Before a partner's first message, it is waited for where its topic has a publisher (the
node counts them), for up to ``stream_timeout`` from the first cloud: the first clouds after start are not taken
without the messages of a publisher that is already there (in mode ``auto``, the first frame would otherwise be
segmented geometrically while the segmenter's first masks are on their way). A partner whose stamps have paired
with no cloud for longer than ``stream_timeout``, or that has publishers but delivered nothing in that time, is no
longer waited for, and is reported (rate-limited), so one stale stream never blocks the others. :class:`LiveFrames`
holds that policy over the node's :class:`FrameSync`; the bag replay (:mod:`occnet_ros.bag.timeline`) pairs offline
and has its own.
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
    stream; clock: the time the sync's pushes are stamped with (time.monotonic, as FrameSync's default);
    publishers(stream): how many publishers a partner stream's topic has now (None: not known, and a partner is
    waited for only once it delivers)."""

    def __init__(self, sync: FrameSync, segmentation_mode: str, color_from_image: bool, pose_from_topic: bool,
                 stream_timeout: float, tolerance: float, warn: Callable[[str], None], throttle_s: float,
                 clock: Callable[[], float] = time.monotonic, publishers: Callable[[str], int] | None = None):
        if segmentation_mode not in ("mask", "auto", "geometric"):
            raise ValueError(f"segmentation_mode must be mask, auto or geometric, got {segmentation_mode!r}")
        self.sync = sync
        self.segmentation_mode = segmentation_mode
        self.stream_timeout = float(stream_timeout)
        self.tolerance = float(tolerance)
        self.warn = warn
        self.throttle_s = float(throttle_s)
        self.clock = clock
        self.publishers = publishers
        self._first_cloud: float | None = None
        """When the first cloud was received (the sync's clock), once one was."""
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
        if self._first_cloud is None:
            self._first_cloud = self.sync.last_received(self.sync.primary)
        required, optional, stale = [], [], []
        for stream, always in self.partners:
            waits = always or self.sync.active(stream, self.stream_timeout, now) or self._awaited(stream, now)
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

    def _awaited(self, stream: str, now: float) -> bool:
        """Whether ``stream``, which has delivered nothing yet, is waited for because its topic has a publisher: from
        the first cloud on, for ``stream_timeout``; past that it is reported (rate-limited) and no longer waited for."""
        if self.publishers is None or self._first_cloud is None or self.sync.last_received(stream) is not None:
            return False
        waited = now - self._first_cloud
        if waited <= self.stream_timeout:
            return self.publishers(stream) > 0
        if now - self._reported.get(stream, -math.inf) >= self.throttle_s:  # counted again only to report
            count = self.publishers(stream)
            if count > 0:
                self._reported[stream] = now
                self.warn(f"'{self._topic(stream)}' has {count} publisher(s) but delivered nothing in {waited:.1f} s "
                          f"since the first cloud: {self._effect(stream)}; check the publisher's QoS and that it "
                          f"publishes")
        return False

    @staticmethod
    def _topic(stream: str) -> str:
        return "camera_pose" if stream == "pose" else stream

    def _effect(self, stream: str) -> str:
        effect = PARTNER_EFFECTS[stream]
        return effect[self.segmentation_mode] if isinstance(effect, dict) else effect

    def _report_unpaired(self, stream: str, offset: float | None, now: float) -> None:
        """Warn (once per ``throttle_s`` per stream) that ``stream`` pairs with no cloud; ``offset``: the closest
        stamp offset seen (its stamp minus the newest cloud's, s), None when it held nothing."""
        if now - self._reported.get(stream, -math.inf) < self.throttle_s:
            return
        self._reported[stream] = now
        seen = f"closest stamp offset {offset:+.3f} s" if offset is not None else "none held"
        self.warn(f"'{self._topic(stream)}' has paired with no cloud for {self.sync.unpaired_for(stream, now):.1f} s "
                  f"({seen}; sync.tolerance {self.tolerance} s): {self._effect(stream)}; check the publishers' clocks "
                  f"and stamps")
