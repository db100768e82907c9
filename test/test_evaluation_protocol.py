"""The view protocol, the evaluation runner and ``occnet_eval`` end to end (tiny settings)."""
import json

import matplotlib.image
import numpy as np
import pytest
import trimesh

from occnet_ros.cli.evaluate import main as eval_main
from occnet_ros.config_io import ConfigError, from_dict, load_config
from occnet_ros.evaluation.metrics import MetricsConfig
from occnet_ros.evaluation.protocol import (EvalObject, ProtocolError, ViewProtocolConfig, camera_poses,
                                            evaluation_object, mesh_file_object, observe_object)
from occnet_ros.evaluation.runner import EvalConfig, evaluate_object, summarize
from fixtures_geometry import octahedron_checkpoint


def box_object(extents=(0.08, 0.06, 0.1)):
    m = trimesh.creation.box(extents=extents)
    m.apply_translation((0, 0, extents[2] / 2))
    return EvalObject(name="box", mesh=m, source="analytic", scale=1.0)


def test_camera_poses_follow_the_protocol():
    obj = box_object()
    cfg = ViewProtocolConfig()
    poses = camera_poses(obj.mesh, 4, cfg)
    target = obj.mesh.bounds.mean(axis=0)
    az = []
    for pose in poses:
        eye, fwd = pose[:3, 3], pose[:3, 2]
        v = eye - target
        assert np.linalg.norm(v) == pytest.approx(cfg.distance_m)
        assert np.degrees(np.arcsin(v[2] / np.linalg.norm(v))) == pytest.approx(cfg.elevation_deg)
        assert np.allclose(np.cross(fwd, -v / np.linalg.norm(v)), 0, atol=1e-9)  # looks at the target
        assert pose[:3, 1] @ [0, 0, 1] < 0  # optical y (image down) points down
        az.append(np.degrees(np.arctan2(v[1], v[0])))
    assert np.allclose(np.diff(az) % 360, 90.0)
    assert az[0] == pytest.approx(cfg.azimuth_deg)
    # a big object pushes the camera back so that it fits in the image
    big = box_object((1.0, 1.0, 1.0))
    d = np.linalg.norm(camera_poses(big.mesh, 1, cfg)[0][:3, 3] - big.mesh.bounds.mean(axis=0))
    assert d > 2.0


def test_observation_is_deterministic_and_fuses_into_camera_zero():
    obj = box_object()
    one = observe_object(obj, 1)
    four = observe_object(obj, 4)
    again = observe_object(obj, 4)
    assert np.array_equal(four.points, again.points)
    n0 = one.points.shape[0]
    assert n0 > 500 and four.points.shape[0] > 3 * n0
    assert np.array_equal(four.points[:n0], one.points)  # view 0 is the 1-view observation
    assert np.allclose(four.point_viewpoints[:n0], 0) and np.allclose(one.viewpoint, 0)
    # the other cameras sit where the protocol put them, in camera 0's frame
    inv0 = np.linalg.inv(four.camera_poses[0])
    centres = np.unique(four.point_viewpoints[n0:], axis=0)
    expected = np.array([inv0[:3, :3] @ p[:3, 3] + inv0[:3, 3] for p in four.camera_poses[1:]])
    assert centres.shape == (3, 3)
    assert np.allclose(np.sort(centres, axis=0), np.sort(expected, axis=0), atol=1e-6)
    # up is world z seen from camera 0
    assert np.allclose(four.up, four.input_to_world[:3, :3].T @ [0, 0, 1])
    # in the world frame the points lie on the box surface (up to sensor noise)
    w = four.to_world(four.points)
    lo, hi = obj.mesh.bounds
    dist_out = np.linalg.norm(np.maximum(np.maximum(lo - w, w - hi), 0), axis=1)
    dist_in = np.min(np.minimum(w - lo, hi - w), axis=1)
    assert np.median(np.where(dist_out > 0, dist_out, dist_in)) < 0.003
    # every side of the box was seen by some camera
    for axis in (0, 1):
        assert w[:, axis].min() < lo[axis] + 0.005 and w[:, axis].max() > hi[axis] - 0.005
    # frames round trip
    back = four.mesh_to_world(four.mesh_from_world(obj.mesh))
    assert np.allclose(back.vertices, obj.mesh.vertices, atol=1e-9)


def test_noise_and_seed_change_the_points():
    obj = box_object()
    base = observe_object(obj, 1)
    other = observe_object(obj, 1, ViewProtocolConfig(seed=1))
    clean = observe_object(obj, 1, ViewProtocolConfig(noise=False, clean_enabled=False))
    assert base.points.shape != other.points.shape or not np.array_equal(base.points, other.points)
    w = clean.to_world(clean.points)
    lo, hi = obj.mesh.bounds
    assert np.all(np.min(np.abs(np.concatenate([w - lo, w - hi], axis=1)), axis=1) < 1e-4)


