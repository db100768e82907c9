"""Anchoring the network's surface to the observed points (pure numpy/scipy, no ROS).

The network completes the unseen side of an object, but where the camera saw the surface its mesh
lies off the measured points by a few percent of the object (32x32 feature planes, a lumpy field).
The camera already measured that surface, and planners and the F-score want it where it was
measured. :func:`anchor_to_observation` moves each mesh vertex that lies near the observation onto a
plane fitted to the observed points around it (a moving-least-squares projection):

* anchor point: the observed point nearest to the vertex, if within ``radius`` (else the vertex stays);
  the plane is fitted around that point, so there is one fit per observed point in use, not one per
  vertex (a 128^3 mesh has ~100k vertices; the cloud is subsampled to ``max_points``);
* neighbours: the ``k`` observed points nearest to the anchor point within ``radius``; at least
  ``min_neighbors`` of them, else the vertex stays;
* plane: Gaussian-weighted centroid and covariance of the neighbours; the normal is the eigenvector
  of the smallest eigenvalue, turned towards the cameras that saw the points. No plane where the
  neighbours are not flat (smallest eigenvalue over the trace above ``max_curvature``: corners, or
  the two sides of a thin wall);
* side: only vertices whose own outward normal agrees with that plane normal (dot >=
  ``min_normal_dot``) move, so the back face of a thin plate is never pulled onto its observed front;
* blend: full displacement while the anchor point is within ``radius / 2`` of the vertex, fading to zero
  at ``radius``, then ``smooth_iterations`` passes of averaging over each vertex's neighbours on the
  mesh, so the anchored patch joins the rest of the surface without a step.

The mesh's connectivity is untouched, so a closed mesh stays closed. All inputs in one frame
(:meth:`~occnet_ros.reconstruction.reconstructor.Reconstructor.reconstruct` uses the canonical frame, so ``radius``
is in canonical units: 1 = the assumed object size).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from occnet_ros.config_io import setting
from occnet_ros.neighbours import NeighbourIndex

__all__ = ["AnchorConfig", "AnchorResult", "anchor_to_observation", "fit_planes", "smallest_eigenpairs",
           "vertex_normals"]


@dataclass
class AnchorConfig:
    """Anchoring of the mesh to the observed points (see the module docstring). The defaults were chosen
    on held-out training meshes (the random_urdfs validation split), not on the evaluation objects:
    MODEL.md."""

    radius: float = setting(0.08, doc="mesh vertices closer than this to the observed points move onto a plane "
                            "fitted to them (where the camera saw the surface the mesh follows the "
                            "measurement; the network completes the rest), canonical units (1 = the "
                            "object's size); 0 = off. Occupancy queries answer the network itself",
                            range=(0.0, 0.5))
    k: int = setting(32, doc="observed neighbours of an anchor point used for its plane fit", range=(3, 1024))
    min_neighbors: int = setting(6, doc="fewer neighbours within the radius: the vertex stays", range=(3, 1024))
    max_curvature: float = setting(0.25, doc="no plane where the neighbours are not flat: smallest eigenvalue "
                                   "over the trace of their covariance above this (corners, thin walls)",
                                   range=(1e-6, 1.0 / 3.0))
    min_normal_dot: float = setting(0.5, doc="only vertices whose outward normal agrees this much (cosine) with "
                                    "the plane's normal move", range=(-1.0, 1.0))
    smooth_iterations: int = setting(2, doc="passes of neighbour averaging that blend the anchored patch into "
                                     "the rest of the mesh", range=(0, 100))
    max_points: int = setting(20000, doc="observed points used (a seeded subsample of more), bounding the time "
                              "on dense clouds", range=(3, 10000000))
    seed: int = setting(0, doc="seed of that subsample", range=(0, 2**31 - 1))

    @property
    def enabled(self) -> bool:
        return self.radius > 0

    def validate(self) -> None:
        if self.radius < 0:
            raise ValueError(f"anchor radius must be >= 0 (0 = off), got {self.radius}")
        if self.k < 3 or not 3 <= self.min_neighbors <= self.k:
            raise ValueError(f"need 3 <= min_neighbors <= k, got k={self.k}, min_neighbors={self.min_neighbors}")
        if not 0.0 < self.max_curvature <= 1.0 / 3.0:
            raise ValueError(f"max_curvature must be in (0, 1/3], got {self.max_curvature}")
        if not -1.0 <= self.min_normal_dot <= 1.0:
            raise ValueError(f"min_normal_dot must be in [-1, 1], got {self.min_normal_dot}")
        if self.smooth_iterations < 0 or self.max_points < self.k:
            raise ValueError("smooth_iterations must be >= 0 and max_points >= k")


@dataclass
class AnchorResult:
    """``vertices``: (V, 3) float32 anchored vertices; ``weight``: (V,) float32 in [0, 1], how much of
    its plane projection each vertex took before smoothing (0 = untouched);
    ``displacement``: (V,) float32 length of each vertex's move, same units."""

    vertices: np.ndarray
    weight: np.ndarray
    displacement: np.ndarray

    @property
    def n_moved(self) -> int:
        return int(np.count_nonzero(self.displacement > 0))


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit outward vertex normals, area-weighted over the incident faces (faces oriented with
    outward normals, as :func:`occnet_ros.reconstruction.mise.mesh_from_values` gives them); zeros for lone vertices."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    idx = f.T.reshape(-1)  # each face's normal goes to its three corners (bincount: 57 ms vs np.add.at's
    # 72 ms for 400k faces)
    n = np.stack([np.bincount(idx, weights=np.tile(fn[:, d], 3), minlength=len(v)) for d in range(3)], axis=1)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, length, out=np.zeros_like(n), where=length > 0)


