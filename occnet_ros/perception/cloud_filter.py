"""Cleaning of one object's points before reconstruction: non-finite values, range limits, statistical
outliers, voxel downsampling. Plain numpy/scipy on (N, 3) arrays; no ROS types.

Every filter returns a boolean keep-mask or indices so that per-point attributes (colours, pixel
indices) can follow the points.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occnet_ros.config_io import setting
from occnet_ros.geometry import finite_rows
from occnet_ros.neighbours import NeighbourIndex


@dataclass
class CleanConfig:
    """Cleaning of one object's cloud before it is reconstructed (each field's ``doc`` says what it does)."""

    min_range: float = setting(0.0, doc="drop object points closer than this to the camera, m", range=(0.0, 100.0))
    max_range: float = setting(0.0, doc="drop object points farther than this from the camera, m (0 = no limit)",
                               range=(0.0, 1000.0))
    outlier_neighbors: int = setting(16, doc="k of the statistical outlier filter (0 = off)", range=(0, 256))
    outlier_std_ratio: float = setting(2.0, doc="a point is an outlier when its mean distance to its k nearest "
                                       "neighbours exceeds the mean over all points by this many standard "
                                       "deviations", range=(0.01, 100.0))
    voxel_size: float = setting(0.0, doc="voxel downsampling of each object's points, m (0 = off; the network "
                                "subsamples its input anyway)", range=(0.0, 1.0))

    def validate(self) -> None:
        if self.min_range < 0:
            raise ValueError(f"min_range must be >= 0, got {self.min_range}")
        if self.max_range > 0 and self.max_range <= self.min_range:
            raise ValueError(f"max_range {self.max_range} must exceed min_range {self.min_range} (or be 0)")
        if self.outlier_neighbors < 0:
            raise ValueError(f"outlier_neighbors must be >= 0, got {self.outlier_neighbors}")
        if self.outlier_std_ratio <= 0:
            raise ValueError(f"outlier_std_ratio must be > 0, got {self.outlier_std_ratio}")
        if self.voxel_size < 0:
            raise ValueError(f"voxel_size must be >= 0, got {self.voxel_size}")


def _check_points(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {p.shape}")
    return p


def finite_mask(points: np.ndarray) -> np.ndarray:
    """points: (N, 3) -> (N,) bool, True where all three coordinates are finite."""
    return finite_rows(_check_points(points))


def range_mask(points: np.ndarray, min_range: float = 0.0, max_range: float = 0.0,
               viewpoint: np.ndarray | tuple = (0.0, 0.0, 0.0)) -> np.ndarray:
    """points: (N, 3) metres -> (N,) bool, True where ``min_range <= |p - viewpoint| <= max_range``
    (``max_range <= 0``: no upper limit). Non-finite points are False."""
    p = _check_points(points)
    d = np.linalg.norm(p - np.asarray(viewpoint, dtype=p.dtype).reshape(1, 3), axis=1)
    keep = np.isfinite(d) & (d >= min_range)
    if max_range > 0:
        keep &= d <= max_range
    return keep


def statistical_outlier_mask(points: np.ndarray, k: int = 16, std_ratio: float = 2.0) -> np.ndarray:
    """points: (N, 3) finite, metres -> (N,) bool, True for inliers.

    For each point the mean distance to its ``k`` nearest other points; a point is an outlier when that
    exceeds ``mean + std_ratio * std`` of those means over the cloud. With ``N <= k`` all are kept.
    """
    p = _check_points(points).astype(np.float64, copy=False)
    n = p.shape[0]
    if k <= 0 or n <= k:
        return np.ones(n, dtype=bool)
    # the first neighbour is the point itself; the GIL is released meanwhile (threads: occnet_ros.neighbours)
    dist, _ = NeighbourIndex(p).query(p, k + 1)
    mean_d = dist[:, 1:].mean(axis=1)
    limit = mean_d.mean() + std_ratio * mean_d.std()
    return mean_d <= limit


def nearest_colours(vertices: np.ndarray, points: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Per vertex (V, 3) the colour of its nearest point (N, 3) (same frame; N >= 1), from ``colours`` (N, C) -> (V, C)
    of ``colours``' dtype (the node colours its published meshes with the cleaned cloud's image colours). The
    search (:class:`~occnet_ros.neighbours.NeighbourIndex`, in float64) releases the GIL."""
    v = np.asarray(vertices).reshape(-1, 3)
    if v.shape[0] == 0:
        return np.asarray(colours)[:0]
    _, nearest = NeighbourIndex(np.asarray(points, np.float64).reshape(-1, 3)).nearest(v)
    return np.asarray(colours)[nearest]


def voxel_downsample(points: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """points: (N, 3) finite, metres -> (centroids (V, 3) float32, inverse (N,) int64).

    One centroid per occupied cubic voxel of edge ``voxel_size`` (voxels anchored at the origin),
    ordered by voxel key (lexicographic x, y, z index); ``inverse[i]`` is the voxel of point ``i``.
    """
    p = _check_points(points)
    if voxel_size <= 0:
        raise ValueError(f"voxel_size must be > 0, got {voxel_size}")
    if p.shape[0] == 0:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.int64)
    keys = np.floor(p.astype(np.float64) / voxel_size).astype(np.int64)
    keys -= keys.min(axis=0)
    span = keys.max(axis=0) + 1
    if np.prod(span.astype(np.float64)) < 2.0**62:  # one int64 per voxel, same lexicographic order
        packed = (keys[:, 0] * span[1] + keys[:, 1]) * span[2] + keys[:, 2]
        _, inverse = np.unique(packed, return_inverse=True)
    else:
        _, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    count = np.bincount(inverse).astype(np.float64)
    sums = np.stack([np.bincount(inverse, weights=p[:, i].astype(np.float64)) for i in range(3)], axis=1)
    return (sums / count[:, None]).astype(np.float32), inverse


def first_in_voxel(inverse: np.ndarray) -> np.ndarray:
    """inverse (N,) voxel index per point -> (V,) index of the first point of each voxel."""
    v = int(inverse.max()) + 1 if inverse.size else 0
    first = np.full(v, inverse.size, dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(inverse.size))
    return first


@dataclass
class CleanResult:
    """``points``: (M, 3) float32 cleaned points, metres. ``index``: (M,) int64 index of each kept
    point (or of the first point of its voxel when downsampled) in the input."""

    points: np.ndarray
    index: np.ndarray


def clean_cloud(points: np.ndarray, cfg: CleanConfig,
                viewpoint: np.ndarray | tuple = (0.0, 0.0, 0.0)) -> CleanResult:
    """Drop non-finite points, apply range limits, remove statistical outliers, voxel-downsample.

    points: (N, 3) metres, any frame with the sensor at ``viewpoint``.
    """
    p = _check_points(points)
    keep = finite_mask(p)
    if cfg.min_range > 0 or cfg.max_range > 0:
        keep &= range_mask(p, cfg.min_range, cfg.max_range, viewpoint)
    index = np.flatnonzero(keep)
    q = p[index].astype(np.float32, copy=False)
    if cfg.outlier_neighbors > 0:
        inl = statistical_outlier_mask(q, cfg.outlier_neighbors, cfg.outlier_std_ratio)
        index, q = index[inl], q[inl]
    if cfg.voxel_size > 0 and q.shape[0]:
        q, inverse = voxel_downsample(q, cfg.voxel_size)
        index = index[first_in_voxel(inverse)]
    return CleanResult(points=np.ascontiguousarray(q, dtype=np.float32), index=index.astype(np.int64))
