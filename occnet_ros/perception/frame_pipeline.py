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
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import numpy as np

from occnet_ros.neighbours import searching_alone
from occnet_ros.perception.cloud_filter import clean_cloud, nearest_colours
from occnet_ros.perception.config import PerceptionConfig
from occnet_ros.reconstruction.known_empty import DepthView, KnownEmpty, stands_on
from occnet_ros.perception.mesh_ops import Decimation, MeshReduction, fast_or_open3d_decimation, simplify_mesh
from occnet_ros.reconstruction.normalization import NormalizationError
from occnet_ros.reconstruction.reconstructed_object import ReconstructedObject
from occnet_ros.perception.processed_frame import ProcessedFrame, ProcessedObject, KeptObject
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


T = TypeVar("T")

RECONSTRUCTION_STAGES = ("normalize", "encode", "mise", "marching_cubes", "simplify", "anchor")
"""The stages of :meth:`Reconstructor.reconstruct <occnet_ros.reconstruction.reconstructor.Reconstructor.reconstruct>`
(keys of its ``timings``)."""
FRAME_STAGES = ("segmentation", "clean", "known_empty", *RECONSTRUCTION_STAGES, "colour")
"""Keys of :attr:`ProcessedFrame.stage_seconds`, in processing order."""


def object_threads(reconstructor, n_objects: int, at_once: bool = True) -> int:
    """Threads that take ``n_objects`` objects' work at once (:func:`run_objects`): with ``at_once``, the
    reconstructor's compute pool's on a CPU (``reconstruction.compute_threads``) when there are several objects and the
    caller is not itself one of those threads; else 1."""
    pool = getattr(reconstructor, "pool", None)
    on_cpu = getattr(getattr(reconstructor, "device", None), "type", "cpu") == "cpu"
    if not at_once or n_objects < 2 or pool is None or not on_cpu or pool.threads < 2 or pool.in_pool_thread():
        return 1
    return min(pool.threads, n_objects)


def run_objects(reconstructor, tasks: list[Callable[[], T]], stopped: Callable[[T], bool], at_once: bool = True
                ) -> list[T]:
    """Tasks that each do one object's whole work with ``reconstructor`` -> their results in order: on its compute
    pool's threads at once where :func:`object_threads` says so (each object's network then on one thread), else one
    after the other, stopping after the first result that ``stopped`` says ended the frame. Tasks that run at once
    make their neighbour searches on their own thread (:func:`~occnet_ros.neighbours.searching_alone`): the cores
    are busy with the objects already."""
    if object_threads(reconstructor, len(tasks), at_once) > 1:
        def alone(task: Callable[[], T]) -> T:
            with searching_alone():
                return task()

        return reconstructor.pool.run([lambda t=t: alone(t) for t in tasks])
    out: list[T] = []
    for task in tasks:
        out.append(task())
        if stopped(out[-1]):
            break
    return out


@dataclass
class _Todo:
    """One segment made ready for the reconstructor: its cleaned points, what is kept of its last reconstruction, the
    seconds so far and :meth:`Reconstructor.reconstruct`'s keyword arguments; or, in ``outcome``, why it stops here."""

    seg: Segment
    cleaned: object = None
    kept: KeptObject | None = None
    seconds: float = 0.0
    request: dict = field(default_factory=dict)
    stages: dict[str, float] = field(default_factory=dict)
    outcome: "_Outcome | None" = None


@dataclass
class _Outcome:
    """What one segment gave: its result (None: skipped, or not reached), warnings, its stages' seconds, and
    whether the frame's stop request came before it."""

    result: ProcessedObject | None = None
    warnings: list[str] = field(default_factory=list)
    stages: dict[str, float] = field(default_factory=dict)
    cancelled: bool = False


