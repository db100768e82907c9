"""The simulated tabletop scene and RGB-D camera (no ROS): renders parse back to the scene."""
from __future__ import annotations

import dataclasses

import numpy as np
import open3d as o3d
import pytest
import trimesh

from occnet_ros.config_io import ConfigError, from_dict
from occnet_ros.data.virtual_camera import DepthNoise
from occnet_ros.sim import (
    CameraConfig, SceneConfig, SceneError, SimCamera, TabletopScene, ground_truth, read_ground_truth,
    write_ground_truth,
)
from occnet_ros.sim.camera import linearize_depth
from occnet_ros.sim.scene import TABLE_TOP_Z

OBJECTS = ["mug", "sphere", "torus", "duck"]


@pytest.fixture(scope="module")
def scene():
    with TabletopScene(SceneConfig(seed=3, objects=OBJECTS)) as s:
        yield s


def small_camera(**kw) -> CameraConfig:
    base = dict(width=200, height=150, fx=190.0, fy=190.0)
    base.update(kw)
    return CameraConfig(**base)


def raycast_reference(meshes: list[trimesh.Trimesh], intr, pose: np.ndarray):
    """Slow, independent reference: one open3d ray per pixel through (u - cx) / fx, (v - cy) / fy
    (pixel centres at integer coordinates). Returns optical z (H, W) (NaN: no hit) and the index of
    the hit mesh + 1 (0: none)."""
    scene = o3d.t.geometry.RaycastingScene()
    for m in meshes:
        scene.add_triangles(o3d.core.Tensor(np.asarray(m.vertices, np.float32)),
                            o3d.core.Tensor(np.asarray(m.faces, np.uint32)))
    rays = []
    for v in range(intr.height):
        for u in range(intr.width):
            d = pose[:3, :3] @ np.array([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, 1.0])
            rays.append([*pose[:3, 3], *d])
    ans = scene.cast_rays(o3d.core.Tensor(np.array(rays, np.float32)))
    t = ans["t_hit"].numpy().reshape(intr.height, intr.width)
    gid = ans["geometry_ids"].numpy().astype(np.int64).reshape(intr.height, intr.width)
    hit = np.isfinite(t)
    return np.where(hit, t, np.nan), np.where(hit, gid + 1, 0)


