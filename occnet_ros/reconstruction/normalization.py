"""The canonical object frame, computed from one observation alone.

The network never sees camera coordinates. Every cloud (training, evaluation, the node, the offline
command) goes through :func:`canonical_frame_from_observation`, which needs only the observed points,
the gravity-up vector and the viewpoint, so the same numbers come out wherever it is called.

Canonical frame (right-handed, dimensionless; 1 unit = ``scale`` metres):

* ``z`` is gravity-up.
* ``x`` is the horizontal part of the viewing ray from the viewpoint to the observed centroid: it
  points *away* from the camera, so the unseen back of the object lies towards ``+x``.
* ``y = z x x``.
* Origin: the middle of the observed extent in ``y`` and ``z``; in ``x`` the observed front face plus half
  of the assumed depth ``D = max(observed depth, observed width)`` (an object is assumed to be at least
  as deep as it is wide, since the back is unseen).
* Scale: ``max(D, width, height)``, so the assumed object fits in the unit cube ``[-0.5, 0.5]^3``.

The network's box is that cube padded by 10 % on each side: ``[-BOX_HALF, BOX_HALF]^3`` with
``BOX_HALF = 0.55`` (edge 1.1, as in the Occupancy Networks paper).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from occnet_ros.geometry import rotate_rows
from occnet_ros.network.domain import BOX_HALF  # half edge of the network's box, canonical units

MIN_EXTENT_M = 1e-3
"""Smallest object extent accepted, metres; a smaller cloud is degenerate."""


class NormalizationError(ValueError):
    """The observation cannot define a canonical frame (too few points, degenerate up vector...)."""


@dataclass(frozen=True)
class CanonicalFrame:
    """A similarity transform between a source frame (e.g. the camera optical frame, metres) and the
    canonical object frame.

    ``rotation``: (3, 3) float64, rows are the canonical x, y, z axes written in the source frame.
    ``center``: (3,) float64, canonical origin in the source frame, metres.
    ``scale``: metres per canonical unit.
    """

    rotation: np.ndarray
    center: np.ndarray
    scale: float

    def to_canonical(self, points: np.ndarray) -> np.ndarray:
        """points: (N, 3) source frame, metres -> (N, 3) float32 canonical units."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return (rotate_rows(p - self.center, self.rotation) / self.scale).astype(np.float32)

    def from_canonical(self, points: np.ndarray) -> np.ndarray:
        """points: (N, 3) canonical units -> (N, 3) float32 source frame, metres."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        return (rotate_rows(p * self.scale, self.rotation.T) + self.center).astype(np.float32)

    def directions_to_canonical(self, vectors: np.ndarray) -> np.ndarray:
        """vectors: (N, 3) source frame (e.g. normals) -> (N, 3) canonical frame; rotation only."""
        return rotate_rows(np.asarray(vectors, dtype=np.float64).reshape(-1, 3), self.rotation).astype(np.float32)

    def matrix(self) -> np.ndarray:
        """(4, 4) float64 homogeneous transform canonical -> source (includes the scale)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation.T * self.scale
        m[:3, 3] = self.center
        return m

    def box_corners_source(self) -> np.ndarray:
        """(8, 3) float32 corners of the padded canonical box, in the source frame, metres."""
        s = np.array([-BOX_HALF, BOX_HALF])
        corners = np.array(np.meshgrid(s, s, s, indexing="ij")).reshape(3, -1).T
        return self.from_canonical(corners)


def _unit(v: np.ndarray, what: str) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if not np.isfinite(n) or n < 1e-9:
        raise NormalizationError(f"{what} has zero or non-finite length")
    return v / n


def canonical_frame_from_observation(
    points: np.ndarray,
    up: np.ndarray | tuple = (0.0, -1.0, 0.0),
    viewpoint: np.ndarray | tuple = (0.0, 0.0, 0.0),
) -> CanonicalFrame:
    """Canonical frame of a partial, single-view (or fused) observation.

    points: (N, 3) observed surface points, source frame (camera optical frame by default), metres;
        N >= 3, finite.
    up: (3,) gravity-up direction in the source frame (optical frame of a level camera: (0, -1, 0)).
    viewpoint: (3,) camera centre in the source frame, metres (origin for an optical frame).
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if p.shape[0] < 3:
        raise NormalizationError(f"need at least 3 points, got {p.shape[0]}")
    if not np.all(np.isfinite(p)):
        raise NormalizationError("points contain NaN or inf")
    z = _unit(np.asarray(up, dtype=np.float64).reshape(3), "up vector")
    view = p.mean(axis=0) - np.asarray(viewpoint, dtype=np.float64).reshape(3)
    x = view - np.dot(view, z) * z
    if np.linalg.norm(x) < 1e-6 * max(1.0, np.linalg.norm(view)):
        # Looking straight down (or up): any horizontal axis is as good; take the one closest to the
        # source frame's axis that is most orthogonal to up, for determinism.
        axis = np.eye(3)[int(np.argmin(np.abs(z)))]
        x = axis - np.dot(axis, z) * z
    x = _unit(x, "horizontal viewing direction")
    y = np.cross(z, x)
    rotation = np.stack([x, y, z])
    q = p @ rotation.T
    lo, hi = q.min(axis=0), q.max(axis=0)
    depth_obs, width, height = hi - lo
    depth = max(depth_obs, width)
    scale = float(max(depth, width, height))
    if scale < MIN_EXTENT_M:
        raise NormalizationError(f"observed extent {scale:.2e} m is below {MIN_EXTENT_M} m")
    center_q = np.array([lo[0] + 0.5 * depth, 0.5 * (lo[1] + hi[1]), 0.5 * (lo[2] + hi[2])])
    center = center_q @ rotation
    return CanonicalFrame(rotation=rotation, center=center, scale=scale)
