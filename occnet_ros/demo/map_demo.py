"""The object-map demo: the simulated camera orbits the table and publishes its pose on ``camera_pose``; the
reconstruction node keeps the object map in the simulator's ``world`` frame. The same two programs as the
single-frame demo (:mod:`occnet_ros.demo.runner`), with ``world_frame:=world`` for the node and an orbit for
the camera. This process listens to ``objects`` until every map object was reconstructed from ``views`` views
(or the time is up), then scores each object against the simulator's ground truth in world after 1, 2, 4 and
all of its views, and draws the curves (``map_views.png``) and ``map_report.md`` / ``map_report.json``.

Map objects carry the map's ids, not the mask's: each is matched to the ground-truth object whose mesh centre
lies nearest to its mesh centre (within ``MATCH_DISTANCE_M``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import trimesh

from occnet_ros.demo.runner import DemoError, DemoSettings, _Processes, commands, prepare_run
from occnet_ros.evaluation.metrics import MetricsConfig, evaluate_mesh, prepare_ground_truth
from occnet_ros.sim.ground_truth import GroundTruthError, read_ground_truth

__all__ = ["MapDemoSettings", "run_map_demo", "VIEW_COUNTS"]

VIEW_COUNTS = (1, 2, 4)
"""Views after which each object is scored (and after all of its views)."""
MATCH_DISTANCE_M = 0.1


@dataclass
class MapDemoSettings:
    """``demo``: the camera, scene, weights and process settings of the single-frame demo; ``orbit_deg_per_s``:
    the camera's orbit speed around the table; ``views``: stop once every map object was reconstructed from at
    least this many views."""

    demo: DemoSettings
    orbit_deg_per_s: float = 20.0
    views: int = 4


def map_commands(s: MapDemoSettings) -> dict[str, list[str]]:
    """The single-frame demo's two command lines, the node with the object map in ``world`` and the camera
    orbiting (the later ``-p`` wins over the earlier one)."""
    cmds = commands(s.demo)
    cmds["reconstruction_node"] += ["-p", "world_frame:=world", "-p", "pose_source:=topic"]
    cmds["sim_camera"] += ["-p", f"camera.orbit_deg_per_s:={float(s.orbit_deg_per_s)}"]
    return cmds


def _listen(s: MapDemoSettings, procs: _Processes, log) -> list:
    """The ``objects`` messages until every object has ``views`` views (or the timeout)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from occnet_ros.msg import ReconstructedObjectArray

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("occnet_map_demo_listener", namespace=s.demo.namespace, context=ctx)
    received: list = []
    node.create_subscription(ReconstructedObjectArray, "objects", received.append, 10)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    deadline = time.monotonic() + s.demo.timeout_s
    reported = 0
    try:
        while True:
            executor.spin_once(timeout_sec=0.1)
            procs.check()
            if len(received) > reported:
                reported = len(received)
                views = sorted(o.num_views for o in received[-1].objects)
                log(f"  map: {len(views)} object(s), views per object {views}")
                if len(views) >= len(s.demo.objects) and views[0] >= s.views:
                    return received
            if time.monotonic() > deadline:
                if received:
                    log(f"  map: time is up after {len(received)} objects messages; scoring what arrived")
                    return received
                raise DemoError(f"the node published no map objects within {s.demo.timeout_s:.0f} s:\n"
                                f"reconstruction_node log:\n{procs.tail('reconstruction_node')}")
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def _mesh(o) -> trimesh.Trimesh:
    from occnet_ros.ros.conversions import mesh_msg_to_arrays

    v, f = mesh_msg_to_arrays(o.mesh)
    return trimesh.Trimesh(v, f, process=False)


def score(messages: list, ground_truth, config: MetricsConfig) -> dict:
    """{gt id: [(views, IoU, F-score)]} at each view count the object was published with (world frame)."""
    gts = {g.id: (g, g.mesh_in_world()) for g in ground_truth}
    centres = {i: m.bounds.mean(axis=0) for i, (_, m) in gts.items()}
    prepared: dict = {}
    latest: dict[tuple[int, int], trimesh.Trimesh] = {}
    for msg in messages:
        for o in msg.objects:
            mesh = _mesh(o)
            if not len(mesh.faces):
                continue
            c = mesh.bounds.mean(axis=0)
            gid = min(centres, key=lambda i: np.linalg.norm(centres[i] - c))
            if np.linalg.norm(centres[gid] - c) <= MATCH_DISTANCE_M:
                latest[(gid, int(o.num_views))] = mesh
    out: dict[int, list] = {i: [] for i in gts}
    for (gid, views), mesh in sorted(latest.items()):
        if gid not in prepared:
            prepared[gid] = prepare_ground_truth(gts[gid][1], config)
        m = evaluate_mesh(mesh, prepared[gid])
        out[gid].append((views, float(m.iou), float(m.fscore)))
    return out


