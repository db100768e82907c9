"""Choosing the surface threshold on held-out training-distribution objects, with the evaluation protocol.

Training picks a threshold on its validation query points (half of them near the surface), which is not
the volumetric IoU of a whole reconstruction. :func:`calibrate_threshold` reconstructs held-out
objects exactly as ``occnet_eval``'s ``ours`` does (same view protocol, cleaning, known-empty space,
anchoring, metrics) at several
thresholds and reports the mean IoU and F-score of each. The objects come from the training
*distribution* but were never trained on: the random_urdfs validation split of the data config
(every 10th mesh) and procedural shapes drawn with their own seed. The named evaluation objects are
never used, so the evaluation stays a test.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from occnet_ros.evaluation.metrics import MetricsConfig, evaluate_mesh, prepare_ground_truth
from occnet_ros.evaluation.protocol import (EvalObject, ProtocolError, ViewProtocolConfig, mesh_file_object,
                                            observe_object)
from occnet_ros.reconstruction.known_empty import KnownEmpty, KnownEmptyConfig

__all__ = ["CalibrationConfig", "calibration_objects", "calibrate_threshold", "score_objects", "mean_scores"]


@dataclass
class CalibrationConfig:
    """``n_meshes`` random_urdfs validation meshes (scaled to ``mesh_size_m`` longest edge) and
    ``n_shapes`` procedural shapes (seed ``shape_seed``); ``thresholds`` tried; ``views``: number of
    fused views per object; protocol, known-empty space and metrics as in the evaluation."""

    n_meshes: int = 32
    n_shapes: int = 24
    mesh_size_m: float = 0.12
    shape_seed: int = 2026
    shape_mesh_resolution: int = 96
    shape_families: dict[str, float] = field(default_factory=dict)
    """family name -> weight of the procedural shapes; empty: the training data's default weights"""
    thresholds: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7])
    views: int = 1
    protocol: ViewProtocolConfig = field(default_factory=ViewProtocolConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    known_empty: KnownEmptyConfig = field(default_factory=KnownEmptyConfig)

    def validate(self) -> None:
        if self.n_meshes < 0 or self.n_shapes < 0 or self.n_meshes + self.n_shapes == 0:
            raise ValueError("need n_meshes + n_shapes >= 1 (both >= 0)")
        if not self.thresholds or not all(0.0 < t < 1.0 for t in self.thresholds):
            raise ValueError(f"thresholds must be a non-empty list in (0, 1), got {self.thresholds}")
        if self.views < 1 or not self.mesh_size_m > 0:
            raise ValueError("views must be >= 1 and mesh_size_m > 0")
        if self.shape_families:
            from occnet_ros.data.shapes import check_family_weights

            check_family_weights(self.shape_families)
        self.protocol.validate()
        self.metrics.validate()
        self.known_empty.validate()


def calibration_objects(config: CalibrationConfig, mesh_paths: list) -> list[EvalObject]:
    """The held-out objects: the first ``n_meshes`` of ``mesh_paths`` ((path, scale) pairs, e.g.
    the data config's validation split), each rescaled to ``mesh_size_m``, then ``n_shapes``
    procedural shapes drawn with ``shape_seed`` (and ``shape_families``)."""
    from occnet_ros.data.mesh_sources import is_evaluation_mesh
    from occnet_ros.data.shapes import sample_shape

    out = []
    for path, scale in mesh_paths[:config.n_meshes]:
        if is_evaluation_mesh(path):
            raise ValueError(f"{path} is an evaluation object and cannot be used for calibration")
        probe = mesh_file_object(path, scale)
        out.append(mesh_file_object(path, scale * config.mesh_size_m / float(probe.mesh.extents.max()),
                                    name=f"mesh_{len(out)}_{probe.name}"))
    rng = np.random.default_rng(config.shape_seed)
    for i in range(config.n_shapes):
        shape = sample_shape(rng, weights=config.shape_families)
        out.append(EvalObject(name=f"shape_{i}_{shape.family}", mesh=shape.mesh(config.shape_mesh_resolution),
                              source="procedural", scale=1.0))
    return out


def score_objects(reconstructors: dict, objects: list[EvalObject], config: CalibrationConfig,
                  progress: bool = False, desc: str = "held-out",
                  on_object=None) -> tuple[dict[str, list[dict]], list[str]]:
    """Every reconstructor of ``reconstructors`` ({name: Reconstructor}) on every object, as ``occnet_eval``'s
    ``ours`` runs (``config.views`` fused views, the known-empty space, its own anchoring and threshold).
    Each object is observed once and its ground truth prepared once, for all of them. ``on_object(obj, obs,
    meshes, rows)``, if given, is called after each observed object with {name: world-frame mesh or None} and
    {name: score row} (e.g. to draw it).

    -> ({name: [{"object", "iou", "fscore", "chamfer_l1" (None for an empty mesh)}, ...]}, names of the
    objects whose view failed)."""
    config.validate()
    scores: dict[str, list[dict]] = {name: [] for name in reconstructors}
    skipped = []
    it = objects
    if progress:
        from tqdm import tqdm
        it = tqdm(objects, desc=desc, dynamic_ncols=True)
    for obj in it:
        try:
            obs = observe_object(obj, config.views, config.protocol)
        except ProtocolError:
            skipped.append(obj.name)
            continue
        gts = prepare_ground_truth(obj.mesh, config.metrics)
        empty = KnownEmpty(config.known_empty, obs.support_plane, obs.depth_views)
        meshes, rows = {}, {}
        for name, rec in reconstructors.items():
            r = rec.reconstruct(obs.points, obs.up, obs.viewpoint, point_viewpoints=obs.point_viewpoints,
                                known_empty=empty, n_views=obs.n_views)
            mesh = obs.mesh_to_world(r.mesh) if r.mesh is not None and len(r.mesh.faces) else None
            m = evaluate_mesh(mesh, gts)
            rows[name] = {"object": obj.name, "iou": float(m.iou), "fscore": float(m.fscore),
                          "chamfer_l1": None if m.chamfer_l1 is None else float(m.chamfer_l1)}
            scores[name].append(rows[name])
            meshes[name] = mesh
        if on_object is not None:
            on_object(obj, obs, meshes, rows)
    if not any(scores.values()):
        raise ValueError("no held-out object could be observed")
    return scores, skipped


def mean_scores(rows: list[dict]) -> dict:
    """Mean IoU, F-score (empty meshes count 0) and Chamfer-L1 (over the meshes that exist) of
    :func:`score_objects` rows."""
    ch = [r["chamfer_l1"] for r in rows if r["chamfer_l1"] is not None]
    return {"iou": float(np.mean([r["iou"] for r in rows])), "fscore": float(np.mean([r["fscore"] for r in rows])),
            "chamfer_l1": float(np.mean(ch)) if ch else float("nan")}


def calibrate_threshold(reconstructor, objects: list[EvalObject], config: CalibrationConfig,
                        progress: bool = False) -> dict:
    """Mean IoU / F-score of ``reconstructor`` (a :class:`~occnet_ros.reconstruction.reconstructor.Reconstructor`;
    its other settings are kept) at each threshold of ``config`` on ``objects``.

    -> {"table": [{"threshold", "iou", "fscore", "chamfer_l1"}...], "best_threshold": the threshold
    of the highest mean IoU, "n_objects", "skipped": names whose view failed}."""
    from occnet_ros.reconstruction.reconstructor import Reconstructor

    config.validate()
    recs = {t: Reconstructor(reconstructor.model, device=str(reconstructor.device),
                             config=dataclasses.replace(reconstructor.config, threshold=t))
            for t in config.thresholds}
    scores, skipped = score_objects(recs, objects, config, progress, desc="calibrate")
    table = [{"threshold": t, **mean_scores(rows)} for t, rows in scores.items()]
    best = max(table, key=lambda row: row["iou"])
    return {"table": table, "best_threshold": best["threshold"], "n_objects": len(objects) - len(skipped),
            "skipped": skipped}
