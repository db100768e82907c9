"""One frame from arrays to reconstructed objects: segment, clean, reconstruct (reusing an unchanged
object's last reconstruction; the space the frame shows empty removed, :mod:`occnet_ros.reconstruction.known_empty`),
simplify the mesh to publish, colour it. No ROS types and no rclpy: the
node converts messages to a :class:`FrameInput` and the results to messages.

Memory: the pipeline keeps, per object of the last frame only, what reuse needs (the reconstruction and
its simplified mesh); the object store holds records of the same reconstructions without their meshes
(:func:`stored_objects`). Nothing of older frames is kept.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np

from occnet_ros.perception.cloud_filter import clean_cloud, nearest_colours
from occnet_ros.perception.config import PerceptionConfig
from occnet_ros.reconstruction.known_empty import DepthView, KnownEmpty, stands_on
from occnet_ros.perception.mesh_ops import Decimation, fast_or_open3d_decimation, simplify_mesh
from occnet_ros.reconstruction.normalization import NormalizationError
from occnet_ros.reconstruction.reconstructed_object import ReconstructedObject
from occnet_ros.perception.object_store import StoredObject
from occnet_ros.geometry import PinholeCamera, Plane, RigidTransform, finite_rows
from occnet_ros.perception.segmentation import (PLANE_FIT_POINTS, ClusterTracker, Segment, SegmentationError,
                                                apply_limits, fit_support_plane, segment_by_mask,
                                                segment_by_projected_mask, segment_geometric)


@dataclass
class FrameInput:
    """One synchronised frame. ``xyz``: (H, W, 3) organized or (N, 3) float32, cloud frame, metres, NaN =
    no return; ``cloud_rgb``: colours of the cloud points (same leading shape x 3 uint8) or None;
    ``mask``: (h, w) integer instance labels or None; ``image``: (h, w, 3) uint8 RGB or None;
    ``intrinsics``: the camera of mask and image, or None; ``up``: (3,) gravity-up in the cloud frame;
    ``viewpoint``: (3,) camera centre in the cloud frame, metres; ``stamp``: seconds;
    ``camera_to_cloud``: pose of the ``intrinsics`` camera's optical frame in the cloud frame, or
    None when unknown (then the depth cannot be used for the free-space test)."""

    xyz: np.ndarray
    stamp: float = 0.0
    cloud_rgb: np.ndarray | None = None
    mask: np.ndarray | None = None
    image: np.ndarray | None = None
    intrinsics: PinholeCamera | None = None
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, -1.0, 0.0]))
    viewpoint: np.ndarray = field(default_factory=lambda: np.zeros(3))
    camera_to_cloud: RigidTransform | None = None


RECONSTRUCTION_STAGES = ("normalize", "encode", "mise", "marching_cubes", "simplify", "anchor")
"""The stages of :meth:`Reconstructor.reconstruct <occnet_ros.reconstruction.reconstructor.Reconstructor.reconstruct>`
(keys of its ``timings``)."""
FRAME_STAGES = ("segmentation", "clean", "known_empty", *RECONSTRUCTION_STAGES, "colour")
"""Keys of :attr:`ProcessedFrame.stage_seconds`, in processing order."""


@dataclass
class ProcessedObject:
    """One reconstructed object: ``segment`` (id, label, observed points), ``obj`` (the
    :class:`~occnet_ros.reconstruction.reconstructor.ReconstructedObject`), ``n_observed`` points after cleaning,
    ``vertex_colors`` (V, 3) uint8 per vertex of the published mesh or None, ``seconds`` spent (clean,
    reconstruct, simplify, colour). ``vertices`` (V, 3) float64 metres and ``faces`` (F, 3) int64: the mesh to
    publish, in the cloud frame (``obj.mesh`` simplified to ``mesh.max_faces``); None = ``obj.mesh`` as is.
    ``n_views``: views fused into the object (1 for a single frame)."""

    segment: Segment
    obj: ReconstructedObject
    n_observed: int
    vertex_colors: np.ndarray | None
    seconds: float
    vertices: np.ndarray | None = None
    faces: np.ndarray | None = None
    n_views: int = 1

    @property
    def reused(self) -> bool:
        """The reconstruction is the previous frame's (see ``reconstruction.reuse_tolerance``)."""
        return self.obj.reused


