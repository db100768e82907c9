"""Anchoring the mesh to the observation: the vectorised routine against a per-vertex loop, and its
behaviour on shapes with known answers (a sphere seen from one side, a thin plate seen from above)."""
import numpy as np
import pytest
import trimesh

from occnet_ros.neighbours import NeighbourIndex
from occnet_ros.reconstruction.surface_anchor import (AnchorConfig, _ring_average, anchor_to_observation, fit_planes,
                                                      smallest_eigenpairs, vertex_normals)


def _hemisphere_points(n, radius, noise, seed):
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d[:, 0] = -np.abs(d[:, 0])  # the side facing a camera on -x
    return radius * d + rng.normal(scale=noise, size=d.shape)


def _reference_anchor(v, f, p, vp, c):
    """Per-vertex loop: brute-force nearest observed point (the anchor) and its neighbours, one 3x3
    eigen-decomposition each (no smoothing)."""
    normals = vertex_normals(v, f)
    out = v.copy()
    for i, x in enumerate(v):
        to_vertex = np.linalg.norm(p - x, axis=1)
        a = int(np.argmin(to_vertex))
        if to_vertex[a] > c.radius:
            continue
        d = np.linalg.norm(p - p[a], axis=1)
        order = np.argsort(d)[:c.k]
        order = order[d[order] <= c.radius]
        if len(order) < c.min_neighbors:
            continue
        w = np.exp(-(d[order] / (0.5 * c.radius)) ** 2)
        w /= w.sum()
        cen = w @ p[order]
        cov = sum(wi * np.outer(q - cen, q - cen) for wi, q in zip(w, p[order]))
        evals, evecs = np.linalg.eigh(cov)
        if evals[0] > c.max_curvature * evals.sum():
            continue
        n = evecs[:, 0]
        if n @ (w @ vp[order] - cen) < 0:
            n = -n
        if normals[i] @ n < c.min_normal_dot:
            continue
        weight = np.clip((c.radius - to_vertex[a]) / (0.5 * c.radius), 0.0, 1.0)
        out[i] = x - weight * ((x - cen) @ n) * n
    return out


def test_vectorised_anchor_matches_per_vertex_loop():
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.05)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    p = _hemisphere_points(3000, 1.0, 0.01, seed=1)
    vp = np.tile([[-5.0, 0.0, 0.0]], (len(p), 1))
    vp[::3] = [-4.0, 2.0, 1.0]  # several cameras
    cfg = AnchorConfig(radius=0.15, smooth_iterations=0, max_curvature=0.2)
    got = anchor_to_observation(v, f, p, vp, cfg)
    ref = _reference_anchor(v, f, p, vp, cfg)
    moved = np.linalg.norm(ref - v, axis=1) > 0
    assert 50 < moved.sum() < len(v)  # both cases are exercised
    np.testing.assert_allclose(got.vertices, ref, atol=1e-5)
    assert got.n_moved == moved.sum()



@pytest.mark.parametrize("offset", [0.0, 1000.0])
def test_one_camera_for_all_points_matches_the_per_vertex_loop(offset):
    """A single viewpoint (3,) is the same as one per point; far from the origin (1 km) the planes keep
    their precision (moments are summed relative to each anchor point)."""
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.05)
    v, f = np.asarray(sphere.vertices) + offset, np.asarray(sphere.faces)
    p = _hemisphere_points(3000, 1.0, 0.01, seed=7) + offset
    camera = np.array([-5.0, 0.5, 0.0]) + offset
    cfg = AnchorConfig(radius=0.15, smooth_iterations=0, max_curvature=0.2)
    got = anchor_to_observation(v, f, p, camera, cfg)
    ref = _reference_anchor(v, f, p, np.tile(camera, (len(p), 1)), cfg)
    assert 50 < got.n_moved < len(v)
    np.testing.assert_allclose(got.vertices, ref, atol=1e-5 if offset == 0 else 1e-3)
    assert got.n_moved == (np.linalg.norm(ref - v, axis=1) > 0).sum()
    many = anchor_to_observation(v, f, p, np.tile(camera, (len(p), 1)), cfg)
    np.testing.assert_array_equal(got.vertices, many.vertices)
    with pytest.raises(ValueError, match="viewpoints"):
        anchor_to_observation(v, f, p, np.zeros((2, 3)), cfg)


def test_fit_planes_with_the_callers_tree_is_the_same():
    p = _hemisphere_points(2000, 1.0, 0.01, seed=8)
    q = p[::7]
    cfg = AnchorConfig(radius=0.2)
    a = fit_planes(q, p, (-5.0, 0.0, 0.0), cfg)
    b = fit_planes(q, p, (-5.0, 0.0, 0.0), cfg, NeighbourIndex(p))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a[0].mean() > 0.9


