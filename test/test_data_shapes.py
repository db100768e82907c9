"""Procedural shapes: exact labels agree with a mesh inside test of their own marching-cubes meshes."""
import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from occnet_ros.data.mesh_sources import mesh_contains
from occnet_ros.data.shapes import FAMILIES, sample_shape
from occnet_ros.data.shapes_sdf import Box, Difference, Sphere, polygon_sdf_2d

RES = 48
THIN_WALLED = {"cup": 80, "bowl": 80, "vase": 80, "mug": 80}  # finer grids so walls hold far points


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_contains_agrees_with_its_mesh(family):
    for seed in range(1 if family in THIN_WALLED else 2):
        rng = np.random.default_rng(seed)
        shape = sample_shape(rng, family)
        res = THIN_WALLED.get(family, RES)
        mesh = shape.mesh(res)
        assert mesh.is_watertight, family
        lo, hi = shape.bounds
        voxel = float(np.max(hi - lo)) / res
        # tabletop size, resting on the table, bounds enclose the mesh
        assert 0.03 <= float(np.max(hi - lo)) <= 0.32, (family, hi - lo)
        assert abs(mesh.bounds[0, 2]) < 1.5 * voxel, family
        assert np.all(mesh.bounds[0] >= lo - voxel) and np.all(mesh.bounds[1] <= hi + voxel)
        pts = rng.uniform(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), (20000, 3))
        d = shape.sdf(pts)
        # marching cubes of a distance field is accurate to a small part of a voxel away from sharp
        # edges; half a voxel keeps enough points inside the thin walls of cups and bowls
        far = np.abs(d) > 0.5 * voxel
        pts = pts[far]
        inside = shape.contains(pts)
        assert inside.sum() > 20 and (~inside).sum() > 20, family
        agree = np.mean(inside == mesh_contains(mesh, pts))
        assert agree > 0.99, (family, seed, agree)


def test_polygon_sdf_matches_slow_reference():
    rng = np.random.default_rng(3)
    angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
    poly = np.stack([np.cos(angles), np.sin(angles)], 1) * rng.uniform(0.4, 1.0, (7, 1))
    q = rng.uniform(-1.2, 1.2, (500, 2))
    d = polygon_sdf_2d(q, poly)
    inside_ref = MplPath(poly).contains_points(q)
    dist_ref = np.empty(len(q))
    for i, p in enumerate(q):  # brute force: distance to 2000 points on every edge
        best = np.inf
        for a, b in zip(poly, np.roll(poly, -1, 0)):
            t = np.linspace(0, 1, 2000)[:, None]
            best = min(best, np.min(np.linalg.norm(a + t * (b - a) - p, axis=1)))
        dist_ref[i] = best
    assert np.array_equal(d < 0, inside_ref)
    np.testing.assert_allclose(np.abs(d), dist_ref, atol=1e-3)


def test_primitive_sdf_values_and_csg():
    s = Sphere([0, 0, 0.1], 0.1)
    np.testing.assert_allclose(s.sdf(np.array([[0, 0, 0.1], [0.3, 0, 0.1]])), [-0.1, 0.2])
    cut = Difference(Box([0, 0, 0.1], [0.1, 0.1, 0.1]), Sphere([0, 0, 0.2], 0.05))
    assert list(cut.contains(np.array([[0, 0, 0.19], [0, 0, 0.1], [0.09, 0.09, 0.19]]))) == [False, True, True]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="unknown shape family"):
        sample_shape(np.random.default_rng(0), "teapot")
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        Sphere([0, 0, 0], 1.0).contains(np.zeros((4, 2)))
