"""The current reconstructed objects and batched occupancy queries over them. Pure, thread-safe.

The reconstruction worker swaps in a whole new set of objects at once (:meth:`ObjectStore.replace`);
queries (the ROS service, planners) read one immutable snapshot, so they never see half an update and
never wait for a reconstruction. A query first rejects every point outside the axis-aligned box that
holds all queried objects' boxes (one vectorised test), then each remaining point meets each object's
axis-aligned box, then that object's oriented padded box; only points inside it reach the object
(the network through its cached code, or its cached probability grid: ``mode``). The probabilities are the
objects' calibrated ones; :meth:`ObjectStore.query_with_sources` also says what each answer rests on (the
``SOURCE_*`` codes of :mod:`occnet_ros.reconstruction.occupancy_field`).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Iterable, Protocol

import numpy as np

from occnet_ros.geometry import all_columns
from occnet_ros.reconstruction.normalization import BOX_HALF, CanonicalFrame
from occnet_ros.reconstruction.occupancy_field import SOURCE_NONE
from occnet_ros.reconstruction.reconstructed_object import QUERY_MODES


class QueryableObject(Protocol):
    """What the store needs of a reconstruction (e.g. :class:`occnet_ros.reconstruction.reconstructor.ReconstructedObject`):
    ``frame`` (canonical <-> store frame) and ``query_canonical(points (K, 3) canonical, mode) -> (K,)
    float32`` with ``mode`` one of :data:`QUERY_MODES`; for :meth:`ObjectStore.query_with_sources` also
    ``query_with_sources_canonical(points (K, 3) canonical, mode) -> ((K,) float32, (K,) uint8)``: the probabilities
    and what each rests on (the ``SOURCE_*`` codes)."""

    frame: CanonicalFrame

    def query_canonical(self, points: np.ndarray, mode: str = "exact") -> np.ndarray: ...


class UnknownObjectError(KeyError):
    """A query named object ids that the store does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown object ids"


@dataclass(frozen=True)
class StoredObject:
    """One object: ``id`` (stable), ``label``, ``obj`` (its reconstruction). ``box_min``/``box_max``: (3,) float64
    axis-aligned bounds of the padded canonical box in the store frame, metres (filled by the store)."""

    id: int
    label: str
    obj: QueryableObject
    box_min: np.ndarray | None = None
    box_max: np.ndarray | None = None


@dataclass(frozen=True)
class Snapshot:
    """An immutable set of objects: ``objects`` sorted by id, all in ``frame_id`` at ``stamp`` (s)."""

    objects: tuple[StoredObject, ...]
    frame_id: str
    stamp: float

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(o.id for o in self.objects)

    def get(self, object_id: int) -> StoredObject | None:
        for o in self.objects:
            if o.id == object_id:
                return o
        return None


def _with_box(o: StoredObject) -> StoredObject:
    corners = np.asarray(o.obj.frame.box_corners_source(), dtype=np.float64)
    # widen by a float32 ulp-scale margin: the exact oriented-box test follows
    pad = 1e-6 * max(1.0, float(np.abs(corners).max()))
    return StoredObject(o.id, o.label, o.obj, corners.min(axis=0) - pad, corners.max(axis=0) + pad)


