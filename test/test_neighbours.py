"""NeighbourIndex against a brute-force reference (all pairwise distances), fixed seeds."""
import threading

import numpy as np
import pytest

from occnet_ros.neighbours import NeighbourIndex


def brute_force(points, queries, k, max_distance=np.inf):
    """The slow reference: every distance, sorted; missing neighbours inf / N."""
    p = np.asarray(points, np.float64)
    q = np.asarray(queries, np.float64)
    d = np.sqrt(((q[:, None, :] - p[None, :, :]) ** 2).sum(-1))
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    dist = np.take_along_axis(d, order, axis=1)
    dist = np.concatenate([dist, np.full((len(q), max(0, k - len(p))), np.inf)], axis=1)
    idx = np.concatenate([order, np.full((len(q), max(0, k - len(p))), len(p))], axis=1)
    beyond = ~(dist < max_distance)
    return np.where(beyond, np.inf, dist), np.where(beyond, len(p), idx)


def check_against_reference(index, points, queries, k, max_distance=np.inf, atol=1e-9):
    dist, idx = index.query(queries, k, max_distance)
    ref_d, ref_i = brute_force(points, queries, k, max_distance)
    assert dist.shape == idx.shape == (len(queries), k)
    assert dist.dtype == np.float64 and idx.dtype == np.int64
    np.testing.assert_allclose(dist, ref_d, atol=atol, rtol=0)
    missing = np.isinf(ref_d)
    np.testing.assert_array_equal(idx[missing], len(points))
    # ties may come in another order: each found index is at the distance reported
    found = ~missing
    got = np.linalg.norm(np.asarray(points, np.float64)[idx[found]] - np.repeat(
        np.asarray(queries, np.float64), k, axis=0).reshape(len(queries), k, 3)[found], axis=1)
    np.testing.assert_allclose(got, dist[found], atol=atol, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 5, 17])
def test_k_nearest_equal_the_brute_force_reference(seed, k):
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(700, 3))
    queries = np.concatenate([rng.normal(size=(150, 3)), points[:50]])  # points themselves too (distance 0)
    check_against_reference(NeighbourIndex(points), points, queries, k)


@pytest.mark.parametrize("seed", [3, 4])
def test_a_distance_bound_leaves_inf_and_n_where_nothing_is_closer(seed):
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, size=(500, 3))
    queries = rng.uniform(-1.5, 1.5, size=(200, 3))
    index = NeighbourIndex(points)
    check_against_reference(index, points, queries, 12, max_distance=0.25)
    dist, idx = index.query(queries, 12, 0.25)
    assert np.isinf(dist).any() and np.isfinite(dist).any()  # the bound cut some neighbours, not all
    d1, i1 = index.nearest(queries, 0.1)
    ref_d, ref_i = brute_force(points, queries, 1, 0.1)
    np.testing.assert_allclose(d1, ref_d[:, 0], atol=1e-9, rtol=0)
    np.testing.assert_array_equal(i1, ref_i[:, 0])


def test_more_neighbours_asked_than_points_pad_with_inf_and_n():
    points = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    dist, idx = NeighbourIndex(points).query(np.zeros((1, 3)), 5)
    np.testing.assert_allclose(dist[0], [0.0, 1.0, 2.0, np.inf, np.inf])
    np.testing.assert_array_equal(idx[0], [0, 1, 2, 3, 3])


def test_no_points_finds_nothing_and_no_queries_give_empty_answers():
    dist, idx = NeighbourIndex(np.zeros((0, 3))).query(np.ones((4, 3)), 3)
    assert np.isinf(dist).all() and (idx == 0).all() and dist.shape == (4, 3)
    dist, idx = NeighbourIndex(np.ones((5, 3))).query(np.zeros((0, 3)), 2)
    assert dist.shape == idx.shape == (0, 2)


def test_float32_points_are_answered_in_float32_precision():
    rng = np.random.default_rng(5)
    points = rng.normal(size=(400, 3)).astype(np.float32)
    queries = rng.normal(size=(100, 3))  # float64 queries are cast to the points' dtype
    index = NeighbourIndex(points)
    assert index.dtype == np.float32
    check_against_reference(index, points, queries.astype(np.float32), 8, atol=1e-5)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="points must be"):
        NeighbourIndex(np.zeros((4, 2)))
    index = NeighbourIndex(np.zeros((4, 3)))
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must be"):
            index.query(np.zeros((1, 3)), k)
    with pytest.raises(ValueError, match="max_distance"):
        index.query(np.zeros((1, 3)), 1, 0.0)


