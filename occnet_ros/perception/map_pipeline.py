"""Frames of a moving camera to a map of objects in a fixed world frame (z up, metres): segment and clean each
frame as :class:`~occnet_ros.perception.frame_pipeline.FramePipeline` does, fuse the segments into an
:class:`~occnet_ros.perception.object_map.ObjectMap`, reconstruct the objects that are due (at most
``reconstructions_per_frame``, the most out of date first) and keep every object's published mesh. No ROS
types: the node gives a :class:`~occnet_ros.perception.frame_pipeline.FrameInput` and the cloud frame's pose in
world, and publishes the returned objects in world.

An object no frame changed costs only segmentation and association: its code, mesh and colours are kept.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from occnet_ros.geometry import Plane, RigidTransform
from occnet_ros.neighbours import NeighbourIndex
from occnet_ros.perception.cloud_filter import clean_cloud
from occnet_ros.perception.config import PerceptionConfig
from occnet_ros.perception.frame_pipeline import FrameInput, FramePipeline, run_objects
from occnet_ros.perception.processed_frame import ProcessedObject
from occnet_ros.perception.map_config import MapFrame, MapUpdate, ObjectMapConfig
from occnet_ros.perception.mesh_ops import Decimation, fast_or_open3d_decimation
from occnet_ros.perception.object_map import ObjectMap
from occnet_ros.perception.segmentation import Segment
from occnet_ros.reconstruction.normalization import NormalizationError

__all__ = ["MAP_STAGES", "MapPipeline", "MappedFrame", "plane_in_world"]

MAP_STAGES = ("segmentation", "clean", "known_empty", "integrate", "reconstruct")
"""Keys of :attr:`MappedFrame.stage_seconds`: the frame's segmentation; cleaning every segment (with its colours
from the image); the depth view and the support plane of the known-empty test; the map's association and fusion;
the due objects' reconstructions (encoding, MISE, meshing, simplification, anchoring, colours)."""


def plane_in_world(plane: Plane, cloud_to_world: RigidTransform) -> Plane:
    """A plane written in the cloud frame, written in world (same positive side)."""
    normal = cloud_to_world.apply_direction(plane.normal)
    point = cloud_to_world.apply((-plane.offset * plane.normal).reshape(1, 3))[0]
    return Plane(normal, -float(normal @ point))


@dataclass
class MappedFrame:
    """One processed frame. ``objects``: every map object that has a mesh, as
    :class:`~occnet_ros.perception.processed_frame.ProcessedObject` s in world (``segment.points``: the object's
    accumulated points; ``seconds``: time spent on it in this frame, 0 when it was kept); ``changed``: ids
    whose mesh is new in this frame; ``gone``: ids that left the map (removed or evicted); ``update``: the map's
    own account; ``method``, ``warnings``, ``cancelled`` as for a single frame; ``stage_seconds``: wall time of each
    of :data:`MAP_STAGES` in this frame."""

    objects: list[ProcessedObject]
    changed: list[int]
    gone: list[int]
    update: MapUpdate
    method: str
    warnings: list[str]
    cancelled: bool = False
    stage_seconds: dict[str, float] = field(default_factory=dict)


