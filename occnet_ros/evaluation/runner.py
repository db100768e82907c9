"""The evaluation run: every method on identical inputs, metrics, timings, reports.

For each object and view setting (:mod:`occnet_ros.evaluation.protocol`), every method gets the same
:class:`~occnet_ros.evaluation.protocol.Observation` and returns a mesh in the input frame (camera 0
optical frame, metres); the mesh is mapped to the world frame and scored against the ground truth
(:mod:`occnet_ros.evaluation.metrics`, normalised frame: GT longest bounding-box edge 1).

Methods: ``ours`` (the network, MISE with the configured ``upsampling_steps``, the space the
observation shows empty removed as ``known_empty`` says (:mod:`occnet_ros.reconstruction.known_empty`: below the
fitted table plane, in front of each view's depth), the mesh anchored to the observed points as the
reconstructor's ``anchor`` says; fused views are also encoded in the other cameras' canonical frames and
averaged, ``max_view_frames``), ``ours_raw`` (the network's own surface: no empty-space removal, no
anchoring), ``mise<k>`` (as ``ours`` with ``upsampling_steps = k``: final grid
``resolution0 * 2**k``), ``hull`` (convex hull),
``poisson`` (screened Poisson), ``gt`` (the ground truth itself, mapped into the input frame and back:
a sanity check of the frames and metrics, IoU 1). ``time_s`` is the wall time of the method alone
(normalisation, network, MISE, marching cubes, anchoring; not the metrics).

A method that fails (an error, or an empty mesh) is recorded with its error and scored as an empty
prediction (IoU 0, F-score 0, no distances); means count it so.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import trimesh

from occnet_ros.data.mesh_sources import EVALUATION_OBJECTS
from occnet_ros.evaluation.baselines import HullConfig, PoissonConfig, convex_hull, poisson
from occnet_ros.evaluation.metrics import MetricsConfig, evaluate_mesh, prepare_ground_truth
from occnet_ros.evaluation.protocol import (EvalObject, Observation, ProtocolError, ViewProtocolConfig,
                                            evaluation_object, mesh_file_object, observe_object)
from occnet_ros.reconstruction.known_empty import KnownEmpty, KnownEmptyConfig
from occnet_ros.reconstruction.reconstructor import ReconstructorConfig

BASELINES = ("hull", "poisson", "gt")
_MISE = re.compile(r"^mise(\d)$")


def is_network_method(name: str) -> bool:
    return name in ("ours", "ours_raw") or _MISE.match(name) is not None


@dataclass
class EvalConfig:
    """One evaluation run. ``objects``: names of the evaluation set; ``meshes``: extra mesh files
    (their units x ``mesh_scale`` = metres, z up); ``views``: view settings (number of fused views);
    ``methods``: see the module docstring; ``weights``: checkpoint (None: the shipped default);
    ``out``: output folder; ``render``: PNGs; ``render_points``: splat points per panel;
    ``save_meshes``: also write every predicted mesh (world frame, PLY); ``known_empty``: what the
    network methods other than ``ours_raw`` remove of the space the observation shows empty."""

    objects: list[str] = field(default_factory=lambda: list(EVALUATION_OBJECTS))
    meshes: list[str] = field(default_factory=list)
    mesh_scale: float = 1.0
    views: list[int] = field(default_factory=lambda: [1, 4])
    methods: list[str] = field(default_factory=lambda: ["ours", "ours_raw", "mise0", "mise1", "mise2",
                                                        "hull", "poisson"])
    weights: str | None = None
    out: str = "out/eval"
    render: bool = True
    render_points: int = 40000
    save_meshes: bool = False
    protocol: ViewProtocolConfig = field(default_factory=ViewProtocolConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    hull: HullConfig = field(default_factory=HullConfig)
    poisson: PoissonConfig = field(default_factory=PoissonConfig)
    # the evaluation reports `ours` at 128^3 (the mise<k> rows give the other grids)
    reconstructor: ReconstructorConfig = field(default_factory=lambda: ReconstructorConfig(upsampling_steps=2))
    known_empty: KnownEmptyConfig = field(default_factory=KnownEmptyConfig)

    def validate(self) -> None:
        unknown = [o for o in self.objects if o not in EVALUATION_OBJECTS]
        if unknown:
            raise ValueError(f"unknown evaluation object(s) {unknown}; known: {sorted(EVALUATION_OBJECTS)}")
        if not self.objects and not self.meshes:
            raise ValueError("nothing to evaluate: give objects and/or meshes")
        bad = [m for m in self.methods if not (is_network_method(m) or m in BASELINES)]
        if bad:
            raise ValueError(f"unknown method(s) {bad}; known: ours, ours_raw, mise0..mise9, {', '.join(BASELINES)}")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods must be a non-empty list without repeats, got {self.methods}")
        if not self.views or any(v < 1 for v in self.views) or len(set(self.views)) != len(self.views):
            raise ValueError(f"views must be distinct numbers >= 1, got {self.views}")
        if not self.mesh_scale > 0 or self.render_points < 100:
            raise ValueError("mesh_scale must be > 0 and render_points >= 100")
        for sub in (self.protocol, self.metrics, self.hull, self.poisson, self.reconstructor, self.known_empty):
            sub.validate()


MethodFn = Callable[[Observation, EvalObject], tuple[trimesh.Trimesh, dict]]
"""(observation, object) -> (mesh in the input frame, extra info for the record)."""


def _network_methods(cfg: EvalConfig, names: list[str]) -> tuple[dict[str, MethodFn], dict]:
    """Load the network once; one Reconstructor per MISE setting. Returns (methods, network info)."""
    from occnet_ros.network.checkpoint import DEFAULT_WEIGHTS, load_raw
    from occnet_ros.reconstruction.reconstructor import Reconstructor

    base = Reconstructor.from_config(cfg.reconstructor, cfg.weights)
    weights = Path(cfg.weights) if cfg.weights else DEFAULT_WEIGHTS
    meta = load_raw(weights)["meta"]
    try:  # shown relative to the working directory when inside it (reports stay machine-independent)
        shown = str(weights.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        shown = str(weights)
    info = {"weights": shown, "threshold": base.threshold, "view_thresholds": dict(base.view_thresholds),
            "device": str(base.device),
            "checkpoint_step": meta.get("step"), "checkpoint_metrics": meta.get("metrics", {}),
            "reconstructor": asdict(base.config)}

    def make(steps: int, full: bool = True) -> MethodFn:
        rcfg = replace(base.config, upsampling_steps=steps)
        if not full:
            rcfg.anchor = replace(rcfg.anchor, radius=0.0)
        rec = Reconstructor(base.model, device=rcfg.device, config=rcfg, default_threshold=base.threshold,
                            default_view_thresholds=base.view_thresholds, calibration_for=base.calibration_for)

        def run(obs: Observation, obj: EvalObject) -> tuple[trimesh.Trimesh, dict]:
            empty = KnownEmpty(cfg.known_empty, obs.support_plane, obs.depth_views) if full else None
            r = rec.reconstruct(obs.points, obs.up, obs.viewpoint, point_viewpoints=obs.point_viewpoints,
                                known_empty=empty, n_views=obs.n_views)
            st = r.mise_stats
            return r.mesh, {"resolution": st.get("resolution"), "n_evals": st.get("n_evals"),
                            "threshold": r.threshold,
                            "n_anchored": r.n_anchored,
                            "timings": {k: float(v) for k, v in r.timings.items()}}
        return run

    out = {}
    for n in names:
        m = _MISE.match(n)
        out[n] = make(int(m.group(1)) if m else base.config.upsampling_steps, full=n != "ours_raw")
    return out, info


def build_methods(cfg: EvalConfig) -> tuple[dict[str, MethodFn], dict]:
    """Every method of ``cfg.methods`` as a callable; network info ({} without network methods)."""
    net = [m for m in cfg.methods if is_network_method(m)]
    methods, info = _network_methods(cfg, net) if net else ({}, {})
    table = {
        "hull": lambda obs, obj: (convex_hull(obs.points, cfg.hull), {}),
        "poisson": lambda obs, obj: (poisson(obs.points, obs.point_viewpoints, cfg.poisson), {}),
        "gt": lambda obs, obj: (obs.mesh_from_world(obj.mesh), {}),
    }
    for m in cfg.methods:
        if m in table:
            methods[m] = table[m]
    return {m: methods[m] for m in cfg.methods}, info


def load_objects(cfg: EvalConfig) -> list[EvalObject]:
    """The named evaluation objects, then the mesh files (duplicate names get a numeric suffix)."""
    objs = [evaluation_object(n) for n in cfg.objects]
    names = {o.name for o in objs}
    for path in cfg.meshes:
        stem = Path(path).stem
        name, i = stem, 2
        while name in names:
            name, i = f"{stem}_{i}", i + 1
        names.add(name)
        objs.append(mesh_file_object(path, cfg.mesh_scale, name))
    return objs


def evaluate_object(obj: EvalObject, n_views: int, methods: dict[str, MethodFn], cfg: EvalConfig,
                    on_method: Callable[[str], None] | None = None
                    ) -> tuple[list[dict], Observation | None, dict[str, trimesh.Trimesh]]:
    """All methods on one object and view setting -> (records, observation or None if the view
    failed, {method: predicted mesh in the world frame} of the methods that produced one)."""
    gts = prepare_ground_truth(obj.mesh, cfg.metrics)
    try:
        obs = observe_object(obj, n_views, cfg.protocol)
        view_error = None
    except ProtocolError as e:
        obs, view_error = None, str(e)
    records, meshes = [], {}
    for name, fn in methods.items():
        if on_method:
            on_method(name)
        rec = {"object": obj.name, "views": n_views, "method": name, "ok": False, "error": view_error,
               "time_s": None, "n_points": 0 if obs is None else int(obs.points.shape[0])}
        mesh_w = None
        if obs is not None:
            t0 = time.perf_counter()
            try:
                mesh, extra = fn(obs, obj)
                rec["time_s"] = time.perf_counter() - t0
                rec.update(extra)
                if mesh is None or len(mesh.faces) == 0:
                    rec["error"] = "empty mesh (no surface found)"
                else:
                    mesh_w = obs.mesh_to_world(mesh)
                    rec["ok"] = True
            except Exception as e:  # recorded, scored as an empty prediction; never hidden
                rec["time_s"] = time.perf_counter() - t0
                rec["error"] = f"{type(e).__name__}: {e}"
        rec["metrics"] = evaluate_mesh(mesh_w, gts).to_dict()
        records.append(rec)
        if mesh_w is not None:
            meshes[name] = mesh_w
    return records, obs, meshes


def summarize(records: list[dict]) -> list[dict]:
    """Mean over objects per (views, method). IoU, F-score, precision, recall: failures count as 0;
    Chamfer-L1 and normal consistency: mean over successful objects (``n_ok`` of ``n_objects``);
    ``time_s``: mean over the objects where the method ran."""
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["views"], r["method"]), []).append(r)
    out = []
    for (views, method), rs in groups.items():
        row = {"views": views, "method": method, "n_objects": len(rs), "n_ok": sum(r["ok"] for r in rs)}
        for key in ("iou", "fscore", "precision", "recall", "chamfer_l1", "normal_consistency"):
            vals = [r["metrics"][key] for r in rs if r["metrics"][key] is not None]
            row[key] = float(np.mean(vals)) if vals else None
        times = [r["time_s"] for r in rs if r["time_s"] is not None]
        row["time_s"] = float(np.mean(times)) if times else None
        out.append(row)
    return out


def run_evaluation(cfg: EvalConfig, progress: bool = True) -> dict:
    """Run everything, write ``results.json``, ``results.md`` and PNGs into ``cfg.out``; return the
    results dict (``config``, ``network``, ``records``, ``summary``, ``files``)."""
    from tqdm import tqdm

    from occnet_ros.evaluation import report

    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    methods, net_info = build_methods(cfg)
    objects = load_objects(cfg)
    records, files, thumbs = [], [], []
    bar = tqdm(total=len(objects) * len(cfg.views), desc="occnet_eval", unit="view", disable=not progress)
    for obj in objects:
        panels = []
        for v in cfg.views:
            bar.set_postfix_str(f"{obj.name} {v}v")
            recs, obs, meshes = evaluate_object(
                obj, v, methods, cfg, lambda m: bar.set_postfix_str(f"{obj.name} {v}v {m}"))
            records.extend(recs)
            if cfg.save_meshes:
                for m, mesh in meshes.items():
                    p = out / "meshes" / f"{obj.name}_{v}v_{m}.ply"
                    p.parent.mkdir(exist_ok=True)
                    mesh.export(p)
            if cfg.render:
                panels.append(report.object_panels(obj, obs, meshes, recs, cfg.render_points,
                                                   cfg.protocol.azimuth_deg))
            bar.update(1)
        if cfg.render:
            files.append(report.render_object_png(obj.name, panels, out / f"{obj.name}.png"))
            thumbs.append((obj.name, panels[0]))
    bar.close()
    results = {"config": asdict(cfg), "network": net_info,
               "objects": {o.name: {"source": o.source, "scale": o.scale,
                                    "extent_m": (o.mesh.bounds[1] - o.mesh.bounds[0]).tolist()}
                           for o in objects},
               "records": records, "summary": summarize(records)}
    if cfg.render and thumbs:
        files.append(report.render_overview_png(thumbs, results["summary"], out / "overview.png"))
    files += [report.write_json(results, out / "results.json"),
              report.write_markdown(results, out / "results.md")]
    results["files"] = [str(f) for f in files]
    return results
