"""Mask and geometric segmentation on a generated tabletop scene, and the fast routines against slow
references."""
import dataclasses

import numpy as np
import pytest
from ros_helpers import BOX_LABEL, SPHERE_LABEL, render_scene

from occnet_ros.geometry import PinholeCamera, Plane
from occnet_ros.perception.segmentation import (ClusterTracker, Segment, SegmentationConfig,
                                     SegmentationError, apply_limits, euclidean_clusters, fit_plane_ransac,
                                     fit_support_plane,
                                     score_planes, segment_by_mask, segment_by_projected_mask, segment_geometric)


@pytest.fixture(scope="module")
def scene():
    return render_scene(160, 120)


def intr(s, w=160, h=120):
    return dataclasses.replace(s.camera, width=w, height=h)


def test_mask_segments_match_per_pixel_reference(scene):
    xyz = scene.xyz.copy()
    xyz[60, 100] = np.nan  # an invalid pixel inside nothing in particular
    segs = segment_by_mask(xyz, scene.mask)
    ref = {}
    for r in range(xyz.shape[0]):
        for c in range(xyz.shape[1]):
            lab = int(scene.mask[r, c])
            if lab and np.isfinite(xyz[r, c]).all():
                ref.setdefault(lab, []).append(r * xyz.shape[1] + c)
    assert [s.id for s in segs] == sorted(ref) == [BOX_LABEL, SPHERE_LABEL]
    for s in segs:
        np.testing.assert_array_equal(s.pixels, ref[s.id])
        np.testing.assert_array_equal(s.points, xyz.reshape(-1, 3)[ref[s.id]])
        assert s.label == f"mask_{s.id}"
        assert s.points.dtype == np.float32


def test_mask_size_mismatch_and_bad_mask(scene):
    with pytest.raises(SegmentationError, match="differ"):
        segment_by_mask(scene.xyz, scene.mask[:-1])
    with pytest.raises(SegmentationError, match="integer"):
        segment_by_mask(scene.xyz, scene.mask.astype(np.float32))


def test_projected_mask_equals_organized(scene):
    flat = scene.xyz.reshape(-1, 3)
    order = np.random.default_rng(0).permutation(flat.shape[0])
    unorganized = flat[order]
    segs = segment_by_projected_mask(unorganized, scene.mask, intr(scene))
    ref = segment_by_mask(scene.xyz, scene.mask)
    assert [s.id for s in segs] == [s.id for s in ref]
    for s, r in zip(segs, ref):
        np.testing.assert_array_equal(np.sort(s.pixels), r.pixels)
        assert s.points.shape == r.points.shape
    with pytest.raises(SegmentationError, match="camera_info"):
        segment_by_projected_mask(unorganized, scene.mask, intr(scene, 100, 100))


def test_projection_reference():
    k = PinholeCamera(width=40, height=30, fx=100.0, fy=110.0, cx=20.0, cy=15.0)
    pts = np.array([[0, 0, 1], [0.1, 0.04, 1], [0, 0, -1], [np.nan, 0, 1], [5, 0, 1], [-0.196, -0.13, 1]])
    flat, valid = k.pixel_index(pts)
    np.testing.assert_array_equal(valid, [True, True, False, False, False, True])
    assert flat[0] == 15 * 40 + 20
    assert flat[1] == round(15 + 110 * 0.04) * 40 + round(20 + 100 * 0.1)
    assert flat[5] == 1 * 40 + 0  # u = floor(0.4 + 0.5), v = floor(0.7 + 0.5)


