"""Training-data set: determinism, cache, label consistency, batches, evaluation meshes refused,
fused multi-view samples and cleaned inputs."""
import dataclasses

import numpy as np
import pytest

from occnet_ros.perception.cloud_filter import CleanConfig, clean_cloud
from occnet_ros.config_io import ConfigError, from_dict, load_config
from occnet_ros.data import generate as gen
from occnet_ros.data import mesh_sources as ms
from occnet_ros.data.dataset import DataConfig, load_or_generate
from occnet_ros.data.shapes_sdf import Sphere
from occnet_ros.reconstruction.normalization import BOX_HALF


def small_config(**kw) -> DataConfig:
    base = dict(seed=7, n_objects=3, n_val_objects=2, views_per_object=2, mesh_fraction=0.5,
                mesh_resolution=24, n_input_points=128, n_query_uniform=256, n_query_near_surface=256,
                shard_size=2)
    base.update(kw)
    return DataConfig(**base)


def test_same_config_same_arrays_and_cache_reuse(tmp_path, monkeypatch):
    cfg = small_config()
    a = load_or_generate(cfg, "train", tmp_path / "a", progress=False)
    b = load_or_generate(cfg, "train", tmp_path / "b", progress=False)
    assert len(a) == 6 and a.inputs.dtype == np.float16 and a.occupancies.dtype == bool
    assert a.inputs.shape == (6, 128, 3) and a.queries.shape == (6, 512, 3) and a.occupancies.shape == (6, 512)
    for name in ("inputs", "queries", "occupancies", "family", "frame_scale"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.stats.mesh_objects >= 1  # the random_urdfs path was exercised
    assert gen.FAMILY_CODES.index("random_urdf") in a.family and gen.FAMILY_CODES.index("user_mesh") not in a.family
    # the cache is reused: generation must not run again
    monkeypatch.setattr("occnet_ros.data.dataset.generate_object",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("regenerated")))
    c = load_or_generate(cfg, "train", tmp_path / "a", progress=False)
    assert np.array_equal(a.queries, c.queries) and np.array_equal(a.occupancies, c.occupancies)
    monkeypatch.undo()
    # another seed or split gives other data
    d = load_or_generate(dataclasses.replace(cfg, seed=8), "train", tmp_path / "a", progress=False)
    v = load_or_generate(cfg, "val", tmp_path / "a", progress=False)
    assert not np.array_equal(a.inputs, d.inputs) and len(v) == 4
    assert len(list((tmp_path / "a").iterdir())) == 3


def test_sphere_labels_follow_distance(monkeypatch):
    r = 0.05
    monkeypatch.setattr(gen, "sample_shape", lambda rng, weights=None: _tag(Sphere([0, 0, r], r)))
    cfg = small_config(mesh_fraction=0.0, n_query_uniform=2048, n_query_near_surface=512,
                       mesh_resolution=40)
    obj = gen.generate_object(cfg, np.random.default_rng(0), [])
    assert obj.inputs.shape[0] == 2
    for k in range(2):
        check_sphere_sample(obj, k, r, n_uniform=2048)


def check_sphere_sample(obj, k, r, n_uniform):
    """Sample k of a generated sphere of radius r (metres): labels are inside-the-sphere, the
    near-surface queries straddle it, the inputs lie on it, the uniform queries fill the box."""
    q = obj.queries[k].astype(np.float64)
    occ = obj.occupancies[k]
    r_c = r / obj.frame_scale[k]  # sphere radius in canonical units
    center = q[:n_uniform][occ[:n_uniform]].mean(axis=0)
    dist = np.linalg.norm(q - center, axis=1)
    clear = np.abs(dist - r_c) > 0.05 * r_c
    assert np.mean(occ[clear] == (dist[clear] < r_c)) > 0.995
    assert 0.2 < occ[n_uniform:].mean() < 0.8
    # inputs lie on the sphere (partial view, sensor noise of a few mm)
    x = obj.inputs[k].astype(np.float64)
    assert np.median(np.abs(np.linalg.norm(x - center, axis=1) - r_c)) < 0.1 * r_c
    assert np.all(np.abs(q[:n_uniform]) <= BOX_HALF + 1e-3)


def _tag(shape):
    shape.family = "sphere"
    return shape


def test_sample_batch_shapes_and_mix(tmp_path):
    ds = load_or_generate(small_config(), "train", tmp_path, progress=False)
    rng = np.random.default_rng(0)
    x, q, occ = ds.sample_batch(rng, batch_size=5, n_input_points=100, n_query_points=300, input_noise=0.01)
    assert x.shape == (5, 100, 3) and q.shape == (5, 300, 3) and occ.shape == (5, 300)
    assert x.dtype == q.dtype == occ.dtype == np.float32
    assert set(np.unique(occ)) <= {0.0, 1.0}
    assert np.all(np.abs(q[:, :150]) <= BOX_HALF + 1e-3)  # first half: uniform in the box
    x2, _, _ = ds.sample_batch(rng, 2, 1000, 2000)  # more than stored: drawn with replacement
    assert x2.shape == (2, 1000, 3)


