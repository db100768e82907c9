"""MISE against the dense-grid reference on analytic shapes (fixed, deterministic fields)."""
import numpy as np
import pytest
import trimesh

from occnet_ros.reconstruction.mise import (dense_values, extract_mesh, extract_mesh_dense, mesh_from_values,
                             mise_values)


def sphere(p):
    """Smooth pseudo-probability: > 0.5 inside a sphere of radius 0.3 centred at (0.05, 0, -0.02)."""
    d = np.linalg.norm(p - np.array([0.05, 0.0, -0.02]), axis=1) - 0.3
    return (1.0 / (1.0 + np.exp(d / 0.02))).astype(np.float32)


def torus(p):
    q = np.stack([np.linalg.norm(p[:, :2], axis=1) - 0.3, p[:, 2]], axis=1)
    d = np.linalg.norm(q, axis=1) - 0.1
    return (1.0 / (1.0 + np.exp(d / 0.02))).astype(np.float32)


def two_boxes(p):
    def box(c, h):
        q = np.abs(p - np.array(c)) - np.array(h)
        return np.linalg.norm(np.maximum(q, 0), axis=1) + np.minimum(q.max(axis=1), 0)
    d = np.minimum(box([-0.2, 0.0, 0.0], [0.15, 0.2, 0.1]), box([0.25, 0.1, 0.1], [0.1, 0.1, 0.25]))
    return (1.0 / (1.0 + np.exp(d / 0.02))).astype(np.float32)


class Counter:
    def __init__(self, fn):
        self.fn, self.n, self.calls = fn, 0, 0

    def __call__(self, p):
        assert p.dtype == np.float32 and p.ndim == 2 and p.shape[1] == 3
        self.n += p.shape[0]
        self.calls += 1
        return self.fn(p)


@pytest.mark.parametrize("fn", [sphere, torus, two_boxes])
def test_mise_matches_dense_with_fewer_evaluations(fn):
    res0, steps = 16, 2
    res = res0 * 2 ** steps
    counter = Counter(fn)
    mv, stats = mise_values(counter, res0, steps, 0.5)
    dv = dense_values(fn, res)
    assert counter.n == stats["n_evals"] == sum(stats["evals_per_level"])
    assert stats["n_evals"] < 0.35 * dv.size
    a, b = mv >= 0.5, dv >= 0.5
    iou = (a & b).sum() / (a | b).sum()
    assert iou > 0.99
    v1, f1, _ = extract_mesh(fn, res0, steps, 0.5)
    v2, f2, _ = extract_mesh_dense(fn, res, 0.5)
    m1, m2 = trimesh.Trimesh(v1, f1), trimesh.Trimesh(v2, f2)
    assert m1.is_watertight and m2.is_watertight
    assert m1.volume > 0 and abs(m1.volume - m2.volume) / m2.volume < 0.01


def test_sphere_mesh_geometry():
    v, f, stats = extract_mesh(sphere, 16, 2, 0.5)
    r = np.linalg.norm(v - np.array([0.05, 0.0, -0.02]), axis=1)
    assert np.abs(r - 0.3).max() < 0.01
    m = trimesh.Trimesh(v, f)
    assert m.is_watertight
    assert abs(m.volume - 4 / 3 * np.pi * 0.3 ** 3) / (4 / 3 * np.pi * 0.3 ** 3) < 0.02
    assert len(stats["evals_per_level"]) == 3


def test_batching_cap_and_levels():
    counter = Counter(sphere)
    _, stats = mise_values(counter, 8, 1, 0.5, batch_size=100)
    assert stats["evals_per_level"][0] == 9 ** 3
    assert counter.calls == stats["eval_calls"]
    # each level is split into ceil(n / 100) calls, no more
    assert counter.calls == sum(-(-n // 100) for n in stats["evals_per_level"] if n)


def test_shape_touching_the_box_is_closed():
    full = lambda p: np.ones(p.shape[0], np.float32)  # noqa: E731
    v, f, _ = extract_mesh(full, 4, 1, 0.5)
    m = trimesh.Trimesh(v, f)
    assert m.is_watertight
    assert np.allclose(m.bounds, [[-0.55] * 3, [0.55] * 3], atol=1e-4)


def test_empty_field_gives_empty_mesh():
    v, f = mesh_from_values(np.zeros((9, 9, 9), np.float32), 0.5)
    assert v.shape == (0, 3) and f.shape == (0, 3)


def test_corner_values_at_the_threshold_still_give_a_closed_mesh_after_vertex_welding():
    """Corners whose value equals the threshold (or nearly) put marching-cubes vertices on the corner,
    several at one place; a consumer that welds coincident vertices (trimesh's default processing)
    then sees pinched, non-manifold edges. The quantised sphere field below has many such corners."""
    import trimesh

    n = 41
    x = np.linspace(-1, 1, n, dtype=np.float32)
    r = np.sqrt(sum(a ** 2 for a in np.meshgrid(x, x, x, indexing="ij")))
    values = np.round(np.clip(1.5 - 1.6 * r, 0, 1) * 4) / 4  # steps of 0.25: many corners at 0.5
    # half of those corners 3e-8 above the threshold: near-coincident rather than coincident vertices
    values[np.abs(values - 0.5) < 1e-6] += np.float32(3e-8) * (np.arange(np.sum(np.abs(values - 0.5) < 1e-6)) % 2)
    assert np.sum(np.abs(values - 0.5) < 1e-6) > 100
    v, f = mesh_from_values(values.astype(np.float32), 0.5, 0.55)
    welded = trimesh.Trimesh(v, f, process=True)  # merges vertices closer than trimesh's 1e-8
    assert welded.is_watertight and welded.is_winding_consistent
    assert len(welded.vertices) == len(v)  # no vertex was close enough to another to be merged


def test_mise_of_several_objects_level_by_level_equals_each_alone():
    """mise_values_many (the levels of all objects evaluated together) gives every object the grid and counts
    that mise_values gives it alone; each round hands over every unfinished object's points at once."""
    from occnet_ros.reconstruction.mise import MiseGrid, mise_values_many

    centres = [np.array([0.1, 0.0, -0.05]), np.array([-0.2, 0.15, 0.0]), np.array([0.0, 0.0, 0.0])]
    radii = [0.25, 0.1, 0.02]  # the last is smaller than a coarse cell: MISE finds nothing and stops early

    def field(c, r):
        return lambda p: (r - np.linalg.norm(p - c, axis=1) + 0.5).astype(np.float32)

    fields = [field(c, r) for c, r in zip(centres, radii)]
    rounds = []

    def eval_many(points):
        rounds.append([p.shape[0] for p in points])
        return [f(p) for f, p in zip(fields, points)]

    grids = [MiseGrid(8, 2, 0.5) for _ in fields]
    together = mise_values_many(eval_many, grids)
    for f, (values, stats) in zip(fields, together):
        alone, alone_stats = mise_values(f, 8, 2, 0.5)
        np.testing.assert_array_equal(values, alone)
        assert stats["evals_per_level"] == alone_stats["evals_per_level"]
    assert len(rounds) == 3 and all(len(r) == 3 for r in rounds)  # one call per level, all objects in it
    assert rounds[0] == [9 ** 3] * 3
