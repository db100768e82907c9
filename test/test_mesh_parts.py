"""Decimation in slabs (mesh_parts) and the fin repair (mesh_ops.drop_fins): the fast routines against slow
references, the joined mesh closed and close to the surface, the fallbacks, and the worker-process form
(ParallelDecimation) equal to the in-process one."""
import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from occnet_ros.perception import mesh_parts
from occnet_ros.perception.decimation_worker import ParallelDecimation
from occnet_ros.perception.mesh_ops import drop_fins, fast_quadric_decimation, is_closed_surface, simplify_mesh
from occnet_ros.perception.mesh_parts import (MIN_PART_FACES, decimate_parts, join_parts, parted_decimation,
                                              split_into_slabs)


@pytest.fixture(scope="module")
def big_closed():
    """A closed, bumpy 81,920-face surface in metres (a 0.1 m sphere with a few dents), away from the origin."""
    m = trimesh.creation.icosphere(subdivisions=6, radius=0.1)
    v = np.asarray(m.vertices)
    r = 1.0 + 0.15 * np.sin(9 * v[:, 0] / 0.1) * np.cos(7 * v[:, 1] / 0.1)
    return v * r[:, None] + np.array([0.3, -0.1, 0.8]), np.asarray(m.faces, np.int64)


def drop_fins_reference(faces: np.ndarray) -> np.ndarray:
    """One face at a time: drop both faces of every pair on the same vertex set with opposite windings."""
    f = [tuple(int(x) for x in row) for row in np.asarray(faces)]
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(f):
        groups.setdefault(tuple(sorted(t)), []).append(i)

    def rotations(t):
        return {t, (t[1], t[2], t[0]), (t[2], t[0], t[1])}

    drop = set()
    for rows in groups.values():
        if len(rows) == 2 and f[rows[1]][::-1] in rotations(f[rows[0]]):
            drop.update(rows)
    return np.array([t for i, t in enumerate(f) if i not in drop], np.int64).reshape(-1, 3)


