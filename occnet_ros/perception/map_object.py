"""One object of the object map (:mod:`occnet_ros.perception.object_map`): its accumulated points in world (z up,
metres), the views it keeps, its bookkeeping, and the inputs of its reconstruction."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from occnet_ros.geometry import Plane
from occnet_ros.neighbours import NeighbourIndex
from occnet_ros.perception.map_config import MapView, ObjectMapConfig
from occnet_ros.reconstruction.known_empty import DepthView, KnownEmpty, KnownEmptyConfig, stands_on

__all__ = ["MapObject", "voxel_keys", "crop_view", "unit_rows", "UP"]

UP = (0.0, 0.0, 1.0)
"""Gravity-up in world."""
CROP_MARGIN, CROP_PAD_M = 1.0, 0.01
"""A kept depth crop covers the cube around the centre of the object's bounding box with half edge
``CROP_MARGIN * largest extent + CROP_PAD_M`` (metres): the reconstruction's box and a margin around it."""
_BITS = 21
_HALF = 1 << (_BITS - 1)


def voxel_keys(points: np.ndarray, voxel: float) -> np.ndarray:
    """points (N, 3) metres -> (N,) int64: the voxel ``floor(p / voxel)`` packed into one integer, 21 bits per
    axis (within 2^20 voxels of the origin: 10 km at 1 cm). ValueError for points beyond."""
    q = np.floor(np.asarray(points, np.float64).reshape(-1, 3) / voxel).astype(np.int64) + _HALF
    if q.size and (q.min() < 0 or q.max() >= 2 * _HALF):
        raise ValueError(f"points lie more than {_HALF} voxels of {voxel} m from the world origin")
    return (q[:, 0] << (2 * _BITS)) | (q[:, 1] << _BITS) | q[:, 2]


def unit_rows(v: np.ndarray) -> np.ndarray:
    """(..., 3) -> unit vectors along the last axis (zero vectors stay near zero)."""
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def crop_view(view: DepthView, lo: np.ndarray, hi: np.ndarray) -> DepthView | None:
    """A copy of ``view``'s depth cut to the pixels onto which the cube around the box ``lo``..``hi`` ((3,)
    source frame, metres) projects (cube: see :data:`CROP_MARGIN`); the whole view when the cube reaches
    behind the camera; None when it projects outside the view."""
    half = CROP_MARGIN * float(np.max(hi - lo)) + CROP_PAD_M
    s = np.array([-half, half])
    corners = 0.5 * (lo + hi) + np.array(np.meshgrid(s, s, s, indexing="ij")).reshape(3, -1).T
    cam = view.camera_to_source.inverse().apply(corners)
    h, w = view.depth.shape
    r0, c0 = view.roi_origin
    rows, cols = (r0, r0 + h), (c0, c0 + w)
    if np.all(cam[:, 2] > 1e-3):
        u, v = view.camera.project(cam)  # pixel = floor(coordinate + 0.5)
        rows = tuple(int(np.clip(x, r0, r0 + h)) for x in (np.floor(v.min() + 0.5), np.floor(v.max() + 0.5) + 1))
        cols = tuple(int(np.clip(x, c0, c0 + w)) for x in (np.floor(u.min() + 0.5), np.floor(u.max() + 0.5) + 1))
    if rows[1] <= rows[0] or cols[1] <= cols[0]:
        return None
    depth = np.array(view.depth[rows[0] - r0:rows[1] - r0, cols[0] - c0:cols[1] - c0], np.float32)  # a copy
    return DepthView(depth, view.camera, (rows[0], cols[0]), view.camera_to_source)


