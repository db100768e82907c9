"""Evaluation metrics on shapes with known answers, and the fast routines against slow references."""
import numpy as np
import pytest
import trimesh
from scipy.spatial.distance import cdist

from occnet_ros.evaluation.metrics import (MetricsConfig, evaluate_mesh, inside_mesh, is_watertight,
                                           normalization_of, prepare_ground_truth, sample_surface,
                                           surface_metrics)


def sphere(radius=0.05, centre=(0.1, 0.2, 0.3), subdivisions=4):
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    m.apply_translation(centre)
    return m


def lens_iou(r, d):
    """IoU of two balls of radius r whose centres are d apart (lens volume formula)."""
    lens = np.pi * (4 * r + d) * (2 * r - d) ** 2 / 12.0
    return lens / (2 * 4.0 / 3.0 * np.pi * r ** 3 - lens)


def test_identical_meshes():
    gt = sphere()
    m = evaluate_mesh(gt.copy(), gt)
    assert m.iou == 1.0
    assert m.chamfer_l1 < 0.004  # only the sampling spacing of 100k points remains
    assert m.fscore > 0.999 and m.normal_consistency > 0.995
    assert m.pred_watertight and m.gt_watertight and m.pred_faces == len(gt.faces)


@pytest.mark.parametrize("direction", [(1, 0, 0), (1, 2, -2)])
@pytest.mark.parametrize("shift", [0.03, 0.08])
def test_shifted_sphere_iou_matches_lens_formula(shift, direction):
    r = 0.05  # metres; the normalised frame makes the radius 0.5 and the shift shift / 0.1
    gt = sphere(r, subdivisions=5)
    pred = gt.copy()
    u = np.asarray(direction, float) / np.linalg.norm(direction)
    pred.apply_translation(u * shift * 2 * r)
    m = evaluate_mesh(pred, gt)
    assert m.iou == pytest.approx(lens_iou(0.5, shift), abs=0.01)
    # the surfaces are `shift` apart at the front and back; the mean distance is a fraction of it
    assert 0.1 * shift < m.chamfer_l1 < shift


def test_cube_and_scaled_cube():
    gt = trimesh.creation.box(extents=(0.2, 0.2, 0.2))
    gt.apply_translation((1.0, -2.0, 0.5))
    # s = 0.9: every face of the prediction is 0.05 (normalised) inside its GT face
    pred = gt.copy()
    pred.apply_scale(0.9)
    pred.apply_translation(gt.centroid - pred.centroid)
    m = evaluate_mesh(pred, gt)
    assert m.iou == pytest.approx(0.9 ** 3, abs=0.01)
    assert 0.05 <= m.accuracy < 0.055
    # completeness: mean over a GT face of sqrt(0.05^2 + edge-band excess^2), integrated on a fine grid
    g = (np.arange(2000) + 0.5) / 2000 - 0.5
    u, v = np.meshgrid(g, g)
    expected = np.sqrt(0.05 ** 2 + np.maximum(np.abs(u) - 0.45, 0) ** 2
                       + np.maximum(np.abs(v) - 0.45, 0) ** 2).mean()
    assert m.completeness == pytest.approx(expected, abs=0.002)
    assert m.fscore == 0.0 and m.precision == 0.0
    assert m.normal_consistency > 0.95
    # s = 0.99: faces 0.005 apart, inside the 0.01 F-score threshold
    pred = gt.copy()
    pred.apply_scale(0.99)
    pred.apply_translation(gt.centroid - pred.centroid)
    m = evaluate_mesh(pred, gt)
    assert m.iou == pytest.approx(0.99 ** 3, abs=0.01)
    assert m.fscore > 0.95


def test_empty_prediction():
    gt = sphere()
    for pred in (None, trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), int))):
        m = evaluate_mesh(pred, gt, MetricsConfig(n_points_iou=5000, n_points_surface=5000))
        assert m.iou == 0.0 and m.fscore == 0.0 and m.recall == 0.0
        assert m.chamfer_l1 is None and m.normal_consistency is None and m.pred_faces == 0


