"""Decimation of large meshes in slabs by several worker processes at once (pure Python, no ROS).

:class:`ParallelDecimation` holds ``workers`` :class:`~occnet_ros.perception.decimation_worker.ProcessDecimation`
workers, each with its own recovery, and gives each a share of a mesh's slabs
(:mod:`occnet_ros.perception.mesh_parts`): as a ``decimate`` for
:func:`~occnet_ros.perception.mesh_ops.simplify_mesh` (a mesh cut into slabs) and, through :meth:`ParallelDecimation.mesh_grid`,
for a MISE grid whose marching cubes runs in the workers too (the grid cut into slabs); through
:meth:`ParallelDecimation.mesh_whole_grid`, for the marching cubes of a grid too small to need decimating.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import numpy as np

from occnet_ros.perception.decimation_worker import DecimationWorkerError, ProcessDecimation
from occnet_ros.worker_process import WorkerLost

__all__ = ["ParallelDecimation"]


class ParallelDecimation:
    """``decimate(vertices, faces, target_faces) -> (vertices, faces)`` of a large mesh in slabs decimated by
    ``workers`` worker processes at once (:func:`~occnet_ros.perception.mesh_parts.parted_decimation`); a mesh too
    small to cut, or whose joined slabs fail its checks, is decimated whole by the first worker as
    :class:`ProcessDecimation` does. Each worker is a :class:`ProcessDecimation` (about 110 MB each) with its recovery:
    where a worker is lost while decimating a slab, its :class:`ProcessDecimation` warns and the mesh is decimated
    whole instead. ``workers`` 1: one worker that decimates the slabs one after the other (still faster than the
    whole mesh at once). ``timeout_s``, ``warn``, ``nice``: as for :class:`ProcessDecimation`. Thread-safe (one
    mesh at a time)."""

    def __init__(self, workers: int = 2, timeout_s: float = 120.0, warn: Callable[[str], None] | None = None,
                 nice: int = 0):
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 16:
            raise ValueError(f"workers must be an integer in 1..16, got {workers!r}")
        self._warn = warn if warn is not None else logging.getLogger(__name__).warning
        self.slots = [ProcessDecimation(timeout_s, self._warn, nice) for _ in range(workers)]
        self._lock = threading.Lock()

    @property
    def restarts(self) -> int:
        """Workers started in place of lost ones, over all slots."""
        return sum(s.restarts for s in self.slots)

    def start(self) -> list[int]:
        """Start every worker (:meth:`ProcessDecimation.start`) -> their process ids."""
        return [s.start() for s in self.slots]

    def _run_parts(self, jobs, fn=None):
        """Slab jobs spread over the workers, all asked at once, each worker calling ``fn`` (default
        :func:`~occnet_ros.perception.mesh_parts.decimate_parts`) on its share -> results in order, or None (warned)
        when a worker was lost on its share."""
        from occnet_ros.perception.mesh_parts import decimate_parts

        fn = fn or decimate_parts
        shares = [list(range(i, len(jobs), len(self.slots))) for i in range(len(self.slots))]
        results: list = [None] * len(jobs)
        failed: list[str] = []

        def ask(slot: ProcessDecimation, idx: list[int]) -> None:
            try:
                for k, r in zip(idx, slot._ask(fn, ([jobs[k] for k in idx],))):
                    results[k] = r
            except (WorkerLost, DecimationWorkerError) as e:
                failed.append(str(e))

        threads = [threading.Thread(target=ask, args=(slot, idx), name="occnet_decimation_part")
                   for slot, idx in zip(self.slots, shares) if idx]
        for t in threads[1:]:
            t.start()
        ask(self.slots[0], shares[0])  # the first share in this thread
        for t in threads[1:]:
            t.join()
        if failed:
            self._warn(f"{failed[0]}; this mesh is decimated whole instead")
            return None
        return results

    def __call__(self, vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
        from occnet_ros.perception.mesh_parts import parted_decimation

        with self._lock:
            return parted_decimation(vertices, faces, target_faces, max(2, len(self.slots)), self._run_parts,
                                     whole=self.slots[0])

    def mesh_grid(self, values: np.ndarray, threshold: float, box_half: float, target_faces: int
                  ) -> tuple[np.ndarray, np.ndarray, int] | None:
        """The mesh of a MISE corner grid reduced to ``target_faces``, marching cubes and decimation done slab by
        slab in the workers at once (:func:`~occnet_ros.perception.mesh_parts.parted_grid_decimation`), so the
        calling process neither holds its GIL for marching cubes nor sends the full mesh -> (vertices canonical,
        faces, marching-cubes faces), or None where the caller should mesh the grid whole."""
        from occnet_ros.perception.mesh_parts import mesh_and_decimate_slabs, parted_grid_decimation

        with self._lock:
            return parted_grid_decimation(values, threshold, box_half, target_faces, max(2, len(self.slots)),
                                          lambda jobs: self._run_parts(jobs, mesh_and_decimate_slabs))

    def mesh_whole_grid(self, values: np.ndarray, threshold: float, box_half: float
                        ) -> tuple[np.ndarray, np.ndarray] | None:
        """:func:`~occnet_ros.reconstruction.mise.mesh_from_values` of a MISE corner grid (R+1)^3, with marching cubes
        in the first worker, so the calling process does not hold its GIL for it (scikit-image's holds it, about
        5 ms per object of the simulated tabletop at 64^3, while the node's query service waits) -> (vertices (V, 3)
        float32 canonical, faces (F, 3) int64), the same arrays; or None (warned) when the worker was lost: the caller
        then meshes the grid itself."""
        from occnet_ros.reconstruction.mise import marching_cubes_at, padded_subgrid

        padded = padded_subgrid(values, threshold)
        if padded is None:
            return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
        sub, start = padded
        with self._lock:
            try:
                return self.slots[0]._ask(marching_cubes_at, (sub, start, float(threshold), values.shape[0] - 1,
                                                              float(box_half)))
            except (WorkerLost, DecimationWorkerError) as e:
                self._warn(f"{e}; this grid is meshed in the calling process instead")
                return None

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop every worker (:meth:`ProcessDecimation.close`, each within ``timeout_s``)."""
        for s in self.slots:
            s.close(timeout_s)

    def __enter__(self) -> "ParallelDecimation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
