"""One reconstructed object: its mesh, its canonical frame(s) and the codes that answer occupancy queries.

Made by :meth:`occnet_ros.reconstruction.reconstructor.Reconstructor.reconstruct`; pure Python, no ROS. A cloud fused
from several cameras can carry codes in more than one canonical frame (:class:`ViewFrameCode`, the
reconstructor's ``max_view_frames``); every probability is then the mean over those frames.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import trimesh

from occnet_ros.network.checkpoint import DEFAULT_THRESHOLD
from occnet_ros.reconstruction.known_empty import KnownEmpty
from occnet_ros.network.model import OccupancyNetwork, PreparedCode, PreparedPlanes
from occnet_ros.reconstruction.normalization import BOX_HALF, CanonicalFrame
from occnet_ros.reconstruction.occupancy_grid import OccupancyGrid

__all__ = ["ReconstructedObject", "ViewFrameCode", "QUERY_MODES", "MIRROR", "AUTO_BATCH"]

QUERY_MODES = ("exact", "grid")
MIRROR = torch.tensor([1.0, -1.0, 1.0])
"""Multiplier of canonical coordinates that mirrors them across the x-z plane (see ``mirror_average``)."""
AUTO_BATCH = {"cpu": 4096, "cuda": 65536}
"""Points per network call when ``query_batch_size`` is 0: on a CPU, chunks whose activations
(3 x 4096 x hidden 64 x 4 bytes = 3 MB) stay in the L2 caches; on a GPU, large launches."""


@dataclass
class ViewFrameCode:
    """The observation encoded in the canonical frame of another camera of a fused cloud.

    ``frame``: that camera's canonical frame (source <-> canonical, like ``ReconstructedObject.frame``);
    ``code``: (1, *model.code_shape) on the model device; ``prepared`` / ``mirror_prepared``: as the
    object's ``_prepared`` / ``_mirror_prepared``."""

    frame: CanonicalFrame
    code: torch.Tensor
    prepared: PreparedCode | PreparedPlanes
    mirror_prepared: PreparedCode | PreparedPlanes | None = None


