"""The ``query_points`` cloud of ``reconstruction_node`` (numpy only): a query's points with the occupancy
probability it answered, evenly subsampled, encoded as PointCloud2 bytes (FLOAT32 ``x``, ``y``, ``z``,
``probability``, little endian, one row).
"""
from __future__ import annotations

import numpy as np

from occnet_ros.perception.pointcloud2 import FLOAT32, CloudLayout, Field
from occnet_ros.viewer.scene import PROBABILITY_FIELD, even_indices

MAX_QUERY_POINTS = 5000
"""Most points of one request that ``reconstruction_node`` publishes on ``query_points`` (evenly subsampled):
16 bytes each, so one message stays under 80 KB however large the request."""

FIELDS = (Field("x", 0, FLOAT32), Field("y", 4, FLOAT32), Field("z", 8, FLOAT32), Field(PROBABILITY_FIELD, 12, FLOAT32))
POINT_STEP = 16


def query_cloud(flat_points, probabilities, max_points: int = MAX_QUERY_POINTS) -> tuple[CloudLayout, bytes]:
    """A query's points and answers -> (layout, data) of the ``query_points`` cloud.

    flat_points: buffer or array of float32 x0, y0, z0, x1, ... (the request's points, metres, in the
    request's frame); probabilities: (N,) one per point (the response's). At most ``max_points`` points,
    evenly spread over the request. Raises ValueError when the sizes disagree."""
    pts = np.frombuffer(flat_points, np.float32) if not isinstance(flat_points, np.ndarray) else flat_points
    pts = np.asarray(pts, np.float32).reshape(-1)
    prob = np.asarray(probabilities, np.float32).reshape(-1)
    if pts.size % 3 or pts.size // 3 != prob.size:
        raise ValueError(f"{pts.size} point values for {prob.size} probabilities (need 3 per probability)")
    idx = even_indices(prob.size, max_points)
    out = np.empty((idx.size, 4), np.dtype("<f4"))
    out[:, :3] = pts.reshape(-1, 3)[idx]
    out[:, 3] = prob[idx]
    layout = CloudLayout(FIELDS, 1, int(idx.size), POINT_STEP, POINT_STEP * int(idx.size), False)
    return layout, out.tobytes()
