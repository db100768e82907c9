"""One frame from arrays to reconstructed objects: segment, clean, reconstruct, colour. No ROS types and
no rclpy: the node converts messages to a :class:`FrameInput` and the results to messages.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy.spatial import cKDTree

from occnet_ros.cloud_filter import clean_cloud
from occnet_ros.normalization import NormalizationError
from occnet_ros.ros.node_params import NodeParams
from occnet_ros.segmentation import (CameraIntrinsics, ClusterTracker, Segment, SegmentationError,
                                     apply_limits, segment_by_mask, segment_by_projected_mask,
                                     segment_geometric)


@dataclass
class FrameInput:
    """One synchronised frame. ``xyz``: (H, W, 3) organized or (N, 3) float32, cloud frame, metres, NaN =
    no return; ``cloud_rgb``: colours of the cloud points (same leading shape x 3 uint8) or None;
    ``mask``: (h, w) integer instance labels or None; ``image``: (h, w, 3) uint8 RGB or None;
    ``intrinsics``: the camera of mask and image, or None; ``up``: (3,) gravity-up in the cloud frame;
    ``viewpoint``: (3,) camera centre in the cloud frame, metres; ``stamp``: seconds."""

    xyz: np.ndarray
    stamp: float = 0.0
    cloud_rgb: np.ndarray | None = None
    mask: np.ndarray | None = None
    image: np.ndarray | None = None
    intrinsics: CameraIntrinsics | None = None
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, -1.0, 0.0]))
    viewpoint: np.ndarray = field(default_factory=lambda: np.zeros(3))


@dataclass
class ObjectResult:
    """One reconstructed object: ``segment`` (id, label, observed points), ``obj`` (the
    :class:`~occnet_ros.reconstructor.ReconstructedObject`), ``n_observed`` points after cleaning,
    ``vertex_colors`` (V, 3) uint8 per mesh vertex or None, ``seconds`` spent (clean + reconstruct)."""

    segment: Segment
    obj: object
    n_observed: int
    vertex_colors: np.ndarray | None
    seconds: float


@dataclass
class FrameResult:
    """``objects`` reconstructed; ``method``: "mask" or "geometric"; ``warnings``: why segments were
    skipped; ``cancelled``: the stop request interrupted the frame (results incomplete)."""

    objects: list[ObjectResult]
    method: str
    warnings: list[str]
    cancelled: bool = False


class FramePipeline:
    """Segmentation + per-object reconstruction with the settings of :class:`NodeParams`.

    reconstructor: anything with ``reconstruct(points, up=, viewpoint=) -> ReconstructedObject``.
    Not thread-safe: one worker calls :meth:`process`.
    """

    def __init__(self, reconstructor, params: NodeParams):
        self.reconstructor = reconstructor
        self.params = params
        self.tracker = ClusterTracker(params.segmentation.track_distance)
        self.rng = np.random.default_rng(params.seed)

    def segment(self, frame: FrameInput) -> tuple[list[Segment], str, tuple[int, int] | None]:
        """-> (segments after size limits, method, (H, W) of the pixel grid of ``Segment.pixels`` or None).
        Raises :class:`SegmentationError` when the mode needs a mask that is missing or unusable."""
        cfg = self.params.segmentation
        xyz = np.asarray(frame.xyz, dtype=np.float32)
        organized = xyz.ndim == 3
        use_mask = cfg.mode == "mask" or (cfg.mode == "auto" and frame.mask is not None)
        if use_mask:
            if frame.mask is None:
                raise SegmentationError("segmentation.mode is 'mask' but no mask matches this cloud")
            mask = frame.mask
            if organized and xyz.shape[:2] == mask.shape:
                return apply_limits(segment_by_mask(xyz, mask), cfg), "mask", mask.shape
            if frame.intrinsics is None:
                raise SegmentationError(
                    f"cloud {xyz.shape[:-1]} and mask {mask.shape} differ and no camera_info was received "
                    "to project the points into the mask")
            segs = segment_by_projected_mask(xyz.reshape(-1, 3), mask, frame.intrinsics)
            return apply_limits(segs, cfg), "mask", mask.shape
        flat = xyz.reshape(-1, 3)
        grid = None
        pixels = None
        if organized:
            grid, pixels = xyz.shape[:2], np.arange(flat.shape[0])
        elif frame.intrinsics is not None:
            k = frame.intrinsics
            pix, valid = k.project(flat)
            pixels, grid = np.where(valid, pix, -1), (k.height, k.width)
        segs, _ = segment_geometric(flat, cfg, self.rng, up=frame.up, viewpoint=frame.viewpoint, pixels=pixels)
        segs = self.tracker.relabel(apply_limits(segs, cfg))
        return sorted(segs, key=lambda s: s.id), "geometric", grid

    def _observed_colors(self, frame: FrameInput, seg: Segment, index: np.ndarray,
                         grid: tuple[int, int] | None) -> np.ndarray | None:
        """(K, 3) uint8 colours of the cleaned observed points, from the image when it fits the pixel
        grid, else from the cloud's own colours; None when neither is available."""
        if frame.image is not None and self.params.color_from_image and seg.pixels is not None \
                and grid is not None and frame.image.shape[:2] == tuple(grid):
            pix = seg.pixels[index]
            if np.all(pix >= 0):
                return frame.image.reshape(-1, 3)[pix]
        if frame.cloud_rgb is not None and seg.pixels is not None and np.asarray(frame.xyz).ndim == 3:
            return frame.cloud_rgb.reshape(-1, 3)[seg.pixels[index]]
        return None

    def process(self, frame: FrameInput, should_stop: Callable[[], bool] = lambda: False) -> FrameResult:
        """Segment ``frame`` and reconstruct every segment (cleaned first); vertex colours from the
        nearest observed point's colour."""
        segments, method, grid = self.segment(frame)
        results, warnings = [], []
        if frame.image is not None and self.params.color_from_image and grid is not None \
                and frame.image.shape[:2] != tuple(grid):
            warnings.append(f"image {frame.image.shape[1]}x{frame.image.shape[0]} does not match the "
                            f"{grid[1]}x{grid[0]} pixel grid of the cloud/mask: no colours from it")
        up, viewpoint = np.asarray(frame.up, np.float64), np.asarray(frame.viewpoint, np.float64)
        for seg in segments:
            if should_stop():
                return FrameResult(results, method, warnings, cancelled=True)
            t0 = time.perf_counter()
            cleaned = clean_cloud(seg.points, self.params.filter, viewpoint)
            if cleaned.points.shape[0] < self.params.segmentation.min_points:
                warnings.append(f"{seg.label} skipped: {cleaned.points.shape[0]} points left after cleaning")
                continue
            try:
                obj = self.reconstructor.reconstruct(cleaned.points, up=up, viewpoint=viewpoint)
            except NormalizationError as e:
                warnings.append(f"{seg.label} skipped: {e}")
                continue
            colors = None
            observed = self._observed_colors(frame, seg, cleaned.index, grid)
            if observed is not None and obj.mesh is not None and len(obj.mesh.vertices):
                _, nearest = cKDTree(cleaned.points).query(np.asarray(obj.mesh.vertices), k=1)
                colors = observed[nearest]
            results.append(ObjectResult(seg, obj, int(cleaned.points.shape[0]), colors,
                                        time.perf_counter() - t0))
        return FrameResult(results, method, warnings)