@dataclass
class ReconstructedObject:
    """One reconstruction. ``mesh``: source frame, metres, watertight (None if not extracted; a mesh
    with no faces if the network found no surface). ``frame``: canonical <-> source transform. ``code``:
    (1, *model.code_shape) latent code the decoder uses, on the model device (with ``mirror_average``,
    a feature-plane network's code already holds the mean with the mirrored inputs' planes).
    ``mirror_code``: only for a global-code network with ``mirror_average``, the mean code of the
    mirrored inputs, decoded beside ``code`` (``_mirror_prepared``: every probability is then the
    sigmoid of the mean of the two logits, the mirrored one taken at the mirrored query point); None
    otherwise. ``timings``: seconds per stage (normalize, encode, mise, marching_cubes, anchor,
    total). ``n_anchored``: mesh vertices moved onto the observation. ``mise_stats``: see
    :func:`occnet_ros.reconstruction.mise.mise_values`. ``grid``: the MISE probability grid (None
    without a mesh or with ``keep_grid`` off), see :mod:`occnet_ros.reconstruction.occupancy_grid` for what its answers
    are exact for. ``known_empty``: the observation's empty-space test (:mod:`occnet_ros.reconstruction.known_empty`) or
    None; points it marks have probability 0 in every answer (mesh, exact and grid queries).
    ``view_frames``: for a cloud fused from several cameras, its codes in the canonical frames of the
    other cameras (:class:`ViewFrameCode`; empty for one camera or ``max_view_frames`` 1): the network's
    probability at a point is then the mean over ``frame`` and every view frame whose padded box holds
    the point (the point's coordinates mapped through the source frame into each)."""

    mesh: trimesh.Trimesh | None
    frame: CanonicalFrame
    code: torch.Tensor
    n_input_points: int
    timings: dict[str, float]
    mise_stats: dict = field(default_factory=dict)
    threshold: float = DEFAULT_THRESHOLD
    n_anchored: int = 0
    _model: OccupancyNetwork | None = field(default=None, repr=False)
    _prepared: PreparedCode | PreparedPlanes | None = field(default=None, repr=False)
    _batch_size: int = field(default=AUTO_BATCH["cpu"], repr=False)
    grid: OccupancyGrid | None = field(default=None, repr=False)
    known_empty: KnownEmpty | None = field(default=None, repr=False)
    mirror_code: torch.Tensor | None = field(default=None, repr=False)
    _mirror_prepared: PreparedCode | PreparedPlanes | None = field(default=None, repr=False)
    view_frames: list[ViewFrameCode] = field(default_factory=list, repr=False)

    def probabilities(self, points: np.ndarray) -> np.ndarray:
        """points (M, 3) float32 canonical, no box test -> (M,) float32 probabilities: 0 where
        ``known_empty`` marks the point (tested first, so those points never reach the network), else
        the network (see :meth:`network_probabilities`)."""
        p = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
        if self.known_empty is None or not self.known_empty.active:
            return self.network_probabilities(p)
        out = np.zeros(p.shape[0], dtype=np.float32)
        keep = ~self.known_empty.mask(self.frame.from_canonical(p))
        if keep.any():
            out[keep] = self.network_probabilities(p[keep])
        return out

    def network_probabilities(self, points: np.ndarray) -> np.ndarray:
        """The network alone on every point: points (M, 3) float32 canonical -> (M,) float32 probabilities
        (with ``mirror_code``, the sigmoid of the mean logit of both passes; with ``view_frames``, the
        mean probability over the frames whose padded box holds the point). Chunks of ``_batch_size``
        points; one prepared code per frame, no per-point Python."""
        if self._model is None or self._prepared is None:
            raise RuntimeError("this ReconstructedObject has no network attached")
        p = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
        out = self._decode(p, self._prepared, self._mirror_prepared)
        if not self.view_frames or p.shape[0] == 0:
            return out
        total, count = out.astype(np.float64), np.ones(p.shape[0])
        source = self.frame.from_canonical(p)
        for vf in self.view_frames:
            q = vf.frame.to_canonical(source).astype(np.float32)
            inside = np.flatnonzero((np.abs(q) <= BOX_HALF).all(axis=1))
            if inside.size:
                total[inside] += self._decode(q[inside], vf.prepared, vf.mirror_prepared)
                count[inside] += 1.0
        return (total / count).astype(np.float32)

    def _decode(self, p: np.ndarray, prepared, mirror) -> np.ndarray:
        """(M, 3) float32 canonical points of the frame ``prepared`` belongs to -> (M,) float32
        probabilities of that code alone. On a GPU: one transfer each way per call (no synchronisation
        per chunk)."""
        out = np.empty(p.shape[0], dtype=np.float32)
        dev = self.code.device
        bs = self._batch_size
        with torch.inference_mode():
            src, dst = torch.from_numpy(p), torch.from_numpy(out)
            if dev.type != "cpu":
                src, dst = src.to(dev), torch.empty(p.shape[0], dtype=torch.float32, device=dev)
            flip = MIRROR.to(dev)
            for s in range(0, p.shape[0], bs):
                q = src[s:s + bs].unsqueeze(0)
                logits = self._model.decode_prepared(q, prepared)[0]
                if mirror is not None:
                    logits = (logits + self._model.decode_prepared(q * flip, mirror)[0]) * 0.5
                dst[s:s + bs] = logits.sigmoid_()
            if dev.type != "cpu":
                out[:] = dst.cpu().numpy()
        return out

    def query_canonical(self, points: np.ndarray, mode: str = "exact") -> np.ndarray:
        """points (M, 3) canonical -> (M,) float32 probabilities; outside the padded box (or not finite)
        -> 0. ``mode``: "exact" = the network; "grid" = trilinear in the cached MISE grid (see
        :mod:`occnet_ros.reconstruction.occupancy_grid`)."""
        if mode == "grid":
            if self.grid is None:
                raise ValueError("grid queries need the MISE grid: reconstruct with extract_mesh=True "
                                 "and keep_grid=True")
            return self.grid.interpolate(points)
        if mode != "exact":
            raise ValueError(f"mode must be one of {QUERY_MODES}, got {mode!r}")
        p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
        out = np.zeros(p.shape[0], dtype=np.float32)
        with np.errstate(invalid="ignore"):
            inside = (np.abs(p) <= BOX_HALF * (1.0 + 1e-5)).all(axis=1)  # False for NaN
        idx = np.flatnonzero(inside)
        if idx.size == 0:
            return out
        out[idx] = self.probabilities(p[idx])
        return out

    def query(self, points: np.ndarray, mode: str = "exact") -> np.ndarray:
        """points (M, 3) source frame, metres -> (M,) float32 occupancy probabilities. Points outside
        the padded box get 0 without touching the network; evaluated in batches. ``mode``: see
        :meth:`query_canonical`."""
        p = np.asarray(points)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must be (M, 3), got {p.shape}")
        return self.query_canonical(self.frame.to_canonical(p), mode)

    def occupied(self, points: np.ndarray) -> np.ndarray:
        """points (M, 3) source frame, metres -> (M,) bool, probability >= ``threshold``."""
        return self.query(points) >= self.threshold

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