def at_views(curve: list, k: int | None) -> float | None:
    """IoU of the first published mesh fused from at least ``k`` views (None: the last one)."""
    if not curve:
        return None
    if k is None:
        return curve[-1][1]
    hits = [iou for views, iou, _ in curve if views >= k]
    return hits[0] if hits else None


def plot(curves: dict, names: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for gid, curve in sorted(curves.items()):
        if curve:
            ax.plot([v for v, _, _ in curve], [i for _, i, _ in curve], marker="o", label=f"{gid} {names[gid]}")
    ax.set_xlabel("views fused into the object")
    ax.set_ylabel("IoU against ground truth")
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("object map: IoU per object as views accumulate")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run_map_demo(s: MapDemoSettings, out: Path, config: MetricsConfig, log=print) -> dict:
    """Run the map demo, score and draw it into ``out``; returns the report. Raises :class:`DemoError`."""
    d = s.demo
    prepare_run(d)
    procs = _Processes(d.log_dir)
    t0 = time.monotonic()
    try:
        for name, cmd in map_commands(s).items():
            procs.start(name, cmd)
        log(f"started the orbiting sim_camera and the mapping reconstruction_node (logs: {d.log_dir})")
        messages = _listen(s, procs, log)
    finally:
        procs.stop()
    try:
        _, gt = read_ground_truth(d.ground_truth_dir)
    except GroundTruthError as e:
        raise DemoError(f"the camera's ground truth is unreadable: {e}") from e
    curves = score(messages, gt, config)
    names = {g.id: g.name for g in gt}
    out.mkdir(parents=True, exist_ok=True)
    plot(curves, names, out / "map_views.png")
    rows = [{"id": gid, "name": names[gid], "curve": curves[gid],
             **{f"iou_{k}_views": at_views(curves[gid], k) for k in VIEW_COUNTS},
             "iou_all_views": at_views(curves[gid], None),
             "views": curves[gid][-1][0] if curves[gid] else 0} for gid in sorted(curves)]

    def mean(key):
        vals = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(vals)) if vals else None

    report = {"objects": rows, "messages": len(messages), "seconds": time.monotonic() - t0,
              "orbit_deg_per_s": s.orbit_deg_per_s, "rate_hz": d.rate_hz,
              "mean": {k: mean(k) for k in [f"iou_{k}_views" for k in VIEW_COUNTS] + ["iou_all_views"]}}
    (out / "map_report.json").write_text(json.dumps(report, indent=1))
    (out / "map_report.md").write_text(_markdown(report))
    return report


def _markdown(report: dict) -> str:
    def f(v):
        return "-" if v is None else f"{v:.3f}"

    lines = ["# Object map demo", "",
             f"The simulated camera orbits at {report['orbit_deg_per_s']} deg/s, {report['rate_hz']} Hz; the node "
             "keeps the object map in the simulator's world frame. IoU against ground truth in world after the "
             "object's first mesh fused from at least 1, 2 and 4 views, and after all its views "
             "(![curves](map_views.png)).", "",
             "| id | object | 1 view | 2 views | 4 views | all views (n) |", "|---:|---|---:|---:|---:|---:|"]
    for r in report["objects"]:
        lines.append(f"| {r['id']} | {r['name']} | {f(r['iou_1_views'])} | {f(r['iou_2_views'])} | "
                     f"{f(r['iou_4_views'])} | {f(r['iou_all_views'])} ({r['views']}) |")
    m = report["mean"]
    lines += ["", f"Mean: 1 view {f(m['iou_1_views'])}, 2 views {f(m['iou_2_views'])}, 4 views "
              f"{f(m['iou_4_views'])}, all views {f(m['iou_all_views'])} ({report['messages']} objects messages, "
              f"{report['seconds']:.0f} s)."]
    return "\n".join(lines) + "\n"


def settings_for(demo: DemoSettings, **kw) -> MapDemoSettings:
    """Map-demo settings from the single-frame demo's (its own logs and ground truth folders)."""
    d = replace(demo, log_dir=demo.log_dir.parent / "map_logs", ground_truth_dir=demo.ground_truth_dir.parent / "map_gt",
                namespace=demo.namespace + "_map", record_bag="")  # the recording is the first part's
    return MapDemoSettings(d, **kw)
