"""Household shape families (occnet_ros/data/shapes_household.py): exact labels against a slow reference,
thin walls through their thickness, watertight meshes, documented sizes, the held-out split, and the
canonical frame of large objects."""
import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from occnet_ros.data.shapes import FAMILIES, FAMILY_WEIGHTS, sample_shape
from occnet_ros.data.shapes_fine import FineShape, RoundedPrism, Scaled
from occnet_ros.data.shapes_household import (HELDOUT_RESERVED, HOUSEHOLD_FAMILIES, SIZE_RANGES, build_household,
                                              heldout_shapes)
from occnet_ros.data.shapes_sdf import (Box, Difference, Ellipsoid, Extrusion, Revolution, Sphere, Torus,
                                        Transformed, Union)

FAMS = list(HOUSEHOLD_FAMILIES)


def reference_contains(shape, p: np.ndarray) -> np.ndarray:
    """Slow reference of ``shape.contains``: the CSG tree walked with explicit inside tests (matplotlib's
    point-in-polygon for profiles and polygons, clamped-distance inequalities for boxes)."""
    if isinstance(shape, (FineShape,)):
        return reference_contains(shape.shape, p)
    if isinstance(shape, Transformed):
        return reference_contains(shape.shape, (p - shape.translation) @ shape.rotation)
    if isinstance(shape, Scaled):
        return reference_contains(shape.shape, p / shape.factor)
    if isinstance(shape, Union):
        return np.any([reference_contains(s, p) for s in shape.parts], axis=0)
    if isinstance(shape, Difference):
        return reference_contains(shape.a, p) & ~reference_contains(shape.b, p)
    if isinstance(shape, Revolution):
        rz = np.stack([np.hypot(p[:, 0] - shape.cx, p[:, 1] - shape.cy), p[:, 2]], axis=1)
        return MplPath(shape.profile).contains_points(rz)
    if isinstance(shape, Box):  # within `rounding` of the shrunk box (clamped distance)
        lo, hi = shape.center - shape.half + shape.rounding, shape.center + shape.half - shape.rounding
        d = p - np.clip(p, lo, hi)
        if shape.rounding == 0:
            return np.all((p > lo) & (p < hi), axis=1)
        return np.sum(d * d, axis=1) < shape.rounding ** 2
    if isinstance(shape, RoundedPrism):
        lo, hi = shape.center - shape.half + shape.corner, shape.center + shape.half - shape.corner
        q = p[:, :2]
        d = q - np.clip(q, lo, hi)
        flat = np.sum(d * d, axis=1) < shape.corner ** 2 if shape.corner > 0 else np.all((q > lo) & (q < hi), axis=1)
        return flat & (p[:, 2] > shape.z0) & (p[:, 2] < shape.z1)
    if isinstance(shape, Extrusion):
        return MplPath(shape.polygon).contains_points(p[:, :2]) & (p[:, 2] > shape.z0) & (p[:, 2] < shape.z1)
    if isinstance(shape, Sphere):
        return np.sum((p - shape.center) ** 2, axis=1) < shape.radius ** 2
    if isinstance(shape, Ellipsoid):
        return np.sum(((p - shape.center) / shape.radii) ** 2, axis=1) < 1.0
    if isinstance(shape, Torus):
        q = p - shape.center
        rho = np.linalg.norm(np.delete(q, shape.axis, axis=1), axis=1)
        return (rho - shape.major) ** 2 + q[:, shape.axis] ** 2 < shape.minor ** 2
    raise TypeError(f"no reference for {type(shape).__name__}")


def _shapes(family: str, n: int) -> list:
    rng = np.random.default_rng(11)
    return [sample_shape(rng, family) for _ in range(n)] + heldout_shapes(family, 2)


@pytest.mark.parametrize("family", FAMS)
def test_contains_matches_the_slow_reference_near_every_wall(family):
    rng = np.random.default_rng(5)
    for shape in _shapes(family, 6):
        lo, hi = shape.bounds
        pts = rng.uniform(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), (60000, 3))
        near = pts[np.abs(shape.sdf(pts)) < 0.0005]  # within 0.5 mm of a wall
        across = [p + s * n for p, n, t in shape.wall_probes for s in rng.uniform(-t, t, 200)]  # through walls
        pts = np.concatenate([pts, near, np.reshape(across, (-1, 3))])
        assert len(near) > 100, (family, len(near))
        got, ref = shape.contains(pts), reference_contains(shape, pts)
        assert got.any() and (~got).any()
        assert np.array_equal(got, ref), (family, shape.design, int(np.sum(got != ref)))


