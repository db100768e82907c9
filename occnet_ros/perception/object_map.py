"""The object map: every object fused over all the views of a moving camera, in a fixed world frame (z up,
metres). Plain numpy, no ROS; settings in :class:`~occnet_ros.perception.map_config.ObjectMapConfig`.

One frame (:meth:`ObjectMap.integrate`):

1. the segments go into world (``camera_to_world``);
2. association by 3D overlap, never by label: the voxels (``association_voxel_m``) a segment's points occupy
   against those of each object's accumulated points; the shared voxels over the smaller of the two sets,
   at least ``min_overlap``; greedy by best overlap, one object per segment and one segment per object.
   Touching objects share only the voxels along their contact and stay two objects;
3. removal: an existing object no segment was associated with is gone (moved or taken away) when the
   frame's depth shows more than ``removal_fraction`` of its accumulated points as free space
   (:meth:`~occnet_ros.reconstruction.known_empty.KnownEmpty.in_free_space`, with its noise margins), counting
   only points that fall on a pixel with a depth return; an object out of view or hidden stays as it is;
4. fusion: a segment that adds information (a new object, a camera direction more than
   ``new_view_angle_deg`` from every kept view, or more than ``unexplained_fraction`` of points farther than
   ``unexplained_distance_m`` from the object's points) has its points fused into its object, each with its
   camera centre (one point per ``fusion_voxel_m`` voxel, at most ``max_points``), and a view kept (camera
   centre, a depth crop around the object); the object becomes stale. A segment that adds nothing only
   refreshes ``last_seen``: a camera that stays put changes nothing;
5. eviction of the least recently seen objects beyond ``max_objects``.

The caller then reconstructs what is due::

    for obj in object_map.due(2):
        version = obj.version
        obj.reconstruction = reconstructor.reconstruct(**object_map.reconstruction_inputs(obj.id))
        object_map.mark_reconstructed(obj.id, version)

Memory per object: at most ``max_points`` points with their camera centres (24 bytes a point) and
``max_views`` depth crops (float32; about 0.3 MB for a 10 cm object 0.6 m from a 640x480 camera, at most the
full image); at most ``max_objects`` objects. Not thread-safe: one worker calls it.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from occnet_ros.geometry import Plane, RigidTransform, finite_rows
from occnet_ros.perception.map_config import MapFrame, MapUpdate, MapView, ObjectMapConfig
from occnet_ros.perception.map_object import MapObject, crop_view, unit_rows, voxel_keys
from occnet_ros.reconstruction.known_empty import DepthView, KnownEmpty, KnownEmptyConfig

__all__ = ["ObjectMap", "MapObject", "ObjectMapConfig", "MapFrame", "MapUpdate", "MapView"]

REMOVAL_SAMPLE = 2000
"""Most accumulated points of an object tested against a frame's free space (evenly strided)."""


def in_world(view: DepthView, camera_to_world: RigidTransform) -> DepthView:
    """``view`` (camera in the cloud frame) with the camera's pose in world as its source frame (no copy)."""
    view.validate()
    return DepthView(view.depth, view.camera, tuple(view.roi_origin), camera_to_world @ view.camera_to_source)


def on_depth_return(view: DepthView, points: np.ndarray) -> np.ndarray:
    """points (M, 3) source frame, metres -> (M,) bool: in front of the camera and projecting onto a pixel of
    the view with a depth return (finite, > 0)."""
    row, col, ok = view.camera.pixels(view.camera_to_source.inverse().apply(points))
    h, w = view.depth.shape
    row, col = row - view.roi_origin[0], col - view.roi_origin[1]
    ok &= (row >= 0) & (row < h) & (col >= 0) & (col < w)
    d = view.depth[np.where(ok, row, 0), np.where(ok, col, 0)]
    with np.errstate(invalid="ignore"):
        return ok & np.isfinite(d) & (d > 0)


