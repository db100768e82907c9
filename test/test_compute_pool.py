"""The compute pool: ranges against a slow reference, results in order, errors raised, one torch thread per
worker thread, and the network's answers the same with the pool as without it (fields, encoder, batched MISE)."""
import threading

import numpy as np
import pytest
import torch

from occnet_ros.network.model import ModelConfig, OccupancyNetwork
from occnet_ros.reconstruction.batched import probabilities_many
from occnet_ros.reconstruction.compute_pool import ComputePool, split_range
from occnet_ros.reconstruction.config import ReconstructorConfig
from occnet_ros.reconstruction.reconstructor import Reconstructor


def test_split_range_covers_the_range_in_even_aligned_parts():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n, parts, align = int(rng.integers(0, 5000)), int(rng.integers(1, 9)), int(rng.integers(1, 600))
        got = split_range(n, parts, align)
        chunks = -(-n // align)
        assert len(got) == min(parts, chunks)
        flat = [i for a, b in got for i in range(a, b)]
        assert flat == list(range(n))  # contiguous, in order, every item once
        assert all(a % align == 0 for a, _ in got)
        sizes = [-(-(b - a) // align) for a, b in got]
        assert not sizes or max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        split_range(10, 0)


def test_pool_runs_tasks_in_order_on_single_threaded_workers_and_raises_their_errors():
    pool = ComputePool(2)
    try:
        seen = pool.run([lambda i=i: (i, threading.current_thread().name, torch.get_num_threads()) for i in range(6)])
        assert [s[0] for s in seen] == list(range(6))
        assert all(name.startswith("occnet_compute") and n == 1 for _, name, n in seen)

        def boom():
            raise KeyError("bad part")

        with pytest.raises(KeyError, match="bad part"):
            pool.run([lambda: 1, boom])
        assert pool.run([lambda: "alone"]) == ["alone"]  # one task: the calling thread
    finally:
        pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.run([lambda: 1, lambda: 2])
    with pytest.raises(ValueError, match="threads"):
        ComputePool(0)


def test_work_given_by_a_pool_thread_runs_in_that_thread():
    """A task that itself gives the pool several tasks (an object on a pool thread whose network uses the pool) runs
    them in its own thread, one after the other, rather than waiting for threads that are all busy."""
    pool = ComputePool(2)
    try:
        assert not pool.in_pool_thread()

        def outer(i):
            inner = pool.run([lambda j=j: (j, threading.current_thread().name) for j in range(3)])
            return threading.current_thread().name, pool.in_pool_thread(), inner

        got = pool.run([lambda i=i: outer(i) for i in range(4)])  # 4 outer tasks hold both threads
        for name, member, inner in got:
            assert member and name.startswith("occnet_compute")
            assert [j for j, _ in inner] == [0, 1, 2] and {n for _, n in inner} == {name}
    finally:
        pool.close()


@pytest.fixture(scope="module")
def pair():
    """The same small feature-plane network in a reconstructor with a 2-thread pool and one without."""
    torch.manual_seed(0)
    model = OccupancyNetwork(ModelConfig(kind="local", c_dim=16, encoder_hidden=16, decoder_hidden=16,
                                         plane_resolution=16, unet_base=8, unet_levels=2)).eval()
    make = lambda t: Reconstructor(model, device="cpu", config=ReconstructorConfig(  # noqa: E731
        device="cpu", compute_threads=t, n_input_points=256, input_subsamples=3, query_batch_size=1000,
        upsampling_steps=1, resolution0=16))
    pooled, single = make(2), make(1)
    yield pooled, single
    pooled.close()


def cloud(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(1500, 3))
    return (0.08 * d / np.linalg.norm(d, axis=1, keepdims=True) + [0.0, 0.0, 0.6]).astype(np.float32)


def test_pooled_network_answers_equal_the_single_thread_ones(pair):
    pooled, single = pair
    assert pooled.pool.threads == 2 and single.pool.threads == 1
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (6, 256, 3)).astype(np.float32)
    assert torch.allclose(pooled.encode(x), single.encode(x), atol=1e-5)
    a = pooled.reconstruct(cloud(2))
    b = single.reconstruct(cloud(2))
    pts = np.random.default_rng(3).uniform(-0.5, 0.5, (7777, 3)).astype(np.float32)
    field = a.occupancy
    assert np.allclose(field.probabilities(pts, pooled.pool), field.probabilities(pts), atol=1e-6)
    assert np.allclose(probabilities_many([field, b.occupancy], [pts, pts], pooled.pool),
                       probabilities_many([field, b.occupancy], [pts, pts]), atol=1e-6)
    assert abs(len(a.mesh.faces) - len(b.mesh.faces)) <= 0.01 * len(b.mesh.faces)
    many = pooled.reconstruct_many([dict(points=cloud(4)), dict(points=cloud(5))], batched=True)
    ref = single.reconstruct_many([dict(points=cloud(4)), dict(points=cloud(5))], batched=True)
    for m, r in zip(many, ref):
        assert abs(len(m.mesh.faces) - len(r.mesh.faces)) <= 0.01 * len(r.mesh.faces)


def test_compute_threads_is_validated():
    with pytest.raises(ValueError, match="compute_threads"):
        ReconstructorConfig(compute_threads=-1).validate()
    with pytest.raises(ValueError, match="compute_threads"):
        ReconstructorConfig(compute_threads=True).validate()


def test_pooled_known_empty_test_equals_the_single_thread_one(pair):
    from occnet_ros.geometry import Plane
    from occnet_ros.reconstruction.known_empty import KnownEmpty, KnownEmptyConfig

    pooled, single = pair
    # a support plane through the cloud's centre, normal up (-y in the optical frame): half the box is below it
    empty = KnownEmpty(KnownEmptyConfig(), Plane(np.array([0.0, -1.0, 0.0]), 0.0), [])
    a = pooled.reconstruct(cloud(2), known_empty=empty)
    b = single.reconstruct(cloud(2), known_empty=empty)
    pts = np.random.default_rng(6).uniform(-0.5, 0.5, (9001, 3)).astype(np.float32)
    split, whole = a.occupancy._known_empty_mask(pts, pooled.pool), a.occupancy._known_empty_mask(pts, None)
    assert np.array_equal(split, whole) and 0.2 < whole.mean() < 0.8  # the test marks a real share of points
    assert np.allclose(a.occupancy.probabilities(pts, pooled.pool), b.occupancy.probabilities(pts), atol=1e-6)
    assert np.all(a.occupancy.probabilities(pts, pooled.pool)[whole] == 0.0)
