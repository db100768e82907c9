"""Cloud cleaning against slow per-point references."""
import numpy as np
import pytest

from occnet_ros.perception.cloud_filter import (CleanConfig, clean_cloud, finite_mask, first_in_voxel, range_mask,
                                     statistical_outlier_mask, voxel_downsample)
from occnet_ros.config_io import ConfigError, from_dict


def ref_outlier_mask(p, k, ratio):
    means = []
    for i in range(len(p)):
        d = sorted(float(np.linalg.norm(p[i] - p[j])) for j in range(len(p)) if j != i)
        means.append(sum(d[:k]) / k)
    means = np.array(means)
    return means <= means.mean() + ratio * means.std()


def ref_voxel(p, size):
    groups = {}
    for i, q in enumerate(p):
        key = tuple(int(np.floor(float(c) / size)) for c in q)
        groups.setdefault(key, []).append(i)
    keys = sorted(groups)
    cents = np.array([np.mean(p[groups[k]].astype(np.float64), axis=0) for k in keys])
    inv = np.empty(len(p), int)
    for v, k in enumerate(keys):
        inv[groups[k]] = v
    return cents, inv


def test_finite_and_range():
    p = np.array([[0, 0, 1], [np.nan, 0, 1], [0, np.inf, 1], [0, 0, 10], [0, 0.05, 0]], np.float32)
    np.testing.assert_array_equal(finite_mask(p), [True, False, False, True, True])
    np.testing.assert_array_equal(range_mask(p, 0.1, 5.0), [True, False, False, False, False])
    np.testing.assert_array_equal(range_mask(p, 0.0, 0.0), [True, False, False, True, True])
    np.testing.assert_array_equal(range_mask(p, 0.5, 0, viewpoint=(0, 0, 10)), [True, False, False, False, True])
    with pytest.raises(ValueError, match="shape"):
        finite_mask(np.zeros((4, 2)))


@pytest.mark.parametrize("seed", [0, 1])
def test_outlier_mask_matches_reference(seed):
    rng = np.random.default_rng(seed)
    far = rng.normal(size=(6, 3))
    far *= rng.uniform(0.5, 1.0, size=(6, 1)) / np.linalg.norm(far, axis=1, keepdims=True)
    p = np.concatenate([rng.normal(scale=0.05, size=(120, 3)), far]).astype(np.float32)
    got = statistical_outlier_mask(p, k=8, std_ratio=1.5)
    np.testing.assert_array_equal(got, ref_outlier_mask(p, 8, 1.5))
    assert not got[120:].any()  # the far scattered points are removed
    assert got[:120].mean() > 0.9


def test_outlier_mask_small_clouds_and_off():
    p = np.random.default_rng(0).normal(size=(5, 3))
    assert statistical_outlier_mask(p, k=8).all()
    assert statistical_outlier_mask(p, k=0).all()


@pytest.mark.parametrize("size", [0.1, 0.37])
def test_voxel_downsample_matches_reference(size):
    rng = np.random.default_rng(4)
    p = rng.uniform(-1, 1, size=(400, 3)).astype(np.float32)
    cents, inv = voxel_downsample(p, size)
    rc, ri = ref_voxel(p, size)
    np.testing.assert_allclose(cents, rc, atol=1e-6)
    np.testing.assert_array_equal(inv, ri)
    first = first_in_voxel(inv)
    for v in range(len(cents)):
        assert first[v] == np.flatnonzero(ri == v)[0]
    with pytest.raises(ValueError, match="voxel_size"):
        voxel_downsample(p, 0)


def test_clean_cloud_pipeline_tracks_indices():
    rng = np.random.default_rng(5)
    p = rng.normal(scale=0.03, size=(300, 3)).astype(np.float32) + np.array([0, 0, 1], np.float32)
    p[::50] = np.nan
    p[7] = (0, 0, 9.0)  # beyond max_range
    cfg = CleanConfig(min_range=0.2, max_range=3.0, outlier_neighbors=8, outlier_std_ratio=2.0, voxel_size=0.0)
    res = clean_cloud(p, cfg)
    assert np.isfinite(res.points).all()
    np.testing.assert_array_equal(res.points, p[res.index])
    assert 7 not in res.index and 0 not in res.index and 50 not in res.index
    res2 = clean_cloud(p, CleanConfig(outlier_neighbors=0, voxel_size=0.02))
    assert len(res2.points) < np.isfinite(p).all(axis=1).sum()
    assert res2.index.shape == (len(res2.points),)
    # each reported index lies in the voxel of its centroid
    np.testing.assert_array_equal(np.floor(p[res2.index] / 0.02), np.floor(res2.points / 0.02))


def test_clean_config_validation():
    with pytest.raises(ConfigError, match="max_range"):
        from_dict(CleanConfig, {"min_range": 2.0, "max_range": 1.0})
    with pytest.raises(ConfigError, match="voxel_size"):
        from_dict(CleanConfig, {"voxel_size": -1.0})


def test_voxel_downsample_huge_extent_falls_back_to_row_keys():
    rng = np.random.default_rng(6)
    p = np.concatenate([rng.uniform(0, 0.01, size=(30, 3)), rng.uniform(0, 0.01, size=(30, 3)) + 1e7])
    cents, inv = voxel_downsample(p, 0.001)  # 1e10 voxels per axis: no packed int64 key
    rc, ri = ref_voxel(p, 0.001)
    np.testing.assert_allclose(cents, rc, rtol=1e-6)
    np.testing.assert_array_equal(inv, ri)


@pytest.mark.parametrize("seed", [0, 1])
def test_nearest_colours_matches_brute_force(seed):
    from occnet_ros.perception.cloud_filter import nearest_colours

    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, (300, 3)).astype(np.float32)
    colours = rng.integers(0, 256, (300, 3), dtype=np.uint8)
    vertices = rng.uniform(-1.5, 1.5, (500, 3))  # some far outside the cloud
    nearest = np.argmin(((vertices[:, None, :] - points[None].astype(np.float64)) ** 2).sum(-1), axis=1)
    out = nearest_colours(vertices, points, colours)
    assert out.dtype == np.uint8 and np.array_equal(out, colours[nearest])
    assert nearest_colours(np.zeros((0, 3)), points, colours).shape == (0, 3)