def test_ring_average_is_the_mean_over_each_vertex_and_its_neighbours():
    mesh = trimesh.creation.icosphere(subdivisions=2)
    f = np.asarray(mesh.faces)
    n = len(mesh.vertices)
    dense = _ring_average(n, f).toarray()
    ref = np.eye(n)
    for a, b in mesh.edges_unique:
        ref[a, b] = ref[b, a] = 1.0
    ref /= ref.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(dense, ref, atol=1e-15)


def test_ring_average_of_any_face_soup_matches_the_dense_reference():
    """Faces in any order and orientation, repeated faces and edges in more than two faces, and a vertex no face
    uses (its row is itself alone): the CSR construction against a dense loop over the faces."""
    rng = np.random.default_rng(3)
    n = 40
    faces = np.array([rng.choice(n - 1, 3, replace=False) for _ in range(90)])  # vertex n - 1 in no face
    faces = np.concatenate([faces, faces[:7], faces[10:15, ::-1]])
    ref = np.eye(n)
    for face in faces:
        for a, b in ((face[0], face[1]), (face[1], face[2]), (face[2], face[0])):
            ref[a, b] = ref[b, a] = 1.0
    ref /= ref.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(_ring_average(n, faces).toarray(), ref, atol=1e-15)
    np.testing.assert_allclose(_ring_average(n, faces.astype(np.int32)).toarray(), ref, atol=1e-15)
    assert _ring_average(n, faces)[n - 1].toarray()[0, n - 1] == 1.0

def test_sphere_seen_from_one_side_moves_onto_the_observed_radius_only_there():
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=1.05)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    p = _hemisphere_points(20000, 1.0, 0.005, seed=2)
    res = anchor_to_observation(v, f, p, (-5.0, 0.0, 0.0), AnchorConfig(radius=0.1))
    r_new = np.linalg.norm(res.vertices, axis=1)
    front, back = v[:, 0] < -0.4, v[:, 0] > 0.3  # (smoothing spreads the move two rings further)
    assert np.abs(r_new[front] - 1.0).max() < 0.01  # the 5 % offset is gone where the camera looked
    np.testing.assert_array_equal(res.vertices[back], v[back].astype(np.float32))  # unseen side untouched
    out = trimesh.Trimesh(res.vertices, f, process=True)
    assert out.is_watertight and out.is_winding_consistent and out.volume > 0


def test_thin_plate_back_face_is_not_pulled_onto_the_observed_front():
    """A plate 0.02 thick, seen from above with the observation 0.005 above its top: within the radius
    of the observation lie both faces; only the top (normal facing the camera) may move."""
    plate = trimesh.creation.box(extents=(1.0, 1.0, 0.02))
    plate = plate.subdivide().subdivide().subdivide()
    v, f = np.asarray(plate.vertices), np.asarray(plate.faces)
    rng = np.random.default_rng(3)
    p = np.column_stack([rng.uniform(-0.5, 0.5, (20000, 2)), np.full(20000, 0.015)])
    top, bottom = np.isclose(v[:, 2], 0.01), np.isclose(v[:, 2], -0.01)
    inner = (np.abs(v[:, :2]) < 0.3).all(axis=1)  # two rings (the smoothing) from the rim
    cfg = AnchorConfig(radius=0.05)
    res = anchor_to_observation(v, f, p, (0.0, 0.0, 5.0), cfg)
    np.testing.assert_allclose(res.vertices[top & inner, 2], 0.015, atol=1e-6)
    np.testing.assert_array_equal(res.vertices[bottom & inner, 2], np.float32(-0.01))
    # without the side test the bottom is pulled up through the plate
    flat = anchor_to_observation(v, f, p, (0.0, 0.0, 5.0), AnchorConfig(radius=0.05, min_normal_dot=-1.0))
    assert (flat.vertices[bottom & inner, 2] > 0.0).all()


def test_no_plane_on_a_corner_or_with_too_few_points():
    corner = np.concatenate([np.column_stack([np.zeros(400), np.random.default_rng(4).uniform(0, 0.1, (400, 2))]),
                             np.column_stack([np.random.default_rng(5).uniform(0, 0.1, (400, 1)), np.zeros(400),
                                              np.random.default_rng(6).uniform(0, 0.1, (400, 1))])])
    # an L-shaped neighbourhood of radius a has a smallest/sum eigenvalue ratio of about 0.09
    cfg = AnchorConfig(radius=0.03, k=64, max_curvature=0.05)
    q = np.array([[0.0, 0.0, 0.05], [0.0, 0.05, 0.05]])  # at the edge; in the middle of one face
    ok, _, _, _ = fit_planes(q, corner, np.ones((800, 3)), cfg)
    assert ok.tolist() == [False, True]  # two perpendicular faces are not one plane
    few = np.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [0.0, 0.01, 0.0]])
    ok, _, _, nearest = fit_planes(np.zeros((1, 3)), few, np.ones((3, 3)), cfg)
    assert not ok[0] and nearest[0] == 0.0