class FramePipeline:
    """Segmentation + per-object reconstruction with the settings of a :class:`PerceptionConfig`.

    reconstructor: a :class:`~occnet_ros.reconstruction.reconstructor.Reconstructor`, or anything with ``reconstruct(points, up=,
    viewpoint=, previous=, known_empty=, simplify=) -> ReconstructedObject`` (``previous``: the object's reconstruction of the last frame, or None; the
    reconstructor decides whether to reuse it; ``known_empty``: the frame's empty-space test). Not
    thread-safe: one worker calls :meth:`process`. ``decimate``: how meshes are reduced to
    ``mesh.max_faces`` (:func:`~occnet_ros.perception.mesh_ops.fast_or_open3d_decimation` in this process by default; the
    node passes a :class:`~occnet_ros.perception.parallel_decimation.ParallelDecimation`). ``objects_at_once``: see
    the attribute.
    """

    def __init__(self, reconstructor, config: PerceptionConfig, decimate: Decimation = fast_or_open3d_decimation,
                 objects_at_once: bool = True):
        self.reconstructor = reconstructor
        self.objects_at_once = objects_at_once
        """Whether a frame's objects may run at once on the reconstructor's compute threads (:meth:`process`). The
        node turns it off where it reconstructs in its own process (``reconstruction_process: false``): there the
        objects' Python would take turns with the query service for one interpreter lock."""
        self.config = config
        self.decimate = decimate
        self.simplify = MeshReduction(config.mesh.max_faces, decimate)  # one object: published_mesh recognises
        # the meshes it already reduced
        self.tracker = ClusterTracker(config.segmentation.track_distance)
        self.rng = np.random.default_rng(config.seed)
        self._kept: dict[int, KeptObject] = {}

    @property
    def kept_ids(self) -> list[int]:
        """Ids of the objects whose last reconstruction is kept for reuse (the last frame's objects)."""
        return sorted(self._kept)

    def published_mesh(self, obj: ReconstructedObject, kept: KeptObject | None = None) -> tuple[np.ndarray, np.ndarray, str]:
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
        observed point's colour. A completed frame replaces what is kept for reuse by its own objects.

        Several objects on a CPU, unbatched, with a reconstructor whose compute pool has several threads: each of
        those threads takes whole objects (cleaning to colours, the network on its own thread), so one object's
        single-threaded stages (cleaning, meshing, anchoring, colours) run beside another's network. Measured on the
        2-core AMD EPYC, the benchmark's 640x480 frame of 4 objects at 64^3 in process (6 alternated runs): 286 ms
        against 409 ms one object after the other. ``stage_seconds`` then sum the objects' stages over the threads.
        """
        t_start = time.perf_counter()
        segments, method, grid, plane = self.segment_with_plane(frame)
        warnings: list[str] = []
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
        rec = self.reconstructor
        if len(segments) > 1 and getattr(rec, "batch_objects", lambda: False)():
            outcomes = self._batched(frame, segments, known_empty, up, viewpoint, grid, should_stop)
        else:
            def whole(seg: Segment) -> _Outcome:
                if should_stop():
                    return _Outcome(cancelled=True)
                todo = self._prepare(seg, known_empty, up, viewpoint)
                if todo.outcome is not None:
                    return todo.outcome
                t0 = time.perf_counter()
                try:
                    obj = rec.reconstruct(**todo.request)
                except NormalizationError as e:
                    obj = e
                return self._complete(frame, todo, obj, grid, time.perf_counter() - t0)

            outcomes = run_objects(rec, [lambda seg=seg: whole(seg) for seg in segments], lambda o: o.cancelled,
                                   self.objects_at_once)
        results = []
        for o in outcomes:
            warnings.extend(o.warnings)
            for k, v in o.stages.items():
                stages[k] += v
            if o.result is not None:
                results.append(o.result)
        if any(o.cancelled for o in outcomes):
            return ProcessedFrame(results, method, warnings, cancelled=True, stage_seconds=stages)
        self._kept = {r.segment.id: KeptObject(r.obj, r.vertices, r.faces) for r in results}
        return ProcessedFrame(results, method, warnings, stage_seconds=stages)

    def _prepare(self, seg: Segment, known_empty, up: np.ndarray, viewpoint: np.ndarray) -> _Todo:
        """Clean ``seg``'s points and build its empty-space test and reconstruct request."""
        t0 = time.perf_counter()
        cleaned = clean_cloud(seg.points, self.config.filter, viewpoint)
        t1 = time.perf_counter()
        if cleaned.points.shape[0] < self.config.segmentation.min_points:
            return _Todo(seg, outcome=_Outcome(warnings=[f"{seg.label} skipped: {cleaned.points.shape[0]} points left "
                                                         f"after cleaning"], stages={"clean": t1 - t0}))
        kept = self._kept.get(seg.id)
        empty = known_empty(cleaned.points)
        t2 = time.perf_counter()
        request = dict(points=cleaned.points, up=up, viewpoint=viewpoint, simplify=self.simplify,
                       previous=kept.obj if kept is not None else None)
        if empty is not None:
            request["known_empty"] = empty
        return _Todo(seg, cleaned, kept, t2 - t0, request, {"clean": t1 - t0, "known_empty": t2 - t1})

    def _complete(self, frame: FrameInput, todo: _Todo, obj, grid, reconstruct_s: float) -> _Outcome:
        """The published mesh and colours of ``todo``'s reconstruction ``obj`` (or the error that skips it);
        ``reconstruct_s``: wall seconds the reconstruction took for this object."""
        seg, stages = todo.seg, dict(todo.stages)
        if isinstance(obj, Exception):
            return _Outcome(warnings=[f"{seg.label} skipped: {obj}"], stages=stages)
        warnings = []
        for k in RECONSTRUCTION_STAGES:
            stages[k] = stages.get(k, 0.0) + obj.timings.get(k, 0.0)
        t0 = time.perf_counter()
        verts, faces, note = self.published_mesh(obj, todo.kept)
        stages["simplify"] += time.perf_counter() - t0  # only where the reconstructor did not reduce it
        if note:
            warnings.append(f"{seg.label}: {note}")
        t_colour = time.perf_counter()
        colors = None
        observed = self.observed_colors(frame, seg, todo.cleaned.index, grid)
        if observed is not None and len(verts):
            colors = nearest_colours(verts, todo.cleaned.points, observed)
        stages["colour"] = time.perf_counter() - t_colour
        seconds = todo.seconds + reconstruct_s + time.perf_counter() - t0
        return _Outcome(ProcessedObject(seg, obj, int(todo.cleaned.points.shape[0]), colors, seconds, verts, faces),
                        warnings, stages)

    def _batched(self, frame: FrameInput, segments: list[Segment], known_empty, up: np.ndarray, viewpoint: np.ndarray,
                 grid, should_stop: Callable[[], bool]) -> list[_Outcome]:
        """The objects' network work in shared calls (``reconstruction.batch_objects``): all cleaned first, then
        :meth:`Reconstructor.reconstruct_many`, then each object's mesh and colours."""
        todos, outcomes = [], []
        for seg in segments:
            if should_stop():
                return outcomes + [_Outcome(cancelled=True)]
            todo = self._prepare(seg, known_empty, up, viewpoint)
            if todo.outcome is not None:
                outcomes.append(todo.outcome)
            else:
                todos.append(todo)
        if not todos:
            return outcomes
        together = self.reconstructor.reconstruct_many([t.request for t in todos], return_errors=True)
        for todo, obj in zip(todos, together):
            own = 0.0 if isinstance(obj, Exception) else obj.timings.get("total", 0.0)
            outcomes.append(self._complete(frame, todo, obj, grid, own))
        return outcomes
