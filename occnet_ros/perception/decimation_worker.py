"""Quadric decimation in a worker process, so that the calling process's Python GIL stays free.

Open3D's ``simplify_quadric_decimation`` holds the GIL of the process that calls it for as long as it
runs (measured on a 2-core machine: about 0.1 s for a 64^3 marching-cubes mesh, 2.3 s for a 128^3 one). In the node
that stalls every other thread, the occupancy query service included, until it returns.
:class:`ProcessDecimation` runs :func:`occnet_ros.perception.mesh_ops.quadric_decimation` in one persistent worker
process and is a drop-in ``decimate`` for :func:`occnet_ros.perception.mesh_ops.simplify_mesh`: the calling
thread waits on a pipe without the GIL. The worker is spawned, not forked (the parent has torch and ROS
threads), so every script that may use it guards its ``main()`` with ``if __name__ == "__main__"``
(a spawned process re-imports the parent's main file; a program read from standard input has none, and
its worker cannot start: :class:`DecimationWorkerError`).
Pure Python, no ROS.
"""
from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np

from occnet_ros.perception.mesh_ops import quadric_decimation

__all__ = ["ProcessDecimation", "DecimationWorkerError"]

_TETRAHEDRON = (np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
                np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.int64))


class DecimationWorkerError(RuntimeError):
    """The worker process died twice in a row on one mesh (or timed out); the mesh was not decimated."""


def _worker_pid() -> int:
    return os.getpid()


class ProcessDecimation:
    """``decimate(vertices, faces, target_faces) -> (vertices, faces)`` run in a worker process.

    vertices: (V, 3) float64, faces: (F, 3) int64, any frame and unit (returned in the same), exactly as
    :func:`~occnet_ros.perception.mesh_ops.quadric_decimation` returns them. The worker starts on the first call (or
    :meth:`start`, which also imports Open3D there, so the first mesh does not pay for it). If the worker
    dies, one new worker is started and the mesh is tried once more; a second failure, or no answer in
    ``timeout_s`` seconds, raises :class:`DecimationWorkerError`. Thread-safe; :meth:`close` (or ``with``)
    stops the worker."""

    def __init__(self, timeout_s: float = 120.0):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.restarts = 0

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._closed:
                raise DecimationWorkerError("the decimation worker was closed")
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def _restart(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is broken:
                for proc in list((getattr(broken, "_processes", None) or {}).values()):
                    proc.terminate()  # a worker stuck past the timeout must not linger
                broken.shutdown(wait=False, cancel_futures=True)
                self._pool = None
                self.restarts += 1

    def _run(self, fn, *args):
        for attempt in (0, 1):
            pool = self._executor()
            try:
                return pool.submit(fn, *args).result(timeout=self.timeout_s)
            except BrokenProcessPool as e:
                self._restart(pool)
                if attempt == 1:
                    raise DecimationWorkerError(f"the decimation worker process died twice: {e}") from e
            except TimeoutError as e:
                self._restart(pool)
                raise DecimationWorkerError(f"no answer from the decimation worker in {self.timeout_s} s") from e

    def start(self) -> int:
        """Start the worker (if not running) and import Open3D in it; -> the worker's process id."""
        self._run(quadric_decimation, *_TETRAHEDRON, 4)
        return self._run(_worker_pid)

    def __call__(self, vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
        return self._run(quadric_decimation, np.ascontiguousarray(vertices, np.float64),
                         np.ascontiguousarray(faces, np.int64), int(target_faces))

    def close(self) -> None:
        """Stop the worker (waits for a running decimation); later calls raise."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ProcessDecimation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