def test_off_and_degenerate_inputs_return_the_mesh_unchanged():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    p = _hemisphere_points(500, 1.0, 0.0, seed=0)
    for cfg, pts in ((AnchorConfig(radius=0.0), p), (AnchorConfig(), p[:3])):
        res = anchor_to_observation(v, f, pts, (0.0, 0.0, 0.0), cfg)
        np.testing.assert_array_equal(res.vertices, v.astype(np.float32))
        assert res.n_moved == 0


@pytest.mark.parametrize("field,value", [("radius", -0.1), ("min_neighbors", 2), ("k", 4),
                                         ("max_curvature", 0.5), ("min_normal_dot", 1.5)])
def test_bad_anchor_config_is_rejected(field, value):
    with pytest.raises(ValueError, match=field.split("_")[0]):
        AnchorConfig(**{field: value}).validate()


def test_vertex_normals_point_outwards():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    n = vertex_normals(sphere.vertices, sphere.faces)
    radial = sphere.vertices / np.linalg.norm(sphere.vertices, axis=1, keepdims=True)
    assert (np.einsum("ij,ij->i", n, radial) > 0.99).all()


def _assert_smallest_pairs_match_eigh(cov, value_tol=1e-12):
    values, vectors = smallest_eigenpairs(cov)
    evals, evecs = np.linalg.eigh(cov)
    scale = np.abs(evals).max(axis=1)
    np.testing.assert_array_less(np.abs(values - evals[:, 0]), value_tol * np.maximum(scale, 1e-300) + 1e-300)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-12)
    # an eigenvector of the smallest eigenvalue: cov v = value v (whatever the basis where it is not unique)
    residual = np.linalg.norm(np.einsum("oab,ob->oa", cov, vectors) - values[:, None] * vectors, axis=1)
    np.testing.assert_array_less(residual, 1e-9 * np.maximum(scale, 1e-300) + 1e-300)
    return values, vectors, evecs


def test_smallest_eigenpairs_match_eigh_on_random_and_flat_covariances():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4000, 3, 3))
    cov = x @ x.transpose(0, 2, 1) * rng.uniform(1e-6, 10.0, (4000, 1, 1))
    # flat patches: points on a tilted plane with a little noise, as the anchoring sees them
    pts = rng.normal(size=(2000, 32, 3)) * np.array([1.0, 1.0, 1e-3])
    rot = np.linalg.qr(rng.normal(size=(2000, 3, 3)))[0]
    pts = pts @ rot
    pts -= pts.mean(axis=1, keepdims=True)
    flat = pts.transpose(0, 2, 1) @ pts / 32
    for c in (cov, flat):
        _, vectors, evecs = _assert_smallest_pairs_match_eigh(c)
        np.testing.assert_allclose(np.abs(np.einsum("od,od->o", vectors, evecs[:, :, 0])), 1.0, atol=1e-8)


def test_smallest_eigenpairs_of_degenerate_covariances_are_eigenpairs():
    """Zero, isotropic, line-like (two equal smallest eigenvalues) and exactly planar (rank 2) matrices, which the
    closed form hands to eigh or solves exactly; an empty batch."""
    rng = np.random.default_rng(8)
    u = rng.normal(size=3)
    line = np.outer(u, u)
    q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    in_plane = q @ np.diag([0.0, 1.0, 2.0]) @ q.T  # points exactly on a plane: normal q[:, 0]
    cov = np.stack([np.zeros((3, 3)), np.eye(3) * 2.5, line, in_plane, np.diag([1.0, 1.0, 3.0]),
                    np.diag([3.0, 1.0, 1.0 + 1e-14])])
    values, vectors, _ = _assert_smallest_pairs_match_eigh(cov)
    assert values[0] == 0.0 and values[1] == pytest.approx(2.5)
    np.testing.assert_allclose(np.abs(vectors[3] @ q[:, 0]), 1.0, atol=1e-10)
    empty_values, empty_vectors = smallest_eigenpairs(np.zeros((0, 3, 3)))
    assert empty_values.shape == (0,) and empty_vectors.shape == (0, 3)