def test_score_planes_matches_loop():
    rng = np.random.default_rng(1)
    p = rng.normal(size=(200, 3))
    normals = rng.normal(size=(7, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    offsets = rng.normal(size=7) * 0.3
    ref = [sum(abs(float(q @ n) + o) < 0.2 for q in p) for n, o in zip(normals, offsets)]
    np.testing.assert_array_equal(score_planes(p, normals, offsets, 0.2), ref)


def test_ransac_finds_table_plane(scene):
    p = scene.xyz.reshape(-1, 3)
    p = p[np.isfinite(p).all(1)]
    plane = fit_plane_ransac(p, 0.005, 100, np.random.default_rng(0), up=scene.up, max_tilt_deg=20)
    assert isinstance(plane, Plane)
    assert plane.normal @ scene.up > np.cos(np.deg2rad(0.5))
    table = p[scene.mask.reshape(-1)[np.isfinite(scene.xyz.reshape(-1, 3)).all(1)] == 0]
    assert np.abs(plane.signed_distance(table)).max() < 1e-3
    # objects lie above the plane
    assert plane.signed_distance(scene.sphere_center[None])[0] == pytest.approx(0.06, abs=2e-3)
    # without up: oriented towards the camera, still the table
    plane2 = fit_plane_ransac(p, 0.005, 100, np.random.default_rng(0))
    assert abs(plane2.normal @ scene.up) > 0.999 and plane2.signed_distance(np.zeros((1, 3)))[0] > 0
    # no acceptable plane: a vertical-only tilt requirement
    assert fit_plane_ransac(p[:2], 0.005, 10, np.random.default_rng(0)) is None


def bfs_clusters(p, dist):
    n = len(p)
    lab = -np.ones(n, int)
    k = 0
    for s in range(n):
        if lab[s] >= 0:
            continue
        lab[s] = k
        stack = [s]
        while stack:
            i = stack.pop()
            for j in range(n):
                if lab[j] < 0 and np.linalg.norm(p[i] - p[j]) <= dist:
                    lab[j] = k
                    stack.append(j)
        k += 1
    return lab


def test_euclidean_clusters_match_bfs():
    rng = np.random.default_rng(2)
    p = np.concatenate([rng.normal(loc=c, scale=0.02, size=(40, 3)) for c in ([0, 0, 0], [0.3, 0, 0], [0, 0.5, 0])])
    p = np.concatenate([p, rng.uniform(-1, 1, size=(10, 3))])
    got = euclidean_clusters(p, 0.05)
    np.testing.assert_array_equal(got, bfs_clusters(p, 0.05))
    assert euclidean_clusters(np.zeros((0, 3)), 0.1).shape == (0,)


def test_geometric_segmentation_recovers_objects(scene):
    cfg = SegmentationConfig(min_points=20, cluster_voxel=0.005, plane_distance=0.005)
    flat = scene.xyz.reshape(-1, 3)
    segs, plane = segment_geometric(flat, cfg, np.random.default_rng(0), up=scene.up,
                                    pixels=np.arange(flat.shape[0]))
    segs = apply_limits(segs, cfg)
    assert plane is not None and len(segs) == 2
    truth = {lab: set(np.flatnonzero(scene.mask.reshape(-1) == lab)) for lab in (BOX_LABEL, SPHERE_LABEL)}
    for s in segs:
        got = set(s.pixels.tolist())
        best = max(len(got & t) / len(got | t) for t in truth.values())
        assert best > 0.85  # the bottom rim within plane_distance of the table is lost
        np.testing.assert_array_equal(s.points, flat[s.pixels])


def test_geometric_without_plane_and_noise():
    rng = np.random.default_rng(3)
    blobs = np.concatenate([rng.normal(loc=c, scale=0.01, size=(200, 3)) for c in ([0, 0, 1], [0.3, 0, 1])])
    cfg = SegmentationConfig(min_points=20, plane_min_inliers=0.95)
    segs, plane = segment_geometric(blobs.astype(np.float32), cfg, np.random.default_rng(0))
    assert plane is None and len(segs) == 2 and all(s.pixels is None for s in segs)


def test_apply_limits():
    def seg(i, n, size):
        return Segment(i, f"s{i}", (np.random.default_rng(i).random((n, 3)) * size).astype(np.float32))
    cfg = SegmentationConfig(min_points=10, max_points=100, min_extent=0.05, max_extent=1.0, max_objects=2)
    segs = [seg(1, 5, 0.5), seg(2, 50, 0.5), seg(3, 500, 0.5), seg(4, 60, 0.01), seg(5, 60, 3.0),
            seg(6, 80, 0.5), seg(7, 20, 0.5)]
    assert [s.id for s in apply_limits(segs, cfg)] == [2, 6]


def test_cluster_tracker_keeps_ids():
    tr = ClusterTracker(max_distance=0.05)
    a = tr.assign([[0, 0, 1], [1, 0, 1]])
    np.testing.assert_array_equal(a, [1, 2])
    b = tr.assign([[1.01, 0, 1], [2, 0, 1], [0.01, 0, 1]])  # moved slightly, plus one new
    np.testing.assert_array_equal(b, [2, 3, 1])
    c = tr.assign([[0.01, 0, 1]])
    np.testing.assert_array_equal(c, [1])
    d = tr.assign([[1.0, 0, 1]])  # id 2 disappeared one frame ago: not resurrected
    np.testing.assert_array_equal(d, [4])


def test_config_validation():
    from occnet_ros.config_io import ConfigError, from_dict
    with pytest.raises(ConfigError, match="max_points"):
        from_dict(SegmentationConfig, {"min_points": 10, "max_points": 5})
    with pytest.raises(ConfigError, match="mode"):
        from_dict(SegmentationConfig, {"mode": "magic"})


def test_fit_support_plane_needs_enough_inliers():
    """A table holding 30 % of the points is the support plane; with 3 % on it, RANSAC still returns its best
    plane, which holds fewer than plane_min_inliers (5 %) of the points and is rejected."""
    rng = np.random.default_rng(0)
    blob = rng.uniform([-0.5, -0.5, 0.05], [0.5, 0.5, 1.0], (2000, 3))  # any 2 cm slab holds ~2 %
    up = np.array([0.0, 0.0, 1.0])
    for n_table, found in ((860, True), (62, False)):
        table = np.column_stack([rng.uniform(-0.5, 0.5, (n_table, 2)), np.zeros(n_table)])
        plane = fit_support_plane(np.vstack([blob, table]), SegmentationConfig(), np.random.default_rng(1), up)
        assert (plane is not None) == found
        assert fit_plane_ransac(np.vstack([blob, table]), 0.01, 200, np.random.default_rng(1), up, 30.0) is not None
        if found:
            assert plane.normal @ up > 0.999 and abs(plane.offset) < 1e-3


def test_support_plane_of_a_subset_matches_the_plane_of_all_points(monkeypatch):
    """A 300k-point frame (a tilted table with 2 mm noise under a cloud of object points) is fitted on a random
    subset of PLANE_FIT_POINTS points: the plane agrees with the fit of all points (the slow reference: the limit
    lifted) within 0.05 degrees and 0.5 mm, for several seeds, and the inlier check still rejects a frame whose
    table holds too little."""
    from occnet_ros.perception import segmentation

    rng = np.random.default_rng(2)
    tilt = np.radians(25.0)
    normal = np.array([0.0, np.sin(tilt), np.cos(tilt)])
    u = np.cross(normal, [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(normal, u)
    n_table, n_blob = 240_000, 60_000
    ab = rng.uniform(-0.8, 0.8, (n_table, 2))
    table = ab[:, :1] * u + ab[:, 1:] * v + rng.normal(0.0, 0.002, (n_table, 1)) * normal + normal * 0.7
    blob = rng.uniform(-0.4, 0.4, (n_blob, 3)) + normal * 0.95
    points = np.vstack([table, blob]).astype(np.float32)
    assert len(points) > segmentation.PLANE_FIT_POINTS
    cfg = SegmentationConfig()
    for seed in range(3):
        fast = fit_support_plane(points, cfg, np.random.default_rng(seed), normal)
        with monkeypatch.context() as m:
            m.setattr(segmentation, "PLANE_FIT_POINTS", 10**9)
            slow = fit_support_plane(points, cfg, np.random.default_rng(seed), normal)
        assert np.degrees(np.arccos(min(1.0, float(fast.normal @ slow.normal)))) < 0.05
        assert abs(fast.offset - slow.offset) < 5e-4
        assert abs(fast.offset + 0.7) < 2e-3
    few = np.vstack([table[:3000], blob]).astype(np.float32)  # 4.8 % on the table: under plane_min_inliers
    assert fit_support_plane(few, cfg, np.random.default_rng(0), normal) is None


def test_least_squares_plane_equals_the_svd_reference():
    """The scatter-eigenvector plane equals the last right singular vector of the centred points (up to sign), for
    noisy planes of any tilt, far from the origin too, and for exactly planar points."""
    from occnet_ros.perception.segmentation import least_squares_plane

    rng = np.random.default_rng(12)
    for offset, noise in ((0.0, 1e-3), (1000.0, 1e-3), (5.0, 0.0), (-3.0, 2e-2)):
        n = rng.normal(size=3)
        n /= np.linalg.norm(n)
        a = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
        a /= np.linalg.norm(a)
        b = np.cross(n, a)
        uv = rng.uniform(-0.5, 0.5, (3000, 2))
        p = offset + uv[:, :1] * a + uv[:, 1:] * b + rng.normal(0.0, noise, (3000, 1)) * n
        normal, centroid = least_squares_plane(p)
        c = p.mean(axis=0)
        ref = np.linalg.svd(p - c, full_matrices=False)[2][2]
        assert abs(np.linalg.norm(normal) - 1.0) < 1e-12
        assert abs(abs(normal @ ref) - 1.0) < 1e-9, (offset, noise)
        assert np.allclose(centroid, c, rtol=0, atol=1e-9 * max(1.0, abs(offset)))
