"""Decimation in slabs (mesh_parts) and the fin repair (mesh_ops.drop_fins): the fast routines against slow
references, the joined mesh closed and close to the surface, the fallbacks, and the worker-process form
(ParallelDecimation) equal to the in-process one."""
import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from occnet_ros.perception import mesh_parts
from occnet_ros.perception.parallel_decimation import ParallelDecimation
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
        big = soup + 2 ** 21  # indices past the packed key's range: the row-wise path, the same answer
        assert np.array_equal(drop_fins(big), drop_fins_reference(soup) + 2 ** 21)


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



def test_join_parts_drops_unused_vertices_and_keeps_their_order(big_closed):
    """Lone vertices in the slabs (a decimation can leave some) are dropped, the others keep their order: the
    renumbering np.unique gives, on slabs with every third vertex unused."""
    v, f = big_closed
    jobs, _, _ = split_into_slabs(v, f, 2, 20000)
    parts, refs = [], []
    for jv, jf, _ in jobs:
        extra = len(jv) // 3  # lone vertices spliced in at the front, far from the cut
        pad = np.concatenate([np.full((extra, 3), 7.0) + np.arange(extra)[:, None], jv])
        parts.append((pad, jf + extra))
    got_v, got_f = join_parts(parts)
    ref_v, ref_f = join_parts([(j[0], j[1]) for j in jobs])
    np.testing.assert_array_equal(got_v, ref_v)
    np.testing.assert_array_equal(got_f, ref_f)
    assert got_f.dtype == np.int64 and got_f.max() == len(got_v) - 1

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


def test_worker_processes_give_the_in_process_result_and_a_killed_one_is_replaced(big_closed):
    import os
    import signal

    v, f = big_closed
    ref_v, ref_f = parted_decimation(v, f, 8000, parts=2)
    warnings = []
    with ParallelDecimation(2, warn=warnings.append) as workers:
        pids = workers.start()
        assert len(set(pids)) == 2
        out_v, out_f = workers(v, f, 8000)
        res = simplify_mesh(v, f, 8000, decimate=workers)
        assert np.array_equal(out_v, ref_v) and np.array_equal(out_f, ref_f) and warnings == []
        os.kill(pids[1], signal.SIGKILL)  # a dead slab worker: replaced, with one warning, the same mesh
        again_v, again_f = workers(v, f, 8000)
        assert workers.restarts == 1 and len(warnings) == 1 and "started a new one" in warnings[0]
        assert np.array_equal(again_v, ref_v) and np.array_equal(again_f, ref_f)
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


def bumpy_grid(resolution: int = 128) -> np.ndarray:
    """A MISE-like (R+1)^3 probability grid over the canonical box of a bumpy ball (about 65k faces at 128^3)."""
    x = np.linspace(-0.55, 0.55, resolution + 1)
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    sd = 0.35 - np.sqrt(X ** 2 + Y ** 2 + Z ** 2) + 0.03 * np.sin(20 * X) * np.cos(15 * Y)
    return (1.0 / (1.0 + np.exp(-60.0 * sd))).astype(np.float32)


def test_grid_slabs_mesh_exactly_the_whole_grid_before_decimation():
    from occnet_ros.reconstruction.mise import mesh_from_values

    values = bumpy_grid()
    wv, wf = mesh_from_values(values.copy(), 0.5)
    jobs = mesh_parts.grid_slab_jobs(values.copy(), 0.5, 0.55, 3, 20000)
    assert jobs is not None and len(jobs) == 3
    centre, scale = jobs[0][5], jobs[0][6]
    big = [job[:7] + (10 ** 9,) for job in jobs]  # budgets above the face counts: marching cubes only
    done = mesh_parts.mesh_and_decimate_slabs(big)
    assert sum(n for _, _, n in done) == len(wf) == sum(len(f) for _, f, _ in done)
    jv, jf = join_parts([(v, f) for v, f, _ in done])
    assert len(jf) == len(wf) and len(jv) == len(wv) and is_closed_surface(jf)
    back = jv * scale + centre
    order_a, order_b = np.lexsort(np.round(back, 6).T), np.lexsort(np.round(wv.astype(np.float64), 6).T)
    assert np.allclose(back[order_a], wv[order_b], atol=1e-6)  # the same vertices as the whole grid's


def test_grid_slabs_reduced_in_workers_equal_the_in_process_result_and_stay_closed():
    values = bumpy_grid()
    ref = mesh_parts.parted_grid_decimation(values.copy(), 0.5, 0.55, 20000, parts=2)
    assert ref is not None
    v, f, n_mc = ref
    assert len(f) <= 20000 and is_closed_surface(f) and n_mc > 60000
    from occnet_ros.reconstruction.mise import mesh_from_values
    wv, wf = mesh_from_values(values.copy(), 0.5)
    assert surface_distance((wv, wf), (v, f)) < 0.002  # canonical units; a cell is 0.0086
    with ParallelDecimation(2) as workers:
        got = workers.mesh_grid(values.copy(), 0.5, 0.55, 20000)
    assert got is not None and np.array_equal(got[0], v) and np.array_equal(got[1], f) and got[2] == n_mc
    # too little surface to cut, or no need to decimate: None, the caller meshes the grid whole
    assert mesh_parts.parted_grid_decimation(bumpy_grid(32), 0.5, 0.55, 20000) is None
    assert mesh_parts.parted_grid_decimation(values.copy(), 0.5, 0.55, 10 ** 6) is None
    assert mesh_parts.parted_grid_decimation(np.zeros_like(values), 0.5, 0.55, 20000) is None
    assert mesh_parts.parted_grid_decimation(values.copy(), 0.5, 0.55, 20000, run_slabs=lambda jobs: None) is None


