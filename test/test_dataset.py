"""Training-data set: determinism, cache, label consistency, batches, evaluation meshes refused."""
import dataclasses

import numpy as np
import pytest

from occnet_ros.config_io import ConfigError, from_dict, load_config
from occnet_ros.data import generate as gen
from occnet_ros.data import mesh_sources as ms
from occnet_ros.data.dataset import DataConfig, load_or_generate
from occnet_ros.data.shapes_sdf import Sphere
from occnet_ros.normalization import BOX_HALF


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
    monkeypatch.setattr(gen, "sample_shape", lambda rng: _tag(Sphere([0, 0, r], r)))
    cfg = small_config(mesh_fraction=0.0, n_query_uniform=2048, n_query_near_surface=512,
                       mesh_resolution=40)
    obj = gen.generate_object(cfg, np.random.default_rng(0), [])
    assert obj.inputs.shape[0] == 2
    for k in range(2):
        q = obj.queries[k].astype(np.float64)
        occ = obj.occupancies[k]
        r_c = r / obj.frame_scale[k]  # sphere radius in canonical units
        center = q[:2048][occ[:2048]].mean(axis=0)
        dist = np.linalg.norm(q - center, axis=1)
        clear = np.abs(dist - r_c) > 0.05 * r_c
        assert np.mean(occ[clear] == (dist[clear] < r_c)) > 0.995
        # near-surface queries straddle the surface
        assert 0.2 < occ[2048:].mean() < 0.8
        # inputs lie on the sphere (partial view, sensor noise of a few mm)
        x = obj.inputs[k].astype(np.float64)
        assert np.median(np.abs(np.linalg.norm(x - center, axis=1) - r_c)) < 0.1 * r_c
        assert np.all(np.abs(q[:2048]) <= BOX_HALF + 1e-3)


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