@pytest.mark.parametrize("family", FAMS)
def test_thinnest_wall_is_inside_through_its_thickness_and_outside_on_both_sides(family):
    """Probe lines across walls of the sample with the thinnest walls: inside over the wall's thickness,
    outside on both sides; also in the float16 canonical coordinates the training labels use."""
    rng = np.random.default_rng(2)
    shapes = [sample_shape(rng, family) for _ in range(40)]
    shapes = [s for s in shapes if s.wall_probes]
    shape = min(shapes, key=lambda s: min(t for _, _, t in s.wall_probes))
    thinnest = min(t for _, _, t in shape.wall_probes)
    if family in ("thin_bowl", "pan", "compartment_bin", "plate"):
        assert thinnest < 0.002, (family, thinnest)  # the walls reach down to 1.5 mm
    valid = 0
    for p, n, t in shape.wall_probes:
        s = np.linspace(-1.5 * t, 1.5 * t, 601)
        line = p + s[:, None] * n
        inside = shape.contains(line)
        core = np.abs(s) < 0.5 * t - 1e-5
        if not inside[np.abs(s) < 0.05 * t].all() or inside[np.abs(s) > 0.5 * t + 3e-4].any():
            continue  # the probe hit an opening or a joining wall
        valid += 1
        assert inside[core].all(), (family, t)
        # as the training data store it: canonical units of a 0.45 m object frame, rounded to float16
        scale = 0.45
        c = (line - p) / scale
        back = p + c.astype(np.float16).astype(np.float64) * scale
        lab = shape.contains(back)
        assert lab.sum() >= 0.8 * core.sum() and not lab[0] and not lab[-1], (family, t)
    assert valid >= max(1, len(shape.wall_probes) // 3), (family, valid, len(shape.wall_probes))


@pytest.mark.parametrize("family", FAMS)
def test_meshes_are_watertight_rest_on_the_table_and_agree_with_contains(family):
    from occnet_ros.data.mesh_sources import mesh_contains

    shape = heldout_shapes(family, 1)[0]
    mesh = shape.mesh(48)
    assert mesh.is_watertight and mesh.volume > 0, family
    h = shape.voxel_size(48)
    assert h <= shape.min_feature / 1.5 + 1e-12 or h * 512 >= np.max(np.diff(shape.bounds, axis=0)) - 1e-9
    assert abs(mesh.bounds[0, 2]) < 1.5 * h
    rng = np.random.default_rng(0)
    lo, hi = shape.bounds
    pts = rng.uniform(lo, hi, (30000, 3))
    pts = pts[np.abs(shape.sdf(pts)) > h]
    agree = np.mean(shape.contains(pts) == mesh_contains(mesh, pts))
    assert agree > 0.995, (family, agree)


@pytest.mark.parametrize("family", FAMS)
def test_sizes_are_in_the_documented_ranges(family):
    lo_ok, hi_ok = SIZE_RANGES[family]
    rng = np.random.default_rng(3)
    sizes = []
    for _ in range(200):
        s = sample_shape(rng, family)
        lo, hi = s.bounds
        assert abs(lo[2]) < 1e-9, (family, lo)  # rests on the table plane
        sizes.append(s.size)
    sizes = np.array(sizes)
    assert sizes.min() >= lo_ok - 1e-9 and sizes.max() <= hi_ok + 1e-9, (family, sizes.min(), sizes.max())
    assert sizes.max() - sizes.min() > 0.3 * (hi_ok - lo_ok)  # the range is used, not one size
    # the recorded size is the mesh's: un-yawed extent of household shapes, the scaled extent of large ones
    shape = heldout_shapes(family, 1)[0]
    mesh = shape.mesh(48)
    v = mesh.vertices @ Transformed(shape, np.eye(3), np.zeros(3)).rotation
    if family != "large":
        v = mesh.vertices @ shape.shape.rotation
    assert abs(np.max(np.ptp(v, axis=0)) - shape.size) < 0.04 * shape.size + 2 * shape.voxel_size(48), family


def test_flat_boxes_lie_on_their_largest_face():
    rng = np.random.default_rng(4)
    for _ in range(100):
        s = sample_shape(rng, "flat_box")
        ext = np.diff(s.shape.shape.bounds, axis=0)[0]
        assert 0.01 - 1e-9 <= ext[2] <= 0.05 + 1e-9 and ext[2] <= ext[:2].min()


def test_heldout_shapes_are_fixed_and_never_drawn_by_the_training_sampler():
    grid = np.random.default_rng(9).uniform(-0.25, 0.25, (3000, 3)) + [0, 0, 0.25]
    for family in FAMS:
        a, b = heldout_shapes(family, 3), heldout_shapes(family, 3)
        assert [s.design for s in a] == [0, 1, 2] and all(s.split == "heldout" for s in a)
        for x, y in zip(a, b):
            assert np.array_equal(x.sdf(grid), y.sdf(grid))
        rng = np.random.default_rng(0)
        train = [sample_shape(rng, family) for _ in range(100 if family != "large" else 20)]
        assert min(s.design for s in train) >= HELDOUT_RESERVED and all(s.split == "train" for s in train)
        held = np.stack([s.sdf(grid[:200]) for s in a])
        for s in train[:20]:  # no training draw has the geometry of a held-out shape
            assert not np.any(np.all(np.isclose(held, s.sdf(grid[:200])[None]), axis=1)), family
        with pytest.raises(ValueError, match="not in the train range"):
            build_household(family, HELDOUT_RESERVED - 1, "train")
        with pytest.raises(ValueError, match="not in the heldout range"):
            build_household(family, HELDOUT_RESERVED, "heldout")
    # large shapes scale a household base of the same split
    for s in heldout_shapes("large", 12):
        assert s.base_design is None or s.base_design < HELDOUT_RESERVED
    rng = np.random.default_rng(1)
    for _ in range(12):
        s = sample_shape(rng, "large")
        assert s.base_design is None or s.base_design >= HELDOUT_RESERVED
    # mixed draws as the data generator makes them
    rng = np.random.default_rng(2)
    drawn = [sample_shape(rng, weights={f: 1.0 for f in FAMS if f != "large"}) for _ in range(200)]
    assert min(s.design for s in drawn) >= HELDOUT_RESERVED
    with pytest.raises(ValueError, match="unknown household family"):
        build_household("teapot", 0, "heldout")
    with pytest.raises(ValueError, match=r"n must be in \[0, 1000\]"):
        heldout_shapes("tray", HELDOUT_RESERVED + 1)


def test_registration_keeps_the_default_data_as_it_was():
    from occnet_ros.data import generate as gen

    assert set(HOUSEHOLD_FAMILIES) <= set(FAMILIES) and not set(HOUSEHOLD_FAMILIES) & set(FAMILY_WEIGHTS)
    n_old = len(FAMILY_WEIGHTS) + 3
    assert gen.FAMILY_CODES[n_old - 1] == "hollow_box" and gen.FAMILY_CODES[n_old:] == FAMS


def test_large_objects_map_into_the_box_like_small_ones():
    """The canonical frame scales each observation by its own extent: the observed points of a 0.45 m object
    fill the unit cube as those of a 0.1 m copy do, and (with household_large.yaml's camera distances,
    which keep it in the image) as much of its true surface lies in the network's box."""
    from occnet_ros.config_io import load_config
    from occnet_ros.data.dataset import DataConfig
    from occnet_ros.data.generate import sample_surface
    from occnet_ros.data.virtual_camera import ObjectScene, observe_view, sample_tabletop_pose
    from occnet_ros.reconstruction.normalization import BOX_HALF, canonical_frame_from_observation

    small_cfg = load_config(DataConfig, "config/data/household.yaml")
    large_cfg = load_config(DataConfig, "config/data/household_large.yaml")
    base = heldout_shapes("tray", 1)[0].mesh(48)
    results = {}
    for name, size, cfg in (("small", 0.1, small_cfg), ("large", 0.45, large_cfg)):
        mesh = base.copy()
        mesh.apply_scale(size / float(np.max(base.extents)))
        scene = ObjectScene(mesh)
        rng = np.random.default_rng(0)
        surface = sample_surface(mesh, 4000, rng)
        fill, inside = [], []
        lo, hi = mesh.bounds
        for _ in range(12):
            pose = sample_tabletop_pose(rng, 0.5 * (lo + hi), cfg.distance_range, cfg.elevation_deg_range)
            view = observe_view(scene, pose, cfg.camera, cfg.noise, rng)
            frame = canonical_frame_from_observation(view.points, view.up)
            c = frame.to_canonical(view.points)
            assert np.all(np.abs(c) <= 0.5 + 1e-5)  # observed points: inside the unit cube, 0.05 from the box
            fill.append(float(np.max(np.ptp(c, axis=0))))
            s = frame.to_canonical((surface - pose[:3, 3]) @ pose[:3, :3])
            inside.append(float(np.mean(np.all(np.abs(s) <= BOX_HALF, axis=1))))
        results[name] = (np.mean(fill), np.mean(inside))
    (fill_s, in_s), (fill_l, in_l) = results["small"], results["large"]
    assert abs(fill_s - 1.0) < 1e-3 and abs(fill_l - 1.0) < 1e-3
    assert in_l >= in_s - 0.05, results


def test_named_heldout_groups_for_the_evaluation():
    from occnet_ros.evaluation.heldout import group_table, household_objects

    objs = household_objects(["tray", "flat_box", "tray"], 2, mesh_resolution=24)
    assert [o.name for o in objs] == ["group_tray_0", "group_tray_1", "group_flat_box_0", "group_flat_box_1"]
    assert all(o.mesh.is_watertight for o in objs)
    with pytest.raises(ValueError, match="unknown held-out group"):
        household_objects(["teapot"], 1)
    row = {"iou": 0.5, "fscore": 0.25, "chamfer_l1": 0.01, "n": 2}
    table = group_table([{"views": 4, "variants": {"x": {"groups": {"flat_box": row}}}}])
    assert "| 4 | x | flat_box | 2 | 0.5000 | 0.2500 | 0.0100 |" in table
    assert group_table([{"views": 1, "variants": {"x": {"groups": {}}}}]) == ""
