"""Virtual depth camera: geometry, optical-frame conventions, noise."""
import numpy as np
import pytest
import trimesh

from occnet_ros.data.virtual_camera import (
    DepthNoise, ObjectScene, apply_depth_noise, in_reference_camera, look_at_pose, observe, render_depth,
    sample_tabletop_pose,
)
from occnet_ros.geometry import PinholeCamera

INTR = PinholeCamera(width=160, height=120, fx=150.0, fy=150.0, cx=79.5, cy=59.5)
OFF = DepthNoise(enabled=False)


def _sphere(center, r):
    m = trimesh.creation.icosphere(subdivisions=5, radius=r)
    m.apply_translation(center)
    return m


def test_look_at_pose_is_a_rotation_with_optical_axes():
    pose = look_at_pose([1.0, 0.5, 0.8], [0.0, 0.0, 0.1])
    r = pose[:3, :3]
    np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)
    target_opt = r.T @ (np.array([0.0, 0.0, 0.1]) - pose[:3, 3])
    np.testing.assert_allclose(target_opt[:2], 0.0, atol=1e-12)  # straight ahead: x = y = 0
    assert target_opt[2] > 0
    up_opt = r.T @ np.array([0.0, 0.0, 1.0])
    assert up_opt[1] < 0 and abs(up_opt[0]) < 1e-12  # image "up" is -y, no roll


def test_rendered_sphere_points_lie_on_the_sphere_and_straight_ahead_is_centred():
    center, r = np.array([0.0, 0.0, 0.05]), 0.05
    pose = look_at_pose([0.5, 0.2, 0.3], center)
    depth = render_depth([_sphere(center, r)], INTR, pose)
    assert depth.shape == (INTR.height, INTR.width) and depth.dtype == np.float32
    hit = np.isfinite(depth)
    assert 50 < hit.sum() < hit.size  # sphere seen, background NaN
    pts_opt = INTR.unproject(depth)[hit].astype(np.float64)
    pts_w = pts_opt @ pose[:3, :3].T + pose[:3, 3]
    np.testing.assert_allclose(np.linalg.norm(pts_w - center, axis=1), r, atol=5e-4)
    # the sphere is straight ahead: its visible cap is centred on the optical axis
    assert abs(pts_opt[:, 0].mean()) < 2e-3 and abs(pts_opt[:, 1].mean()) < 2e-3
    assert np.all(pts_opt[:, 2] > 0)


def test_in_reference_camera_matches_a_per_point_loop():
    """Points of camera ``pose`` in the optical frame of camera ``ref``: world = pose p, then ref^-1 world."""
    rng = np.random.default_rng(1)
    pose, ref = sample_tabletop_pose(rng, [0.0, 0.0, 0.05]), sample_tabletop_pose(rng, [0.0, 0.0, 0.05])
    pts = rng.normal(scale=0.3, size=(50, 3))
    got, centre = in_reference_camera(pts, pose, ref)
    ref_inv = np.linalg.inv(ref)
    for p, g in zip(pts, got):
        world = pose[:3, :3] @ p + pose[:3, 3]
        np.testing.assert_allclose(g, ref_inv[:3, :3] @ world + ref_inv[:3, 3], atol=1e-12)
    np.testing.assert_allclose(centre, ref_inv[:3, :3] @ pose[:3, 3] + ref_inv[:3, 3], atol=1e-12)
    same, origin = in_reference_camera(pts, ref, ref)
    np.testing.assert_allclose(same, pts, atol=1e-12)
    np.testing.assert_allclose(origin, 0.0, atol=1e-12)


def test_noise_grows_with_range():
    rng = np.random.default_rng(1)
    noise = DepthNoise(missing_fraction=0.0, max_blobs=0)
    stds = []
    for z in (0.4, 1.2):
        clean = np.full((100, 100), z, np.float32)
        noisy = apply_depth_noise(clean, rng, noise)
        stds.append(float(np.nanstd(noisy - clean)))
        assert stds[-1] == pytest.approx(noise.sigma_a + noise.sigma_b * z * z, rel=0.1)
    assert stds[1] > 2 * stds[0]
    assert np.array_equal(apply_depth_noise(clean, rng, OFF), clean)


def test_noise_drops_pixels_and_makes_edge_artefacts():
    rng = np.random.default_rng(2)
    clean = np.full((60, 60), 1.0, np.float32)
    clean[:, 30:] = 0.6  # a step edge
    noise = DepthNoise(sigma_a=0.0, sigma_b=0.0, missing_fraction=0.05, max_blobs=0, flying_pixel_prob=0.5,
                       edge_dropout_prob=0.5, flying_max_offset=0.1)
    noisy = apply_depth_noise(clean, rng, noise)
    assert 0.03 < np.isnan(noisy).mean() < 0.1
    edge_cols = noisy[:, 29:31]
    flying = np.isfinite(edge_cols) & (np.abs(edge_cols - clean[:, 29:31]) > 1e-6)
    assert flying.sum() > 5
    interior = noisy[:, 2:27][np.isfinite(noisy[:, 2:27])]
    assert np.all(interior == 1.0)  # no artefacts away from the edge (sigma 0)


def test_observe_returns_object_points_and_up_vector():
    center, r = np.array([0.0, 0.0, 0.06]), 0.06
    scene = ObjectScene(_sphere(center, r), table=True)
    rng = np.random.default_rng(3)
    pose = sample_tabletop_pose(rng, center)
    d = np.linalg.norm(pose[:3, 3] - center)
    assert 0.35 <= d <= 1.2
    elev = np.degrees(np.arcsin((pose[2, 3] - center[2]) / d))
    assert 10 <= elev <= 65
    pts, up = observe(scene, pose, PinholeCamera(), OFF, rng)
    assert pts.dtype == np.float32 and pts.shape[1] == 3 and len(pts) > 100
    np.testing.assert_allclose(up, pose[:3, :3].T @ [0, 0, 1])
    pts_w = pts.astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]
    np.testing.assert_allclose(np.linalg.norm(pts_w - center, axis=1), r, atol=1e-3)  # no table points
    # with leaks, a few table points at the base join the cloud, none far away
    pts2, _ = observe(scene, pose, PinholeCamera(), OFF, np.random.default_rng(3), table_leak_prob=1.0)
    w2 = pts2.astype(np.float64) @ pose[:3, :3].T + pose[:3, 3]
    extra = np.linalg.norm(w2 - center, axis=1) > r + 1e-3
    assert extra.any() and np.all(w2[extra, 2] < 0.01) and np.all(np.linalg.norm(w2[extra, :2], axis=1) < 0.1)