class MapPipeline:
    """Segmentation + object map + bounded reconstruction. ``reconstructor``: a
    :class:`~occnet_ros.reconstruction.reconstructor.Reconstructor`; ``config``: the frame settings (cleaning,
    segmentation, known-empty, published meshes); ``map_config``: the map's. Not thread-safe: one worker calls
    :meth:`process`."""

    def __init__(self, reconstructor, config: PerceptionConfig, map_config: ObjectMapConfig | None = None,
                 decimate: Decimation = fast_or_open3d_decimation, objects_at_once: bool = True):
        self.frames = FramePipeline(reconstructor, config, decimate, objects_at_once)
        self.config = config
        self.map = ObjectMap(map_config, config.known_empty)
        self._published: dict[int, ProcessedObject] = {}

    @property
    def reconstructor(self):
        return self.frames.reconstructor

    def process(self, frame: FrameInput, cloud_to_world: RigidTransform,
                should_stop: Callable[[], bool] = lambda: False) -> MappedFrame:
        """Fuse ``frame`` (its cloud frame's pose in world: ``cloud_to_world``) into the map and reconstruct
        what is due. Raises :class:`~occnet_ros.perception.segmentation.SegmentationError` as the single-frame
        pipeline does."""
        t0 = time.perf_counter()
        segments, method, grid, plane = self.frames.segment_with_plane(frame)
        t1 = time.perf_counter()
        stages = {"segmentation": t1 - t0}
        warnings: list[str] = []
        viewpoint = np.asarray(frame.viewpoint, np.float64)
        kept, colors = [], []

        def clean(seg):
            cleaned = clean_cloud(seg.points, self.config.filter, viewpoint)
            if cleaned.points.shape[0] < self.config.segmentation.min_points:
                return cleaned, None
            return cleaned, self.frames.observed_colors(frame, seg, cleaned.index, grid)

        # at once on a CPU's compute threads, as the reconstructions below: on a converged frame cleaning is most of
        # the work and the second core is otherwise idle
        cleaned_segments = run_objects(self.reconstructor, [lambda seg=seg: clean(seg) for seg in segments],
                                       lambda _: False, self.frames.objects_at_once)
        for seg, (cleaned, seg_colors) in zip(segments, cleaned_segments):
            if cleaned.points.shape[0] < self.config.segmentation.min_points:
                warnings.append(f"{seg.label} skipped: {cleaned.points.shape[0]} points left after cleaning")
                continue
            kept.append(cleaned.points)
            colors.append(seg_colors)
        t2 = time.perf_counter()
        stages["clean"] = t2 - t1
        depth = None
        if kept and self.config.known_empty.enabled:
            if self.config.known_empty.free_space:
                depth, why = self.frames.depth_view(frame)
                if depth is None:
                    warnings.append(f"known_empty.free_space not applied: {why}")
            if self.config.known_empty.support_plane:
                plane = plane if plane is not None else self.frames.support_plane(frame)
                if plane is not None:
                    self.map.support_plane = plane_in_world(plane, cloud_to_world)
        t3 = time.perf_counter()
        stages["known_empty"] = t3 - t2
        update = self.map.integrate(MapFrame(frame.stamp, cloud_to_world, kept, depth, viewpoint))
        t4 = time.perf_counter()
        stages["integrate"] = t4 - t3
        gone = update.removed + update.evicted
        for oid in gone:
            self._published.pop(oid, None)
        seen = {oid: (kept[i], colors[i]) for i, oid in enumerate(update.segment_ids) if oid is not None}
        changed = []
        due = [(obj, obj.version, self.map.reconstruction_inputs(obj.id,
                                                                plane_tolerance_m=self.config.segmentation.plane_distance))
               for obj in self.map.due(self.map.config.reconstructions_per_frame)]
        tasks = [lambda o=o, i=i: None if should_stop() else self._reconstruct(o, i, seen.get(o.id), cloud_to_world)
                 for o, _, i in due]
        outs = run_objects(self.reconstructor, tasks, lambda out: out is None,  # at once on a CPU's compute threads
                           self.frames.objects_at_once)
        cancelled = len(outs) < len(due) or any(o is None for o in outs)
        for (obj, version, _), out in zip(due, outs):
            if out is None:
                continue
            warnings.extend(out[1])
            if out[0] is not None:
                obj.reconstruction = out[0].obj
                self.map.mark_reconstructed(obj.id, version)
                self._published[obj.id] = out[0]
                changed.append(obj.id)
        for oid, p in self._published.items():
            if oid not in changed:
                p.seconds = 0.0
        objects = [self._published[i] for i in sorted(self._published)]
        stages["reconstruct"] = time.perf_counter() - t4
        return MappedFrame(objects, changed, gone, update, method, warnings, cancelled, stages)

    def _reconstruct(self, obj, inputs: dict, seen, cloud_to_world: RigidTransform
                     ) -> tuple[ProcessedObject | None, list[str]]:
        """Re-encode and re-mesh one map object from ``inputs`` (its :meth:`ObjectMap.reconstruction_inputs`); its
        published mesh simplified and coloured from this frame's observation of it (``seen``: (cleaned points in the
        cloud frame, their colours or None)), else with the colours it had -> (the object, or None when its points
        define no canonical frame; warnings). Changes nothing of the map or of what is published (the caller does, in
        its own thread), so several objects may run at once."""
        t0 = time.perf_counter()
        try:
            rec = self.reconstructor.reconstruct(**inputs, simplify=self.frames.simplify)
        except NormalizationError as e:
            return None, [f"object {obj.id} not reconstructed: {e}"]
        warnings = []
        before = self._published.get(obj.id)
        verts, faces, note = self.frames.published_mesh(rec)
        if note:
            warnings.append(f"object {obj.id}: {note}")
        colors = None
        if seen is not None and seen[1] is not None and len(verts):
            _, nearest = NeighbourIndex(cloud_to_world.apply(seen[0])).nearest(verts)
            colors = seen[1][nearest]
        elif before is not None and before.vertex_colors is not None and len(verts) and len(before.vertices):
            _, nearest = NeighbourIndex(before.vertices).nearest(verts)
            colors = before.vertex_colors[nearest]
        segment = Segment(obj.id, f"object_{obj.id}", obj.points_world)
        return ProcessedObject(segment, rec, int(len(obj.points_world)), colors, time.perf_counter() - t0,
                               verts, faces, obj.n_views), warnings
