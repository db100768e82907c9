"""Mesh simplification before publishing: face budget, surface kept (Hausdorff distance on a sphere),
closed meshes stay closed, the closed-surface check against trimesh as reference, input errors."""
import numpy as np
import pytest
import trimesh

from occnet_ros.perception.mesh_ops import MIN_CLOSED_FACES, is_closed_surface, simplify_mesh

RADIUS = 0.1  # metres


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)  # 20480 faces, closed


def one_sided_distance(a: trimesh.Trimesh, b: trimesh.Trimesh, n: int, seed: int) -> float:
    """Largest distance from ``n`` points sampled on ``a``'s surface (and its vertices) to ``b``'s surface."""
    pts, _ = trimesh.sample.sample_surface(a, n, seed=seed)
    pts = np.concatenate([pts, a.vertices])
    return float(trimesh.proximity.closest_point(b, pts)[1].max())


def test_sphere_within_budget_and_close(sphere):
    target = 2000
    out = simplify_mesh(sphere.vertices, sphere.faces, target)
    assert out.simplified and out.note == ""
    assert 0.8 * target <= len(out.faces) <= target
    assert out.vertices.dtype == np.float64 and out.faces.dtype == np.int64
    assert np.array_equal(np.unique(out.faces), np.arange(len(out.vertices)))  # no unreferenced vertices
    simple = trimesh.Trimesh(out.vertices, out.faces, process=False)
    assert simple.is_watertight and simple.is_winding_consistent and is_closed_surface(out.faces)
    assert simple.volume > 0  # outward orientation kept
    # symmetric Hausdorff distance (sampled) to the input: under 1.5 % of the radius
    hausdorff = max(one_sided_distance(simple, sphere, 3000, 0), one_sided_distance(sphere, simple, 3000, 1))
    assert hausdorff < 0.015 * RADIUS, hausdorff
    # and against the exact sphere (slow reference: the distance to the true surface is | |p| - r |)
    pts, _ = trimesh.sample.sample_surface(simple, 3000, seed=2)
    assert np.abs(np.linalg.norm(pts, axis=1) - RADIUS).max() < 0.015 * RADIUS


def test_coarser_budget_costs_accuracy_but_stays_within_budget(sphere):
    fine = simplify_mesh(sphere.vertices, sphere.faces, 2000)
    coarse = simplify_mesh(sphere.vertices, sphere.faces, 200)
    assert len(coarse.faces) <= 200 and is_closed_surface(coarse.faces)
    dev = [np.abs(np.linalg.norm(m.vertices, axis=1) - RADIUS).max() for m in (fine, coarse)]
    assert dev[0] < dev[1] < 0.1 * RADIUS


def test_small_meshes_and_zero_budget_unchanged(sphere):
    for budget in (0, len(sphere.faces), len(sphere.faces) + 1):
        out = simplify_mesh(sphere.vertices, sphere.faces, budget)
        assert not out.simplified and out.note == ""
        np.testing.assert_array_equal(out.vertices, sphere.vertices)
        np.testing.assert_array_equal(out.faces, sphere.faces)
    empty = simplify_mesh(np.zeros((0, 3)), np.zeros((0, 3), int), 100)
    assert empty.faces.shape == (0, 3) and not empty.simplified


def test_marching_cubes_mesh_stays_closed():
    from occnet_ros.reconstruction.mise import mesh_from_values

    g = np.linspace(-0.55, 0.55, 49)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    field = (0.35 + 0.06 * np.sin(9 * x) * np.cos(7 * y) - np.sqrt(x * x + y * y + z * z)).astype(np.float32)
    v, f = mesh_from_values(field, 0.0, 0.55)
    assert is_closed_surface(f) and len(f) > 3000
    out = simplify_mesh(v, f, 1000)
    assert out.simplified and len(out.faces) <= 1000 and is_closed_surface(out.faces)


