"""Quadric decimation in a worker process, so that the calling process's Python GIL stays free.

Both decimators hold the GIL of the process that calls them for as long as they run (measured on a 2-core
machine, a 178k-face 128^3 network mesh to 5000 faces: fast-simplification 0.2-0.3 s, Open3D's
``simplify_quadric_decimation``, the fallback for meshes the fast one would open, 1.7 s). In the node that
stalls every other thread, the occupancy query service included, until it returns.
:class:`ProcessDecimation` runs :func:`occnet_ros.perception.mesh_ops.fast_or_open3d_decimation` in one persistent worker
process and is a drop-in ``decimate`` for :func:`occnet_ros.perception.mesh_ops.simplify_mesh`: the calling
thread waits on a socket without the GIL. The worker is a fresh interpreter (``python -c``) that imports
only numpy and the decimators (about 110 MB), not a forked copy of the parent (torch, ROS threads) nor a
multiprocessing spawn (which would re-import the parent's main script: for the node, torch and rclpy, about
380 MB). A worker that cannot start makes :meth:`ProcessDecimation.start` raise :class:`DecimationWorkerError`;
a call then decimates in the calling process, with a warning.

The worker never outlives the node, however it ends, and ignores SIGINT (:mod:`occnet_ros.worker_process`).
Pure Python, no ROS.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

import numpy as np

from occnet_ros.blas_threads import NODE_BLAS_THREADS, limit_blas_threads
from occnet_ros.perception.mesh_ops import fast_or_open3d_decimation, fast_quadric_decimation, quadric_decimation
from occnet_ros.worker_process import WorkerConnection, WorkerLost, child_arguments, serve

__all__ = ["ProcessDecimation", "DecimationWorkerError"]

_TETRAHEDRON = (np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
                np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.int64))


class DecimationWorkerError(RuntimeError):
    """No worker process could be started (:meth:`ProcessDecimation.start`), or the object was closed."""


_ENTRY = "occnet_ros.perception.decimation_worker:_child_main"
_NAME = "the decimation worker process"


def _child_main() -> None:
    """The worker process's entry: numpy's BLAS on one thread (:mod:`occnet_ros.blas_threads`), then each ``(fn, args)``
    request is run as ``fn(*args)``."""
    limit_blas_threads(NODE_BLAS_THREADS)
    conn, parent_pid = child_arguments()
    serve(conn, parent_pid, lambda request: request[0](*request[1]))


def _warm_up() -> int:
    """Import the decimators (Open3D's where installed; by decimating a tetrahedron) and marching cubes (of grids sent to the worker)
    -> this process's id."""
    from occnet_ros.reconstruction import mise  # noqa: F401  (scikit-image, no torch)

    fast_quadric_decimation(*_TETRAHEDRON, 4)
    try:
        quadric_decimation(*_TETRAHEDRON, 4)
    except ImportError:  # an install without Open3D (the GPU benchmark's machine): the fallback decimator, needed
        pass  # only where fast-simplification misses the budget, raises then, naming the missing module
    return os.getpid()


class ProcessDecimation:
    """``decimate(vertices, faces, target_faces) -> (vertices, faces)`` run in a worker process.

    vertices: (V, 3) float64, faces: (F, 3) int64, any frame and unit (returned in the same), exactly as
    :func:`~occnet_ros.perception.mesh_ops.fast_or_open3d_decimation` returns them; its exceptions (e.g. for malformed
    input) are raised here as they are. The worker starts on the first call (or :meth:`start`, which also
    imports Open3D there, so the first mesh does not pay for it). Calls never fail because of the worker: if it
    has died, a new one is started and the mesh is sent again; if that one dies too, the mesh is returned as
    it came (undecimated: it may be what kills the worker, and would kill the calling process just the same);
    if the worker gives no answer (or does not start) within ``timeout_s`` seconds (it is then killed), the
    mesh is decimated in the calling process instead. The next call starts a new worker. ``warn`` (default: this module's logger) is
    called with one sentence each time a new worker replaces a lost one and each time a mesh is decimated in
    the calling process; :attr:`restarts` counts the replacements. Thread-safe (one mesh at a time);
    :meth:`close` (or ``with``) stops the worker. See the module docstring for how the worker ends with its
    parent process. ``nice``: added to the worker process's nice value (0..19; see
    :mod:`occnet_ros.perception.priority`)."""

    def __init__(self, timeout_s: float = 120.0, warn: Callable[[str], None] | None = None, nice: int = 0):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
            raise ValueError(f"nice must be an integer in 0..19, got {nice!r}")
        self.nice = nice
        self.timeout_s = float(timeout_s)
        self._warn = warn if warn is not None else logging.getLogger(__name__).warning
        self._worker: WorkerConnection | None = None
        self._lost: str | None = None  # why the last worker was lost, until a new one has started
        self._lock = threading.Lock()  # one request at a time
        self._closed = False
        self.restarts = 0

    def _ask(self, fn, args: tuple):
        """``fn(*args)`` in the worker, starting one if needed; one new worker and a second try if it died.
        Raises :class:`WorkerLost` after the second loss or a timeout."""
        with self._lock:
            for attempt in (1, 2):
                if self._closed:
                    raise DecimationWorkerError("the decimation worker was closed")
                try:
                    if self._worker is None:
                        self._worker = WorkerConnection(_ENTRY, _NAME, self.timeout_s, self.nice)
                        if self._closed:  # closed while it started
                            self._worker.stop(0.0)
                            self._worker = None
                            raise DecimationWorkerError("the decimation worker was closed")
                        if self._lost is not None:
                            self.restarts += 1
                            self._warn(f"{self._lost}; started a new one (pid {self._worker.pid})")
                        self._lost = None
                    return self._worker.ask((fn, args), self.timeout_s)
                except WorkerLost as e:
                    self._worker, self._lost = None, str(e)
                    if self._closed:
                        raise DecimationWorkerError("the decimation worker was closed") from e
                    if e.timed_out or attempt == 2:
                        raise

    def start(self) -> int:
        """Start the worker (if none is running) and import Open3D in it; -> the worker's process id. Raises
        :class:`DecimationWorkerError` if no worker answers (twice, or once within ``timeout_s``) or after
        :meth:`close`."""
        try:
            return self._ask(_warm_up, ())
        except WorkerLost as e:
            raise DecimationWorkerError(str(e)) from e

    def __call__(self, vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
        args = (np.ascontiguousarray(vertices, np.float64), np.ascontiguousarray(faces, np.int64), int(target_faces))
        try:
            return self._ask(fast_or_open3d_decimation, args)
        except WorkerLost as e:
            if not e.timed_out:  # two workers died on this mesh: it may be what kills them, so not here
                self._warn(f"{e}; this mesh ({len(args[1])} faces) is left undecimated")
                return args[0], args[1]
            self._warn(f"{e}; decimating this mesh ({len(args[1])} faces) in this process instead")
        return fast_or_open3d_decimation(*args)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker; returns within about ``timeout_s`` + 1 s. A decimation running in the worker may
        finish within ``timeout_s`` (its call then returns normally); after that the worker is killed (SIGKILL)
        and that call raises :class:`DecimationWorkerError`, as do all later calls. Closing again
        does nothing."""
        self._closed = True
        deadline = time.monotonic() + max(timeout_s, 0.0)
        if self._lock.acquire(timeout=max(timeout_s, 0.0)):
            try:
                worker, self._worker = self._worker, None
                if worker is not None:
                    worker.stop(max(deadline - time.monotonic(), 0.0))
            finally:
                self._lock.release()
        else:
            worker = self._worker  # busy past timeout_s: end it; its caller sees the loss and raises
            if worker is not None:
                worker.kill()

    def __enter__(self) -> "ProcessDecimation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

