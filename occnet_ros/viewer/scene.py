"""What the viewer shows, as plain arrays (numpy only): cloud subsampling, mesh colours, query points
coloured by probability, and the camera poses that place a cloud in the view's fixed frame.

Units: metres; colours uint8 RGB(A) 0..255. Frames: those of the messages the arrays came from.
"""
from __future__ import annotations

import colorsys
from collections import deque
from dataclasses import dataclass

import numpy as np

from occnet_ros.perception.pointcloud2 import FLOAT32, CloudFormatError, CloudLayout, parse_cloud, structured_view
from occnet_ros.viewer.objects_cdr import ObjectView

PROBABILITY_FIELD = "probability"
"""Name of the FLOAT32 field of the ``query_points`` cloud that holds each point's occupancy probability."""

PROBABILITY_STOPS = np.array([[0.0, 40, 90, 255], [0.5, 250, 220, 40], [1.0, 230, 30, 30]])
"""Colour ramp of the query points: (probability, R, G, B) stops, blue (free) - yellow - red (occupied)."""


def object_color(object_id: int) -> np.ndarray:
    """A distinct, stable colour per object id, (3,) uint8: the hue steps by the golden ratio, as the RViz
    markers' :func:`occnet_ros.ros.markers.id_color` (kept equal by a test)."""
    h = (int(object_id) * 0.618033988749895) % 1.0
    return np.round(np.array(colorsys.hsv_to_rgb(h, 0.65, 0.95)) * 255).astype(np.uint8)


def mesh_colors(obj: ObjectView) -> np.ndarray:
    """(V, 3) uint8 per-vertex colours of ``obj``: its vertex colours (RGBA in [0, 1], alpha dropped) when
    the message has them, else :func:`object_color` of its id on every vertex."""
    n = obj.vertices.shape[0]
    if obj.vertex_rgba is not None:
        return np.round(np.clip(obj.vertex_rgba[:, :3], 0.0, 1.0) * 255).astype(np.uint8)
    return np.broadcast_to(object_color(obj.object_id), (n, 3)).copy()


def even_indices(n: int, max_count: int) -> np.ndarray:
    """Indices of at most ``max_count`` of ``n`` items, evenly spread and increasing (all when n <= max_count)."""
    if max_count < 1:
        raise ValueError(f"max_count must be >= 1, got {max_count}")
    if n <= max_count:
        return np.arange(n)
    return (np.arange(max_count, dtype=np.int64) * n) // max_count


def subsample_cloud(xyz: np.ndarray, rgb: np.ndarray | None, max_points: int
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """Finite points of a decoded cloud, at most ``max_points`` (evenly subsampled).

    xyz: (H, W, 3) or (N, 3) float, metres, NaN/inf = no return; rgb: same leading shape x 3 uint8, or None.
    Returns (M, 3) float32 points and (M, 3) uint8 colours (None without rgb), M <= max_points."""
    pts = np.asarray(xyz).reshape(-1, 3)
    keep = np.flatnonzero(np.isfinite(pts).all(axis=1))
    keep = keep[even_indices(keep.size, max_points)]
    colors = None if rgb is None else np.asarray(rgb).reshape(-1, 3)[keep].astype(np.uint8)
    return pts[keep].astype(np.float32), colors


def probability_colors(p: np.ndarray) -> np.ndarray:
    """(N,) occupancy probabilities -> (N, 3) uint8 colours along :data:`PROBABILITY_STOPS` (clipped to
    [0, 1]; NaN shows as probability 0)."""
    p = np.nan_to_num(np.clip(np.asarray(p, np.float64).reshape(-1), 0.0, 1.0), nan=0.0)
    stops = PROBABILITY_STOPS
    out = np.stack([np.interp(p, stops[:, 0], stops[:, c]) for c in (1, 2, 3)], axis=1)
    return np.round(out).astype(np.uint8)


def query_point_arrays(data, layout: CloudLayout) -> tuple[np.ndarray, np.ndarray]:
    """A ``query_points`` cloud (x, y, z and a FLOAT32 :data:`PROBABILITY_FIELD`) -> ((N, 3) float32
    points, (N,) float32 probabilities), points without a finite position left out. Raises
    :class:`~occnet_ros.perception.pointcloud2.CloudFormatError` naming what is missing or malformed."""
    fields = [f for f in layout.fields if f.name == PROBABILITY_FIELD]
    if len(fields) != 1 or fields[0].datatype != FLOAT32 or fields[0].count != 1:
        raise CloudFormatError(f"query points need exactly one FLOAT32 field '{PROBABILITY_FIELD}', got "
                               f"{[(f.name, f.datatype, f.count) for f in fields]}")
    xyz = parse_cloud(data, layout, want_rgb=False).xyz.reshape(-1, 3)
    prob = structured_view(data, layout)[PROBABILITY_FIELD].reshape(-1).astype(np.float32)
    keep = np.isfinite(xyz).all(axis=1)
    return xyz[keep], prob[keep]


@dataclass(frozen=True)
class StampedPose:
    """Pose of a cloud's frame in the fixed frame at ``stamp`` (s): ``translation`` (3,) metres,
    ``quaternion`` (4,) x, y, z, w (as geometry_msgs/Pose)."""

    stamp: float
    frame_id: str
    translation: np.ndarray
    quaternion: np.ndarray


class PoseHistory:
    """The last ``size`` poses (by arrival); :meth:`find` returns the one closest in stamp."""

    def __init__(self, size: int = 50):
        self._poses: deque[StampedPose] = deque(maxlen=size)

    def add(self, pose: StampedPose) -> None:
        q = np.asarray(pose.quaternion, np.float64)
        if not (np.isfinite(pose.translation).all() and np.isfinite(q).all() and np.linalg.norm(q) > 1e-9):
            raise ValueError(f"pose at {pose.stamp:.3f} has a non-finite translation or a zero quaternion")
        self._poses.append(pose)

    def find(self, stamp: float, frame_id: str, tolerance: float) -> StampedPose | None:
        """The pose in ``frame_id`` whose stamp is closest to ``stamp`` and within ``tolerance`` s, or None."""
        best = None
        for p in self._poses:
            d = abs(p.stamp - stamp)
            if p.frame_id == frame_id and d <= tolerance and (best is None or d < abs(best.stamp - stamp)):
                best = p
        return best