def test_objects_and_mesh_files(tmp_path):
    with pytest.raises(ProtocolError, match="unknown evaluation object"):
        evaluation_object("teapot")
    duck = evaluation_object("duck")
    assert duck.mesh.bounds[0, 2] == pytest.approx(0.0) and 0.03 < duck.mesh.extents.max() < 0.3
    box = trimesh.creation.box(extents=(0.05, 0.04, 0.03))
    for ext in ("obj", "stl", "ply"):
        path = tmp_path / f"part.{ext}"
        box.export(path)
        o = mesh_file_object(path, scale=2.0)
        assert o.name == "part"
        assert np.allclose(o.mesh.extents, [0.1, 0.08, 0.06])
        assert o.mesh.bounds[0, 2] == pytest.approx(0.0)
    (tmp_path / "x.txt").write_text("no mesh")
    with pytest.raises(ProtocolError, match="unsupported mesh type"):
        mesh_file_object(tmp_path / "x.txt")
    with pytest.raises(ProtocolError, match="not found"):
        mesh_file_object(tmp_path / "missing.stl")


def test_failed_view_is_recorded_and_scored_as_empty():
    cfg = EvalConfig(objects=[], meshes=["unused.stl"], methods=["hull", "gt"],
                     protocol=ViewProtocolConfig(min_points=10 ** 7),
                     metrics=MetricsConfig(n_points_iou=2000, n_points_surface=2000))
    methods = {"hull": None, "gt": None}  # never called: the view fails first
    recs, obs, meshes = evaluate_object(box_object(), 1, methods, cfg)
    assert obs is None and meshes == {}
    assert [r["method"] for r in recs] == ["hull", "gt"]
    for r in recs:
        assert not r["ok"] and "fewer than" in r["error"] and r["metrics"]["iou"] == 0.0


def test_summary_counts_failures_as_zero():
    def rec(obj, method, ok, iou, cd):
        return {"object": obj, "views": 1, "method": method, "ok": ok, "time_s": 1.0 if ok else None,
                "metrics": {"iou": iou, "fscore": iou, "precision": iou, "recall": iou,
                            "chamfer_l1": cd, "normal_consistency": cd}}
    s = summarize([rec("a", "hull", True, 0.8, 0.1), rec("b", "hull", False, 0.0, None)])
    assert s == [{"views": 1, "method": "hull", "n_objects": 2, "n_ok": 1, "iou": 0.4, "fscore": 0.4,
                  "precision": 0.4, "recall": 0.4, "chamfer_l1": 0.1, "normal_consistency": 0.1,
                  "time_s": 1.0}]


def test_config_file_matches_defaults_and_is_checked():
    assert load_config(EvalConfig, "config/eval/default.yaml") == EvalConfig()
    for bad in ({"methods": ["ours", "magic"]}, {"objects": ["teapot"]}, {"views": [0]},
                {"protocol": {"elevation_deg": 95.0}}, {"metrics": {"n_rays": 4}}):
        with pytest.raises(ConfigError):
            from_dict(EvalConfig, bad)


def test_occnet_eval_end_to_end(tmp_path):
    ckpt = octahedron_checkpoint(tmp_path / "oct.pt")
    mesh = box_object().mesh
    mesh.export(tmp_path / "box.stl")
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        "render_points: 2000\n"
        "metrics: {n_points_iou: 5000, n_points_surface: 5000}\n"
        "poisson: {depth: 5}\n"
        "reconstructor: {resolution0: 8, upsampling_steps: 1, device: cpu}\n")
    out = tmp_path / "out"
    rc = eval_main(["--config", str(cfg), "--meshes", str(tmp_path / "box.stl"), "--views", "1", "2",
                    "--methods", "ours", "mise0", "hull", "poisson", "gt", "--weights", str(ckpt),
                    "--out", str(out), "--no-progress"])
    assert rc == 0
    for name in ("results.json", "results.md", "box.png", "overview.png"):
        assert (out / name).is_file()
    img = matplotlib.image.imread(out / "box.png")
    assert img.ndim == 3 and img.shape[0] > 100 and img[..., :3].std() > 0.05  # not blank
    res = json.loads((out / "results.json").read_text())
    recs = {(r["views"], r["method"]): r for r in res["records"]}
    assert len(res["records"]) == 10 and res["network"]["checkpoint_step"] == 7
    # the network gets the input size it was trained with (the config file does not fix one)
    assert res["network"]["reconstructor"]["n_input_points"] == 77
    for v in (1, 2):
        gt, hull, ours = recs[(v, "gt")], recs[(v, "hull")], recs[(v, "ours")]
        assert gt["ok"] and gt["metrics"]["iou"] == 1.0
        assert hull["ok"] and 0.2 < hull["metrics"]["iou"] < 1.0
        assert ours["ok"] and 0.05 < ours["metrics"]["iou"] < 0.9  # the octahedron, not the box
        assert ours["metrics"]["iou"] != hull["metrics"]["iou"]
        assert ours["resolution"] == 16 and recs[(v, "mise0")]["resolution"] == 8
        assert recs[(v, "mise0")]["n_evals"] < ours["n_evals"]
        assert all(recs[(v, m)]["time_s"] >= 0 for m in ("ours", "mise0", "hull", "poisson", "gt"))
        assert recs[(v, "poisson")]["ok"] and recs[(v, "poisson")]["metrics"]["fscore"] > 0
    assert recs[(2, "hull")]["n_points"] > recs[(1, "hull")]["n_points"]
    md = (out / "results.md").read_text()
    assert "## 1 view" in md and "## 2 views" in md and "| box |" in md
    assert "| gt | 1.000 |" in md


