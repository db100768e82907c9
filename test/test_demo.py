"""``occnet_demo``: a short headless run writes the files, and its IoU figures are computed, not copied."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import trimesh

from ros_helpers import REPO, node_env, random_domain_id, write_random_checkpoint

from occnet_ros.data.virtual_camera import look_at_pose
from occnet_ros.demo import pictures
from occnet_ros.demo.report import score_frames
from occnet_ros.demo.results import DemoRun, FrameResult, ObjectResult
from occnet_ros.evaluation.metrics import MetricsConfig, evaluate_mesh
from occnet_ros.geometry import PinholeCamera
from occnet_ros.sim.ground_truth import GroundTruthObject, read_ground_truth
from occnet_ros.sim.scene import object_mesh

OBJECTS = ["duck", "torus", "mug"]
METRICS = MetricsConfig(n_points_iou=5000, n_points_surface=2000)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One short demo run: 2 frames of a 128x96 camera, 3 objects, coarse meshes, random weights."""
    tmp = tmp_path_factory.mktemp("demo")
    weights = write_random_checkpoint(tmp / "random_test_double.pt")
    out = tmp / "out"
    cmd = [str(REPO / ".venv" / "bin" / "occnet_demo"), "--out", str(out), "--weights", str(weights),
           "--frames", "2", "--width", "128", "--height", "96", "--rate", "2", "--objects", *OBJECTS,
           "--timeout", "150", "--node-param", "reconstruction.resolution0:=8", "--node-param", "reconstruction.upsampling_steps:=1",
           "--node-param", "segmentation.min_points:=20", "--map-views", "2", "--orbit", "40",
           "--iou-points", str(METRICS.n_points_iou), "--surface-points", str(METRICS.n_points_surface)]
    proc = subprocess.run(cmd, env=node_env(random_domain_id()), capture_output=True, text=True, timeout=240,
                          cwd=str(tmp))
    return proc, out, weights