def test_a_query_runs_on_one_thread_whatever_torch_set(monkeypatch):
    """torch.set_num_threads (the benchmark's process sets it to the usable cores) sets the OpenMP thread count that
    pykdtree's parallel loop would take; during a query every OpenMP library says one thread all the same, and
    torch's setting is back afterwards."""
    import torch
    from threadpoolctl import threadpool_info

    from occnet_ros import neighbours

    during = []

    class Recording(neighbours.KDTree):
        def query(self, *args, **kwargs):
            during.append([i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"])
            return super().query(*args, **kwargs)

    monkeypatch.setattr(neighbours, "KDTree", Recording)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        points = np.random.default_rng(6).normal(size=(300, 3))
        neighbours.NeighbourIndex(points).query(points, 4)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert during and during[0] and all(n == 1 for n in during[0])


@pytest.mark.parametrize("seed", [7, 8])
def test_a_large_query_searched_in_parts_on_threads_equals_the_reference(monkeypatch, seed):
    """With PART_MIN_WORK neighbours per part, the query points are cut into one part per usable core, each searched on
    a thread of its own (OpenMP kept to one thread there too): the same answers as the brute-force reference."""
    from threadpoolctl import threadpool_info

    from occnet_ros import neighbours

    threads, omp = set(), []

    class Recording(neighbours.KDTree):
        def query(self, *args, **kwargs):
            threads.add(threading.get_ident())
            omp.append([i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp"])
            return super().query(*args, **kwargs)

    monkeypatch.setattr(neighbours, "KDTree", Recording)
    monkeypatch.setattr(neighbours, "PART_MIN_WORK", 1)
    monkeypatch.setattr(neighbours.os, "sched_getaffinity", lambda pid: {0, 1, 2})  # three parts, whatever the machine
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(600, 3))
    queries = rng.normal(size=(301, 3))
    check_against_reference(neighbours.NeighbourIndex(points), points, queries, 9, max_distance=0.6)
    assert len(threads) == 3 and all(n == 1 for calls in omp for n in calls)


def test_a_failure_in_a_part_searched_on_another_thread_is_raised_to_the_caller(monkeypatch):
    from occnet_ros import neighbours

    calls = []

    class Failing(neighbours.KDTree):
        def query(self, *args, **kwargs):
            calls.append(threading.current_thread() is threading.main_thread())
            if not calls[-1]:
                raise MemoryError("no memory for this part")
            return super().query(*args, **kwargs)

    monkeypatch.setattr(neighbours, "KDTree", Failing)
    monkeypatch.setattr(neighbours, "PART_MIN_WORK", 1)
    monkeypatch.setattr(neighbours.os, "sched_getaffinity", lambda pid: {0, 1})
    points = np.random.default_rng(9).normal(size=(50, 3))
    with pytest.raises(MemoryError, match="this part"):
        neighbours.NeighbourIndex(points).query(points, 3)
    assert sorted(calls) == [False, True]


@pytest.mark.parametrize("cores, n_queries, k, part_min, expected", [
    (64, 5, 3, 1, 5),        # never more parts than query points
    (64, 400, 10, 1000, 4),  # each part at least part_min neighbours
    (2, 400, 10, 1000, 2),   # at most one part per usable core
    (2, 199, 10, 1000, 1),   # fewer than two parts' worth: the calling thread alone
])
def test_parts_are_bounded_by_cores_work_and_query_points(monkeypatch, cores, n_queries, k, part_min, expected):
    from occnet_ros import neighbours

    parts = []

    class Recording(neighbours.KDTree):
        def query(self, *args, **kwargs):
            parts.append(len(args[0]))
            return super().query(*args, **kwargs)

    monkeypatch.setattr(neighbours, "KDTree", Recording)
    monkeypatch.setattr(neighbours, "PART_MIN_WORK", part_min)
    monkeypatch.setattr(neighbours.os, "sched_getaffinity", lambda pid: set(range(cores)))
    rng = np.random.default_rng(cores + n_queries)
    points = rng.normal(size=(300, 3))
    queries = rng.normal(size=(n_queries, 3))
    check_against_reference(neighbours.NeighbourIndex(points), points, queries, k)
    assert len(parts) == expected and sum(parts) == n_queries  # one search per part, every query point once


def test_queries_within_searching_alone_stay_on_the_calling_thread(monkeypatch):
    """searching_alone: one part whatever the work, for that thread and only within the context; other threads and
    the same thread afterwards split again."""
    from occnet_ros import neighbours

    parts = []

    class Recording(neighbours.KDTree):
        def query(self, *args, **kwargs):
            parts.append(threading.get_ident())
            return super().query(*args, **kwargs)

    monkeypatch.setattr(neighbours, "KDTree", Recording)
    monkeypatch.setattr(neighbours, "PART_MIN_WORK", 1)
    monkeypatch.setattr(neighbours.os, "sched_getaffinity", lambda pid: {0, 1})
    points = np.random.default_rng(11).normal(size=(200, 3))
    index = neighbours.NeighbourIndex(points)
    with neighbours.searching_alone():
        check_against_reference(index, points, points[:50], 4)
        assert parts == [threading.get_ident()]
        other = threading.Thread(target=lambda: index.query(points[:50], 4))  # another thread: its own context
        other.start()
        other.join()
        assert len(parts) == 3
    parts.clear()
    index.query(points[:50], 4)
    assert len(parts) == 2
