"""One reconstructed object: a plain record of its mesh, canonical frame, occupancy field, MISE grid,
threshold and timings (pure Python, no ROS).

Made by :meth:`occnet_ros.reconstruction.reconstructor.Reconstructor.reconstruct`. The decoding state
(the model and the prepared codes) lives in its :class:`~occnet_ros.reconstruction.occupancy_field.OccupancyField`;
the record answers queries through it (or through the cached MISE grid).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import trimesh

from occnet_ros.network.checkpoint import DEFAULT_THRESHOLD
from occnet_ros.reconstruction.known_empty import KnownEmpty
from occnet_ros.reconstruction.normalization import CanonicalFrame
from occnet_ros.reconstruction.occupancy_field import FrameCode, OccupancyField
from occnet_ros.reconstruction.occupancy_grid import OccupancyGrid

__all__ = ["ReconstructedObject", "QUERY_MODES"]

QUERY_MODES = ("exact", "grid")
"""How a point inside an object's box is answered: exact = the network through the cached codes; grid =
trilinear interpolation in the cached MISE grid (approximate, see :mod:`occnet_ros.reconstruction.occupancy_grid`)."""


@dataclass
class ReconstructedObject:
    """One reconstruction (a record; nothing in it is private or injected).

    ``mesh``: source frame, metres, watertight (None if not extracted; a mesh with no faces if the network
    found no surface). ``frame``: canonical <-> source transform. ``occupancy``: the field that
    answers exact queries (:class:`~occnet_ros.reconstruction.occupancy_field.OccupancyField`; its first
    frame is ``frame``). ``n_input_points``: finite observed points. ``threshold``: the surface
    probability the mesh was extracted at. ``timings``: seconds per stage (normalize, encode, mise,
    marching_cubes, simplify, anchor, total). ``mise_stats``: see :func:`occnet_ros.reconstruction.mise.mise_values`.
    ``n_anchored``: mesh vertices moved onto the observation. ``grid``: the MISE probability grid
    (None without a mesh or with ``keep_grid`` off). ``reused``: True when this is the previous
    reconstruction of the object returned unchanged (see ``reuse_tolerance``). ``simplified_by``: the
    simplification the mesh went through inside :meth:`~occnet_ros.reconstruction.reconstructor.Reconstructor.reconstruct`
    (the ``simplify`` argument; None = the marching-cubes mesh as is); ``mesh_note``: what it said (empty
    when the mesh was simplified as asked)."""

    mesh: trimesh.Trimesh | None
    frame: CanonicalFrame
    occupancy: OccupancyField
    n_input_points: int
    timings: dict[str, float]
    mise_stats: dict = field(default_factory=dict)
    threshold: float = DEFAULT_THRESHOLD
    n_anchored: int = 0
    grid: OccupancyGrid | None = field(default=None, repr=False)
    reused: bool = False
    simplified_by: object | None = field(default=None, repr=False)
    mesh_note: str = ""

    @property
    def code(self) -> torch.Tensor:
        """(1, *model.code_shape) latent code of the object's own frame, on the model's device."""
        return self.occupancy.codes[0].code

    @property
    def mirror_code(self) -> torch.Tensor | None:
        """The mirrored inputs' code of a global-code network with mirror averaging, else None."""
        return self.occupancy.codes[0].mirror_code

    @property
    def view_frames(self) -> tuple[FrameCode, ...]:
        """For a cloud fused from several cameras: its codes in the other cameras' canonical frames."""
        return self.occupancy.codes[1:]

    @property
    def known_empty(self) -> KnownEmpty | None:
        """The observation's empty-space test in use (source frame), or None."""
        return self.occupancy.known_empty

    def query_canonical(self, points: np.ndarray, mode: str = "exact") -> np.ndarray:
        """points (M, 3) canonical -> (M,) float32 calibrated probabilities (the field's calibration, also of
        the grid's values); outside the padded box (or not finite) -> 0. ``mode``: one of :data:`QUERY_MODES`."""
        if mode == "grid":
            if self.grid is None:
                raise ValueError("grid queries need the MISE grid: reconstruct with extract_mesh=True "
                                 "and keep_grid=True")
            return self.occupancy.calibrate(self.grid.interpolate(points))
        if mode != "exact":
            raise ValueError(f"mode must be one of {QUERY_MODES}, got {mode!r}")
        return self.occupancy.query_canonical(points)

    def sources_canonical(self, points: np.ndarray) -> np.ndarray:
        """points (M, 3) canonical -> (M,) uint8: what each answer rests on
        (:meth:`~occnet_ros.reconstruction.occupancy_field.OccupancyField.sources`; the same in both modes)."""
        return self.occupancy.sources(points)

    def query_with_sources_canonical(self, points: np.ndarray, mode: str = "exact") -> tuple[np.ndarray, np.ndarray]:
        """points (M, 3) canonical -> (:meth:`query_canonical`, :meth:`sources_canonical`) of them; in ``exact`` mode
        in one pass (:meth:`~occnet_ros.reconstruction.occupancy_field.OccupancyField.query_with_sources_canonical`)."""
        if mode == "exact":
            return self.occupancy.query_with_sources_canonical(points)
        return self.query_canonical(points, mode), self.sources_canonical(points)

    def query(self, points: np.ndarray, mode: str = "exact") -> np.ndarray:
        """points (M, 3) source frame, metres -> (M,) float32 occupancy probabilities. Points outside
        the padded box get 0 without touching the network. ``mode``: see :meth:`query_canonical`."""
        p = np.asarray(points)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must be (M, 3), got {p.shape}")
        return self.query_canonical(self.frame.to_canonical(p), mode)

    def occupied(self, points: np.ndarray) -> np.ndarray:
        """points (M, 3) source frame, metres -> (M,) bool, calibrated probability >= the calibrated
        ``threshold`` (the mesh's surface)."""
        return self.query(points) >= self.occupancy.calibrated_threshold(self.threshold)

    def box_corners(self) -> np.ndarray:
        """(8, 3) float32 corners of the padded canonical box in the source frame, metres."""
        return self.frame.box_corners_source()

    def bounds(self) -> np.ndarray:
        """(2, 3) axis-aligned bounds (min, max) in the source frame, metres: of the mesh if it has
        faces, otherwise of the padded box."""
        if self.mesh is not None and len(self.mesh.faces):
            return np.asarray(self.mesh.bounds, dtype=np.float32)
        c = self.box_corners()
        return np.stack([c.min(axis=0), c.max(axis=0)])
