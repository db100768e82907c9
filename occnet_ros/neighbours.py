"""k-nearest-neighbour queries in 3-D, one implementation for the whole package (pure numpy + pykdtree, no ROS);
the pairs within a radius of Euclidean clustering stay with scipy's ``cKDTree.query_pairs``, which pykdtree lacks.

:class:`NeighbourIndex` is a k-d tree over (N, 3) points. It answers as ``scipy.spatial.cKDTree.query`` does
(distances sorted ascending; a neighbour that does not exist, beyond ``max_distance`` or past the N-th point, is
distance ``inf`` and index N), so callers can test ``np.isfinite(dist)`` whatever the cause.

Why pykdtree, and on how many threads: a query is cut into parts of at least :data:`PART_MIN_WORK` neighbours
(query points times k), at most one per usable core, each searched on a thread of its own (Python threads: the search
releases the GIL), not by pykdtree's OpenMP loop; a query too small for two parts runs on the calling thread alone.
On the 2-core AMD EPYC VM, the object map's pipeline on a converged 640x480 frame of 4 objects (in process, 5 x 5
frames of each variant alternated in a diagnostic harness around
:class:`~occnet_ros.perception.map_pipeline.MapPipeline`; ``occnet_bench --sections map`` measures the shipped one)
took 57 ms a frame with pykdtree on one thread, 81 ms with scipy's cKDTree on one worker, 87 ms with pykdtree on two
OpenMP threads and 92 ms with cKDTree's ``workers=-1``: OpenMP's threads keep spinning on the second core after each
query (a core the node's other processes want), cKDTree starts threads for every call, and the numpy work between the
queries paid for both. pykdtree on one thread answers about as fast as cKDTree on two and releases the GIL while it
searches, so parts on Python threads use the second core without spinning on it.

pykdtree's loop takes the OpenMP thread count of the calling thread, which torch and ``OMP_NUM_THREADS`` set
(``torch.set_num_threads(2)`` in the benchmark's process made it two); so each query says one itself (threadpoolctl,
for the duration of the query only). The OpenMP libraries are looked up again only when the process has imported
modules since the last query (:func:`_openmp`; a lookup takes about 0.6 ms).
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import sys
import threading

import numpy as np
from pykdtree.kdtree import KDTree
from threadpoolctl import ThreadpoolController

__all__ = ["NeighbourIndex", "PART_MIN_WORK", "searching_alone"]

PART_MIN_WORK = 5_000
"""Neighbours (query points times k) that each part of a query searched on a thread of its own gets at least; a
query of fewer than twice this runs on the calling thread alone. Queries of uniform random points in a 10 cm cube,
2-core AMD EPYC, medians of 60 (one thread against two parts): 600 x 17 neighbours 0.75 against 0.73 ms (the break
even), 10k x 1 1.85 against 1.08 ms, 2.5k x 32 8.8 against 4.5 ms, 5k x 17 10.4 against 5.1 ms. In the node's
stages (``occnet_bench --sections latency``, one 64^3 object of 5k points, 3 runs alternated with one part below 250k
neighbours): the outlier removal 7.2-8.0 -> 4.4-5.1 ms, the anchoring 14.2-16.0 -> 11.7-12.5 ms, the colours
3.9-4.4 -> 2.7-3.1 ms; where the frame's objects already run at once on both cores, parts made the 4-object frame
slower (``--sections frame``, 3 alternated pairs: 274-295 against 252-254 ms), so those threads search alone
(:func:`searching_alone`)."""

_ALONE = contextvars.ContextVar("occnet_neighbours_alone", default=False)
"""Whether the current thread's queries search on it alone (:func:`searching_alone`)."""


@contextlib.contextmanager
def searching_alone():
    """Within this context the calling thread's queries search on that thread alone, never in parts on other threads:
    for work that runs beside other threads that already keep every core busy (the frame pipeline's objects at once,
    :func:`~occnet_ros.perception.frame_pipeline.run_objects`)."""
    token = _ALONE.set(True)
    try:
        yield
    finally:
        _ALONE.reset(token)


@functools.lru_cache(maxsize=1)
def _openmp(n_modules: int):
    """The OpenMP libraries the process has loaded (threadpoolctl) while ``n_modules`` modules were imported: a library
    comes with an extension module (torch's OpenMP with torch), so the same count finds the same libraries."""
    return ThreadpoolController().select(user_api="openmp")


class NeighbourIndex:
    """A k-d tree over ``points`` (N, 3), any frame and unit; float32 points are kept in float32 (queries are
    cast to the points' dtype), anything else in float64. N may be 0 (every query then finds nothing).
    Read-only after construction: several threads may query it at once."""

    def __init__(self, points: np.ndarray):
        p = np.asarray(points)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must be (N, 3), got shape {p.shape}")
        self.dtype = np.float32 if p.dtype == np.float32 else np.float64
        self.points = np.ascontiguousarray(p, dtype=self.dtype)
        self._tree = KDTree(self.points) if len(self.points) else None

    def __len__(self) -> int:
        return len(self.points)

    def query(self, queries: np.ndarray, k: int = 1, max_distance: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest points of each query point (Q, 3), same frame and unit, closer than ``max_distance``
        -> (distances (Q, k) float64 ascending, indices (Q, k) int64 into the points); missing neighbours:
        distance inf and index N. Shapes stay (Q, k) for k = 1 too."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        if not max_distance > 0:
            raise ValueError(f"max_distance must be > 0, got {max_distance}")
        q = np.ascontiguousarray(np.asarray(queries, dtype=self.dtype).reshape(-1, 3))
        n = len(self.points)
        dist = np.full((len(q), int(k)), np.inf)
        idx = np.full((len(q), int(k)), n, dtype=np.int64)
        found = min(int(k), n)
        if found == 0 or len(q) == 0:
            return dist, idx
        bound = None if np.isinf(max_distance) else float(max_distance)
        parts = 1 if _ALONE.get() else max(1, min(len(os.sched_getaffinity(0)), len(q) * found // PART_MIN_WORK,
                                                  len(q)))
        d = np.empty((len(q), found))
        i = np.empty((len(q), found), np.int64)

        failed: list[BaseException] = []

        def search(a: int, b: int) -> None:
            try:
                with _openmp(len(sys.modules)).limit(limits=1):  # one thread: no OpenMP team (module docstring)
                    da, ia = self._tree.query(q[a:b], k=found, distance_upper_bound=bound)
                d[a:b], i[a:b] = da.reshape(b - a, found), ia.reshape(b - a, found)
            except BaseException as e:  # re-raised in the calling thread
                failed.append(e)

        cuts = np.linspace(0, len(q), parts + 1).astype(int)
        others = [threading.Thread(target=search, args=(a, b), name="occnet_neighbours")
                  for a, b in zip(cuts[1:-1], cuts[2:])]
        for t in others:
            t.start()
        search(cuts[0], cuts[1])
        for t in others:
            t.join()
        if failed:
            raise failed[0]
        missing = i >= n  # pykdtree marks a neighbour beyond the bound with index N (and inf)
        dist[:, :found] = np.where(missing, np.inf, d)
        idx[:, :found] = np.where(missing, n, i)
        return dist, idx

    def nearest(self, queries: np.ndarray, max_distance: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
        """The nearest point of each query point (Q, 3) -> (distances (Q,) float64, indices (Q,) int64), inf and N
        where there is none closer than ``max_distance``."""
        dist, idx = self.query(queries, 1, max_distance)
        return dist[:, 0], idx[:, 0]
