"""Gravity-up from the support plane (occnet_ros.perception.gravity): estimates within 2 degrees for tilted and
rolled cameras over a table, none without a plane (the configured up then stands, said so), the warning for
an explicit up that disagrees with the plane, the log rules of the tracker, the node's ``up`` parameter and
``occnet_reconstruct``'s use of it. Pure numpy (no rclpy); scenes ray-cast with the training data's virtual
camera (sensor noise included) and one rendered by the PyBullet simulator."""
from __future__ import annotations

import numpy as np
import pytest
import trimesh

from occnet_ros.data.virtual_camera import DepthNoise, apply_depth_noise, look_at_pose, render_depth, table_mesh
from occnet_ros.geometry import PinholeCamera, Plane
from occnet_ros.perception.gravity import (DEFAULT_UP, GravityConfig, GravityTracker, angle_deg, estimate_up,
                                           format_up, seen_through_fraction)
from occnet_ros.ros.node_params import NodeParams, ParamError, default_values, params_from_values

CAMERA = PinholeCamera(width=320, height=240, fx=307.5, fy=307.5, cx=159.5, cy=119.5)
TILT = 30.0  # segmentation.plane_max_tilt_deg's default


def tabletop_objects() -> list[trimesh.Trimesh]:
    """Three boxes and a sphere standing on the plane z = 0 (world, metres)."""
    meshes = []
    for (x, y), size in [((0.0, 0.0), (0.08, 0.06, 0.12)), ((0.12, 0.1), (0.05, 0.05, 0.07)),
                         ((-0.1, 0.12), (0.1, 0.04, 0.05))]:
        box = trimesh.creation.box(size)
        box.apply_translation([x, y, size[2] / 2])
        meshes.append(box)
    sphere = trimesh.creation.icosphere(3, 0.05)
    sphere.apply_translation([-0.08, -0.1, 0.05])
    return meshes + [sphere]


def camera_pose(pitch_deg: float, roll_deg: float, distance: float = 0.7) -> np.ndarray:
    """(4, 4) optical-to-world pose looking at the objects, pitched down by ``pitch_deg`` (0: level, 0.3 m
    above the table) and rolled about the optical axis by ``roll_deg``."""
    if pitch_deg == 0:
        eye, target = np.array([0.0, -distance, 0.3]), np.array([0.0, 0.0, 0.3])
    else:
        el = np.radians(pitch_deg)
        target = np.array([0.0, 0.0, 0.05])
        eye = target + distance * np.array([0.0, -np.cos(el), np.sin(el)])
    pose = look_at_pose(eye, target)
    c, s = np.cos(np.radians(roll_deg)), np.sin(np.radians(roll_deg))
    pose[:3, :3] = pose[:3, :3] @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return pose


def observe(meshes: list[trimesh.Trimesh], pose: np.ndarray, seed: int = 0) -> np.ndarray:
    """(H, W, 3) float32 noisy organized cloud of ``meshes`` in the camera's optical frame, metres."""
    depth = apply_depth_noise(render_depth(meshes, CAMERA, pose), np.random.default_rng(seed), DepthNoise())
    return CAMERA.unproject(depth)


def true_up(pose: np.ndarray) -> np.ndarray:
    return pose[:3, :3].T @ np.array([0.0, 0.0, 1.0])


def rotated(v: np.ndarray, degrees: float) -> np.ndarray:
    """``v`` turned by ``degrees`` about an axis perpendicular to it (Rodrigues)."""
    v = np.asarray(v, np.float64) / np.linalg.norm(v)
    axis = np.cross(v, [1.0, 0.0, 0.0])
    axis /= np.linalg.norm(axis)
    a = np.radians(degrees)
    return v * np.cos(a) + np.cross(axis, v) * np.sin(a)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("pitch, roll, distance", [(0, 0, 0.7), (20, 0, 0.7), (35, 0, 0.7), (60, 0, 0.7),
                                                   (35, 15, 0.7), (20, -25, 0.7), (35, 30, 0.7), (60, 30, 0.7),
                                                   (20, 15, 0.3), (35, -20, 0.3)])  # close: the objects fill half
def test_estimate_is_within_2_degrees_for_tilted_and_rolled_cameras(pitch, roll, distance):
    pose = camera_pose(pitch, roll, distance)
    xyz = observe([table_mesh(0.8)] + tabletop_objects(), pose)
    est = estimate_up(xyz, np.zeros(3), GravityConfig(), np.random.default_rng(0))
    assert est is not None
    assert angle_deg(est.up, true_up(pose)) < 2.0
    assert abs(np.linalg.norm(est.up) - 1.0) < 1e-9
    assert est.plane.signed_distance(np.zeros((1, 3)))[0] > 0  # the camera is above the plane
    assert est.prior_angle_deg == pytest.approx(angle_deg(est.up, DEFAULT_UP))


