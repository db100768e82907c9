"""Scoring and writing a demo run (no ROS): meshes, pictures, ``report.json`` and ``report.md``.

Scores are computed here, every run, with :func:`occnet_ros.evaluation.metrics.evaluate_mesh`: each
reconstructed object is matched to the ground-truth object with the same mask id and both meshes are
compared in the camera optical frame (the metrics normalise by the ground truth's bounding box).

Output layout (``OUT``)::

    OUT/overview.png                  camera image; input points / reconstruction / ground truth
    OUT/objects/<id>_<name>.png       the same for one object
    OUT/meshes/<id>_<name>.ply        reconstruction of the last frame, camera optical frame, metres
    OUT/meshes/gt_<id>_<name>.ply     ground truth, same frame
    OUT/report.json, OUT/report.md    per-object scores (last frame and mean over frames), timings
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from occnet_ros.demo import pictures
from occnet_ros.demo.results import DemoRun, FrameResult
from occnet_ros.evaluation.metrics import MetricsConfig, evaluate_mesh, prepare_ground_truth
from occnet_ros.sim.scene import PALETTE

__all__ = ["STAGES", "DemoOutputs", "score_frames", "summary_stats", "write_report"]


def summary_stats(values) -> dict | None:
    """{mean, min, max, n} of a list of seconds (None when empty)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return None
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


def score_frames(run: DemoRun, config: MetricsConfig | None = None) -> list[dict[int, dict]]:
    """Per frame, {ground-truth id: metrics dict} for every ground-truth object; an object that the
    node did not publish gets ``{"reconstructed": False, "iou": 0.0}`` (a missed object scores 0)."""
    cfg = config or MetricsConfig()
    prepared = {g.id: prepare_ground_truth(g.mesh_in_camera(), cfg) for g in run.ground_truth}
    out = []
    for frame in run.frames:
        by_id = {o.id: o for o in frame.objects}
        scores = {}
        for g in run.ground_truth:
            obj = by_id.get(g.id)
            if obj is None:
                scores[g.id] = {"reconstructed": False, "iou": 0.0,
                                "gt_watertight": prepared[g.id].watertight}
                continue
            m = evaluate_mesh(obj.mesh, prepared[g.id]).to_dict()
            m.update(reconstructed=True, observed_points=obj.num_observed_points,
                     reconstruction_time_s=obj.reconstruction_time)
            scores[g.id] = m
        out.append(scores)
    return out


@dataclass
class DemoOutputs:
    """Paths written by :func:`write_report` and the report document."""

    out_dir: Path
    overview: Path
    object_pictures: list[Path]
    meshes: list[Path]
    report_json: Path
    report_md: Path
    report: dict


def _color(object_id: int) -> tuple[float, float, float]:
    return PALETTE[(object_id - 1) % len(PALETTE)]


def _fmt(x, spec=".3f") -> str:
    return "n/a" if x is None else format(x, spec)


STAGES = {
    "sim_render_s": "camera: render + noise, per frame",
    "reconstruction_per_object_s": "node: clean + reconstruct, per object (ReconstructedObject.reconstruction_time)",
    "reconstruction_per_frame_s": "node: sum over a frame's objects",
    "stamp_to_objects_published_s": "frame stamp -> objects published (wait + whole node pipeline)",
    "objects_message_deserialize_s": "demo: objects message -> Python (shape_msgs/Mesh)",
    "end_to_end_latency_s": "frame stamp -> objects received by the demo",
    "startup_to_first_frame_s": "demo start -> first camera frame",
    "startup_to_first_objects_s": "demo start -> first objects",
    "collection_total_s": "demo start -> all frames collected",
    "evaluation_s": "scoring (IoU, Chamfer, F-score)",
    "pictures_s": "pictures",
    "demo_total_s": "whole demo",
}
"""Timing keys of report.json -> what they measure (seconds)."""


def _timings(run: DemoRun, frames: list[FrameResult]) -> dict:
    per_object = [o.reconstruction_time for f in frames for o in f.objects]
    per_frame = [sum(o.reconstruction_time for o in f.objects) for f in frames]
    t = {"sim_render_s": summary_stats(run.render_times),
         "reconstruction_per_object_s": summary_stats(per_object),
         "reconstruction_per_frame_s": summary_stats(per_frame),
         "stamp_to_objects_published_s": summary_stats([f.node_latency_s for f in frames]),
         "objects_message_deserialize_s": summary_stats(run.deserialize_times),
         "end_to_end_latency_s": summary_stats([f.latency_s for f in frames])}
    t.update({k: float(v) for k, v in run.timings.items()})
    return t