def test_open_meshes_simplify_too(sphere):
    keep = sphere.triangles_center[:, 2] > 0  # upper hemisphere: an open surface
    half = trimesh.Trimesh(sphere.vertices, sphere.faces[keep], process=False)
    half.remove_unreferenced_vertices()
    out = simplify_mesh(half.vertices, half.faces, 1000)
    assert out.simplified and len(out.faces) <= 1000 and not is_closed_surface(out.faces)
    assert np.abs(np.linalg.norm(out.vertices, axis=1) - RADIUS).max() < 0.03 * RADIUS


def test_decimation_that_opens_a_closed_mesh_is_discarded(sphere):
    def drops_a_face(v, f, target):  # TEST DOUBLE of a decimation that leaves a hole
        return v, f[1:target + 1]

    out = simplify_mesh(sphere.vertices, sphere.faces, 500, decimate=drops_a_face)
    assert not out.simplified and "open the closed mesh" in out.note
    assert len(out.faces) == len(sphere.faces)
    opened = simplify_mesh(sphere.vertices, sphere.faces, 500, keep_closed=False, decimate=drops_a_face)
    assert opened.simplified and len(opened.faces) == 500
    gone = simplify_mesh(sphere.vertices, sphere.faces, 500, decimate=lambda v, f, t: (v, f[:0]))
    assert not gone.simplified and "removed every face" in gone.note


def test_is_closed_surface_matches_trimesh(sphere):
    rng = np.random.default_rng(0)
    box = trimesh.creation.box((0.1, 0.2, 0.3))
    two = trimesh.util.concatenate([sphere, box])
    flipped = sphere.faces.copy()
    flipped[5] = flipped[5, ::-1]
    doubled = np.concatenate([box.faces, box.faces])  # every edge used four times
    cases = [sphere.faces, box.faces, two.faces, sphere.faces[1:], flipped, doubled,
             rng.integers(0, 50, size=(40, 3))]
    cases[-1] = cases[-1][(cases[-1][:, 0] != cases[-1][:, 1]) & (cases[-1][:, 1] != cases[-1][:, 2])
                          & (cases[-1][:, 0] != cases[-1][:, 2])]
    verts = [sphere.vertices, box.vertices, two.vertices, sphere.vertices, sphere.vertices, box.vertices,
             rng.normal(size=(50, 3))]
    for v, f in zip(verts, cases):
        ref = trimesh.Trimesh(v, f, process=False)
        assert is_closed_surface(f) == (ref.is_watertight and ref.is_winding_consistent)
    assert [is_closed_surface(f) for f in cases[:6]] == [True, True, True, False, False, False]
    assert not is_closed_surface(np.zeros((0, 3), int))
    assert not is_closed_surface(np.array([[0, 0, 1], [0, 1, 2]]))  # a face repeating a vertex


@pytest.mark.parametrize("kwargs,words", [
    ({"max_faces": 2}, f"0 (off) or >= {MIN_CLOSED_FACES}"),
    ({"max_faces": -1}, "0 (off) or >="),
    ({"max_faces": 10.5}, "must be an integer"),
    ({"vertices": np.zeros((4, 2))}, "vertices must have shape (V, 3)"),
    ({"faces": np.zeros((4, 4), int)}, "faces must have shape (F, 3)"),
    ({"faces": np.array([[0, 1, 9]])}, "face indices must be in [0, 4)"),
    ({"faces": np.array([[0.0, 1.0, 2.0]])}, "integer vertex indices"),
    ({"vertices": np.full((4, 3), np.nan)}, "NaN or inf"),
])
def test_bad_input_is_named(kwargs, words):
    args = {"vertices": np.eye(4, 3), "faces": np.array([[0, 1, 2], [0, 2, 3]]), "max_faces": 4}
    args.update(kwargs)
    with pytest.raises(ValueError) as e:
        simplify_mesh(args["vertices"], args["faces"], args["max_faces"])
    assert words in str(e.value)