def test_metrics_are_deterministic_and_seeded():
    gt, pred = sphere(), sphere(0.045, (0.105, 0.2, 0.3), 3)
    cfg = MetricsConfig(n_points_iou=20000, n_points_surface=20000)
    a, b = evaluate_mesh(pred, gt, cfg), evaluate_mesh(pred, gt, cfg)
    assert a == b
    c = evaluate_mesh(pred, gt, MetricsConfig(n_points_iou=20000, n_points_surface=20000, seed=1))
    assert c.iou != a.iou and c.iou == pytest.approx(a.iou, abs=0.02)
    # scoring against the prepared GT gives the very same numbers
    assert evaluate_mesh(pred, prepare_ground_truth(gt, cfg)) == a


def test_inside_mesh_against_analytic_sphere():
    rng = np.random.default_rng(0)
    m = sphere(0.5, (0, 0, 0), 4)
    p = rng.uniform(-0.6, 0.6, (20000, 3))
    inside = inside_mesh(m, p, 3, np.random.default_rng(1))
    r = np.linalg.norm(p, axis=1)
    far = np.abs(r - 0.5) > 0.01  # the icosphere's facets stay within 0.01 of the true sphere
    assert np.array_equal(inside[far], r[far] < 0.5)


def test_inside_mesh_open_box_is_a_vote():
    box = trimesh.creation.box(extents=(1, 1, 1))
    top = np.flatnonzero(box.face_normals[:, 2] > 0.9)
    open_box = trimesh.Trimesh(box.vertices, np.delete(box.faces, top, axis=0), process=False)
    assert is_watertight(box) and not is_watertight(open_box)
    p = np.random.default_rng(0).uniform(-0.3, 0.3, (2000, 3))  # well inside: most rays hit once
    assert inside_mesh(open_box, p, 9, np.random.default_rng(0)).mean() > 0.95
    outside = p + np.array([0, 0, 2.0])
    assert not inside_mesh(open_box, outside, 9, np.random.default_rng(0)).any()
    m = evaluate_mesh(open_box, box, MetricsConfig(n_points_iou=20000, n_points_surface=20000))
    assert not m.pred_watertight and m.gt_watertight and m.iou > 0.85


def test_surface_metrics_against_brute_force():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(300, 3)) * 0.1, rng.normal(size=(250, 3)) * 0.1
    na = rng.normal(size=(300, 3))
    nb = rng.normal(size=(250, 3))
    na /= np.linalg.norm(na, axis=1, keepdims=True)
    nb /= np.linalg.norm(nb, axis=1, keepdims=True)
    s = surface_metrics(a, na, b, nb, 0.02)
    d = cdist(a, b)
    acc, comp = d.min(axis=1), d.min(axis=0)
    nc = 0.5 * (np.abs(np.sum(na * nb[d.argmin(axis=1)], axis=1)).mean()
                + np.abs(np.sum(nb * na[d.argmin(axis=0)], axis=1)).mean())
    prec, rec = (acc < 0.02).mean(), (comp < 0.02).mean()
    assert s["accuracy"] == pytest.approx(acc.mean())
    assert s["completeness"] == pytest.approx(comp.mean())
    assert s["chamfer_l1"] == pytest.approx(0.5 * (acc.mean() + comp.mean()))
    assert s["normal_consistency"] == pytest.approx(nc)
    assert s["fscore"] == pytest.approx(2 * prec * rec / (prec + rec))


def test_sample_surface_is_area_weighted_and_on_the_surface():
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [3, 0, 1], [0, 2, 1]], float)
    m = trimesh.Trimesh(v, [[0, 1, 2], [3, 4, 5]], process=False)  # areas 0.5 and 3
    p, n = sample_surface(m, 70000, np.random.default_rng(0))
    upper = p[:, 2] > 0.5
    assert upper.mean() == pytest.approx(3 / 3.5, abs=0.01)
    assert np.all(p[~upper, 0] + p[~upper, 1] <= 1 + 1e-9)
    assert np.all(p[upper, 0] / 3 + p[upper, 1] / 2 <= 1 + 1e-9) and np.all(p >= -1e-12)
    assert np.allclose(np.abs(n[:, 2]), 1.0)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="odd"):
        MetricsConfig(n_rays=2).validate()
    with pytest.raises(ValueError, match="no faces"):
        normalization_of(trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), int)))
    flat = trimesh.Trimesh(np.zeros((3, 3)), [[0, 1, 2]], process=False)
    with pytest.raises(ValueError, match="degenerate"):
        normalization_of(flat)
    with pytest.raises(ValueError, match="no surface area"):
        sample_surface(flat, 10, np.random.default_rng(0))