def surface_distance(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


@pytest.mark.parametrize("cx,cy", [(-1.0, -1.0), (90.0, 80.0)])
def test_depth_and_mask_match_a_ray_caster(scene, cx, cy):
    """Clean depth and mask equal an independent ray caster of the ground-truth meshes, also for an
    off-centre principal point (checks the projection matrix, row order and depth linearisation)."""
    cam = SimCamera(scene, small_camera(cx=cx, cy=cy, noise=DepthNoise(enabled=False), rgb_noise=0.0))
    pose = cam.config.pose_at(0.0)
    _, depth, mask = cam.render_clean(pose)
    gt = ground_truth(scene, pose)
    ref_depth, ref_id = raycast_reference([g.mesh_in_world() for g in gt], cam.intrinsics, pose)
    on_objects = ref_id > 0
    assert on_objects.sum() > 500
    agree = np.mean(mask[on_objects | (mask > 0)] == ref_id[on_objects | (mask > 0)])
    assert agree > 0.98
    both = on_objects & (mask == ref_id)
    err = np.abs(depth[both] - ref_depth[both])
    assert np.median(err) < 1e-4
    assert np.percentile(err, 99) < 2e-3


def test_linearize_depth_against_formula():
    near, far = 0.05, 5.0
    z = np.array([[0.05, 0.3], [1.0, 4.99]])
    # forward: the OpenGL depth buffer of an eye-space depth z
    ndc = ((far + near) / (far - near)) - 2 * far * near / ((far - near) * z)
    buf = 0.5 * ndc + 0.5
    np.testing.assert_allclose(linearize_depth(buf, near, far), z, rtol=1e-5)
    assert np.isnan(linearize_depth(np.ones((1, 1)), near, far)).all()


def test_noisy_points_lie_on_their_object(scene):
    """With the default sensor noise, points under mask id k lie on object k's ground-truth surface
    (in the camera frame) within the noise, and not on another object."""
    cam = SimCamera(scene, small_camera(), seed=5)
    frame = cam.render(stamp=0.0, index=0)
    assert frame.points.shape == (150, 200, 3) and frame.points.dtype == np.float32
    assert frame.mask.dtype == np.uint16 and frame.rgb.dtype == np.uint8
    missing = ~np.isfinite(frame.depth)
    assert 0.005 < missing.mean() < 0.3  # the sensor drops some pixels, not most
    gt = ground_truth(scene, frame.camera_pose)
    for g in gt:
        sel = (frame.mask == g.id) & ~missing
        pts = frame.points[sel]
        assert len(pts) > 30, g.name
        d_own = surface_distance(g.mesh_in_camera(), pts)
        assert np.median(d_own) < 0.003, g.name
        assert np.mean(d_own < 0.01) > 0.9, g.name
        for other in gt:
            if other.id != g.id:
                assert np.median(surface_distance(other.mesh_in_camera(), pts)) > 0.02


def test_mask_ids_stable_across_orbit_frames(scene):
    """An orbiting camera sees the objects from elsewhere, but id k stays object k."""
    cam = SimCamera(scene, small_camera(orbit_deg_per_s=20.0, noise=DepthNoise(enabled=False)))
    f0, f1 = cam.render(stamp=0.0, index=0), cam.render(stamp=2.0, index=1)
    assert not np.allclose(f0.camera_pose, f1.camera_pose)
    assert not np.array_equal(f0.mask, f1.mask)
    for f in (f0, f1):
        assert set(np.unique(f.mask)) == {0, 1, 2, 3, 4}
        for g in ground_truth(scene, f.camera_pose):
            pts = f.points[(f.mask == g.id) & np.isfinite(f.depth)]
            assert np.percentile(surface_distance(g.mesh_in_camera(), pts), 95) < 0.002
    # gravity-up in the optical frame follows the camera
    np.testing.assert_allclose(f0.up, f0.camera_pose[:3, :3].T @ [0, 0, 1])


def test_noise_reproducible_from_frame_index(scene):
    cam = SimCamera(scene, small_camera(), seed=1)
    a, b, c = cam.render(0.0, 7), cam.render(0.0, 7), cam.render(0.0, 8)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert not np.array_equal(np.nan_to_num(a.depth), np.nan_to_num(c.depth))


def test_placement_rests_on_table_without_overlap(scene):
    poses = [scene.object_pose(o.id) for o in scene.objects]
    for o, pose in zip(scene.objects, poses):
        v = o.mesh.copy().apply_transform(pose).vertices
        assert abs(v[:, 2].min() - TABLE_TOP_Z) < 1e-3, o.name
        assert np.allclose(pose[:3, 2], [0, 0, 1], atol=1e-6)  # upright
    for i in range(len(poses)):
        for j in range(i + 1, len(poses)):
            ri = np.linalg.norm(scene.objects[i].mesh.vertices[:, :2], axis=1).max()
            rj = np.linalg.norm(scene.objects[j].mesh.vertices[:, :2], axis=1).max()
            gap = np.linalg.norm(poses[i][:2, 3] - poses[j][:2, 3]) - ri - rj
            assert gap >= scene.config.min_gap - 1e-9


def test_seed_decides_the_scene():
    def layout(seed, **kw):
        with TabletopScene(SceneConfig(seed=seed, **kw)) as s:
            return [o.name for o in s.objects], np.array([s.object_pose(o.id) for o in s.objects])

    names_a, poses_a = layout(11, num_objects=3)
    names_b, poses_b = layout(11, num_objects=3)
    assert names_a == names_b and np.allclose(poses_a, poses_b)
    _, poses_c = layout(12, objects=names_a)
    assert not np.allclose(poses_a, poses_c)


def test_bad_configs_are_refused():
    with pytest.raises(ConfigError, match="unknown object"):
        from_dict(SceneConfig, {"objects": ["duck", "spaceship"]})
    with pytest.raises(ConfigError, match="twice"):
        from_dict(SceneConfig, {"objects": ["duck", "duck"]})
    with pytest.raises(SceneError, match="cannot place"):
        TabletopScene(SceneConfig(objects=["soccer_ball", "toy_shape_sorter", "toy_concave_box"],
                                  area=(0.4, 0.3)))
    with pytest.raises(ConfigError, match="near < far"):
        from_dict(CameraConfig, {"near": 2.0, "far": 1.0})
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(CameraConfig, {"noise": {"sigma": 1.0}})


def test_ground_truth_files_round_trip(scene, tmp_path):
    cam_pose = small_camera().pose_at(0.0)
    gt = ground_truth(scene, cam_pose)
    write_ground_truth(tmp_path, gt, cam_pose, stamp=1.5, frame_id="camera_color_optical_frame")
    assert sorted(p.name for p in tmp_path.glob("*.ply")) == sorted(f"{g.id}_{g.name}.ply" for g in gt)
    doc, back = read_ground_truth(tmp_path)
    assert doc["stamp"] == 1.5 and doc["frame_id"] == "camera_color_optical_frame"
    for a, b in zip(gt, back):
        assert (a.id, a.name) == (b.id, b.name)
        np.testing.assert_allclose(a.pose_camera, b.pose_camera)
        np.testing.assert_allclose(np.sort(a.mesh_in_camera().vertices, axis=0),
                                   np.sort(b.mesh_in_camera().vertices, axis=0), atol=1e-6)
    # the camera-frame mesh is the world-frame mesh seen from the camera
    g = gt[0]
    np.testing.assert_allclose(g.mesh_in_camera().vertices,
                               trimesh.transform_points(g.mesh_in_world().vertices, np.linalg.inv(cam_pose)),
                               atol=1e-9)


def test_instance_mask_lookup(scene):
    bodies = [o.body for o in scene.objects]
    seg = np.array([[-1, scene.table_body, scene.plane_body, *bodies]])
    np.testing.assert_array_equal(scene.instance_mask(seg), [[0, 0, 0, 1, 2, 3, 4]])


def test_config_defaults_are_valid():
    CameraConfig().validate()
    SceneConfig().validate()
    assert dataclasses.replace(CameraConfig(), cx=10.0).intrinsics().cx == 10.0