@pytest.mark.slow
def test_demo_writes_files_and_computed_scores(demo_run):
    proc, out, weights = demo_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert str(out / "overview.png") in proc.stdout and str(out / "report.md") in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["frames"] == 2 and report["info"]["weights"] == str(weights)
    assert [o["name"] for o in report["objects"]] == OBJECTS
    assert (out / "overview.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    for o in report["objects"]:
        stem = f"{o['id']}_{o['name']}"
        assert (out / "objects" / f"{stem}.png").is_file()
        assert o["mesh"] == f"meshes/{stem}.ply" and o["reconstructed"]
        assert f"| {o['id']} | {o['name']}" in md
        # recomputed from the written files, the IoU is the reported one
        pred = trimesh.load(out / o["mesh"], force="mesh", process=False)
        gt = trimesh.load(out / o["gt_mesh"], force="mesh", process=False)
        assert abs(evaluate_mesh(pred, gt, METRICS).iou - o["iou"]) < 0.02
        # the ground truth written is the scene's mesh, moved into the camera frame
        assert abs(gt.area - object_mesh(o["name"]).area) < 1e-6 * max(1.0, gt.area)
    for stage in ("sim_render_s", "reconstruction_per_object_s", "end_to_end_latency_s", "evaluation_s"):
        assert report["timings"][stage] is not None, stage
    doc, gt_objects = read_ground_truth(out / "ground_truth")
    assert [g.name for g in gt_objects] == OBJECTS


@pytest.mark.slow
def test_the_map_part_scores_every_object_as_views_accumulate(demo_run):
    proc, out, _ = demo_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = json.loads((out / "map_report.json").read_text())
    assert [o["name"] for o in rep["objects"]] == OBJECTS and rep["messages"] >= 1
    assert (out / "map_views.png").stat().st_size > 5_000 and "map_views.png" in (out / "map_report.md").read_text()
    scored = [o for o in rep["objects"] if o["curve"]]
    assert scored, rep
    for o in scored:
        views = [v for v, _, _ in o["curve"]]
        assert views == sorted(set(views)) and o["views"] == views[-1] and o["iou_all_views"] == o["curve"][-1][1]
        assert 0.0 <= o["iou_1_views"] <= 1.0


def test_map_scoring_matches_objects_by_place_and_reads_views():
    """Map objects carry the map's ids: each is scored against the ground-truth object nearest to it; the
    IoU after k views is the first mesh fused from at least k views."""
    from types import SimpleNamespace

    from occnet_ros.demo.map_demo import at_views, score
    from occnet_ros.ros.conversions import mesh_to_msg
    from occnet_ros.sim.ground_truth import GroundTruthObject

    box = trimesh.creation.box((0.1, 0.1, 0.1))
    gt = [GroundTruthObject(7, "a", box, np.eye(4), np.eye(4)),
          GroundTruthObject(9, "b", box, trimesh.transformations.translation_matrix([0.5, 0, 0]), np.eye(4))]

    def obj(mesh, views):
        return SimpleNamespace(mesh=mesh_to_msg(mesh.vertices, mesh.faces), num_views=views)

    far = box.copy().apply_translation([0.5, 0, 0])
    half = trimesh.creation.box((0.05, 0.1, 0.1)).apply_translation([0.5, 0, 0])
    msgs = [SimpleNamespace(objects=[obj(far, 1), obj(box, 2)]), SimpleNamespace(objects=[obj(half, 3)])]
    curves = score(msgs, gt, METRICS)
    assert [v for v, _, _ in curves[7]] == [2] and curves[7][0][1] > 0.99
    assert [v for v, _, _ in curves[9]] == [1, 3] and curves[9][0][1] > 0.99 and 0.4 < curves[9][1][1] < 0.6
    assert at_views(curves[9], 1) == curves[9][0][1] and at_views(curves[9], 2) == curves[9][1][1]
    assert at_views(curves[9], 4) is None and at_views(curves[9], None) == curves[9][1][1]
    assert at_views([], 1) is None


@pytest.mark.slow
def test_reported_iou_follows_the_mesh(demo_run):
    """Scoring the run's own meshes again reproduces the report; a changed mesh changes its IoU."""
    _, out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    doc, gt = read_ground_truth(out / "ground_truth")
    preds = [trimesh.load(out / o["mesh"], force="mesh", process=False) for o in report["objects"]]

    def iou(meshes):
        frame = FrameResult(stamp=0.0, latency_s=0.0, objects=[
            ObjectResult(id=g.id, label="", mesh=m, num_observed_points=0, reconstruction_time=0.0)
            for g, m in zip(gt, meshes)])
        run = DemoRun(frames=[frame], ground_truth=gt, camera_pose=np.asarray(doc["camera_pose_world"]))
        return [score_frames(run, METRICS)[0][g.id]["iou"] for g in gt]

    same = iou(preds)
    np.testing.assert_allclose(same, [o["iou"] for o in report["objects"]], atol=0.02)
    shrunk = preds[0].copy()
    shrunk.apply_scale(0.5)
    changed = iou([shrunk] + preds[1:])
    assert abs(changed[0] - same[0]) > 0.02 and changed[1:] == same[1:]


def test_missing_default_weights_fail_clearly(tmp_path, monkeypatch, capsys):
    from occnet_ros.cli import demo

    monkeypatch.setattr(demo, "DEFAULT_WEIGHTS", tmp_path / "occnet_default.pt")
    assert demo.main(["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "shipped model weights are missing" in err and "--weights" in err
    assert not (tmp_path / "out").exists()  # nothing started, nothing written
    assert demo.main(["--weights", str(tmp_path / "nope.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_score_frames_counts_a_missed_object_as_zero():
    box = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    gt = [GroundTruthObject(id=i, name=f"box{i}", mesh=box, pose_world=np.eye(4),
                            pose_camera=np.eye(4)) for i in (1, 2)]
    frame = FrameResult(stamp=0.0, latency_s=0.0, objects=[
        ObjectResult(id=1, label="mask_1", mesh=box.copy(), num_observed_points=10, reconstruction_time=0.1),
        ObjectResult(id=7, label="mask_7", mesh=box.copy(), num_observed_points=10, reconstruction_time=0.1)])
    scores = score_frames(DemoRun(frames=[frame], ground_truth=gt, camera_pose=np.eye(4)), METRICS)[0]
    assert scores[1]["iou"] > 0.99 and scores[1]["reconstructed"]
    assert scores[2] == {"reconstructed": False, "iou": 0.0, "gt_watertight": True}


def splat_reference(points, colors, view, radius_px):
    """Slow reference: one point at a time onto the nearest pixel centre (points off the image or within
    1 mm of the camera plane skipped), a pixel keeps the nearest point's colour."""
    intr = view.intrinsics
    img = np.full((intr.height, intr.width, 3), 255, np.uint8)
    zbuf = np.full((intr.height, intr.width), np.inf)
    for p, c in zip(points, colors):
        q = view.pose[:3, :3].T @ (p - view.pose[:3, 3])
        if not np.all(np.isfinite(q)) or q[2] <= 1e-3:
            continue
        u0 = int(np.floor(intr.fx * q[0] / q[2] + intr.cx + 0.5))
        v0 = int(np.floor(intr.fy * q[1] / q[2] + intr.cy + 0.5))
        if not (0 <= u0 < intr.width and 0 <= v0 < intr.height):
            continue
        for v in range(v0 - radius_px, v0 + radius_px + 1):
            for u in range(u0 - radius_px, u0 + radius_px + 1):
                if 0 <= u < intr.width and 0 <= v < intr.height and q[2] < zbuf[v, u]:
                    zbuf[v, u] = q[2]
                    img[v, u] = c
    return img


def test_splat_points_matches_slow_reference():
    rng = np.random.default_rng(0)
    pts = rng.uniform(-0.2, 0.2, size=(400, 3))
    pts[::50] = np.nan
    cols = rng.integers(0, 255, size=(400, 3), dtype=np.uint8)
    view = pictures.View(PinholeCamera(width=40, height=30, fx=35.0, fy=35.0, cx=19.5, cy=14.5),
                         look_at_pose([0.8, 0.3, 0.4], [0.0, 0.0, 0.0]))
    for r in (0, 1):
        np.testing.assert_array_equal(pictures.splat_points(pts, cols, view, r),
                                      splat_reference(pts, cols, view, r))


def test_render_meshes_draws_where_the_mesh_projects():
    """A sphere in front of the view covers the pixels a pinhole projection of it predicts."""
    view = pictures.orbit_view(np.zeros(3), 1.0, 30.0, 20.0, width=80, height=60)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=0.1)
    img = pictures.render_meshes([sphere], [(1.0, 0.0, 0.0)], view)
    drawn = np.any(img != 255, axis=-1)
    intr = view.intrinsics
    v, u = np.mgrid[0:intr.height, 0:intr.width]
    rays = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones(u.shape)], -1) @ view.pose[:3, :3].T
    o = view.pose[:3, 3]
    # ray-sphere test (radius slightly inside/outside to allow the tessellation)
    t = -(rays @ o) / np.sum(rays * rays, -1)
    dist = np.linalg.norm(o + t[..., None] * rays, axis=-1)
    assert drawn[dist < 0.095].all() and not drawn[dist > 0.105].any()


def test_record_option_reaches_the_first_camera_only(tmp_path):
    """``occnet_demo --record BAG``: the static camera of the first part records into BAG (its record_bag
    parameter); the map part's camera does not (it would write into the same folder)."""
    from occnet_ros.cli.demo import parse_args
    from occnet_ros.demo.map_demo import map_commands, settings_for
    from occnet_ros.demo.runner import DemoSettings, commands

    args = parse_args(["--record", str(tmp_path / "bag")])
    assert args.record == tmp_path / "bag"
    s = DemoSettings(weights=tmp_path / "w.pt", log_dir=tmp_path / "logs", ground_truth_dir=tmp_path / "gt",
                     record_bag=str(tmp_path / "bag"))
    assert f"record_bag:={tmp_path / 'bag'}" in commands(s)["sim_camera"]
    assert not any("record_bag" in a for a in map_commands(settings_for(s))["sim_camera"])
    plain = DemoSettings(weights=tmp_path / "w.pt", log_dir=tmp_path / "logs", ground_truth_dir=tmp_path / "gt")
    assert not any("record_bag" in a for a in commands(plain)["sim_camera"])