class ObjectMap:
    """The objects seen so far, in world (see the module's description). ``known_empty``: the depth noise
    model of the free-space tests (removal and reconstruction) and which facts the reconstruction's
    known-empty test uses; ``support_plane``: a plane in world (normal up) for the reconstruction, or None
    (an attribute the caller may replace)."""

    def __init__(self, config: ObjectMapConfig | None = None, known_empty: KnownEmptyConfig | None = None,
                 support_plane: Plane | None = None):
        self.config = replace(config) if config is not None else ObjectMapConfig()
        self.config.validate()
        self.known_empty = replace(known_empty) if known_empty is not None else KnownEmptyConfig()
        self.known_empty.validate()
        self.support_plane = support_plane
        self.stamp: float | None = None
        """Stamp of the last integrated frame, seconds."""
        self._objects: dict[int, MapObject] = {}
        self._next_id = 0
        self._rng = np.random.default_rng(self.config.seed)

    def __len__(self) -> int:
        return len(self._objects)

    def __contains__(self, object_id: int) -> bool:
        return object_id in self._objects

    def __getitem__(self, object_id: int) -> MapObject:
        return self._objects[object_id]

    @property
    def objects(self) -> list[MapObject]:
        """The objects, by id."""
        return [self._objects[i] for i in sorted(self._objects)]

    def integrate(self, frame: MapFrame) -> MapUpdate:
        """Fuse one frame into the map (associate, remove what its depth shows gone, fuse what adds
        information, evict beyond ``max_objects``); ValueError for a segment that is not (N, 3)."""
        to_world = frame.camera_to_world
        segments = [self._to_world(s, to_world) for s in frame.segments]
        cam = to_world.apply(np.asarray(frame.viewpoint, np.float64).reshape(1, 3))[0]
        view = in_world(frame.depth, to_world) if frame.depth is not None else None
        self.stamp = float(frame.stamp)
        update = MapUpdate(segment_ids=[None] * len(segments))
        pairs = self._associate(segments)
        for i, oid in sorted(pairs.items()):
            self._objects[oid].last_seen = self.stamp
            update.updated.append(oid)
            update.segment_ids[i] = oid
        if view is not None:
            update.removed = self._remove_seen_empty(view, set(pairs.values()))
        self._fuse_informative(segments, pairs, cam, view, update)
        update.evicted = self._evict()
        if update.evicted:
            gone = set(update.evicted)
            update.added, update.updated, update.stale = ([i for i in ids if i not in gone] for ids in
                                                          (update.added, update.updated, update.stale))
            update.segment_ids = [None if i in gone else i for i in update.segment_ids]
        return update

    def due(self, n: int) -> list[MapObject]:
        """At most ``n`` stale objects, the most out of date first: never reconstructed, then the oldest
        reconstruction, then the most views fused since, then by id."""
        stale = [o for o in self._objects.values() if o.stale]
        stale.sort(key=lambda o: (-np.inf if o.last_reconstructed is None else o.last_reconstructed,
                                  -o.pending_views, o.id))
        return stale[:max(0, int(n))]

    def reconstruction_inputs(self, object_id: int, plane_tolerance_m: float = 0.01) -> dict:
        """:meth:`MapObject.reconstruction_inputs` of an object with the map's ``known_empty`` and
        ``support_plane``. KeyError for an id not in the map."""
        return self._objects[object_id].reconstruction_inputs(self.known_empty, self.support_plane,
                                                              plane_tolerance_m)

    def mark_reconstructed(self, object_id: int, version: int | None = None) -> bool:
        """The caller stored a reconstruction of the object made from its inputs at ``version`` (None: the
        current one): it is no longer stale. False (nothing changes) when the object left the map or was
        fused again since ``version``."""
        obj = self._objects.get(object_id)
        if obj is None or (version is not None and version != obj.version):
            return False
        obj.stale, obj.pending_views, obj.last_reconstructed = False, 0, self.stamp
        return True

    @staticmethod
    def _to_world(points: np.ndarray, to_world: RigidTransform) -> np.ndarray:
        """(N, 3) cloud frame -> (M, 3) float32 world, the rows with NaN/inf dropped."""
        p = np.asarray(points, np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"a segment must be (N, 3) points, got shape {p.shape}")
        return to_world.apply(p[finite_rows(p)]).astype(np.float32)

    def _associate(self, segments: list[np.ndarray]) -> dict[int, int]:
        """{segment index: object id}: the pairs with overlap >= ``min_overlap``, greedy by best overlap."""
        v, pairs = self.config.association_voxel_m, []
        for i, p in enumerate(segments):
            if not len(p):
                continue
            keys = np.unique(voxel_keys(p, v))
            lo, hi = p.min(0) - v, p.max(0) + v
            for obj in self._objects.values():
                if np.any(obj.bounds[0] > hi) or np.any(obj.bounds[1] < lo):
                    continue
                shared = np.intersect1d(keys, obj._assoc_keys, assume_unique=True).size
                overlap = shared / min(keys.size, obj._assoc_keys.size)
                if overlap >= self.config.min_overlap:
                    pairs.append((-overlap, i, obj.id))
        out: dict[int, int] = {}
        for _, i, oid in sorted(pairs):
            if i not in out and oid not in out.values():
                out[i] = oid
        return out

    def _remove_seen_empty(self, view: DepthView, associated: set[int]) -> list[int]:
        """Remove and return the ids of the objects not in ``associated`` that ``view`` (world) shows gone."""
        candidates = sorted(set(self._objects) - associated)
        if not candidates:
            return []
        free = KnownEmpty(replace(self.known_empty, free_space=True, support_plane=False), None, [view])
        cfg, removed = self.config, []
        for oid in candidates:
            pts = self._objects[oid].points_world
            pts = pts[::-(-len(pts) // REMOVAL_SAMPLE)]
            seen = pts[on_depth_return(view, pts)]
            n_free = int(free.in_free_space(seen).sum())
            if len(seen) >= cfg.removal_min_points and n_free > cfg.removal_fraction * len(seen):
                del self._objects[oid]
                removed.append(oid)
        return removed

    def _adds_information(self, obj: MapObject, points: np.ndarray, cam: np.ndarray) -> bool:
        """Whether a segment (points (N, 3) world) seen from ``cam`` ((3,) world) tells ``obj`` something new:
        a new view direction or unexplained points."""
        dirs = unit_rows(np.array([v.camera_center for v in obj.views]) - obj.center)
        if np.einsum("vk,k->v", dirs, unit_rows(cam - obj.center)).max() < np.cos(
                np.radians(self.config.new_view_angle_deg)):
            return True
        dist, _ = obj.tree().nearest(points, self.config.unexplained_distance_m)
        return bool(np.isinf(dist).mean() > self.config.unexplained_fraction)

    def _fuse_informative(self, segments: list[np.ndarray], pairs: dict[int, int], cam: np.ndarray,
                          view: DepthView | None, update: MapUpdate) -> None:
        """Add or fuse the segments that add information, at most ``max_updates_per_frame``: new objects
        first, then the objects fused longest ago, larger segments first among equals."""
        todo = []
        for i, p in enumerate(segments):
            oid = pairs.get(i)
            if oid is None and len(p):
                todo.append((-np.inf, -len(p), i, None))
            elif oid is not None and self._adds_information(self._objects[oid], p, cam):
                todo.append((self._objects[oid].last_fused, -len(p), i, oid))
        todo.sort(key=lambda t: t[:3])
        n = self.config.max_updates_per_frame
        update.deferred = max(0, len(todo) - n)
        for _, _, i, oid in todo[:n]:
            if oid is None:
                oid, self._next_id = self._next_id, self._next_id + 1
                self._objects[oid] = MapObject(oid, self.stamp, self.stamp, self.stamp)
                update.added.append(oid)
                update.segment_ids[i] = oid
            self._fuse(self._objects[oid], segments[i], cam, view)
            update.stale.append(oid)

    def _fuse(self, obj: MapObject, points: np.ndarray, cam: np.ndarray, view: DepthView | None) -> None:
        """Fuse points (N >= 1, 3) world seen from ``cam`` into ``obj``: the first point of each voxel not
        yet occupied, a seeded subsample beyond ``max_points``; keep the view; mark it stale."""
        cfg, n_seen = self.config, len(points)
        if cfg.fusion_voxel_m > 0:
            keys = voxel_keys(points, cfg.fusion_voxel_m)
            _, first = np.unique(keys, return_index=True)
            first = np.sort(first)
            if obj._fusion_keys is not None:
                first = first[~np.isin(keys[first], obj._fusion_keys, assume_unique=True)]
            points = points[first]
        pts = np.concatenate([obj.points_world, points])
        vps = np.concatenate([obj.point_viewpoints, np.broadcast_to(cam.astype(np.float32), points.shape)])
        if len(pts) > cfg.max_points:
            keep = np.sort(self._rng.choice(len(pts), cfg.max_points, replace=False))
            pts, vps = pts[keep], vps[keep]
        obj.set_points(pts, vps, cfg)
        crop = crop_view(view, *obj.bounds) if view is not None else None
        obj.add_view(MapView(cam.copy(), self.stamp, n_seen, crop), cfg.max_views)
        obj.last_seen = obj.last_fused = self.stamp
        obj.stale, obj.pending_views, obj.version = True, obj.pending_views + 1, obj.version + 1

    def _evict(self) -> list[int]:
        """Drop the objects beyond ``max_objects``: least recently seen first, then fewer views, then newer."""
        extra = len(self._objects) - self.config.max_objects
        if extra <= 0:
            return []
        order = sorted(self._objects.values(), key=lambda o: (o.last_seen, len(o.views), -o.id))
        gone = sorted(o.id for o in order[:extra])
        for oid in gone:
            del self._objects[oid]
        return gone
