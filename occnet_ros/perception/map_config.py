"""Settings and per-frame records of the object map (:mod:`occnet_ros.perception.object_map`), described once.

Frames: ``world`` is a fixed frame with z up, metres. A frame's segments are in its *cloud* frame (the frame
of the point cloud, normally the depth camera's optical frame); ``camera_to_world`` is that frame's pose in
world.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from occnet_ros.config_io import setting
from occnet_ros.geometry import RigidTransform
from occnet_ros.reconstruction.known_empty import DepthView

__all__ = ["ObjectMapConfig", "MapFrame", "MapView", "MapUpdate"]


@dataclass
class ObjectMapConfig:
    """How segments of many views become map objects, when an object needs a new reconstruction, when it
    is gone, and the memory bounds (each field's ``doc``)."""

    association_voxel_m: float = setting(0.01, doc="voxel edge of the association test: a segment is compared "
                                         "with a map object by the voxels of this size that both their points "
                                         "occupy, m", range=(1e-4, 1.0))
    min_overlap: float = setting(0.3, doc="a segment is the same object as a map object when the shared voxels "
                                 "are at least this fraction of the smaller of the two voxel sets; else it starts "
                                 "a new object (touching objects share only the voxels along their contact)",
                                 range=(0.01, 1.0))
    fusion_voxel_m: float = setting(0.003, doc="the accumulated points of an object keep one point per voxel of "
                                    "this size (the first one seen), m; 0 = keep every point. Points must lie "
                                    "within 2^20 voxels of the world origin (3 km at 3 mm)", range=(0.0, 1.0))
    max_points: int = setting(30000, doc="most accumulated points per object; beyond, a seeded uniform "
                              "subsample of this many is kept", range=(10, 10000000))
    max_views: int = setting(8, doc="most views (camera centre and a depth crop around the object for the "
                             "free-space test) kept per object; beyond, the view whose direction is closest to "
                             "another kept view is dropped (never the newest)", range=(1, 1000))
    max_objects: int = setting(50, doc="most objects in the map; beyond, the least recently seen are evicted "
                               "(then those with fewer views, then the newest)", range=(1, 1000000))
    new_view_angle_deg: float = setting(20.0, doc="a view adds information when its camera direction, seen from "
                                        "the object's centre, differs by more than this from every kept view of "
                                        "the object, degrees", range=(0.0, 180.0))
    unexplained_fraction: float = setting(0.2, doc="a view also adds information when more than this fraction of "
                                          "its segment's points lie farther than unexplained_distance_m from the "
                                          "object's accumulated points (fraction, 0-1)", range=(0.0, 1.0))
    unexplained_distance_m: float = setting(0.01, doc="distance beyond which a new point is not explained by the "
                                            "accumulated points, m", range=(1e-5, 1.0))
    max_updates_per_frame: int = setting(16, doc="most objects a frame adds or fuses points into; segments that "
                                         "add information beyond this wait for a later frame (new objects and "
                                         "the objects fused longest ago go first)", range=(1, 1000000))
    reconstructions_per_frame: int = setting(2, doc="most map objects re-encoded and re-meshed per frame, the "
                                             "most out of date first; the others keep their code and mesh until a "
                                             "later frame, so many objects never stall one frame",
                                             range=(1, 1000))
    removal_fraction: float = setting(0.5, doc="an object not found in a frame is removed (moved or taken away) "
                                      "when the frame's depth shows more than this fraction of its accumulated "
                                      "points as free space, counting only points that project onto a pixel with "
                                      "a depth return (fraction, 0-1)", range=(0.0, 1.0))
    removal_min_points: int = setting(20, doc="an object is only removed when at least this many of its (at most "
                                      "2000 tested) accumulated points project onto a pixel with a depth return",
                                      range=(1, 1000000))
    seed: int = setting(0, doc="seed of the subsampling of accumulated points beyond max_points",
                        range=(0, 2**31 - 1))

    def validate(self) -> None:
        """Raise ValueError naming the field whose value is not a number of its type within its range."""
        for f in dataclasses.fields(self):
            v, (lo, hi) = getattr(self, f.name), f.metadata["range"]
            integer = isinstance(f.default, int)
            ok_type = not isinstance(v, bool) and isinstance(v, int if integer else (int, float))
            if not ok_type or not np.isfinite(v) or not lo <= v <= hi:
                kind = "an integer" if integer else "a number"
                raise ValueError(f"object map setting {f.name} must be {kind} in [{lo}, {hi}], got {v!r}")


@dataclass
class MapFrame:
    """One frame for the map. ``stamp``: seconds. ``camera_to_world``: the pose of the cloud frame in world.
    ``segments``: one (N, 3) float32 array of points per segment, cloud frame, metres (rows with NaN/inf are
    dropped; the segmenter's ids play no part). ``viewpoint``: (3,) the camera centre in the cloud frame,
    metres. ``depth``: the depth image for the free-space tests or None; its ``camera_to_source`` is the depth
    camera's optical frame in the cloud frame (as
    :meth:`~occnet_ros.perception.frame_pipeline.FramePipeline.depth_view` makes it)."""

    stamp: float
    camera_to_world: RigidTransform
    segments: list[np.ndarray]
    depth: DepthView | None = None
    viewpoint: np.ndarray = field(default_factory=lambda: np.zeros(3))


@dataclass
class MapView:
    """A view kept by an object: ``camera_center`` (3,) float64 world, metres; ``stamp`` seconds; ``n_points``
    of its segment; ``depth``: a copied crop of the frame's depth around the object whose ``camera_to_source``
    is the camera's pose in world, or None when the frame had no depth."""

    camera_center: np.ndarray
    stamp: float
    n_points: int
    depth: DepthView | None = None


@dataclass
class MapUpdate:
    """What :meth:`~occnet_ros.perception.object_map.ObjectMap.integrate` changed, as object ids. ``added``: new
    objects; ``updated``: existing objects a segment was associated with; ``stale``: objects whose points
    changed (the added ones included), so their reconstruction is out of date; ``removed``: objects the depth
    showed gone; ``evicted``: dropped beyond ``max_objects``; ``segment_ids``: per input segment, the object it
    went to (None: empty, or a new object waiting beyond ``max_updates_per_frame``); ``deferred``: segments
    with information left for a later frame by ``max_updates_per_frame``."""

    added: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    stale: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    evicted: list[int] = field(default_factory=list)
    segment_ids: list[int | None] = field(default_factory=list)
    deferred: int = 0
