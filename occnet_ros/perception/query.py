"""The occupancy query behind the ``query_occupancy`` service, on plain arrays (no ROS types): request
checks, frame change, store lookup. Every refusal is a :class:`QueryAnswer` with ``success=False`` and
a message saying why.

The probabilities are the objects' calibrated occupancy probabilities (the checkpoint's temperature and bias
for the cloud's number of views, :mod:`occnet_ros.network.probability_calibration`); with ``with_sources`` the
answer also says, per point, whether it rests on the observation or on the network alone (the ``SOURCE_*``
codes of :mod:`occnet_ros.reconstruction.occupancy_field`, the ``source`` field of ``query_occupancy``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from occnet_ros.geometry import RigidTransform, TransformError, finite_rows
from occnet_ros.perception.object_store import ObjectStore, UnknownObjectError


@dataclass
class QueryAnswer:
    """``probabilities`` (M,) float32 and ``object_ids`` (M,) int64 (-1: no object) when ``success``; empty
    otherwise. ``sources``: (M,) uint8 ``SOURCE_*`` codes when asked for and ``success`` (empty when refused),
    None when not asked for."""

    success: bool
    message: str
    probabilities: np.ndarray
    object_ids: np.ndarray
    sources: np.ndarray | None = None


def refused(message: str) -> QueryAnswer:
    """The answer to a request that cannot be answered: ``success`` false, ``message`` says why."""
    return QueryAnswer(False, message, np.zeros(0, np.float32), np.zeros(0, np.int64), np.zeros(0, np.uint8))


def _bytes(values, dtype) -> memoryview:
    """The bytes of a buffer (array.array, bytes, ndarray), or of a sequence of numbers as ``dtype``."""
    try:
        return memoryview(values).cast("B")
    except TypeError:
        return memoryview(np.asarray(values, dtype=dtype).tobytes())


def answer_query(store: ObjectStore, flat_points, frame_id: str, object_ids,
                 transform: Callable[[str, str], RigidTransform], max_points: int,
                 mode: str = "exact", with_sources: bool = False) -> QueryAnswer:
    """Occupancy of ``flat_points`` (buffer of float32 x0, y0, z0, x1, ... metres, in ``frame_id``;
    empty = the objects' frame) over ``object_ids`` (buffer of uint32; empty = all objects). ``mode``:
    "exact" or "grid" (see :meth:`ObjectStore.query`). ``with_sources``: also each point's source
    (:meth:`ObjectStore.query_with_sources`; the objects must answer ``sources_canonical``).

    transform(target, source) -> the :class:`~occnet_ros.geometry.RigidTransform` from the source to the
    target frame, raising :class:`~occnet_ros.geometry.TransformError` when unknown.
    """
    raw_points, raw_ids = _bytes(flat_points, np.float32), _bytes(object_ids, np.uint32)
    if raw_points.nbytes % 4 or raw_ids.nbytes % 4:
        return refused(f"points ({raw_points.nbytes} bytes) and object_ids ({raw_ids.nbytes} bytes) must be whole "
                       "4-byte values")
    pts = np.frombuffer(raw_points, dtype=np.float32) if raw_points.nbytes else np.zeros(0, np.float32)
    if pts.size % 3:
        return refused(f"points has {pts.size} values, not a multiple of 3 (flat x, y, z triples)")
    n = pts.size // 3
    if n > max_points:
        return refused(f"{n} query points exceed query_max_points = {max_points}")
    pts = pts.reshape(-1, 3)
    bad = ~finite_rows(pts)
    if bad.any():
        return refused(f"{int(bad.sum())} query point(s) contain NaN or inf (first at index {int(np.argmax(bad))})")
    ids = np.frombuffer(raw_ids, dtype=np.uint32) if raw_ids.nbytes else np.zeros(0, np.uint32)
    snap = store.snapshot()
    if frame_id and snap.frame_id and frame_id != snap.frame_id and n:
        try:
            pts = transform(snap.frame_id, frame_id).apply(pts).astype(np.float32)
        except TransformError as e:
            return refused(f"query frame '{frame_id}' differs from the objects' frame '{snap.frame_id}': {e}")
    try:
        wanted = ids.tolist() if ids.size else None
        if with_sources:
            probs, oids, sources = store.query_with_sources(pts, wanted, mode=mode, snapshot=snap)
        else:
            (probs, oids), sources = store.query(pts, wanted, mode=mode, snapshot=snap), None
    except UnknownObjectError as e:
        return refused(str(e))
    except ValueError as e:  # e.g. grid mode and an object without a cached grid
        return refused(f"cannot answer in mode '{mode}': {e}")
    where = f"{len(snap.objects)} object(s) in '{snap.frame_id}'" if snap.objects else "no objects yet"
    return QueryAnswer(True, f"{n} points, {where}", probs, oids, sources)
