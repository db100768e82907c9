"""Mesh-to-mesh reconstruction metrics, as in the Occupancy Networks and ConvONet papers.

Every metric is computed in the *normalised evaluation frame*: the ground-truth mesh's axis-aligned
bounding box is centred at the origin and scaled so that its longest edge is 1 (dimensionless units;
both meshes get the same similarity transform). The padded box is ``[-0.5 - p/2, 0.5 + p/2]^3`` with
``p = box_padding`` (default 0.1, so ``[-0.55, 0.55]^3`` as in the papers).

* Volumetric IoU: ``n_points_iou`` points uniform in the padded box, inside/outside of both meshes.
* Chamfer-L1: ``n_points_surface`` area-weighted samples on each surface; mean Euclidean distance to
  the nearest sample of the other surface in both directions (accuracy: prediction -> ground truth,
  completeness: ground truth -> prediction), averaged. Units: longest ground-truth edge = 1.
* Normal consistency: mean ``|cos|`` between the face normals of nearest-neighbour samples, both
  directions, averaged (sign-free, so the orientation of open meshes does not matter).
* F-score at ``fscore_threshold`` (default 0.01 = 1 % of the longest edge): precision = fraction of
  prediction samples within the threshold of the ground truth, recall = the converse, harmonic mean.

Inside test (:mod:`occnet_ros.data.solid_inside`, the same for prediction and ground truth): the mesh is
split into its connected parts and a point is inside the solid when it is inside any closed part (a
winding count: an inverted part inside another is a cavity). Each part is tested by ray parity, the
majority vote over ``n_rays`` seeded random directions (open3d ``RaycastingScene.count_intersections``).
For a watertight part every ray gives the same, exact answer (the vote only guards against rays grazing
an edge). Parity over the whole mesh would call the overlap of two closed parts outside: the teddy (15
overlapping convex hulls) would lose 6 % of its volume to false cavities. Surface
samples on faces buried inside another closed part are not surface and are drawn again. For a
non-watertight part (e.g. of a density-trimmed Poisson surface) "inside" is not defined; the vote over
``n_rays_open`` directions is reported as is, and :class:`MeshMetrics` records ``pred_watertight`` /
``gt_watertight`` (every part closed) so the tables can flag such IoUs instead of presenting them as exact.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import trimesh

from occnet_ros.data.solid_inside import (MeshParts, mesh_parts, on_solid_boundary, parity_vote, random_directions,
                                     solid_inside)
from occnet_ros.neighbours import NeighbourIndex


@dataclass
class MetricsConfig:
    """Metric settings; see the module docstring. All lengths in normalised units (GT longest edge 1)."""

    n_points_iou: int = 100_000
    n_points_surface: int = 100_000
    box_padding: float = 0.1
    fscore_threshold: float = 0.01
    n_rays: int = 3
    n_rays_open: int = 9
    seed: int = 0

    def validate(self) -> None:
        if self.n_points_iou < 1 or self.n_points_surface < 1:
            raise ValueError("n_points_iou and n_points_surface must be >= 1")
        if self.box_padding < 0:
            raise ValueError(f"box_padding must be >= 0, got {self.box_padding}")
        if self.fscore_threshold <= 0:
            raise ValueError(f"fscore_threshold must be > 0, got {self.fscore_threshold}")
        for name in ("n_rays", "n_rays_open"):
            v = getattr(self, name)
            if v < 1 or v % 2 == 0:
                raise ValueError(f"{name} must be a positive odd number, got {v}")


@dataclass
class MeshMetrics:
    """Metrics of one predicted mesh against its ground truth (normalised frame, GT longest edge 1).

    ``chamfer_l1``, ``accuracy``, ``completeness``, ``normal_consistency`` are ``None`` for an empty
    prediction (no surface to sample); ``iou``, ``fscore``, ``precision``, ``recall`` are then 0."""

    iou: float
    chamfer_l1: float | None
    accuracy: float | None
    completeness: float | None
    normal_consistency: float | None
    fscore: float
    precision: float
    recall: float
    pred_watertight: bool
    gt_watertight: bool
    pred_faces: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def normalization_of(gt: trimesh.Trimesh) -> tuple[np.ndarray, float]:
    """(centre (3,), scale) of the evaluation frame: ``p_norm = (p - centre) / scale`` puts the GT
    bounding box at the origin with its longest edge 1. Raises ValueError for an empty/flat GT."""
    if len(gt.faces) == 0:
        raise ValueError("ground-truth mesh has no faces")
    lo, hi = gt.bounds
    scale = float(np.max(hi - lo))
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"ground-truth mesh has a degenerate bounding box {lo} .. {hi}")
    return 0.5 * (lo + hi), scale


def normalize_mesh(mesh: trimesh.Trimesh, centre: np.ndarray, scale: float) -> trimesh.Trimesh:
    """A copy of ``mesh`` with vertices ``(v - centre) / scale``; faces unchanged, not re-processed."""
    v = (np.asarray(mesh.vertices, dtype=np.float64) - centre) / scale
    return trimesh.Trimesh(vertices=v, faces=np.asarray(mesh.faces), process=False)


def is_watertight(mesh: trimesh.Trimesh) -> bool:
    """Closed 2-manifold test after merging coincident vertices (every edge shared by two faces)."""
    if len(mesh.faces) == 0:
        return False
    m = trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, process=True)
    return bool(m.is_watertight)


def _face_frames(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(triangles (F, 3, 3) float64, areas (F,), unit normals (F, 3); zero for degenerate faces)."""
    tri = np.asarray(mesh.vertices, dtype=np.float64)[np.asarray(mesh.faces, dtype=np.int64)]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(cross, axis=1)
    normals = np.divide(cross, norm[:, None], out=np.zeros_like(cross), where=norm[:, None] > 0)
    return tri, 0.5 * norm, normals