@dataclass(eq=False)
class MapObject:
    """One object of the map. ``id``: stable, never reused. ``points_world`` (N, 3) float32 and
    ``point_viewpoints`` (N, 3) float32 (the camera centre that saw each point): world, metres; fusion replaces
    these arrays, never writes into them. ``views``: the kept :class:`MapView`, oldest first, the newest last.
    ``n_views``: the distinct camera centres among the points (the views the points were fused from).
    ``first_seen``, ``last_seen`` (a segment was associated), ``last_fused`` (points fused): stamps, seconds.
    ``reconstruction``: whatever the caller stores (None at first). ``stale``: the points changed since the
    last :meth:`ObjectMap.mark_reconstructed`; ``pending_views``: views fused since then;
    ``last_reconstructed``: the map's stamp then (None: never); ``version``: counts the fusions."""

    id: int
    first_seen: float
    last_seen: float
    last_fused: float
    points_world: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32), repr=False)
    point_viewpoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32), repr=False)
    views: list[MapView] = field(default_factory=list, repr=False)
    n_views: int = 0
    reconstruction: object = field(default=None, repr=False)
    stale: bool = False
    pending_views: int = 0
    last_reconstructed: float | None = None
    version: int = 0
    bounds: np.ndarray = field(default_factory=lambda: np.zeros((2, 3)), repr=False)
    """(2, 3) float64 min and max corner of the points, world, metres."""
    _assoc_keys: np.ndarray = field(default=None, repr=False)
    _fusion_keys: np.ndarray = field(default=None, repr=False)
    _tree: NeighbourIndex | None = field(default=None, repr=False)

    @property
    def center(self) -> np.ndarray:
        """(3,) float64 centre of the bounding box of the points, world, metres."""
        return 0.5 * (self.bounds[0] + self.bounds[1])

    def tree(self) -> NeighbourIndex:
        """A k-d tree of ``points_world`` (built once per fusion)."""
        if self._tree is None:
            self._tree = NeighbourIndex(np.asarray(self.points_world, np.float64))
        return self._tree

    def set_points(self, points: np.ndarray, viewpoints: np.ndarray, config: ObjectMapConfig) -> None:
        """Replace the points (M >= 1, 3) and their camera centres (M, 3), world, metres; update the caches."""
        self.points_world = np.asarray(points, np.float32)
        self.point_viewpoints = np.asarray(viewpoints, np.float32)
        self.bounds = np.stack([self.points_world.min(0), self.points_world.max(0)]).astype(np.float64)
        self._assoc_keys = np.unique(voxel_keys(self.points_world, config.association_voxel_m))
        fusion = config.fusion_voxel_m
        self._fusion_keys = np.unique(voxel_keys(self.points_world, fusion)) if fusion > 0 else None
        self._tree = None
        self.n_views = int(np.unique(self.point_viewpoints, axis=0).shape[0])

    def add_view(self, view: MapView, max_views: int) -> None:
        """Keep ``view`` as the newest; beyond ``max_views`` drop the view whose direction from the object's
        centre is closest to another kept view's (the oldest of equals; never the newest)."""
        self.views.append(view)
        while len(self.views) > max_views:
            dirs = unit_rows(np.array([v.camera_center for v in self.views]) - self.center)
            cos = np.einsum("ik,jk->ij", dirs, dirs)
            np.fill_diagonal(cos, -np.inf)
            self.views.pop(int(np.argmax(cos.max(axis=1)[:-1])))

    def known_empty(self, config: KnownEmptyConfig, support_plane: Plane | None = None,
                    plane_tolerance_m: float = 0.01) -> KnownEmpty | None:
        """The empty-space test of the object in world: its kept depth crops, and ``support_plane`` (world,
        normal up) when the object stands on it (:func:`~occnet_ros.reconstruction.known_empty.stands_on`); None when
        neither applies (see ``config``)."""
        views = [v.depth for v in self.views if v.depth is not None]
        above = stands_on(support_plane, self.points_world, plane_tolerance_m)
        empty = KnownEmpty(config, support_plane if above else None, views)
        return empty if empty.active else None

    def reconstruction_inputs(self, known_empty: KnownEmptyConfig | None = None,
                              support_plane: Plane | None = None, plane_tolerance_m: float = 0.01) -> dict:
        """The keyword arguments of :meth:`~occnet_ros.reconstruction.reconstructor.Reconstructor.reconstruct`
        for this object, all in world: ``points``, ``up`` (z), ``viewpoint`` (the newest view's camera centre),
        ``point_viewpoints``, ``n_views``, ``known_empty`` (:meth:`known_empty`, ``known_empty`` None = the
        defaults of :class:`KnownEmptyConfig`) and ``previous`` (the stored reconstruction, for reuse)."""
        if not self.views:
            raise ValueError(f"object {self.id} has no views")
        empty = self.known_empty(known_empty or KnownEmptyConfig(), support_plane, plane_tolerance_m)
        return {"points": self.points_world, "up": UP, "viewpoint": self.views[-1].camera_center,
                "point_viewpoints": self.point_viewpoints, "n_views": self.n_views, "known_empty": empty,
                "previous": self.reconstruction}