class ObjectStore:
    """Thread-safe holder of the current :class:`Snapshot`."""

    def __init__(self):
        self._lock = threading.Lock()
        self._snap = Snapshot((), "", 0.0)

    def snapshot(self) -> Snapshot:
        """The current objects (immutable; stays valid after later updates)."""
        with self._lock:
            return self._snap

    def replace(self, objects: Iterable[StoredObject], frame_id: str, stamp: float
                ) -> tuple[list[int], list[int]]:
        """Swap in ``objects`` (all in ``frame_id``) atomically -> (ids added, ids removed)."""
        objs = sorted((_with_box(o) for o in objects), key=lambda o: o.id)
        ids = [o.id for o in objs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate object ids in {ids}")
        new = Snapshot(tuple(objs), frame_id, float(stamp))
        with self._lock:
            old, self._snap = self._snap, new
        added = sorted(set(ids) - set(old.ids))
        removed = sorted(set(old.ids) - set(ids))
        return added, removed

    def clear(self) -> list[int]:
        """Remove every object -> the removed ids."""
        return self.replace((), self.snapshot().frame_id, self.snapshot().stamp)[1]

    def query(self, points: np.ndarray, object_ids: Iterable[int] | None = None, mode: str = "exact",
              snapshot: Snapshot | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Occupancy of points (M, 3) float32, store frame, metres, finite.

        Returns ``(probs (M,) float32, ids (M,) int64)``: the highest probability over the objects
        (``object_ids``; None or empty = all) whose padded box holds the point, and the id of that object;
        0 and -1 where no box holds it. ``mode``: "exact" (the network) or "grid" (the objects' cached MISE
        grids, approximate), passed to ``query_canonical``. ``snapshot``: the objects to ask (default: the
        current ones). Raises :class:`UnknownObjectError` for ids not in the store, ``ValueError`` for a
        bad shape, non-finite points or an unknown mode.
        """
        probs, ids, _ = self._query(points, object_ids, mode, snapshot, False)
        return probs, ids

    def query_with_sources(self, points: np.ndarray, object_ids: Iterable[int] | None = None, mode: str = "exact",
                           snapshot: Snapshot | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`query` and, per point, what the answer rests on: ``(probs, ids, sources (M,) uint8)``,
        the source of the object that gave the probability (its ``query_with_sources_canonical``), or
        ``SOURCE_NONE`` (0) where no object's box holds the point."""
        return self._query(points, object_ids, mode, snapshot, True)

    def _query(self, points, object_ids, mode: str, snapshot: Snapshot | None, with_sources: bool):
        if mode not in QUERY_MODES:
            raise ValueError(f"mode must be one of {QUERY_MODES}, got {mode!r}")
        p = np.asarray(points, dtype=np.float32)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must have shape (M, 3), got {p.shape}")
        if not np.isfinite(p).all():
            raise ValueError("points contain NaN or inf")
        snap = self.snapshot() if snapshot is None else snapshot
        objs = snap.objects
        if object_ids is not None:
            wanted = sorted({int(i) for i in object_ids})
            if wanted:
                unknown = sorted(set(wanted) - set(snap.ids))
                if unknown:
                    raise UnknownObjectError(f"unknown object id(s) {unknown}; current ids: {list(snap.ids)}")
                objs = tuple(o for o in objs if o.id in set(wanted))
        m = p.shape[0]
        probs = np.zeros(m, dtype=np.float32)
        ids = np.full(m, -1, dtype=np.int64)
        sources = np.full(m, SOURCE_NONE, dtype=np.uint8)
        if not objs or m == 0:
            return probs, ids, sources
        lo = np.min([o.box_min for o in objs], axis=0)
        hi = np.max([o.box_max for o in objs], axis=0)
        candidates = np.flatnonzero(all_columns((p >= lo) & (p <= hi)))
        if candidates.size == 0:
            return probs, ids, sources
        if candidates.size == m:
            return _per_object(p, objs, mode, with_sources)
        probs[candidates], ids[candidates], sources[candidates] = _per_object(p[candidates], objs, mode,
                                                                              with_sources)
        return probs, ids, sources


def query_objects(points: np.ndarray, objects: Iterable[StoredObject], mode: str = "exact"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The per-object part of :meth:`ObjectStore.query`, without the union-box rejection: points (M, 3)
    float32 finite, store frame, metres; ``objects`` with their boxes filled (as in a :class:`Snapshot`)
    -> (probs (M,) float32, ids (M,) int64), 0 and -1 where no object's padded box holds the point."""
    probs, ids, _ = _per_object(points, objects, mode, False)
    return probs, ids


def _per_object(points: np.ndarray, objects: Iterable[StoredObject], mode: str, with_sources: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`query_objects` and (``with_sources``) each point's source from the object that answered it
    (``query_with_sources_canonical``: one pass per object; SOURCE_NONE elsewhere and without ``with_sources``)."""
    p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    m = p.shape[0]
    best = np.full(m, -1.0, dtype=np.float32)
    ids = np.full(m, -1, dtype=np.int64)
    sources = np.full(m, SOURCE_NONE, dtype=np.uint8)
    for o in sorted(objects, key=lambda o: o.id):
        idx = np.flatnonzero(all_columns((p >= o.box_min) & (p <= o.box_max)))
        if idx.size == 0:
            continue
        c = o.obj.frame.to_canonical(p[idx])
        inside = all_columns(np.abs(c) <= BOX_HALF * (1.0 + 1e-5))
        idx, c = idx[inside], c[inside]
        if idx.size == 0:
            continue
        if with_sources:
            prob, src = o.obj.query_with_sources_canonical(c, mode)
        else:
            prob = o.obj.query_canonical(c, mode)
        prob = np.asarray(prob, dtype=np.float32).reshape(-1)
        better = np.flatnonzero(prob > best[idx])
        won = idx[better]
        best[won] = prob[better]
        ids[won] = o.id
        if with_sources:  # the last object to win a point is the one that answers it
            sources[won] = np.asarray(src, dtype=np.uint8).reshape(-1)[better]
    return np.maximum(best, 0.0), ids, sources