def test_estimate_in_the_simulator_with_the_floor_below_the_table():
    """The PyBullet tabletop (table edge and floor in view), camera 35 degrees down and 40 degrees down rolled."""
    from occnet_ros.sim.camera import CameraConfig, SimCamera
    from occnet_ros.sim.scene import SceneConfig, TabletopScene

    with TabletopScene(SceneConfig(seed=3, objects=["mug", "duck", "torus"])) as scene:
        for elevation, distance in [(35.0, 0.75), (60.0, 1.0)]:
            cam = SimCamera(scene, CameraConfig(width=200, height=150, fx=192.0, fy=192.0,
                                                elevation_deg=elevation, distance=distance))
            frame = cam.render()
            est = estimate_up(frame.points, np.zeros(3), GravityConfig(), np.random.default_rng(0))
            assert est is not None and angle_deg(est.up, frame.up) < 2.0, elevation


def test_no_plane_no_estimate_and_the_configured_or_default_up_stands_said_so():
    pose = camera_pose(35, 0)
    floating = [m.copy().apply_translation([0.0, 0.0, 0.2 + 0.15 * i]) for i, m in enumerate(tabletop_objects())]
    xyz = observe(floating, pose)
    assert estimate_up(xyz, np.zeros(3), GravityConfig(), np.random.default_rng(0)) is None

    auto = GravityTracker(GravityConfig(), None, TILT)
    d = auto.decide(xyz, np.zeros(3), np.random.default_rng(0))
    assert d.source == "default" and np.allclose(d.up, DEFAULT_UP) and d.level == "warning"
    assert "no support plane" in d.message and "set parameter 'up'" in d.message

    explicit_up = true_up(pose)
    fixed = GravityTracker(GravityConfig(), explicit_up, TILT)
    d = fixed.decide(xyz, np.zeros(3), np.random.default_rng(0))
    assert d.source == "parameter" and np.allclose(d.up, explicit_up)
    assert "no support plane" in d.message and "using it as set" in d.message
    assert fixed.decide(xyz, np.zeros(3), np.random.default_rng(0)).message is None  # said once


def test_a_wall_seen_head_on_is_no_support_plane():
    wall = trimesh.creation.box((3.0, 0.02, 2.0))
    wall.apply_translation([0.0, 1.0, 0.5])
    pose = look_at_pose([0.0, -0.2, 0.5], [0.0, 1.0, 0.5])  # a level camera facing the wall
    assert estimate_up(observe([wall], pose), np.zeros(3), GravityConfig(), np.random.default_rng(0)) is None


@pytest.mark.parametrize("radius", [0.05, 0.08, 0.15])
def test_one_object_alone_gives_no_plane(radius):
    """The cloud of one object, as occnet_reconstruct gets it: a sphere's visible side holds a 1 cm band (its
    rim) with most of its points, a small flat object lies wholly within one; neither is a support plane."""
    sphere = trimesh.creation.icosphere(4, radius)
    sphere.apply_translation([0.0, 0.0, radius])
    xyz = observe([sphere], camera_pose(35, 0, distance=0.3 + 2 * radius))
    for seed in range(3):
        assert estimate_up(xyz, np.zeros(3), GravityConfig(), np.random.default_rng(seed)) is None
    brick = trimesh.creation.box((0.05, 0.04, 0.015)).apply_translation([0.0, 0.0, 0.05])
    xyz = observe([brick], camera_pose(60, 0, distance=0.35))  # its top face: most points, 4 cm wide
    assert estimate_up(xyz, np.zeros(3), GravityConfig(), np.random.default_rng(0)) is None
    assert estimate_up(xyz, np.zeros(3), GravityConfig(min_plane_width=0.0), np.random.default_rng(0)) is not None


def test_the_floor_past_the_table_edge_is_not_seen_through():
    pose = camera_pose(35, 0)
    table = table_mesh(0.3)
    floor = table_mesh(3.0, z=-0.6)
    xyz = observe([table, floor] + tabletop_objects(), pose).reshape(-1, 3)
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    plane = Plane(true_up(pose), pose[2, 3])  # the table z = 0 in the optical frame (its height above it)
    below = (plane.signed_distance(xyz) < -0.01).mean()
    assert below > 0.2  # much floor in view ...
    assert seen_through_fraction(xyz, plane, 0.01) < 0.01  # ... none of it under the table
    est = estimate_up(xyz, np.zeros(3), GravityConfig(min_plane_fraction=0.1), np.random.default_rng(0))
    assert est is not None and angle_deg(est.up, true_up(pose)) < 2.0