def test_evaluation_meshes_are_refused():
    root = ms.data_root()
    for name, (rel, _) in ms.EVALUATION_OBJECTS.items():
        assert (root / rel).exists(), name
        assert ms.is_evaluation_mesh(root / rel), name
        with pytest.raises(ms.EvaluationMeshError):
            ms.load_training_mesh(root / rel)
    assert ms.is_evaluation_mesh(root / "duck_vhacd.obj")
    paths = ms.training_mesh_paths()
    assert len(paths) == 1000 and not any(ms.is_evaluation_mesh(p) for p, _ in paths)
    m = ms.load_training_mesh(*paths[0])
    assert abs(m.bounds[0, 2]) < 1e-9 and 0.03 < m.extents.max() < 0.3


def test_config_validation_and_default_file():
    cfg = load_config(DataConfig, "config/data/default.yaml")
    assert cfg.n_objects >= 1000
    with pytest.raises(ConfigError, match="mesh_fraction"):
        from_dict(DataConfig, {"mesh_fraction": 1.5})
    with pytest.raises(ConfigError, match="unknown"):
        from_dict(DataConfig, {"n_objectz": 3})
    with pytest.raises(ValueError, match="split"):
        load_or_generate(small_config(), "test", "/nonexistent")
    with pytest.raises(ValueError, match="fused_max_views"):
        small_config(fused_max_views=1).validate()
    with pytest.raises(ValueError, match="fused_samples_per_object"):
        small_config(fused_samples_per_object=-1).validate()
    with pytest.raises(ValueError, match="outlier_neighbors"):
        from_dict(DataConfig, {"clean": {"outlier_neighbors": -1}}).validate()
    assert not cfg.clean_inputs and cfg.fused_samples_per_object == 0  # default data: single raw views
    mv = load_config(DataConfig, "config/data/multiview.yaml")
    assert mv.clean_inputs and mv.fused_samples_per_object == 2 and mv.fused_max_views == 4
    assert mv.clean == CleanConfig()  # cleaned as the node and the evaluation clean
    assert dataclasses.replace(mv, clean_inputs=False, fused_samples_per_object=0) == cfg


# --- fused multi-view samples and cleaned inputs ---------------------------------------------------

def _spy(monkeypatch, outlier: float = 0.0):
    """Record every observed view (points, up, pose) and every cloud handed to the normalisation;
    ``outlier`` > 0 appends one point that far behind the cloud's centroid to every observation."""
    seen = {"views": [], "normalised": []}
    observe, canonical = gen.observe, gen.canonical_frame_from_observation

    def observe_spy(scene, pose, *a, **k):
        pts, up = observe(scene, pose, *a, **k)
        if outlier > 0 and len(pts):
            far = pts.mean(axis=0) + np.array([0.0, 0.0, outlier], np.float32)
            pts = np.concatenate([pts, far[None]]).astype(np.float32)
        seen["views"].append((pts.copy(), up.copy(), np.array(pose, np.float64)))
        return pts, up

    def canonical_spy(points, up, *a, **k):
        seen["normalised"].append((np.array(points, np.float64), np.array(up, np.float64)))
        return canonical(points, up, *a, **k)

    monkeypatch.setattr(gen, "observe", observe_spy)
    monkeypatch.setattr(gen, "canonical_frame_from_observation", canonical_spy)
    return seen


def _sphere_config(**kw) -> DataConfig:
    base = dict(mesh_fraction=0.0, views_per_object=4, n_query_uniform=2048, n_query_near_surface=512,
                mesh_resolution=40, fused_samples_per_object=2, fused_max_views=3)
    base.update(kw)
    return small_config(**base)