def test_occnet_eval_rejects_bad_arguments(tmp_path, capsys):
    assert eval_main(["--methods", "ours", "magic", "--out", str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert eval_main(["--objects", "duck", "--methods", "ours", "--weights",
                      str(tmp_path / "none.pt"), "--out", str(tmp_path), "--no-progress"]) == 2
    assert "not found" in capsys.readouterr().err


def test_observation_carries_the_table_plane_and_depth_that_never_carve_the_object():
    """The fitted support plane is the true table (world z = -1e-4) within 2 mm, and the known-empty test
    built from the observation marks points between the cameras and the box but almost no point inside it."""
    from occnet_ros.reconstruction.known_empty import KnownEmpty, KnownEmptyConfig

    obj = box_object()
    obs = observe_object(obj, 4, ViewProtocolConfig())
    assert len(obs.depth_views) == 4 and obs.support_plane is not None
    rng = np.random.default_rng(0)
    on_table = np.column_stack([rng.uniform(-0.2, 0.2, (200, 2)), np.full(200, -1e-4)])
    inv = np.linalg.inv(obs.input_to_world)
    in_cam0 = on_table @ inv[:3, :3].T + inv[:3, 3]
    assert np.abs(obs.support_plane.signed_distance(in_cam0)).max() < 0.002
    assert obs.support_plane.normal @ obs.up > 0.99  # oriented up, towards the object
    ke = KnownEmpty(KnownEmptyConfig(), obs.support_plane, obs.depth_views)
    inside = trimesh.sample.volume_mesh(obj.mesh, 4000)
    inside_cam0 = inside @ inv[:3, :3].T + inv[:3, 3]
    assert ke.mask(inside_cam0).mean() < 0.002
    # a shell 2-3 cm outside the box (above the table) is seen empty by some camera almost everywhere
    shell = trimesh.creation.box(extents=np.array([0.08, 0.06, 0.1]) + 0.05)
    shell.apply_translation((0, 0, 0.05))
    pts = shell.sample(2000)
    pts = pts[pts[:, 2] > 0.01]
    assert ke.mask(pts @ inv[:3, :3].T + inv[:3, 3]).mean() > 0.8
    below = in_cam0 - 0.01 * obs.up  # 1 cm under the table
    assert ke.mask(below).all()


def test_context_zero_gives_the_points_of_observe():
    from occnet_ros.data.virtual_camera import DepthNoise, ObjectScene, observe, observe_view
    from occnet_ros.geometry import PinholeCamera

    obj = box_object()
    pose = camera_poses(obj.mesh, 1, ViewProtocolConfig())[0]
    scene = ObjectScene(obj.mesh)
    a, up = observe(scene, pose, PinholeCamera(), DepthNoise(), np.random.default_rng(5))
    v = observe_view(scene, pose, PinholeCamera(), DepthNoise(), np.random.default_rng(5))
    wide = observe_view(scene, pose, PinholeCamera(), DepthNoise(), np.random.default_rng(5), context=0.5)
    assert np.array_equal(a, v.points) and np.array_equal(up, v.up)
    assert wide.depth.size > 2 * v.depth.size and v.table_points.shape[0] > 0
    assert wide.table_points.shape[0] > v.table_points.shape[0]


def test_known_empty_ablation_configs_change_only_the_tests_they_name():
    from dataclasses import replace
    from pathlib import Path

    from occnet_ros.reconstruction.known_empty import KnownEmptyConfig

    found = {}
    for path in sorted(Path("config/eval/ablation").glob("known_empty_*.yaml")):
        cfg = load_config(EvalConfig, path)
        assert cfg.methods == ["ours"]
        assert replace(cfg, methods=EvalConfig().methods, known_empty=KnownEmptyConfig()) == EvalConfig()
        found[path.stem] = (cfg.known_empty.support_plane, cfg.known_empty.free_space)
    assert found == {"known_empty_none": (False, False), "known_empty_plane": (True, False),
                     "known_empty_free": (False, True)}