def seen_through_slow(points, plane, distance, cells=32):
    """Point by point: the reference of seen_through_fraction."""
    n = plane.normal
    a = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    d = [float(n @ p + plane.offset) for p in points]
    inliers = [p for p, di in zip(points, d) if abs(di) < distance]
    if not inliers:
        return 0.0
    uv_in = np.array([[p @ a, p @ b] for p in inliers])
    lo, hi = uv_in.min(axis=0), uv_in.max(axis=0)
    size = np.maximum(hi - lo, 1e-9) / cells

    def cell(p):
        c = np.floor((np.array([p @ a, p @ b]) - lo) / size).astype(int)
        return tuple(c) if (c >= 0).all() and (c < cells).all() else None

    occupied = {cell(p) for p in inliers} - {None}
    hidden = sum(1 for p, di in zip(points, d) if di < -distance and cell(p) in occupied)
    return hidden / len(points)


def test_seen_through_fraction_matches_the_slow_reference():
    rng = np.random.default_rng(4)
    plane = Plane.from_coefficients(0.1, -1.0, 0.2, 0.3)
    pts = rng.uniform(-1.0, 1.0, size=(3000, 3))
    pts[:1500] -= np.outer(plane.signed_distance(pts[:1500]), plane.normal)  # half on the plane
    pts[1500:1500 + 200] *= 0.3  # some close below and above it
    assert seen_through_fraction(pts, plane, 0.01) == pytest.approx(seen_through_slow(pts, plane, 0.01), abs=1e-12)
    assert seen_through_fraction(pts, plane, 0.01) > 0


def test_an_explicit_up_35_degrees_off_the_plane_is_reported_5_degrees_off_is_not():
    pose = camera_pose(35, 10)
    xyz = observe([table_mesh(0.8)] + tabletop_objects(), pose)
    truth = true_up(pose)
    clock = Clock()
    far = GravityTracker(GravityConfig(), rotated(truth, 35.0), TILT, throttle_s=5.0, clock=clock)
    d = far.decide(xyz, np.zeros(3), np.random.default_rng(0))
    assert d.source == "parameter" and np.allclose(d.up, rotated(truth, 35.0))  # used as set
    assert d.level == "warning" and "segmentation.plane_max_tilt_deg = 30" in d.message
    angle = float(d.message.split(" is ")[1].split(" deg")[0])
    assert abs(angle - 35.0) < 2.0
    suggested = np.array([float(v) for v in d.message.split("to [")[1].split("]")[0].split(",")])
    assert angle_deg(suggested, truth) < 2.0 and "parameter 'up'" in d.message
    clock.t = 1.0
    assert far.decide(xyz, np.zeros(3), np.random.default_rng(1)).message is None  # rate-limited
    clock.t = 6.0
    assert far.decide(xyz, np.zeros(3), np.random.default_rng(2)).level == "warning"

    z_up = GravityTracker(GravityConfig(), [0.0, 0.0, 1.0], TILT)  # a z-up frame's up given for an optical frame
    d = z_up.decide(xyz, np.zeros(3), np.random.default_rng(0))
    assert d.level == "warning" and abs(float(d.message.split(" is ")[1].split(" deg")[0])
                                        - angle_deg([0, 0, 1], truth)) < 2.0

    near = GravityTracker(GravityConfig(), rotated(truth, 5.0), TILT, clock=clock)
    d = near.decide(xyz, np.zeros(3), np.random.default_rng(0))
    assert d.message is None and d.source == "parameter" and d.estimate is not None


