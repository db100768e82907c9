"""Baselines: convex hull and Poisson on analytic point sets; degenerate inputs raise BaselineError."""
import numpy as np
import pytest
import trimesh

from occnet_ros.evaluation.baselines import (BaselineError, HullConfig, PoissonConfig, convex_hull,
                                             estimate_oriented_normals, poisson)
from occnet_ros.evaluation.metrics import MetricsConfig, evaluate_mesh, is_watertight


def sphere_points(n, radius=0.05, centre=(0.0, 0.0, 0.5), seed=0):
    d = np.random.default_rng(seed).normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return np.asarray(centre) + radius * d, d


def test_convex_hull_encloses_points_with_outward_faces():
    p, _ = sphere_points(2000)
    p = np.concatenate([p, (p - [0, 0, 0.5]) * 0.5 + [0, 0, 0.5]])  # interior points are ignored
    h = convex_hull(p)
    assert is_watertight(h)
    assert h.volume == pytest.approx(4 / 3 * np.pi * 0.05 ** 3, rel=0.02) and h.volume > 0
    tri = h.vertices[h.faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    # every point is behind every face plane (outward normals), up to round-off
    assert np.max((p @ n.T) - np.sum(n * tri[:, 0], axis=1)[None]) < 1e-12
    # the hull of a cube's corners is the cube
    box = trimesh.creation.box(extents=(0.1, 0.2, 0.3))
    hb = convex_hull(box.vertices)
    assert hb.volume == pytest.approx(0.006) and len(hb.faces) == 12


@pytest.mark.parametrize("pts, message", [
    (np.zeros((3, 3)), "at least 4"),
    (np.c_[np.random.default_rng(0).random((50, 2)), np.zeros(50)], "coplanar"),
    (np.full((10, 3), np.nan), "NaN"),
    (np.zeros((10, 2)), "shape"),
])
def test_convex_hull_degenerate_inputs(pts, message):
    with pytest.raises(BaselineError, match=message):
        convex_hull(pts)
    with pytest.raises(ValueError, match="min_points"):
        HullConfig(min_points=3).validate()


def test_normals_face_their_camera():
    p, d = sphere_points(3000)
    vp = p + 0.3 * d  # one camera per point, outside along the normal
    n = estimate_oriented_normals(p, vp, 20)
    assert np.all(np.sum(n * (vp - p), axis=1) > 0)
    assert np.mean(np.abs(np.sum(n * d, axis=1))) > 0.99  # PCA normals of a sphere are radial
    one = estimate_oriented_normals(p, np.array([0.0, 0.0, 0.0]), 20)
    assert np.all(np.sum(one * (0.0 - p), axis=1) >= 0)


def test_poisson_reconstructs_a_closed_sphere():
    p, d = sphere_points(20000)
    cfg = PoissonConfig(depth=6, density_quantile=0.0)
    m = poisson(p, p + 0.3 * d, cfg)
    assert is_watertight(m)
    assert m.volume == pytest.approx(4 / 3 * np.pi * 0.05 ** 3, rel=0.05)
    gt = trimesh.creation.icosphere(4, radius=0.05)
    gt.apply_translation((0, 0, 0.5))
    res = evaluate_mesh(m, gt, MetricsConfig(n_points_iou=20000))
    assert res.iou > 0.98 and res.fscore > 0.95 and res.chamfer_l1 < 0.005
    # deterministic
    m2 = poisson(p, p + 0.3 * d, cfg)
    assert np.array_equal(m.vertices, m2.vertices) and np.array_equal(m.faces, m2.faces)


def test_poisson_density_trimming_opens_a_partial_view():
    p, d = sphere_points(20000)
    front = p[d[:, 2] < -0.2]  # the part a camera below the sphere sees
    full = poisson(front, (0, 0, 0), PoissonConfig(depth=6, density_quantile=0.0))
    trimmed = poisson(front, (0, 0, 0), PoissonConfig(depth=6, density_quantile=0.2))
    assert len(trimmed.faces) < len(full.faces)
    assert not is_watertight(trimmed)
    # the kept surface stays on the observed part of the sphere
    r = np.linalg.norm(trimmed.vertices - [0, 0, 0.5], axis=1)
    assert np.median(np.abs(r - 0.05)) < 0.003


@pytest.mark.parametrize("pts, vp, message", [
    (np.random.default_rng(0).random((10, 3)), (0, 0, 0), "at least 30"),
    (np.c_[np.random.default_rng(0).random((100, 2)), np.zeros(100)], (0, 0, 1), "coplanar"),
    (np.random.default_rng(0).random((100, 3)), np.zeros((5, 3)), "viewpoints"),
    (np.r_[np.random.default_rng(0).random((99, 3)), [[np.inf, 0, 0]]], (0, 0, 0), "NaN or inf"),
])
def test_poisson_degenerate_inputs(pts, vp, message):
    with pytest.raises(BaselineError, match=message):
        poisson(pts, vp)


def test_poisson_config_is_checked():
    for bad in (PoissonConfig(depth=0), PoissonConfig(density_quantile=1.0),
                PoissonConfig(normal_knn=40, min_points=30)):
        with pytest.raises(ValueError):
            bad.validate()