def test_fused_samples_follow_the_protocol_frame_and_labels(monkeypatch):
    r = 0.05
    monkeypatch.setattr(gen, "sample_shape", lambda rng, weights=None: _tag(Sphere([0, 0, r], r)))
    seen = _spy(monkeypatch)
    cfg = _sphere_config()
    obj = gen.generate_object(cfg, np.random.default_rng(3), [])
    assert obj.stats.views == 4 and obj.stats.views_failed == 0 and obj.stats.fused_views == 2
    assert obj.inputs.shape == (6, 128, 3) and obj.queries.shape == (6, 2560, 3)
    assert obj.occupancies.shape == (6, 2560) and obj.frame_scale.shape == (6,)
    views = seen["views"]
    assert len(seen["normalised"]) == 4 + 2
    world = [p.astype(np.float64) @ pose[:3, :3].T + pose[:3, 3] for p, _, pose in views]
    for fused, up in seen["normalised"][4:]:
        # the fused cloud: 2..fused_max_views distinct views, in the first one's optical frame, its up
        first = [i for i, (p, _, _) in enumerate(views)
                 if len(p) <= len(fused) and np.allclose(fused[:len(p)], p, atol=1e-5)]
        assert len(first) == 1
        pose0 = views[first[0]][2]
        assert np.allclose(up, views[first[0]][1])
        fused_world = fused @ pose0[:3, :3].T + pose0[:3, 3]
        used, at = [], 0
        while at < len(fused):
            match = [i for i, w in enumerate(world) if i not in used and at + len(w) <= len(fused)
                     and np.allclose(fused_world[at:at + len(w)], w, atol=1e-5)]
            assert match, f"rows {at}.. of the fused cloud are no view in camera {first[0]}'s frame"
            used.append(match[0])
            at += len(world[match[0]])
        assert used[0] == first[0] and 2 <= len(used) <= cfg.fused_max_views
    for k in range(4, 6):
        # labels of the fused sample describe the sphere the fused inputs lie on (same frame, same scale)
        check_sphere_sample(obj, k, r, n_uniform=2048)


def test_no_fused_samples_from_a_single_view(monkeypatch):
    monkeypatch.setattr(gen, "sample_shape", lambda rng, weights=None: _tag(Sphere([0, 0, 0.05], 0.05)))
    cfg = _sphere_config(views_per_object=1, n_query_uniform=64, n_query_near_surface=64)
    obj = gen.generate_object(cfg, np.random.default_rng(0), [])
    assert obj.inputs.shape[0] == 1 and obj.stats.fused_views == 0


def test_clean_inputs_cleans_each_view_before_normalising(monkeypatch):
    r = 0.05
    monkeypatch.setattr(gen, "sample_shape", lambda rng, weights=None: _tag(Sphere([0, 0, r], r)))
    cfg = _sphere_config(n_query_uniform=64, n_query_near_surface=64, clean_inputs=True)
    seen = _spy(monkeypatch, outlier=0.3)  # a flying point 30 cm behind every view
    obj = gen.generate_object(cfg, np.random.default_rng(1), [])
    assert obj.stats.views == 4 and obj.stats.views_failed == 0 and obj.inputs.shape[0] == 6
    for (raw, _, _), (normalised, _) in zip(seen["views"], seen["normalised"][:4]):
        assert np.array_equal(normalised, clean_cloud(raw, CleanConfig()).points.astype(np.float64))
    for cloud, _ in seen["normalised"]:  # single and fused: the outlier is gone, the extent is the sphere's
        assert np.ptp(cloud, axis=0).max() < 0.15
    assert np.all(obj.frame_scale < 0.15)
    # without cleaning (same spy, same outliers) it reaches the normalisation and blows up the scale
    raw = gen.generate_object(dataclasses.replace(cfg, clean_inputs=False), np.random.default_rng(1), [])
    assert np.all(raw.frame_scale > 0.2)