SEPARATION = 1e-6
"""Rows of :func:`smallest_eigenpairs` whose smallest eigenvalue lies closer than this fraction of the matrix's scale
to the next one (no unique direction: isotropic or line-like neighbourhoods, a zero covariance) are decomposed by
``numpy.linalg.eigh`` instead."""


def smallest_eigenpairs(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest eigenvalue and a unit eigenvector of each symmetric 3x3 matrix of ``cov`` (O, 3, 3) float64
    -> (values (O,), vectors (O, 3)); the vector's sign is arbitrary, as ``numpy.linalg.eigh``'s is.

    Closed form: the eigenvalues from the trigonometric solution of the characteristic cubic, the eigenvector as the
    longest cross product of two rows of ``cov - value * I`` (vectorised: 0.5 ms for 2500 matrices, against 2.2 ms
    for ``eigh``'s LAPACK call per matrix, 2-core AMD EPYC). Rows whose two smallest eigenvalues are not separated by
    :data:`SEPARATION` of the scale go to ``eigh`` (tested against it)."""
    a = np.asarray(cov, dtype=np.float64).reshape(-1, 3, 3)
    values, vectors = np.zeros(len(a)), np.zeros((len(a), 3))
    if len(a) == 0:
        return values, vectors
    xx, yy, zz, xy, xz, yz = a[:, 0, 0], a[:, 1, 1], a[:, 2, 2], a[:, 0, 1], a[:, 0, 2], a[:, 1, 2]
    mean = (xx + yy + zz) / 3.0
    dx, dy, dz = xx - mean, yy - mean, zz - mean
    spread = np.sqrt((dx * dx + dy * dy + dz * dz + 2.0 * (xy * xy + xz * xz + yz * yz)) / 6.0)
    # eigenvalues = mean + 2 * spread * cos(angle + 2 pi j / 3); det(cov - mean * I) / 2 = spread^3 * cos(3 angle)
    half_det = 0.5 * (dx * (dy * dz - yz * yz) - xy * (xy * dz - yz * xz) + xz * (xy * yz - dy * xz))
    ratio = np.divide(half_det, spread ** 3, out=np.zeros_like(half_det), where=spread > 0)
    angle = np.arccos(np.clip(ratio, -1.0, 1.0)) / 3.0
    values[:] = mean + 2.0 * spread * np.cos(angle + 2.0 * np.pi / 3.0)
    middle = mean + 2.0 * spread * np.cos(angle - 2.0 * np.pi / 3.0)
    # rows of cov - value * I: (ax, xy, xz), (xy, by, yz), (xz, yz, cz); their three cross products
    ax, by, cz = xx - values, yy - values, zz - values
    crosses = np.stack([
        np.stack([xy * yz - xz * by, xz * xy - ax * yz, ax * by - xy * xy], axis=1),   # row 0 x row 1
        np.stack([xy * cz - xz * yz, xz * xz - ax * cz, ax * yz - xy * xz], axis=1),   # row 0 x row 2
        np.stack([by * cz - yz * yz, yz * xz - xy * cz, xy * yz - by * xz], axis=1),   # row 1 x row 2
    ], axis=1)
    lengths = np.sqrt(np.einsum("ocd,ocd->oc", crosses, crosses))
    best = lengths.argmax(axis=1)
    rows = np.arange(len(a))
    longest = lengths[rows, best]
    scale = np.maximum(np.abs(values), np.abs(mean + 2.0 * spread))
    good = (middle - values > SEPARATION * scale) & (longest > 0)
    vectors[good] = crosses[rows[good], best[good]] / longest[good, None]
    if not good.all():
        bad = np.flatnonzero(~good)
        evals, evecs = np.linalg.eigh(a[bad])
        values[bad], vectors[bad] = evals[:, 0], evecs[:, :, 0]
    return values, vectors


def fit_planes(query: np.ndarray, points: np.ndarray, viewpoints: np.ndarray, config: AnchorConfig,
               tree: NeighbourIndex | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Local planes of ``points`` around each query point.

    query (Q, 3), points (N, 3), viewpoints (N, 3): camera centre that saw each point, or (3,) / (1, 3):
    one camera for all; one frame. ``tree``: a :class:`~occnet_ros.neighbours.NeighbourIndex` of ``points`` if the
    caller has one.
    -> (ok (Q,) bool: a flat neighbourhood of at least ``min_neighbors`` points within ``radius``;
    centroid (Q, 3); normal (Q, 3) unit, towards the cameras; nearest (Q,) distance to the nearest
    point, inf if none within ``radius``). Rows where ``ok`` is False hold zeros.

    The weighted moments are summed in coordinates relative to each query point (at most ``radius``
    away, so the covariance keeps float64's precision wherever the object sits)."""
    c = config
    q = np.asarray(query, dtype=np.float64).reshape(-1, 3)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    vps = np.asarray(viewpoints, dtype=np.float64).reshape(-1, 3)
    k = min(c.k, p.shape[0])
    dist, idx = (tree or NeighbourIndex(p)).query(q, k, c.radius)
    valid = np.isfinite(dist)
    ok = valid.sum(axis=1) >= c.min_neighbors
    centroid = np.zeros_like(q)
    normal = np.zeros_like(q)
    nearest = dist[:, 0].copy()
    if not ok.any():
        return ok, centroid, normal, nearest
    rows = np.flatnonzero(ok)
    d, i, m = dist[rows], np.where(valid[rows], idx[rows], 0), valid[rows]
    w = np.where(m, np.exp(-(np.where(m, d, 0.0) / (0.5 * c.radius)) ** 2), 0.0)
    w /= w.sum(axis=1, keepdims=True)
    # neighbours relative to their query point, (O, 3, k): one gather per coordinate from contiguous coordinate rows,
    # subtracted in place, then batched matmuls (2504 x 32 neighbours: 0.36 ms, against 0.65 ms indexing the strided
    # rows of p.T)
    pt, qt = np.ascontiguousarray(p.T), np.ascontiguousarray(q[rows].T)
    local = np.empty((len(rows), 3, i.shape[1]))
    for axis in range(3):
        np.subtract(np.take(pt[axis], i), qt[axis][:, None], out=local[:, axis])
    wl = local * w[:, None, :]
    mean = wl.sum(axis=2)                                        # (O, 3) weighted centroid, local
    cov = wl @ local.transpose(0, 2, 1) - mean[:, :, None] * mean[:, None, :]
    smallest, nrm = smallest_eigenpairs(cov)
    flat = smallest <= c.max_curvature * np.maximum(np.trace(cov, axis1=1, axis2=2), 1e-300)
    cen = mean + q[rows]
    if vps.shape[0] == 1:  # one camera
        towards = vps[0] - cen
    else:
        towards = np.einsum("ok,okd->od", w, vps[i]) - cen
    nrm *= np.where(np.einsum("od,od->o", nrm, towards) < 0, -1.0, 1.0)[:, None]
    centroid[rows], normal[rows] = cen, nrm
    ok[rows[~flat]] = False
    centroid[~ok], normal[~ok] = 0.0, 0.0
    return ok, centroid, normal, nearest


def _ring_average(n_vertices: int, faces: np.ndarray) -> scipy.sparse.csr_matrix:
    """(V, V) row-stochastic matrix: the mean over each vertex and its mesh neighbours.

    Built directly in CSR form: the keys ``row * V + column`` of both directions of every face edge and of each
    vertex to itself, sorted and made unique, are the matrix's entries in row order (a 20k-face mesh: 1.5 ms, against
    2.5 ms through scipy's COO conversion with its duplicate summing and index sorting)."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    n = int(n_vertices)
    a, b = f.T.reshape(-1), f[:, [1, 2, 0]].T.reshape(-1)  # each face's edges 0-1, 1-2, 2-0
    keys = np.concatenate([a * n + b, b * n + a, np.arange(n, dtype=np.int64) * (n + 1)])
    keys.sort()
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]  # an interior edge is in two faces: once
    rows, cols = np.divmod(keys, n)
    per_row = np.bincount(rows, minlength=n)  # >= 1: every row holds its own vertex
    indptr = np.concatenate(([0], np.cumsum(per_row)))
    return scipy.sparse.csr_matrix((np.repeat(1.0 / per_row, per_row), cols, indptr), shape=(n, n))


def anchor_to_observation(vertices: np.ndarray, faces: np.ndarray, points: np.ndarray,
                          viewpoints: np.ndarray, config: AnchorConfig | None = None) -> AnchorResult:
    """Move the mesh's vertices near the observation onto it (see the module docstring).

    vertices (V, 3), faces (F, 3) int oriented outwards; points (N, 3) observed surface points;
    viewpoints (N, 3) or (3,): the centre of the camera that saw each point (or all of them). One
    frame and unit for all. -> :class:`AnchorResult`; the input arrays are not modified."""
    c = config or AnchorConfig()
    c.validate()
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    p = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    vp = np.asarray(viewpoints, dtype=np.float64).reshape(-1, 3)
    if vp.shape[0] not in (1, p.shape[0]):
        raise ValueError(f"viewpoints: one (3,) or one per point ({p.shape[0]}, 3), got {np.shape(viewpoints)}")
    zeros = np.zeros(len(v), np.float32)
    if not c.enabled or len(v) == 0 or len(faces) == 0 or p.shape[0] < c.min_neighbors:
        return AnchorResult(v.astype(np.float32), zeros, zeros.copy())
    if p.shape[0] > c.max_points:
        keep = np.random.default_rng(c.seed).choice(p.shape[0], c.max_points, replace=False)
        p, vp = p[keep], (vp[keep] if vp.shape[0] > 1 else vp)
    tree = NeighbourIndex(p)
    nearest, anchor = tree.nearest(v, c.radius)
    near = np.isfinite(nearest)
    used, which = np.unique(anchor[near], return_inverse=True)
    ok, cen, nrm = np.zeros(len(v), bool), np.zeros_like(v), np.zeros_like(v)
    if used.size:  # one plane per observed point that is some vertex's anchor
        ok_p, cen_p, nrm_p, _ = fit_planes(p[used], p, vp, c, tree)
        ok[near], cen[near], nrm[near] = ok_p[which], cen_p[which], nrm_p[which]
    side = np.einsum("vd,vd->v", vertex_normals(v, faces), nrm) >= c.min_normal_dot
    weight = np.where(ok & side, np.clip((c.radius - nearest) / (0.5 * c.radius), 0.0, 1.0), 0.0)
    offset = -np.einsum("vd,vd->v", v - cen, nrm)[:, None] * nrm * weight[:, None]
    if c.smooth_iterations and np.any(weight > 0):
        avg = _ring_average(len(v), faces)
        for _ in range(c.smooth_iterations):
            offset = avg @ offset
    out = v + offset
    return AnchorResult(out.astype(np.float32), weight.astype(np.float32),
                        np.linalg.norm(offset, axis=1).astype(np.float32))