@dataclass(frozen=True)
class _Kept:
    """What reuse needs of an object of the last frame: its reconstruction and published mesh."""

    obj: ReconstructedObject
    vertices: np.ndarray
    faces: np.ndarray


@dataclass
class ProcessedFrame:
    """``objects`` reconstructed; ``method``: "mask" or "geometric"; ``warnings``: why segments were
    skipped; ``cancelled``: the stop request interrupted the frame (results incomplete)."""

    objects: list[ProcessedObject]
    method: str
    warnings: list[str]
    cancelled: bool = False
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds per stage of :meth:`FramePipeline.process`, summed over the frame's objects: segmentation,
    cleaning, known_empty (building the frame's empty-space tests), the reconstructor's own stages
    (normalize, encode, mise, marching_cubes, simplify, anchor) and colour."""


def stored_objects(result: ProcessedFrame) -> list[StoredObject]:
    """The object-store entries of a frame's results: id, label and the reconstruction without its mesh (queries
    need its frame, occupancy field and grid only; the record shares them with the pipeline's, and is what the
    node's reconstruction process sends back)."""
    return [StoredObject(r.segment.id, r.segment.label, replace(r.obj, mesh=None, simplified_by=None))
            for r in result.objects]


class MeshReduction:
    """The pipeline's mesh reduction to ``max_faces`` by ``decimate``, passed to the reconstructor as its ``simplify``
    (:data:`~occnet_ros.reconstruction.reconstructor.MeshSimplify`), so meshes are reduced before they are anchored.

    Called with (vertices (V, 3), faces (F, 3)), any frame: :func:`~occnet_ros.perception.mesh_ops.simplify_mesh`
    -> (vertices, faces, note). :meth:`from_grid`: where ``decimate`` can also mesh a MISE grid in slabs
    (:meth:`ParallelDecimation.mesh_grid <occnet_ros.perception.parallel_decimation.ParallelDecimation.mesh_grid>`),
    the reconstructor hands it the grid instead of a marching-cubes mesh; :meth:`mesh_whole`: where ``decimate`` can
    mesh a whole grid in a worker process (:meth:`ParallelDecimation.mesh_whole_grid
    <occnet_ros.perception.parallel_decimation.ParallelDecimation.mesh_whole_grid>`), the grids it declines are
    meshed there."""

    def __init__(self, max_faces: int, decimate: Decimation):
        self.max_faces = int(max_faces)
        self.decimate = decimate

    def __call__(self, vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        s = simplify_mesh(vertices, faces, self.max_faces, decimate=self.decimate)
        return s.vertices, s.faces, s.note

    def from_grid(self, values: np.ndarray, threshold: float, box_half: float
                  ) -> tuple[np.ndarray, np.ndarray, str, int] | None:
        """A MISE corner grid (R+1)^3 -> (vertices (V, 3) canonical, faces (F, 3), note "", faces marching cubes
        made), meshed and reduced in slabs by ``decimate``; None where it cannot (no ``mesh_grid``, reduction off,
        a surface too small to cut, or a slab result that failed its checks): the caller then meshes the whole grid
        (:meth:`mesh_whole`) and reduces that mesh by calling this object."""
        mesh_grid = getattr(self.decimate, "mesh_grid", None)
        if mesh_grid is None or self.max_faces == 0:
            return None
        done = mesh_grid(values, threshold, box_half, self.max_faces)
        return None if done is None else (done[0], done[1], "", done[2])


    def mesh_whole(self, values: np.ndarray, threshold: float, box_half: float
                   ) -> tuple[np.ndarray, np.ndarray] | None:
        """A MISE corner grid (R+1)^3 -> :func:`~occnet_ros.reconstruction.mise.mesh_from_values` of it, made by
        ``decimate``'s ``mesh_whole_grid`` (in a worker process); None where ``decimate`` has none or it failed: the
        caller then runs marching cubes itself."""
        mesh_whole_grid = getattr(self.decimate, "mesh_whole_grid", None)
        return None if mesh_whole_grid is None else mesh_whole_grid(values, threshold, box_half)


class FramePipeline:
    """Segmentation + per-object reconstruction with the settings of a :class:`PerceptionConfig`.

    reconstructor: a :class:`~occnet_ros.reconstruction.reconstructor.Reconstructor`, or anything with ``reconstruct(points, up=,
    viewpoint=, previous=, known_empty=, simplify=) -> ReconstructedObject`` (``previous``: the object's reconstruction of the last frame, or None; the
    reconstructor decides whether to reuse it; ``known_empty``: the frame's empty-space test). Not
    thread-safe: one worker calls :meth:`process`. ``decimate``: how meshes are reduced to
    ``mesh.max_faces`` (:func:`~occnet_ros.perception.mesh_ops.fast_or_open3d_decimation` in this process by default; the
    node passes a :class:`~occnet_ros.perception.parallel_decimation.ParallelDecimation`).
    """

    def __init__(self, reconstructor, config: PerceptionConfig, decimate: Decimation = fast_or_open3d_decimation):
        self.reconstructor = reconstructor
        self.config = config
        self.decimate = decimate
        self.simplify = MeshReduction(config.mesh.max_faces, decimate)  # one object: published_mesh recognises
        # the meshes it already reduced
        self.tracker = ClusterTracker(config.segmentation.track_distance)
        self.rng = np.random.default_rng(config.seed)
        self._kept: dict[int, _Kept] = {}

    @property
    def kept_ids(self) -> list[int]:
        """Ids of the objects whose last reconstruction is kept for reuse (the last frame's objects)."""
        return sorted(self._kept)

    def published_mesh(self, obj: ReconstructedObject, kept: _Kept | None = None) -> tuple[np.ndarray, np.ndarray, str]:
        """(vertices, faces, note) of the mesh to publish: the kept one when ``obj`` reuses its mesh; ``obj.mesh``
        as is when the reconstructor already reduced it with :attr:`simplify`; else ``obj.mesh`` simplified to
        ``mesh.max_faces``."""
        mesh = obj.mesh
        if mesh is None:
            return np.zeros((0, 3)), np.zeros((0, 3), np.int64), ""
        if kept is not None and kept.obj.mesh is mesh:
            return kept.vertices, kept.faces, ""
        if obj.simplified_by is self.simplify:
            return np.asarray(mesh.vertices), np.asarray(mesh.faces), obj.mesh_note
        s = simplify_mesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), self.config.mesh.max_faces,
                          decimate=self.decimate)
        return s.vertices, s.faces, s.note

    def segment(self, frame: FrameInput) -> tuple[list[Segment], str, tuple[int, int] | None]:
        """-> (segments after size limits, method, (H, W) of the pixel grid of ``Segment.pixels`` or None).
        Raises :class:`SegmentationError` when the mode needs a mask that is missing or unusable."""
        segs, method, grid, _ = self.segment_with_plane(frame)
        return segs, method, grid

    def support_plane(self, frame: FrameInput) -> Plane | None:
        """The support plane of the frame (cloud frame): RANSAC along ``up`` with the segmentation's plane
        settings on the finite points of a random subset of :data:`~occnet_ros.perception.segmentation.PLANE_FIT_POINTS`
        pixels (:func:`~occnet_ros.perception.segmentation.fit_support_plane`)."""
        flat = np.asarray(frame.xyz, np.float32).reshape(-1, 3)
        if flat.shape[0] > PLANE_FIT_POINTS:  # the subset before the finite test: no copy of the whole cloud
            flat = flat[np.sort(self.rng.choice(flat.shape[0], PLANE_FIT_POINTS, replace=False))]
        flat = flat[finite_rows(flat)]
        return fit_support_plane(flat, self.config.segmentation, self.rng, frame.up, frame.viewpoint)

    def depth_view(self, frame: FrameInput) -> tuple[DepthView | None, str]:
        """The frame's depth image for the free-space test, or (None, why not): it needs an organized
        cloud of the camera_info's size and the camera's pose in the cloud frame."""
        xyz = np.asarray(frame.xyz)
        k = frame.intrinsics
        if k is None:
            return None, "no camera_info"
        if xyz.ndim != 3 or xyz.shape[:2] != (k.height, k.width):
            return None, f"the cloud is not organized as the {k.width}x{k.height} camera image"
        if frame.camera_to_cloud is None:
            return None, "the camera's pose in the cloud frame is unknown"
        to_cam = frame.camera_to_cloud.inverse()  # optical z only: the last row of to_cam.apply, no BLAS
        depth = np.einsum("nk,k->n", xyz.reshape(-1, 3).astype(np.float64), to_cam.rotation[2]) + to_cam.translation[2]
        return DepthView(depth.reshape(xyz.shape[:2]).astype(np.float32), k,
                         camera_to_source=frame.camera_to_cloud), ""

    def _known_empty(self, frame: FrameInput, plane: Plane | None, warnings: list[str]):
        """-> function(cleaned object points) -> KnownEmpty or None, for this frame. The plane is used for
        an object only when its points lie above it (a shelf over the object must not cut it)."""
        cfg = self.config.known_empty
        if not cfg.enabled:
            return lambda points: None
        views = []
        if cfg.free_space:
            view, why = self.depth_view(frame)
            if view is None:
                warnings.append(f"known_empty.free_space not applied: {why}")
            else:
                views.append(view)
        if cfg.support_plane and plane is None:
            plane = self.support_plane(frame)
        tol = self.config.segmentation.plane_distance
        made: dict[bool, KnownEmpty] = {}

        def for_object(points: np.ndarray) -> KnownEmpty | None:
            above = stands_on(plane, points, tol)
            if above not in made:
                made[above] = KnownEmpty(cfg, plane if above else None, views)
            return made[above] if made[above].active else None
        return for_object

    def segment_with_plane(self, frame: FrameInput
                           ) -> tuple[list[Segment], str, tuple[int, int] | None, Plane | None]:
        """:meth:`segment` and the support plane the geometric method found (None for masks)."""
        cfg = self.config.segmentation
        xyz = np.asarray(frame.xyz, dtype=np.float32)
        organized = xyz.ndim == 3
        use_mask = cfg.mode == "mask" or (cfg.mode == "auto" and frame.mask is not None)
        if use_mask:
            if frame.mask is None:
                raise SegmentationError("segmentation.mode is 'mask' but no mask matches this cloud")
            mask = frame.mask
            if organized and xyz.shape[:2] == mask.shape:
                return apply_limits(segment_by_mask(xyz, mask), cfg), "mask", mask.shape, None
            if frame.intrinsics is None:
                raise SegmentationError(
                    f"cloud {xyz.shape[:-1]} and mask {mask.shape} differ and no camera_info was received "
                    "to project the points into the mask")
            segs = segment_by_projected_mask(xyz.reshape(-1, 3), mask, frame.intrinsics)
            return apply_limits(segs, cfg), "mask", mask.shape, None
        flat = xyz.reshape(-1, 3)
        grid = None
        pixels = None
        if organized:
            grid, pixels = xyz.shape[:2], np.arange(flat.shape[0])
        elif frame.intrinsics is not None:
            k = frame.intrinsics
            pix, valid = k.pixel_index(flat)
            pixels, grid = np.where(valid, pix, -1), (k.height, k.width)
        segs, plane = segment_geometric(flat, cfg, self.rng, up=frame.up, viewpoint=frame.viewpoint, pixels=pixels)
        segs = self.tracker.relabel(apply_limits(segs, cfg))
        return sorted(segs, key=lambda s: s.id), "geometric", grid, plane

    def observed_colors(self, frame: FrameInput, seg: Segment, index: np.ndarray,
                         grid: tuple[int, int] | None) -> np.ndarray | None:
        """(K, 3) uint8 colours of the cleaned observed points, from the image when it fits the pixel
        grid, else from the cloud's own colours; None when neither is available."""
        if frame.image is not None and self.config.color_from_image and seg.pixels is not None \
                and grid is not None and frame.image.shape[:2] == tuple(grid):
            pix = seg.pixels[index]
            if np.all(pix >= 0):
                return frame.image.reshape(-1, 3)[pix]
        if frame.cloud_rgb is not None and seg.pixels is not None and np.asarray(frame.xyz).ndim == 3:
            return frame.cloud_rgb.reshape(-1, 3)[seg.pixels[index]]
        return None

    def process(self, frame: FrameInput, should_stop: Callable[[], bool] = lambda: False) -> ProcessedFrame:
        """Segment ``frame`` and reconstruct every segment (cleaned first, passing the object's last
        reconstruction as ``previous``); simplify each mesh to publish; vertex colours from the nearest
        observed point's colour. A completed frame replaces what is kept for reuse by its own objects."""
        t_start = time.perf_counter()
        segments, method, grid, plane = self.segment_with_plane(frame)
        results, warnings = [], []
        stages = dict.fromkeys(FRAME_STAGES, 0.0)
        stages["segmentation"] = time.perf_counter() - t_start
        t_empty = time.perf_counter()
        known_empty = self._known_empty(frame, plane, warnings) if segments else (lambda points: None)
        stages["known_empty"] += time.perf_counter() - t_empty
        if frame.image is not None and self.config.color_from_image and grid is not None \
                and frame.image.shape[:2] != tuple(grid):
            warnings.append(f"image {frame.image.shape[1]}x{frame.image.shape[0]} does not match the "
                            f"{grid[1]}x{grid[0]} pixel grid of the cloud/mask: no colours from it")
        up, viewpoint = np.asarray(frame.up, np.float64), np.asarray(frame.viewpoint, np.float64)
        todo = []  # (segment, cleaned points, kept, seconds so far, reconstruct's keyword arguments)
        for seg in segments:
            if should_stop():
                return ProcessedFrame(results, method, warnings, cancelled=True, stage_seconds=stages)
            t0 = time.perf_counter()
            cleaned = clean_cloud(seg.points, self.config.filter, viewpoint)
            t1 = time.perf_counter()
            stages["clean"] += t1 - t0
            if cleaned.points.shape[0] < self.config.segmentation.min_points:
                warnings.append(f"{seg.label} skipped: {cleaned.points.shape[0]} points left after cleaning")
                continue
            kept = self._kept.get(seg.id)
            empty = known_empty(cleaned.points)
            stages["known_empty"] += time.perf_counter() - t1
            request = dict(points=cleaned.points, up=up, viewpoint=viewpoint, simplify=self.simplify,
                           previous=kept.obj if kept is not None else None)
            if empty is not None:
                request["known_empty"] = empty
            todo.append((seg, cleaned, kept, time.perf_counter() - t0, request))
        together = None
        if len(todo) > 1 and getattr(self.reconstructor, "batch_objects", lambda: False)():
            together = self.reconstructor.reconstruct_many([t[-1] for t in todo], return_errors=True)
        for i, (seg, cleaned, kept, seconds, request) in enumerate(todo):
            t0 = time.perf_counter()
            if together is not None:
                obj = together[i]
            elif should_stop():
                return ProcessedFrame(results, method, warnings, cancelled=True, stage_seconds=stages)
            else:
                try:
                    obj = self.reconstructor.reconstruct(**request)
                except NormalizationError as e:
                    obj = e
            if isinstance(obj, Exception):
                warnings.append(f"{seg.label} skipped: {obj}")
                continue
            for k in RECONSTRUCTION_STAGES:
                stages[k] += obj.timings.get(k, 0.0)
            t_pub = time.perf_counter()
            verts, faces, note = self.published_mesh(obj, kept)
            stages["simplify"] += time.perf_counter() - t_pub  # only where the reconstructor did not reduce it
            if note:
                warnings.append(f"{seg.label}: {note}")
            t_colour = time.perf_counter()
            colors = None
            observed = self.observed_colors(frame, seg, cleaned.index, grid)
            if observed is not None and len(verts):
                colors = nearest_colours(verts, cleaned.points, observed)
            stages["colour"] += time.perf_counter() - t_colour
            own = obj.timings.get("total", 0.0) if together is not None else 0.0
            results.append(ProcessedObject(seg, obj, int(cleaned.points.shape[0]), colors,
                                        seconds + own + time.perf_counter() - t0, verts, faces))
        self._kept = {r.segment.id: _Kept(r.obj, r.vertices, r.faces) for r in results}
        return ProcessedFrame(results, method, warnings, stage_seconds=stages)