def test_a_whole_grid_meshed_in_a_worker_equals_the_in_process_mesh_and_a_lost_worker_says_so():
    import os
    import signal

    from occnet_ros.perception.mesh_ops import MeshReduction
    from occnet_ros.perception.mesh_ops import fast_or_open3d_decimation
    from occnet_ros.reconstruction.mise import mesh_from_values

    values = bumpy_grid(48)
    ref_v, ref_f = mesh_from_values(values.copy(), 0.5, 0.55)
    assert len(ref_f) > 1000
    warnings = []
    with ParallelDecimation(2, warn=warnings.append) as workers:
        pids = workers.start()
        v, f = MeshReduction(20000, workers).mesh_whole(values.copy(), 0.5, 0.55)
        assert v.dtype == ref_v.dtype and np.array_equal(v, ref_v) and np.array_equal(f, ref_f)
        empty = workers.mesh_whole_grid(np.zeros_like(values), 0.5, 0.55)
        assert empty[0].shape == (0, 3) and empty[1].shape == (0, 3) and warnings == []
        os.kill(pids[0], signal.SIGKILL)  # lost: replaced on the next call, with a warning, the same mesh
        v2, f2 = workers.mesh_whole_grid(values.copy(), 0.5, 0.55)
        assert np.array_equal(v2, ref_v) and np.array_equal(f2, ref_f)
        assert workers.restarts == 1 and len(warnings) == 1
    assert workers.mesh_whole_grid(values.copy(), 0.5, 0.55) is None  # closed: the caller meshes it
    assert "calling process" in warnings[-1]
    assert MeshReduction(20000, fast_or_open3d_decimation).mesh_whole(values, 0.5, 0.55) is None


def test_the_reconstructor_offers_its_grid_to_a_reduction_that_takes_one():
    import torch

    from occnet_ros.network.model import ModelConfig, OccupancyNetwork
    from occnet_ros.perception.mesh_ops import MeshReduction
    from occnet_ros.perception.mesh_ops import fast_or_open3d_decimation
    from occnet_ros.reconstruction.config import ReconstructorConfig
    from occnet_ros.reconstruction.reconstructor import Reconstructor

    class Reduction:
        def __init__(self, answer):
            self.answer, self.grids, self.meshes = answer, [], []

        def __call__(self, v, f):
            self.meshes.append(len(f))
            return v, f, "whole"

        def from_grid(self, values, threshold, box_half):
            self.grids.append((values.shape, threshold, box_half))
            return self.answer

    torch.manual_seed(0)
    model = OccupancyNetwork(ModelConfig(kind="local", c_dim=8, encoder_hidden=8, decoder_hidden=8,
                                         plane_resolution=8, unet_base=4, unet_levels=2)).eval()
    rec = Reconstructor(model, device="cpu", config=ReconstructorConfig(
        device="cpu", n_input_points=128, input_subsamples=1, resolution0=8, upsampling_steps=1, threshold=0.5))
    pts = np.random.default_rng(0).normal(size=(500, 3)) * 0.05 + [0.0, 0.0, 0.6]
    tv, tf = trimesh.creation.box().vertices * 0.1, trimesh.creation.box().faces
    taken = Reduction((np.asarray(tv), np.asarray(tf, np.int64), "", 12345))
    obj = rec.reconstruct(pts, simplify=taken)
    assert taken.grids == [((17, 17, 17), 0.5, pytest.approx(0.55))] and taken.meshes == []
    assert len(obj.mesh.faces) == 12 and obj.mise_stats["faces_marching_cubes"] == 12345
    assert obj.mise_stats["marching_cubes_in_slabs"] and obj.timings["marching_cubes"] == 0.0
    declined = Reduction(None)
    obj = rec.reconstruct(pts, simplify=declined)
    assert len(declined.grids) == 1 and declined.meshes == [obj.mise_stats["faces_marching_cubes"]]
    assert not obj.mise_stats["marching_cubes_in_slabs"] and obj.mesh_note == "whole"
    meshed_here = obj.mesh

    class WholeElsewhere(Reduction):  # declines the grid but meshes it whole (as a worker process would)
        def mesh_whole(self, values, threshold, box_half):
            self.grids.append("whole")
            from occnet_ros.reconstruction.mise import mesh_from_values
            return mesh_from_values(values, threshold, box_half)

    elsewhere = WholeElsewhere(None)
    obj = rec.reconstruct(pts, simplify=elsewhere)
    assert elsewhere.grids[1:] == ["whole"] and elsewhere.meshes == [len(meshed_here.faces)]
    assert np.array_equal(obj.mesh.vertices, meshed_here.vertices) and np.array_equal(obj.mesh.faces, meshed_here.faces)
    # the pipeline's reduction offers grids only to a decimation that meshes them
    assert MeshReduction(20000, fast_or_open3d_decimation).from_grid(bumpy_grid(), 0.5, 0.55) is None
    assert MeshReduction(0, ParallelDecimation(1)).from_grid(bumpy_grid(), 0.5, 0.55) is None