def test_fused_and_cleaned_data_are_deterministic(tmp_path):
    cfg = small_config(n_objects=2, mesh_fraction=0.0, views_per_object=3, n_input_points=64,
                       n_query_uniform=64, n_query_near_surface=64, clean_inputs=True,
                       fused_samples_per_object=2, fused_max_views=3)
    a = load_or_generate(cfg, "train", tmp_path / "a", progress=False)
    b = load_or_generate(cfg, "train", tmp_path / "b", progress=False)
    assert a.stats.fused_views == 4 and len(a) == a.stats.views + 4  # counters survive the shard files
    for name in ("inputs", "queries", "occupancies", "family", "frame_scale", "object_index"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    c = load_or_generate(dataclasses.replace(cfg, seed=8), "train", tmp_path / "a", progress=False)
    assert not np.array_equal(a.inputs, c.inputs)


def test_own_mesh_folders(tmp_path):
    """mesh_dirs: users' meshes are found recursively, split 9:1 into train/val, and generate samples;
    a missing or empty folder is an error that names it."""
    import trimesh

    for i in range(10):
        sub = tmp_path / "meshes" / ("a" if i < 5 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        trimesh.creation.box(extents=(2.0 + 0.1 * i, 1.0, 0.5)).export(sub / f"box{i}.{'stl' if i % 2 else 'ply'}")
    (tmp_path / "meshes" / "notes.txt").write_text("not a mesh")
    paths = ms.user_mesh_paths([str(tmp_path / "meshes")])
    assert len(paths) == 10 and all(p.suffix in (".stl", ".ply") for p, _ in paths)
    cfg = small_config(mesh_fraction=1.0, use_random_urdfs=False, mesh_dirs=[str(tmp_path / "meshes")],
                       views_per_object=1, n_objects=2, n_val_objects=1)
    from occnet_ros.data.dataset import split_meshes

    train, val = split_meshes(cfg, "train"), split_meshes(cfg, "val")
    assert len(train) == 9 and len(val) == 1 and not set(train) & set(val)
    data = load_or_generate(cfg, "train", tmp_path / "cache", progress=False)
    assert data.stats.mesh_objects == 2 and len(data) == 2
    assert (data.family == gen.FAMILY_CODES.index("user_mesh")).all()  # not counted as random_urdfs
    occ = data.occupancies[:, :cfg.n_query_uniform]
    assert 0.02 < occ.mean() < 0.9  # a box fills part of the canonical box, labelled by the mesh test
    (tmp_path / "empty").mkdir()
    for bad in (tmp_path / "missing", tmp_path / "empty"):
        with pytest.raises(ValueError, match=str(bad)):
            small_config(mesh_dirs=[str(bad)]).validate()
    with pytest.raises(ValueError, match="needs meshes"):
        small_config(use_random_urdfs=False).validate()


def test_family_codes_keep_their_meaning():
    """Cached data store family indices: the codes of the data written before hollow_box must not move."""
    from occnet_ros.data.shapes import FAMILIES, FAMILY_WEIGHTS

    assert gen.FAMILY_CODES[:len(FAMILY_WEIGHTS) + 2] == sorted(FAMILY_WEIGHTS) + ["random_urdf", "user_mesh"]
    assert gen.FAMILY_CODES[len(FAMILY_WEIGHTS) + 2] == "hollow_box" and set(FAMILIES) <= set(gen.FAMILY_CODES)
    assert len(set(gen.FAMILY_CODES)) == len(gen.FAMILY_CODES)


def test_family_weights_config_and_cache_key(tmp_path):
    base = small_config(mesh_fraction=0.0)
    # an empty family_weights (and thin walls off) leaves the cache key as it was before the fields existed
    old = dataclasses.asdict(base)
    for name in ("family_weights", "thin_wall_dilation", "thin_wall_max_thickness"):
        old.pop(name)
    assert base.identity() == old
    hollow = dataclasses.replace(base, family_weights={"hollow_box": 1.0})
    assert hollow.cache_key("train") != base.cache_key("train")
    assert dataclasses.replace(base, family_weights={"box": 1.0}).cache_key("train") != hollow.cache_key("train")
    with pytest.raises(ValueError, match="family_weights: unknown shape family"):
        dataclasses.replace(base, family_weights={"crate": 1.0}).validate()
    with pytest.raises(ConfigError):
        from_dict(DataConfig, {"family_weights": [1.0]})
    data = load_or_generate(dataclasses.replace(hollow, n_objects=2), "train", tmp_path, progress=False)
    assert (data.family == gen.FAMILY_CODES.index("hollow_box")).all()
    assert load_config(DataConfig, "config/data/hollow_boxes.yaml").family_weights == {"hollow_box": 1.0}


def test_concatenate_keeps_samples_in_order_and_objects_apart(tmp_path):
    from occnet_ros.data.dataset import OccupancyDataset

    a = load_or_generate(small_config(mesh_fraction=0.0), "train", tmp_path, progress=False)
    b = load_or_generate(small_config(mesh_fraction=0.0, family_weights={"hollow_box": 1.0}), "val", tmp_path,
                         progress=False)
    c = OccupancyDataset.concatenate([a, b])
    assert len(c) == len(a) + len(b)
    for name in ("inputs", "queries", "occupancies", "family", "frame_scale"):
        assert np.array_equal(getattr(c, name), np.concatenate([getattr(a, name), getattr(b, name)])), name
    assert c.n_query_uniform == a.n_query_uniform
    assert set(c.object_index[:len(a)]).isdisjoint(c.object_index[len(a):])
    assert len(np.unique(c.object_index)) == len(np.unique(a.object_index)) + len(np.unique(b.object_index))
    assert c.stats.objects == a.stats.objects + b.stats.objects
    other = load_or_generate(small_config(mesh_fraction=0.0, n_input_points=64), "train", tmp_path, progress=False)
    with pytest.raises(ValueError, match="cannot be mixed"):
        OccupancyDataset.concatenate([a, other])
    with pytest.raises(ValueError, match="nothing"):
        OccupancyDataset.concatenate([])