def sample_surface(mesh: trimesh.Trimesh, n: int, rng: np.random.Generator, return_faces: bool = False):
    """``n`` area-weighted uniform samples on ``mesh`` -> (points (n, 3) float64, unit face normals
    (n, 3) float64[, face index (n,) int]), in the mesh's frame. Raises ValueError if the mesh has no area."""
    tri, area, normals = _face_frames(mesh)
    total = float(area.sum()) if len(area) else 0.0
    if not np.isfinite(total) or total <= 0:
        raise ValueError("mesh has no surface area to sample")
    face = rng.choice(len(area), size=n, p=area / total)
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1.0
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    t = tri[face]
    pts = t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + v[:, None] * (t[:, 2] - t[:, 0])
    return (pts, normals[face], face) if return_faces else (pts, normals[face])


def solid_surface_samples(parts: MeshParts, mesh: trimesh.Trimesh, n: int, n_rays: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` area-weighted samples on the surface of the solid that ``mesh`` (split into ``parts``)
    stands for: samples on a part's faces buried inside other parts are interior, not surface, and are
    drawn again (:func:`occnet_ros.data.solid_inside.on_solid_boundary`). For a mesh of one part this is
    :func:`sample_surface`. Returns (points (n, 3), unit face normals (n, 3)), the mesh's frame."""
    pts, nrm, face = sample_surface(mesh, n, rng, return_faces=True)
    if len(parts) < 2:
        return pts, nrm
    keep = on_solid_boundary(parts, pts, face, n_rays, rng)
    got_p, got_n = [pts[keep]], [nrm[keep]]
    have = int(keep.sum())
    if have == 0:
        raise ValueError("no face of the mesh lies on the surface of its solid")
    while have < n:  # draw again, in proportion to what was kept
        extra = int(1.2 * (n - have) * n / have) + 16
        p, q, f = sample_surface(mesh, extra, rng, return_faces=True)
        k = on_solid_boundary(parts, p, f, n_rays, rng)
        got_p.append(p[k])
        got_n.append(q[k])
        have += int(k.sum())
    return np.concatenate(got_p)[:n], np.concatenate(got_n)[:n]


def inside_mesh(mesh: trimesh.Trimesh, points: np.ndarray, n_rays: int,
                rng: np.random.Generator) -> np.ndarray:
    """Inside test by ray parity over the whole mesh, majority vote over ``n_rays`` (odd) random
    directions. points: (N, 3), same frame as ``mesh``. Returns (N,) bool. Exact for one closed
    surface (up to rays that graze an edge, which the vote removes); for open meshes a vote, and for
    overlapping closed parts wrong where they overlap: the metrics use
    :func:`occnet_ros.data.solid_inside.solid_inside`, which unites the parts."""
    if n_rays < 1 or n_rays % 2 == 0:
        raise ValueError(f"n_rays must be a positive odd number, got {n_rays}")
    return parity_vote(np.asarray(mesh.vertices), np.asarray(mesh.faces), points, random_directions(n_rays, rng))


def box_points(n: int, box_half: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) float64 points uniform in ``[-box_half, box_half]^3``."""
    return rng.uniform(-box_half, box_half, size=(n, 3))


def iou_from_occupancy(occ_pred: np.ndarray, occ_gt: np.ndarray) -> float:
    """IoU of two (N,) bool occupancy vectors; 1.0 when both are empty (identical empty sets)."""
    union = np.count_nonzero(occ_pred | occ_gt)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(occ_pred & occ_gt) / union)


def surface_metrics(pred_pts: np.ndarray, pred_nrm: np.ndarray, gt_pts: np.ndarray,
                    gt_nrm: np.ndarray, threshold: float) -> dict:
    """Chamfer-L1, normal consistency and F-score from surface samples (normalised frame).

    pred_pts, pred_nrm: (N, 3); gt_pts, gt_nrm: (M, 3); threshold: F-score distance.
    Returns a dict with ``accuracy``, ``completeness``, ``chamfer_l1``, ``normal_consistency``,
    ``precision``, ``recall``, ``fscore``."""
    d_acc, i_acc = NeighbourIndex(np.asarray(gt_pts, np.float64)).nearest(pred_pts)
    d_comp, i_comp = NeighbourIndex(np.asarray(pred_pts, np.float64)).nearest(gt_pts)
    nc_acc = np.abs(np.sum(pred_nrm * gt_nrm[i_acc], axis=1)).mean()
    nc_comp = np.abs(np.sum(gt_nrm * pred_nrm[i_comp], axis=1)).mean()
    precision = float(np.mean(d_acc < threshold))
    recall = float(np.mean(d_comp < threshold))
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    acc, comp = float(d_acc.mean()), float(d_comp.mean())
    return {"accuracy": acc, "completeness": comp, "chamfer_l1": 0.5 * (acc + comp),
            "normal_consistency": float(0.5 * (nc_acc + nc_comp)),
            "precision": precision, "recall": recall, "fscore": float(f)}


@dataclass
class GroundTruthSamples:
    """Everything about one ground-truth mesh that the metrics reuse for every prediction.

    ``centre`` (3,), ``scale``: the normalisation (``p_norm = (p - centre) / scale``);
    ``box_points`` (n_points_iou, 3) and ``occupancy`` (n_points_iou,) bool: IoU points and GT inside;
    ``points``, ``normals`` (n_points_surface, 3): GT surface samples; all normalised frame."""

    centre: np.ndarray
    scale: float
    box_points: np.ndarray
    occupancy: np.ndarray
    points: np.ndarray
    normals: np.ndarray
    watertight: bool
    config: MetricsConfig


def prepare_ground_truth(gt: trimesh.Trimesh, config: MetricsConfig | None = None
                         ) -> GroundTruthSamples:
    """Normalise ``gt``, draw the IoU box points and GT surface samples from fixed seeded streams."""
    cfg = config or MetricsConfig()
    cfg.validate()
    centre, scale = normalization_of(gt)
    gt_n = normalize_mesh(gt, centre, scale)
    parts = mesh_parts(gt_n)
    closed = bool(parts.closed.all())
    box_half = 0.5 + 0.5 * cfg.box_padding
    qpts = box_points(cfg.n_points_iou, box_half, np.random.default_rng([cfg.seed, 1]))
    occ = solid_inside(parts, qpts, cfg.n_rays, np.random.default_rng([cfg.seed, 2]), cfg.n_rays_open)
    pts, nrm = solid_surface_samples(parts, gt_n, cfg.n_points_surface, cfg.n_rays,
                                     np.random.default_rng([cfg.seed, 3]))
    return GroundTruthSamples(centre=centre, scale=scale, box_points=qpts, occupancy=occ,
                              points=pts, normals=nrm, watertight=closed, config=cfg)


def evaluate_mesh(pred: trimesh.Trimesh | None, gt: trimesh.Trimesh | GroundTruthSamples,
                  config: MetricsConfig | None = None) -> MeshMetrics:
    """All metrics of ``pred`` against ``gt``; both in the same metric frame (e.g. world, metres).

    ``gt``: the ground-truth mesh, or its :func:`prepare_ground_truth` result (then ``config`` is
    ignored) to score several predictions on the very same box points and GT samples. Both meshes are
    mapped to the normalised evaluation frame of the GT first. ``pred`` may be ``None`` or empty (an
    empty prediction: IoU 0, F-score 0, distances ``None``). Deterministic for a given ``seed``."""
    g = gt if isinstance(gt, GroundTruthSamples) else prepare_ground_truth(gt, config)
    cfg = g.config
    empty = pred is None or len(pred.faces) == 0 or float(_face_frames(pred)[1].sum()) <= 0
    if empty:
        return MeshMetrics(iou=iou_from_occupancy(np.zeros_like(g.occupancy), g.occupancy),
                           chamfer_l1=None, accuracy=None, completeness=None,
                           normal_consistency=None, fscore=0.0, precision=0.0, recall=0.0,
                           pred_watertight=False, gt_watertight=g.watertight, pred_faces=0)
    pred_n = normalize_mesh(pred, g.centre, g.scale)
    parts = mesh_parts(pred_n)
    closed = bool(parts.closed.all())
    occ = solid_inside(parts, g.box_points, cfg.n_rays, np.random.default_rng([cfg.seed, 2]), cfg.n_rays_open)
    pts, nrm = solid_surface_samples(parts, pred_n, cfg.n_points_surface, cfg.n_rays,
                                     np.random.default_rng([cfg.seed, 4]))
    s = surface_metrics(pts, nrm, g.points, g.normals, cfg.fscore_threshold)
    return MeshMetrics(iou=iou_from_occupancy(occ, g.occupancy), pred_watertight=closed,
                       gt_watertight=g.watertight, pred_faces=int(len(pred.faces)), **s)
