"""Thin-wall training labels (occnet_ros.data.thin_walls): the fast labels against the slow reference,
thin walls grown on both sides, thick parts and rims left exact, and the data config's switch."""
import dataclasses

import numpy as np
import pytest
import trimesh

from occnet_ros.data import generate as gen
from occnet_ros.data.dataset import DataConfig
from occnet_ros.data.shapes_household import build_household
from occnet_ros.data.thin_walls import thin_wall_labels, thin_wall_labels_reference


def box_contains(extents):
    half = np.asarray(extents) / 2

    def contains(p):
        return np.all(np.abs(np.asarray(p)) < half, axis=1)
    return contains


def test_fast_labels_match_reference_on_household_shapes():
    for family, design in (("pan", 5000), ("compartment_bin", 5001), ("thin_bowl", 5000)):
        shape = build_household(family, design)
        mesh = shape.mesh(40)
        rng = np.random.default_rng(3)
        surface = np.asarray(mesh.sample(200, seed=3))
        ext = float(np.max(mesh.extents))
        q = surface + rng.normal(0.0, 0.01 * ext, surface.shape)
        inside = shape.contains(q)
        fast = thin_wall_labels(q, inside, mesh, shape.contains, 0.006, 0.02)
        slow = thin_wall_labels_reference(q, inside, mesh, shape.contains, 0.006, 0.02)
        # the fast closest points are float32: a point at the dilation radius may flip
        assert (fast != slow).sum() <= 2, family
        assert fast.sum() > inside.sum() + 10, family  # these families have thin walls
        assert np.all(fast[inside]), family  # nothing inside is ever relabelled empty


def test_thin_slab_grows_on_both_faces_but_not_past_its_edge():
    extents = (0.1, 0.1, 0.001)  # a 1 mm plate, 10 cm wide: dilation 0.6 mm, thin below 2 mm
    mesh, contains = trimesh.creation.box(extents), box_contains(extents)
    z = 0.0005
    q = np.array([[0.0, 0.0, z + 0.0004],     # above the top face, within the dilation
                  [0.01, -0.02, -z - 0.0004],  # below the bottom face
                  [0.0, 0.0, z + 0.0008],     # above, farther than the dilation
                  [0.0503, 0.0, 0.0],         # beside the plate's edge: the plate is wide there
                  [0.0, 0.0, 0.0]])           # inside
    lab = thin_wall_labels(q, contains(q), mesh, contains, 0.006, 0.02)
    assert lab.tolist() == [True, True, False, False, True]
    assert np.array_equal(lab, thin_wall_labels_reference(q, contains(q), mesh, contains, 0.006, 0.02))


def test_thick_solid_keeps_exact_labels():
    extents = (0.1, 0.08, 0.06)
    mesh, contains = trimesh.creation.box(extents), box_contains(extents)
    rng = np.random.default_rng(0)
    q = np.asarray(mesh.sample(2000, seed=0)) + rng.normal(0.0, 0.001, (2000, 3))
    assert np.array_equal(thin_wall_labels(q, contains(q), mesh, contains, 0.006, 0.02), contains(q))


def test_bad_lengths_refused():
    mesh = trimesh.creation.box((0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="dilation"):
        thin_wall_labels(np.zeros((1, 3)), np.ones(1, bool), mesh, box_contains((0.1,) * 3), 0.0, 0.02)


def test_data_config_switch_and_cache_key(monkeypatch):
    base = DataConfig(seed=2, n_objects=1, n_val_objects=1, views_per_object=2, mesh_fraction=0.0,
                      mesh_resolution=32, n_input_points=128, n_query_uniform=256, n_query_near_surface=512,
                      family_weights={"pan": 1.0})
    # off by default, and the off state leaves the cache key of older configs as it was
    old = dataclasses.asdict(base)
    for k in ("thin_wall_dilation", "thin_wall_max_thickness"):
        old.pop(k)
    assert base.identity() == old
    assert dataclasses.replace(base, thin_wall_max_thickness=0.05).cache_key("train") == base.cache_key("train")
    thick = dataclasses.replace(base, thin_wall_dilation=0.006)
    thick.validate()
    assert thick.cache_key("train") != base.cache_key("train")
    with pytest.raises(ValueError, match="thin_wall"):
        dataclasses.replace(base, thin_wall_dilation=-0.1).validate()
    a = gen.generate_object(base, np.random.default_rng(4), [])
    b = gen.generate_object(thick, np.random.default_rng(4), [])
    assert np.array_equal(a.queries, b.queries)  # the same samples, only the labels differ
    assert np.all(b.occupancies[a.occupancies]) and b.occupancies.sum() > 1.2 * a.occupancies.sum()
