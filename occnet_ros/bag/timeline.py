"""A recording's messages in bag order -> the frames the node would pair, and the pacing of a replay. Pure
Python (no rclpy); the items are opaque.

:class:`FrameAssembler` pairs each cloud with its partners (mask, image, pose) through the node's own
:class:`~occnet_ros.perception.frame_sync.FrameSync` (closest stamp within ``sync.tolerance``), but - unlike the
live node, which takes only the newest cloud - hands out every cloud in order: a cloud enters the FrameSync
once the previous one was taken, and is taken when each partner stream in the bag has delivered a stamp past
``cloud stamp + tolerance`` (so every partner that could pair has come), when the bag time has moved
``sync.stream_timeout`` past the cloud (a partner stream that pairs with nothing does not hold frames back, as
in the node), or at the end of the bag.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from occnet_ros.perception.frame_sync import FrameSync, SyncedFrame

PARTNER_HISTORY = 256
"""Partner messages kept per stream while their cloud waits (FrameSync's ``history``)."""


@dataclass
class AssembledFrame:
    """One cloud and its partners: ``frame`` (the FrameSync's SyncedFrame, ``items[stream]``),
    ``log_time_ns`` of the cloud in the bag, ``missing``: required partner streams that had no message within
    the tolerance (then the frame is to be dropped), ``unpaired``: optional partner streams that had none."""

    frame: SyncedFrame
    log_time_ns: int
    missing: list[str] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    stamp: float
    log_time_ns: int
    item: Any


class FrameAssembler:
    """Pairs ``primary`` items with the ``partners`` present in the bag. ``required``: partners a cloud cannot
    go without (the mask in ``segmentation.mode: mask``, the pose with an object map); the others are taken
    when there. ``tolerance`` and ``stream_timeout`` in seconds (the node's ``sync.*``)."""

    def __init__(self, primary: str, partners: Sequence[str], required: Sequence[str], tolerance: float,
                 stream_timeout: float):
        unknown = set(required) - set(partners)
        if unknown:
            raise ValueError(f"required streams {sorted(unknown)} are not among the partners {list(partners)}")
        self.primary = primary
        self.partners = list(partners)
        self.required = [s for s in self.partners if s in set(required)]
        self.optional = [s for s in self.partners if s not in set(required)]
        self.tolerance = float(tolerance)
        self.timeout_ns = int(round(stream_timeout * 1e9))
        self.sync = FrameSync([primary] + self.partners, primary, tolerance, history=PARTNER_HISTORY)
        self._waiting: deque[_Pending] = deque()
        self._current: _Pending | None = None
        self._newest: dict[str, float] = {}

    def push(self, stream: str, stamp: float, log_time_ns: int, item: Any) -> list[AssembledFrame]:
        """Add one message (header ``stamp`` s, bag time ``log_time_ns``); returns the frames completed by it."""
        if stream == self.primary:
            self._waiting.append(_Pending(float(stamp), int(log_time_ns), item))
        elif stream in self.partners:
            self.sync.push(stream, stamp, item, now=0.0)
            self._newest[stream] = max(self._newest.get(stream, float("-inf")), float(stamp))
        else:
            raise KeyError(f"unknown stream '{stream}'")
        return self._advance(int(log_time_ns), end=False)

    def finish(self) -> list[AssembledFrame]:
        """The frames still waiting, at the end of the bag."""
        return self._advance(None, end=True)

    def _ready(self, cur: _Pending, now_ns: int | None, end: bool) -> bool:
        if end or (now_ns is not None and now_ns - cur.log_time_ns >= self.timeout_ns):
            return True
        return all(self._newest.get(s, float("-inf")) > cur.stamp + self.tolerance for s in self.partners)

    def _advance(self, now_ns: int | None, end: bool) -> list[AssembledFrame]:
        out = []
        while True:
            if self._current is None:
                if not self._waiting:
                    return out
                self._current = self._waiting.popleft()
                self.sync.push(self.primary, self._current.stamp, self._current.item, now=0.0)
            cur = self._current
            if not self._ready(cur, now_ns, end):
                return out
            frame = self.sync.take(self.required, self.optional, min_age=0.0, now=0.0)
            missing: list[str] = []
            if frame is None:  # a required partner has no message within the tolerance: take the cloud alone
                frame = self.sync.take((), self.required + self.optional, min_age=0.0, now=0.0)
                missing = [s for s in self.required if s not in frame.items]
            unpaired = [s for s in self.optional if s not in frame.items]
            out.append(AssembledFrame(frame, cur.log_time_ns, missing, unpaired))
            self._current = None


class Pacer:
    """Replay speed. ``rate`` "max": no waiting; "recorded": :meth:`wait` returns once as much wall time has
    passed since the first call as bag time between the first message and this one (never earlier; a replay
    slower than the recording does not skip frames, it falls behind). ``clock``/``sleep``: seconds, as
    ``time.monotonic`` / ``time.sleep`` (replaceable in tests)."""

    def __init__(self, rate: str, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate not in ("recorded", "max"):
            raise ValueError(f"rate must be 'recorded' or 'max', got {rate!r}")
        self.rate = rate
        self.clock, self.sleep = clock, sleep
        self._origin: tuple[int, float] | None = None
        self.waited_s = 0.0
        """Total time spent waiting, s."""

    def wait(self, log_time_ns: int) -> float:
        """Wait until the message at bag time ``log_time_ns`` is due; returns the seconds waited."""
        if self.rate == "max":
            return 0.0
        now = self.clock()
        if self._origin is None:
            self._origin = (int(log_time_ns), now)
            return 0.0
        due = self._origin[1] + (int(log_time_ns) - self._origin[0]) * 1e-9
        delay = due - now
        if delay <= 0:
            return 0.0
        self.sleep(delay)
        self.waited_s += delay
        return delay
