"""The inside test of a mesh's solid when the mesh is several closed parts, against analytic answers."""
import numpy as np
import pytest
import trimesh

from occnet_ros.data.mesh_sources import mesh_contains
from occnet_ros.evaluation.metrics import evaluate_mesh, inside_mesh, prepare_ground_truth
from occnet_ros.data.solid_inside import mesh_parts, on_solid_boundary, solid_inside


SHIFT = np.array([0.5, 0.2, 0.1])


def two_boxes(shift=SHIFT):
    """Two unit cubes centred at 0 and at ``shift``, overlapping; the solid is their union."""
    a = trimesh.creation.box((1.0, 1.0, 1.0))
    b = trimesh.creation.box((1.0, 1.0, 1.0))
    b.apply_translation(shift)
    return trimesh.util.concatenate([a, b])


def in_box(p, centre):
    return (np.abs(p - centre) < 0.5).all(axis=1)


def test_overlapping_parts_are_united_where_whole_mesh_parity_is_wrong():
    mesh = two_boxes()
    p = np.random.default_rng(0).uniform([-0.7, -0.7, -0.7], [1.2, 0.9, 0.8], size=(20000, 3))
    truth = in_box(p, 0.0) | in_box(p, SHIFT)
    got = solid_inside(mesh, p, 3, np.random.default_rng(1))
    assert np.mean(got != truth) < 1e-3
    # the old test (parity over the whole mesh) calls the overlap outside: that is the defect fixed here
    parity = inside_mesh(mesh, p, 3, np.random.default_rng(1))
    overlap = in_box(p, 0.0) & in_box(p, SHIFT)
    assert overlap.sum() > 1000 and parity[overlap].mean() < 0.01 and got[overlap].all()


def test_training_labels_unite_overlapping_spheres():
    a = trimesh.creation.icosphere(subdivisions=4, radius=0.05)
    b = trimesh.creation.icosphere(subdivisions=4, radius=0.05)
    b.apply_translation((0.04, 0.0, 0.0))
    mesh = trimesh.util.concatenate([a, b])
    p = np.random.default_rng(2).uniform(-0.07, 0.11, size=(20000, 3))
    truth = (np.linalg.norm(p, axis=1) < 0.05) | (np.linalg.norm(p - [0.04, 0, 0], axis=1) < 0.05)
    assert np.mean(mesh_contains(mesh, p) != truth) < 0.01  # only the faceting of the spheres differs


def test_inverted_part_inside_another_is_a_cavity_and_alone_is_misoriented():
    outer = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    inner = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    inner.invert()
    hollow = trimesh.util.concatenate([outer, inner])
    assert list(mesh_parts(hollow).signs) == [1, -1]
    q = np.array([[0.0, 0.0, 0.0], [0.75, 0.0, 0.0], [0.0, -0.8, 0.0], [1.2, 0.0, 0.0]])
    assert solid_inside(hollow, q).tolist() == [False, True, True, False]
    lone = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    lone.invert()  # a mis-oriented mesh, not a cavity: still a solid
    assert mesh_parts(lone).signs.tolist() == [1]
    assert solid_inside(lone, q).tolist() == [True, False, False, False]


def test_open_part_is_a_vote_as_before():
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    top = np.flatnonzero(box.face_normals[:, 2] > 0.9)
    open_box = trimesh.Trimesh(box.vertices, np.delete(box.faces, top, axis=0), process=False)
    parts = mesh_parts(open_box)
    assert len(parts) == 1 and not parts.closed[0]
    p = np.random.default_rng(0).uniform(-0.3, 0.3, (2000, 3))  # well inside: most rays hit once
    got = solid_inside(open_box, p, 3, np.random.default_rng(0), n_rays_open=9)
    assert got.mean() > 0.95
    assert np.array_equal(got, inside_mesh(open_box, p, 9, np.random.default_rng(0)))


def test_buried_faces_are_not_surface():
    mesh = two_boxes()
    parts = mesh_parts(mesh)
    assert len(parts) == 2
    faces = np.asarray(mesh.faces)
    tri = np.asarray(mesh.vertices)[faces]
    w = np.random.default_rng(4).dirichlet([1.0, 1.0, 1.0], size=len(faces))
    pts = np.einsum("fk,fkd->fd", w, tri)  # one random point on every face
    keep = on_solid_boundary(parts, pts, np.arange(len(faces)))
    a_part = parts.face_part == parts.face_part[0]
    truth = np.where(a_part, ~in_box(pts, SHIFT), ~in_box(pts, 0.0))
    assert keep.tolist() == truth.tolist() and 0 < truth.sum() < len(faces)


def test_ground_truth_of_overlapping_parts_scores_its_union_perfectly():
    """A prediction that is the union box itself scores IoU 1 against the two-part ground truth and its
    surface samples all lie on the union's surface (none on the buried faces)."""
    gt = two_boxes(np.array([0.5, 0.0, 0.0]))  # union: the box [-0.5, 1.0] x [-0.5, 0.5]^2
    union = trimesh.creation.box((1.5, 1.0, 1.0))
    union.apply_translation((0.25, 0.0, 0.0))
    g = prepare_ground_truth(gt)
    assert g.watertight
    assert g.occupancy.mean() == pytest.approx(1.5 / 1.1 ** 3 / 1.5 ** 3, rel=0.02)  # normalised: edge 1.5 -> 1
    half = np.array([0.5, 1.0 / 3.0, 1.0 / 3.0])  # the union's half extents, normalised
    on_surface = np.isclose(np.abs(g.points), half, atol=1e-6).any(axis=1)
    assert on_surface.all()
    m = evaluate_mesh(union, g)
    assert m.iou == 1.0 and m.fscore > 0.999


def test_teddy_solid_is_the_union_of_its_convex_hulls():
    """The evaluation teddy is 15 overlapping convex hulls. Its solid, against a per-part reference
    (open3d's own occupancy of each part alone, any part), and the old whole-mesh parity's false
    cavities; the ground truth scored against itself is perfect."""
    import open3d as o3d

    from occnet_ros.evaluation.metrics import MetricsConfig
    from occnet_ros.evaluation.protocol import evaluation_object

    teddy = evaluation_object("teddy").mesh
    parts = teddy.split(only_watertight=False)
    assert len(parts) == 15 and all(p.is_watertight for p in parts)
    lo, hi = teddy.bounds
    p = np.random.default_rng(5).uniform(lo, hi, size=(20000, 3)).astype(np.float32)
    reference = np.zeros(len(p), dtype=bool)
    for part in parts:
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(np.asarray(part.vertices, np.float32)),
                            o3d.core.Tensor(np.asarray(part.faces, np.uint32)))
        reference |= scene.compute_occupancy(o3d.core.Tensor(p), nsamples=3).numpy() > 0.5
    got = solid_inside(teddy, p, 3, np.random.default_rng(6))
    new_err = np.mean(got != reference)
    old_err = np.mean(inside_mesh(teddy, p, 3, np.random.default_rng(6)) != reference)  # the old test
    print(f"disagreement with the per-part reference: {new_err:.5f} (old whole-mesh parity {old_err:.5f})")
    assert new_err < 5e-4 and old_err > 10 * new_err + 1e-3
    m = evaluate_mesh(teddy, teddy, MetricsConfig(n_points_iou=20000))  # 100k surface samples: F-score 1
    assert m.iou == 1.0 and m.fscore > 0.999 and m.gt_watertight