def with_fin(v: np.ndarray, f: np.ndarray, edge_face: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed mesh with a fin: a new vertex and two opposite faces on an edge of face ``edge_face``."""
    a, b, _ = f[edge_face]
    tip = v[[a, b]].mean(axis=0) * 1.5
    vv = np.vstack([v, tip])
    x = len(v)
    return vv, np.vstack([f, [[a, b, x], [b, a, x]]])


def test_drop_fins_matches_the_reference_and_closes_a_finned_mesh():
    m = trimesh.creation.icosphere(subdivisions=2)
    v, f = np.asarray(m.vertices), np.asarray(m.faces, np.int64)
    fv, ff = with_fin(v, f, 7)
    fv, ff = with_fin(fv, ff, 30)
    assert not is_closed_surface(ff)
    out = drop_fins(ff)
    assert np.array_equal(out, drop_fins_reference(ff)) and np.array_equal(out, f) and is_closed_surface(out)
    same = np.vstack([f, f[:1]])  # a face repeated with the same winding is not a fin: kept
    assert np.array_equal(drop_fins(same), drop_fins_reference(same)) and len(drop_fins(same)) == len(same)
    rng = np.random.default_rng(0)  # random face soups with many repeated vertex sets, against the reference
    for _ in range(20):
        soup = rng.integers(0, 6, size=(40, 3))
        soup = soup[(soup[:, 0] != soup[:, 1]) & (soup[:, 1] != soup[:, 2]) & (soup[:, 0] != soup[:, 2])]
        assert np.array_equal(drop_fins(soup), drop_fins_reference(soup))


def test_slabs_partition_the_faces_and_join_back_to_the_same_mesh(big_closed):
    v, f = big_closed
    jobs, centre, scale = split_into_slabs(v, f, 3, 20000)
    assert len(jobs) == 3 and sum(len(j[1]) for j in jobs) == len(f)
    assert abs(sum(j[2] for j in jobs) - 20000) <= 3
    assert all(np.abs(j[0]).max() <= 0.5 + 1e-12 for j in jobs)  # normalised: the longest box edge is 1
    jv, jf = join_parts([(j[0], j[1]) for j in jobs])  # nothing decimated: the original mesh again
    assert len(jv) == len(v) and len(jf) == len(f) and is_closed_surface(jf)
    back = jv * scale + centre
    original = {tuple(sorted(map(tuple, np.round(v[t], 9)))) for t in f}
    joined = {tuple(sorted(map(tuple, np.round(back[t], 9)))) for t in jf}
    assert original == joined


def surface_distance(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], n: int = 20000) -> float:
    """Mean distance from points sampled on mesh a to the nearest of points sampled densely on mesh b."""
    ma, mb = (trimesh.Trimesh(*x, process=False) for x in (a, b))
    pa = trimesh.sample.sample_surface(ma, n, seed=1)[0]
    pb = trimesh.sample.sample_surface(mb, 20 * n, seed=2)[0]
    return float(cKDTree(pb).query(pa)[0].mean())


def test_parted_decimation_is_closed_within_budget_and_as_close_as_a_whole_one(big_closed):
    v, f = big_closed
    calls = []
    whole_fn = lambda *a: calls.append(1) or fast_quadric_decimation(*a)  # noqa: E731
    sv, sf = parted_decimation(v, f, 8000, parts=2, whole=whole_fn)
    assert calls == [] and len(sf) <= 8000 and len(sf) > 7000 and is_closed_surface(sf)
    wv, wf = fast_quadric_decimation(v, f, 8000)
    err_slabs, err_whole = surface_distance((v, f), (sv, sf)), surface_distance((v, f), (wv, wf))
    assert err_slabs < 1.5 * err_whole + 1e-5, (err_slabs, err_whole)


def test_parted_decimation_falls_back_to_the_whole_mesh(big_closed):
    v, f = big_closed
    calls = []

    def whole(vv, ff, t):
        calls.append(len(ff))
        return fast_quadric_decimation(vv, ff, t)

    parted_decimation(v, f, 8000, parts=2, run_parts=lambda jobs: None, whole=whole)  # the slabs failed
    small = trimesh.creation.icosphere(subdivisions=4)  # 5,120 faces: too small to cut
    parted_decimation(small.vertices, small.faces, 1000, parts=2, whole=whole)
    one = parted_decimation(v, f, 8000, parts=1, whole=whole)  # one part: the whole mesh
    assert calls == [len(f), len(small.faces), len(f)] and len(one[1]) <= 8000
    untouched = parted_decimation(v, f, len(f), parts=2, whole=whole)  # within the budget already
    assert untouched[1] is not None and len(untouched[1]) == len(f) and len(calls) == 3
    with pytest.raises(ValueError, match="target_faces"):
        parted_decimation(v, f, -1)
    assert len(f) // MIN_PART_FACES >= 2  # the fixture is large enough to be cut in two


def test_worker_processes_give_the_in_process_result(big_closed):
    v, f = big_closed
    ref_v, ref_f = parted_decimation(v, f, 8000, parts=2)
    warnings = []
    with ParallelDecimation(2, warn=warnings.append) as workers:
        pids = workers.start()
        assert len(set(pids)) == 2
        out_v, out_f = workers(v, f, 8000)
        res = simplify_mesh(v, f, 8000, decimate=workers)
    assert np.array_equal(out_v, ref_v) and np.array_equal(out_f, ref_f) and warnings == []
    assert res.simplified and is_closed_surface(res.faces)
    with pytest.raises(ValueError, match="workers"):
        ParallelDecimation(0)


def test_slabs_decimated_keep_their_cut_vertices_bit_for_bit(big_closed):
    v, f = big_closed
    jobs, _, _ = split_into_slabs(v, f, 2, 8000)
    done = decimate_parts(jobs)
    for (jv, jf, budget), (dv, df) in zip(jobs, done):
        assert len(df) <= budget
        a, b = jf.reshape(-1), jf[:, [1, 2, 0]].reshape(-1)
        keys, counts = np.unique(np.minimum(a, b) * len(jv) + np.maximum(a, b), return_counts=True)
        border = np.unique(np.concatenate([keys[counts == 1] // len(jv), keys[counts == 1] % len(jv)]))
        kept = {tuple(p) for p in dv}
        assert border.size > 0 and all(tuple(p) in kept for p in jv[border])