def _markdown(report: dict) -> str:
    lines = ["# occnet_ros demo", "",
             f"{report['frames']} reconstructed frames of a simulated {report['info'].get('resolution', '?')} "
             f"RGB-D camera; weights `{report['info'].get('weights', '?')}`.", "",
             "![overview](overview.png)", "",
             "## Per object (last frame; IoU also averaged over all frames)", "",
             "| id | object | IoU | mean IoU | Chamfer-L1 | F-score@1% | points | time (s) | picture |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for o in report["objects"]:
        star = "" if o.get("gt_watertight", True) else " *"
        lines.append(f"| {o['id']} | {o['name']}{star} | {_fmt(o['iou'])} | {_fmt(o['iou_mean'])} | "
                     f"{_fmt(o.get('chamfer_l1'), '.4f')} | {_fmt(o.get('fscore'))} | "
                     f"{o.get('observed_points', 'n/a')} | {_fmt(o.get('reconstruction_time_s'), '.2f')} | "
                     f"[png]({o['picture']}) |")
    lines += ["", f"Mean IoU (last frame): **{_fmt(report['mean_iou'])}**. IoU and Chamfer-L1 are computed in "
              "the ground truth's normalised frame (longest bounding-box edge = 1), see "
              "`occnet_ros/evaluation/metrics.py`. A ground truth that is not watertight (marked *) gives a "
              "voted, approximate IoU.", "", "## Timings (seconds)", "",
              "| stage | mean | min | max | n |", "|---|---:|---:|---:|---:|"]
    for name, v in report["timings"].items():
        label = STAGES.get(name, name)
        if isinstance(v, dict):
            lines.append(f"| {label} | {v['mean']:.3f} | {v['min']:.3f} | {v['max']:.3f} | {v['n']} |")
        elif v is not None:
            lines.append(f"| {label} | {v:.3f} | | | 1 |")
    return "\n".join(lines) + "\n"


def write_report(run: DemoRun, out_dir: str | Path, config: MetricsConfig | None = None,
                 started: float | None = None) -> DemoOutputs:
    """Score ``run`` and write everything listed in the module docstring into ``out_dir``. ``started``:
    ``time.monotonic()`` at the start of the demo, for the ``demo_total_s`` timing."""
    if not run.frames:
        raise ValueError("the run has no reconstructed frames to report")
    out = Path(out_dir)
    (out / "meshes").mkdir(parents=True, exist_ok=True)
    (out / "objects").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    scores = score_frames(run, config)
    t_eval = time.perf_counter() - t0
    last, last_scores = run.frames[-1], scores[-1]
    recon = {o.id: o for o in last.objects}
    objects, meshes, pics = [], [], []
    t0 = time.perf_counter()
    for g in run.ground_truth:
        stem = f"{g.id}_{g.name}"
        gt_cam = g.mesh_in_camera()
        gt_path = out / "meshes" / f"gt_{stem}.ply"
        gt_cam.export(gt_path)
        meshes.append(gt_path)
        entry = {"id": g.id, "name": g.name, **last_scores[g.id],
                 "iou_mean": float(np.mean([s[g.id]["iou"] for s in scores])),
                 "gt_mesh": f"meshes/gt_{stem}.ply", "picture": f"objects/{stem}.png", "mesh": None}
        if g.id in recon:
            path = out / "meshes" / f"{stem}.ply"
            recon[g.id].mesh.export(path)
            meshes.append(path)
            entry["mesh"] = f"meshes/{stem}.ply"
        if last.points is not None and last.rgb is not None and last.mask is not None:
            pic = out / "objects" / f"{stem}.png"
            obj = recon.get(g.id)
            pictures.object_picture(
                pic, f"{g.id} {g.name}: IoU {_fmt(entry['iou'])}" + ("" if obj else " (not reconstructed)"),
                last.points, last.rgb, last.mask, g.id, obj.mesh if obj else None, gt_cam, _color(g.id),
                run.camera_pose)
            pics.append(pic)
        objects.append(entry)
    overview = out / "overview.png"
    if last.points is not None and last.rgb is not None and last.mask is not None:
        ids = [g.id for g in run.ground_truth]
        empty = None
        pictures.overview_picture(
            overview, "occnet_ros demo: simulated RGB-D camera -> reconstruction_node "
                      f"(mean IoU {_fmt(np.mean([o['iou'] for o in objects]))})",
            last.points, last.rgb, last.mask,
            [recon[i].mesh if i in recon else empty for i in ids],
            [g.mesh_in_camera() for g in run.ground_truth], [_color(i) for i in ids], run.camera_pose)
    t_pics = time.perf_counter() - t0
    timings = _timings(run, run.frames)
    timings.update(evaluation_s=t_eval, pictures_s=t_pics)
    if started is not None:
        timings["demo_total_s"] = time.monotonic() - started
    report = {
        "frames": len(run.frames), "info": run.info, "objects": objects,
        "mean_iou": float(np.mean([o["iou"] for o in objects])) if objects else None,
        "mean_iou_over_frames": [float(np.mean([s[i]["iou"] for i in s])) for s in scores],
        "frame_stamps": [f.stamp for f in run.frames],
        "unmatched_ids": sorted({o.id for f in run.frames for o in f.objects} - {g.id for g in run.ground_truth}),
        "timings": timings,
    }
    report_json = out / "report.json"
    report_json.write_text(json.dumps(report, indent=1))
    report_md = out / "report.md"
    report_md.write_text(_markdown(report))
    return DemoOutputs(out_dir=out, overview=overview, object_pictures=pics, meshes=meshes,
                       report_json=report_json, report_md=report_md, report=report)
