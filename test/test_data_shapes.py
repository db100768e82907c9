"""Procedural shapes: exact labels agree with a mesh inside test of their own marching-cubes meshes."""
import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from occnet_ros.data.mesh_sources import mesh_contains
from occnet_ros.data.shapes import FAMILIES, sample_shape
from occnet_ros.data.shapes_household import HOUSEHOLD_FAMILIES  # tested in test_shapes_household.py
from occnet_ros.data.shapes_sdf import Box, Difference, Sphere, polygon_sdf_2d

RES = 48
THIN_WALLED = {"cup": 80, "bowl": 80, "vase": 80, "mug": 80, "hollow_box": 80}  # finer grids so walls hold far points


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - set(HOUSEHOLD_FAMILIES)))
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


def test_hollow_box_is_hollow_and_open():
    """Every hollow box has a cavity (its centre is outside the solid) and an opening: a straight path
    from outside the box into the cavity that never enters the solid."""
    from occnet_ros.data.shapes import _FACE_AXES

    for seed in range(12):
        shape = sample_shape(np.random.default_rng(seed), "hollow_box")
        lo, hi = shape.bounds
        centre = 0.5 * (lo + hi)
        assert not shape.contains(centre[None])[0], seed
        rng = np.random.default_rng(seed)
        # search for an opening: rays from the centre to points outside, along many directions
        dirs = rng.normal(size=(4000, 3))
        dirs[:, 2] = np.abs(dirs[:, 2])  # up or sideways, never through the table
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        t = np.linspace(0.0, float(np.linalg.norm(hi - lo)), 200)
        paths = centre + t[None, :, None] * dirs[:, None, :]
        free = ~shape.contains(paths.reshape(-1, 3)).reshape(len(dirs), len(t))
        assert free.all(axis=1).any(), f"seed {seed}: closed box, no opening"
        assert not free.all(axis=1).all(), f"seed {seed}: no walls"
    assert set(_FACE_AXES) == {0, 1, 2}
    for rot in _FACE_AXES.values():  # proper rotations
        np.testing.assert_allclose(rot @ rot.T, np.eye(3))
        assert np.linalg.det(rot) == pytest.approx(1.0)


def test_family_weights_choose_the_families():
    from occnet_ros.data.shapes import FAMILY_WEIGHTS, check_family_weights

    rng = np.random.default_rng(0)
    drawn = {sample_shape(rng, weights={"hollow_box": 1.0, "sphere": 1.0}).family for _ in range(30)}
    assert drawn == {"hollow_box", "sphere"}
    # the default weights leave hollow_box out, so the data of older configs stay as they were
    assert "hollow_box" not in FAMILY_WEIGHTS and set(FAMILY_WEIGHTS) == set(FAMILIES) - {"hollow_box"} - set(HOUSEHOLD_FAMILIES)
    rng = np.random.default_rng(1)
    assert "hollow_box" not in {sample_shape(rng).family for _ in range(60)}
    with pytest.raises(ValueError, match="unknown shape family \\['crate'\\]"):
        check_family_weights({"crate": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        check_family_weights({"box": -1.0})
    with pytest.raises(ValueError, match="all be 0"):
        check_family_weights({"box": 0.0})