def test_tracker_reports_the_first_estimate_changes_and_a_lost_plane():
    table = [table_mesh(0.8)] + tabletop_objects()
    pose = camera_pose(35, 0)
    xyz = observe(table, pose)
    clock = Clock()
    cfg = GravityConfig(hold_deg=1.0, report_deg=5.0)
    tracker = GravityTracker(cfg, None, TILT, throttle_s=5.0, clock=clock)
    d = tracker.decide(xyz, np.zeros(3), np.random.default_rng(0))
    assert d.source == "estimated" and d.level == "info" and d.message.startswith("gravity-up estimated")
    assert angle_deg(d.up, true_up(pose)) < 2.0 and format_up(d.up) in d.message
    first = d.up

    d = tracker.decide(observe(table, pose, seed=1), np.zeros(3), np.random.default_rng(1))
    assert d.message is None and np.array_equal(d.up, first)  # within hold_deg: the estimate in use is kept

    floating = [m.copy().apply_translation([0.0, 0.0, 0.3]) for m in tabletop_objects()]
    d = tracker.decide(observe(floating, pose), np.zeros(3), np.random.default_rng(2))
    assert d.source == "estimated" and np.array_equal(d.up, first)
    assert "keeping the last estimate" in d.message
    d = tracker.decide(observe(floating, pose), np.zeros(3), np.random.default_rng(3))
    assert d.message is None and np.array_equal(d.up, first)

    clock.t = 1.0
    steeper = camera_pose(45, 0)
    d = tracker.decide(observe(table, steeper), np.zeros(3), np.random.default_rng(4))
    assert angle_deg(d.up, true_up(steeper)) < 2.0
    assert "moved by" in d.message  # 10 degrees > report_deg
    clock.t = 2.0
    steepest = camera_pose(55, 0)
    d = tracker.decide(observe(table, steepest), np.zeros(3), np.random.default_rng(5))
    assert angle_deg(d.up, true_up(steepest)) < 2.0 and d.message is None  # used at once, said later
    clock.t = 7.0
    d = tracker.decide(observe(table, steepest), np.zeros(3), np.random.default_rng(6))
    assert "moved by" in d.message and format_up(d.up) in d.message


def test_world_frame_wins_and_no_points_keep_what_is_in_use():
    tracker = GravityTracker(GravityConfig(), None, TILT)
    d = tracker.decide(np.full((10, 3), np.nan), np.zeros(3), np.random.default_rng(0), world_up=[0.0, 0.0, 2.0])
    assert d.source == "world_frame" and np.allclose(d.up, [0, 0, 1]) and d.message is None
    assert tracker.without_points().source == "default"
    xyz = observe([table_mesh(0.8)] + tabletop_objects(), camera_pose(35, 0))
    est = tracker.decide(xyz, np.zeros(3), np.random.default_rng(0)).up
    assert tracker.without_points().source == "estimated" and np.array_equal(tracker.without_points().up, est)
    assert GravityTracker(GravityConfig(), [0, 0, 3], TILT).without_points().up.tolist() == [0, 0, 1]


def test_bad_input_is_refused_by_name():
    with pytest.raises(ValueError, match="xyz must be"):
        estimate_up(np.zeros((4, 2)), np.zeros(3), GravityConfig(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="--up must be 3 finite"):
        GravityTracker(GravityConfig(), [0.0, np.nan, 1.0], TILT, up_name="--up")
    with pytest.raises(ValueError, match="max_tilt_deg"):
        GravityTracker(GravityConfig(max_tilt_deg=95.0), None, TILT)
    assert estimate_up(np.zeros((0, 3)), np.zeros(3), GravityConfig(), np.random.default_rng(0)) is None


def test_the_up_parameter_not_set_means_estimated():
    assert NodeParams().explicit_up() is None  # the default [0, 0, 0]
    values = default_values()
    assert values["up"] == [0.0, 0.0, 0.0] and values["gravity.max_tilt_deg"] == 75.0
    values.update({"up": [0, 0, 1]})  # integers, as `-p up:=[0, 0, 1]` gives them
    assert params_from_values(values).explicit_up() == [0.0, 0.0, 1.0]
    with pytest.raises(ParamError, match="up must be 3 finite numbers"):
        params_from_values({**values, "up": [1e-9, 0.0, 0.0]})
    with pytest.raises(ParamError, match="gravity.min_plane_fraction"):
        params_from_values({**values, "gravity.min_plane_fraction": 0.0})


def test_occnet_reconstruct_estimates_up_without_the_option(capsys):
    from occnet_ros.cli.reconstruct import gravity_up

    pose = camera_pose(35, 20)
    xyz = observe([table_mesh(0.8)] + tabletop_objects(), pose).reshape(-1, 3)
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    up = gravity_up(xyz, None, (0.0, 0.0, 0.0))
    assert angle_deg(up, true_up(pose)) < 2.0
    assert "gravity-up estimated" in capsys.readouterr().out

    up = gravity_up(xyz, rotated(true_up(pose), 40.0), (0.0, 0.0, 0.0))  # --up as given, with the warning
    assert angle_deg(up, rotated(true_up(pose), 40.0)) < 1e-9
    err = capsys.readouterr().err
    assert "--up = [" in err and "set --up to [" in err

    sphere = trimesh.creation.icosphere(3, 0.05)  # one object alone: the level camera's up, said so
    up = gravity_up(observe([sphere], pose).reshape(-1, 3), None, (0.0, 0.0, 0.0))
    assert np.allclose(up, DEFAULT_UP) and "no support plane" in capsys.readouterr().err
