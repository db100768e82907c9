"""Pairing of messages from several streams (points, mask, image) by their stamps, latest-only and with
bounded memory. Pure Python, thread-safe; the items are opaque (raw messages or arrays).

Producers (subscription callbacks) :meth:`FrameSync.push` and return at once; one consumer (the
reconstruction worker) calls :meth:`FrameSync.take`, which returns the *newest* primary item whose
required partners have arrived within the stamp tolerance, and discards everything older. Each stream
keeps at most ``history`` items, so a slow consumer never makes memory grow: old frames are dropped.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence


@dataclass(frozen=True)
class Stamped:
    """One message: ``stamp`` (seconds, the message header's time), ``item`` (anything),
    ``received`` (time.monotonic() at push)."""

    stamp: float
    item: Any
    received: float


@dataclass
class SyncedFrame:
    """A primary item and its partners: ``items[stream]`` for every matched stream; ``stamp`` of the
    primary, seconds."""

    stamp: float
    items: dict[str, Any] = field(default_factory=dict)


class FrameSync:
    """Stamp pairing of ``streams``; ``primary`` is the stream that drives processing (the cloud).

    tolerance: largest |stamp difference| in seconds for two messages to belong to one frame.
    history: items kept per stream (>= 1).
    """

    def __init__(self, streams: Sequence[str], primary: str, tolerance: float, history: int = 4):
        if primary not in streams:
            raise ValueError(f"primary stream '{primary}' is not among {list(streams)}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.primary = primary
        self.tolerance = float(tolerance)
        self._buffers: dict[str, deque[Stamped]] = {s: deque(maxlen=history) for s in streams}
        self._last_received: dict[str, float | None] = {s: None for s in streams}
        self._prev_primary_received: float | None = None  # arrival of the primary before the newest
        self._unpaired_since: dict[str, float | None] = {s: None for s in streams}
        self._cond = threading.Condition()
        self._version = 0
        self.dropped = 0
        """Primary items discarded without being returned (superseded, evicted or unmatched)."""

    def push(self, stream: str, stamp: float, item: Any, now: float | None = None) -> None:
        """Store ``item`` of ``stream`` with its header ``stamp`` (seconds); wakes :meth:`wait`."""
        if stream not in self._buffers:
            raise KeyError(f"unknown stream '{stream}'")
        now = time.monotonic() if now is None else now
        with self._cond:
            buf = self._buffers[stream]
            if stream == self.primary and len(buf) == buf.maxlen:
                self.dropped += 1
            buf.append(Stamped(float(stamp), item, now))
            if self._unpaired_since[stream] is not None and any(
                    abs(p.stamp - float(stamp)) <= self.tolerance for p in self._buffers[self.primary]):
                self._unpaired_since[stream] = None  # a partner that can pair has come
            if stream == self.primary:
                self._prev_primary_received = self._last_received[stream]
            self._last_received[stream] = now
            self._version += 1
            self._cond.notify_all()

    def last_received(self, stream: str) -> float | None:
        """time.monotonic() of the last push on ``stream``, or None if nothing came yet."""
        with self._cond:
            return self._last_received[stream]

    def active(self, stream: str, within: float, now: float | None = None) -> bool:
        """True when ``stream`` delivered something in the last ``within`` seconds, or since the
        primary item before the newest one arrived (so a slow sensor whose frames come further apart
        than ``within`` still counts as active while every frame brings that stream)."""
        now = time.monotonic() if now is None else now
        with self._cond:
            last = self._last_received[stream]
            prev = self._prev_primary_received
        if last is None:
            return False
        return now - last <= within or (prev is not None and last >= prev)

    def unpaired_for(self, stream: str, now: float | None = None) -> float:
        """Seconds since :meth:`take`, asked for ``stream`` as a required partner, first found no primary
        item it could pair with, counted until an item of the stream arrives that pairs with a held primary or
        a take pairs it (0 meanwhile). So a partner that is merely late, or a consumer busy elsewhere while the
        partner came, does not make a stream look unpaired."""
        now = time.monotonic() if now is None else now
        with self._cond:
            since = self._unpaired_since[stream]
        return 0.0 if since is None else max(0.0, now - since)

    def closest_offset(self, stream: str) -> float | None:
        """Signed stamp difference (``stream``'s stamp minus the primary's, seconds) of the closest pair
        between the newest primary item held and the items of ``stream`` held; None when either holds none."""
        with self._cond:
            prim, items = self._buffers[self.primary], self._buffers[stream]
            if not prim or not items:
                return None
            newest = max(prim, key=lambda s: s.stamp).stamp
            return min((s.stamp - newest for s in items), key=abs)

    def wait(self, since_version: int, timeout: float) -> int:
        """Block until a push happens after ``since_version`` (or ``timeout`` seconds pass); returns the
        current version. Use ``version`` for the first call."""
        with self._cond:
            self._cond.wait_for(lambda: self._version != since_version, timeout)
            return self._version

    @property
    def version(self) -> int:
        with self._cond:
            return self._version

    def _closest(self, stream: str, stamp: float) -> Stamped | None:
        best = None
        for s in self._buffers[stream]:
            d = abs(s.stamp - stamp)
            if d <= self.tolerance and (best is None or d < abs(best.stamp - stamp)):
                best = s
        return best

    def take(self, required: Iterable[str] = (), optional: Iterable[str] = (), min_age: float = 0.0,
             now: float | None = None) -> SyncedFrame | None:
        """The newest primary item whose ``required`` streams all have an item within the tolerance,
        with the closest such items and the closest ``optional`` ones (when any is within tolerance).
        A primary that lacks one of its ``optional`` partners is only taken once it was received at
        least ``min_age`` seconds ago (a grace period for partners that arrive a little later).

        The returned primary and all older primaries are removed (older ones count as dropped), and so
        are the matched partner items and everything older in their streams. None when no primary item
        can be matched yet.
        """
        required, optional = list(required), list(optional)
        for s in required + optional:
            if s not in self._buffers or s == self.primary:
                raise KeyError(f"'{s}' is not a partner stream of '{self.primary}'")
        now = time.monotonic() if now is None else now
        with self._cond:
            prim = self._buffers[self.primary]
            for p in sorted(prim, key=lambda s: s.stamp, reverse=True):
                partners = {s: self._closest(s, p.stamp) for s in required}
                if any(v is None for v in partners.values()):
                    continue
                missing = False
                for s in optional:
                    match = self._closest(s, p.stamp)
                    if match is not None:
                        partners[s] = match
                    else:
                        missing = True
                if missing and now - p.received < min_age:
                    continue
                older = [q for q in prim if q.stamp <= p.stamp]
                self.dropped += len(older) - 1
                for q in older:
                    prim.remove(q)
                for s, match in partners.items():
                    buf = self._buffers[s]
                    for q in [q for q in buf if q.stamp <= match.stamp]:
                        buf.remove(q)
                items = {self.primary: p.item}
                items.update({s: m.item for s, m in partners.items()})
                for s in partners:
                    self._unpaired_since[s] = None
                return SyncedFrame(stamp=p.stamp, items=items)
            for s in required:  # nothing taken: remember the required streams no primary could pair with
                if prim and self._unpaired_since[s] is None and all(self._closest(s, p.stamp) is None for p in prim):
                    self._unpaired_since[s] = now
            return None

    def clear(self) -> None:
        """Forget every stored item (not the last-received times)."""
        with self._cond:
            for buf in self._buffers.values():
                buf.clear()

    def sizes(self) -> dict[str, int]:
        """Items currently held per stream."""
        with self._cond:
            return {s: len(b) for s, b in self._buffers.items()}
