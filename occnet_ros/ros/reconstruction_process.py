"""The node's reconstruction in a process of its own (parameter ``reconstruction_process``), so that the
query service never waits for the reconstruction's Python.

In one process, every thread takes turns holding the GIL: while the worker thread segments, cleans, anchors and
colours a frame, a query waits for it each time it needs the interpreter (on the 2-core AMD EPYC, under the
benchmark's load, a query's p99 held 7.9 ms of such waits). :class:`ReconstructionProcess` runs the
:class:`~occnet_ros.ros.frame_processor.FrameProcessor` in a worker process started with the node (a fresh
interpreter that never outlives it, :mod:`occnet_ros.worker_process`; it loads the same checkpoint and starts the
decimation workers itself). Per frame the node sends the frame's messages (a 640x480 cloud with mask and image:
6.5 MB, pickled in about 1 ms) and receives the :class:`~occnet_ros.ros.frame_processor.FrameOutcome`: the bytes to
publish and each object's codes and known-empty test (4 tabletop objects at 64^3: 5.4 MB, unpickled in about
2 ms). The objects' occupancy fields arrive without the network; the node attaches its own copy of it
(:meth:`~occnet_ros.reconstruction.occupancy_field.OccupancyField.attach`), which answers the queries.

The process runs at the node's ``worker_nice``, its threads and its decimation workers too. A process that dies
loses its frame (the error is logged) and is replaced on the next frame; what it kept (objects for reuse, the
object map) starts empty again, which the warning says. Stopping cuts a frame in progress short.
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Callable

from occnet_ros.ros.node_params import NodeParams
from occnet_ros.worker_process import WorkerConnection, WorkerLost, child_arguments, serve

if TYPE_CHECKING:  # the worker process imports this module before torch: its malloc limit comes first
    from occnet_ros.ros.frame_processor import FrameOutcome, FrameRequest

__all__ = ["ReconstructionProcess", "ReconstructionProcessError", "START_TIMEOUT_S", "FRAME_TIMEOUT_S"]

_ENTRY = "occnet_ros.ros.reconstruction_process:_child_main"
_NAME = "the reconstruction process"
START_TIMEOUT_S = 300.0
"""Seconds the process may take to start: import torch, load the checkpoint, start the decimation workers
(5-10 s on a 2-core machine)."""
FRAME_TIMEOUT_S = 600.0
"""Seconds one frame may take before the process is taken for hung, killed and replaced."""


class ReconstructionProcessError(RuntimeError):
    """The process did not start, was lost during a frame (the frame is dropped), or was closed."""


class _Server:
    """In the worker process: ``("start", (params, pose_source))`` builds the processor; ``("frame", request)``
    answers a :class:`FrameOutcome`."""

    def __init__(self):
        self.processor = None
        self.heap = None

    def __call__(self, request):
        kind, payload = request
        if kind == "frame":
            try:
                return self.processor.process(payload)
            finally:
                self.heap.release()  # the frame's garbage collected and its memory returned
        if kind == "start":
            return self._start(*payload)
        raise ValueError(f"unknown request {kind!r}")

    def _decimation_warning(self, text: str) -> None:
        """A lost decimation worker, said with the frame it happened in (the warning is only given in a frame)."""
        if self.processor is not None:
            self.processor.log("decimation", text)

    def _start(self, params: NodeParams, pose_source: str) -> dict:
        import gc

        import torch

        from occnet_ros.perception.decimation_worker import DecimationWorkerError
        from occnet_ros.perception.heap_release import HeapRelease
        from occnet_ros.perception.mesh_ops import fast_or_open3d_decimation
        from occnet_ros.perception.parallel_decimation import ParallelDecimation
        from occnet_ros.ros.frame_processor import FrameProcessor, load_reconstructor

        reconstructor = load_reconstructor(params)
        if reconstructor.pool.threads > 1:  # the pool's threads use one torch thread each (node_entry.main)
            torch.set_num_threads(1)
        decimate = fast_or_open3d_decimation
        if params.mesh.max_faces > 0 and params.mesh.decimate_in_worker:
            # nice 0 here: the decimation workers inherit this process's priority
            decimate = ParallelDecimation(params.mesh.decimation_workers, warn=self._decimation_warning)
            try:
                decimate.start()
            except DecimationWorkerError as e:
                raise DecimationWorkerError(f"parameter 'mesh.decimate_in_worker' = true, but the decimation "
                                            f"worker process did not start ({e}); set it to false to decimate "
                                            f"in the reconstruction process") from e
        self.processor = FrameProcessor(params, reconstructor, decimate, pose_source)
        self.heap = HeapRelease()
        gc.freeze()  # start-up's objects out of the collector's reach (node_entry's module docstring)
        gc.collect()
        self.heap.collect_garbage = True
        from occnet_ros.blas_threads import blas_thread_counts

        return {"pid": os.getpid(), "nice": os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else None,
                "blas_threads": blas_thread_counts()}


def _child_main() -> None:
    """The worker process's entry: malloc arenas and numpy's BLAS threads limited as in the node (freed buffers are not
    kept for reuse here: this process returns its heap after every frame), then :class:`_Server` until the node ends."""
    from occnet_ros.blas_threads import NODE_BLAS_THREADS, limit_blas_threads
    from occnet_ros.process_memory import NODE_MALLOC_ARENAS, limit_malloc_arenas

    limit_malloc_arenas(NODE_MALLOC_ARENAS)  # before torch is imported
    limit_blas_threads(NODE_BLAS_THREADS)  # inherited from the node where it started by its command; else here
    conn, parent_pid = child_arguments()
    serve(conn, parent_pid, _Server())


class ReconstructionProcess:
    """:meth:`FrameProcessor.process <occnet_ros.ros.frame_processor.FrameProcessor.process>` in a worker process.

    params, pose_source: as for the processor; model, query_graph: the node's copy of the network and its one-call
    query decoder, attached to every object that comes back; nice: the process's nice increment (0..19); warn:
    where a replaced process is reported. Thread-safe (one frame at a time)."""

    def __init__(self, params: NodeParams, pose_source: str, model, query_graph=None, nice: int = 0,
                 warn: Callable[[str], None] = lambda text: None):
        self.params = params
        self.pose_source = pose_source
        self.model = model
        self.query_graph = query_graph
        self.nice = nice
        self.warn = warn
        self._conn: WorkerConnection | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._lost: str | None = None
        self.restarts = 0
        self.info: dict = {}
        """What the running process said when it started: ``pid``, ``nice``, ``blas_threads`` (each loaded BLAS
        library's thread count)."""

    def _start_locked(self) -> WorkerConnection:
        try:
            conn = WorkerConnection(_ENTRY, _NAME, START_TIMEOUT_S, self.nice)
        except WorkerLost as e:
            raise ReconstructionProcessError(str(e)) from e
        try:
            self.info = conn.ask(("start", (self.params, self.pose_source)), START_TIMEOUT_S)
        except WorkerLost as e:
            raise ReconstructionProcessError(str(e)) from e
        except BaseException:
            conn.stop(0.0)
            raise
        return conn

    def start(self) -> dict:
        """Start the process (if none runs) and build its processor -> :attr:`info`. Raises what building it
        raised there (a :class:`~occnet_ros.ros.node_params.ParamError`, a decimation worker that did not start) or
        :class:`ReconstructionProcessError`."""
        with self._lock:
            if self._closed:
                raise ReconstructionProcessError(f"{_NAME} was closed")
            if self._conn is None:
                self._conn = self._start_locked()
            return self.info

    def process(self, request: FrameRequest, should_stop: Callable[[], bool] | None = None) -> FrameOutcome:
        """The outcome of ``request``, its objects attached to :attr:`model`. Raises what the processor raised
        (the node's reasons to drop a frame) or :class:`ReconstructionProcessError` when the process died or hung
        on this frame (it is replaced on the next call). ``should_stop`` is not consulted: :meth:`close` ends a
        frame in progress."""
        with self._lock:
            if self._closed:
                raise ReconstructionProcessError(f"{_NAME} was closed")
            if self._conn is None:
                self._conn = self._start_locked()
                self.restarts += 1
                self.warn(f"{self._lost}; started a new one (pid {self.info.get('pid')}); the objects kept for "
                          f"reuse{' and the object map' if self.pose_source else ''} start empty")
            conn = self._conn
            try:
                outcome = conn.ask(("frame", request), FRAME_TIMEOUT_S)
            except WorkerLost as e:
                self._conn, self._lost = None, str(e)
                if self._closed:
                    raise ReconstructionProcessError(f"{_NAME} was closed during a frame") from e
                raise ReconstructionProcessError(f"{e}: frame dropped") from e
        for stored in outcome.stored:
            stored.obj.occupancy.attach(self.model, self.query_graph)
        return outcome

    def close(self, timeout_s: float = 1.0) -> None:
        """Stop the process: an idle one at once; a frame in progress may finish within ``timeout_s``, then the
        process is killed (that frame's call raises :class:`ReconstructionProcessError`). Closing again does
        nothing."""
        self._closed = True
        if self._lock.acquire(timeout=max(timeout_s, 0.0)):
            try:
                conn, self._conn = self._conn, None
                if conn is not None:
                    conn.stop(1.0)
            finally:
                self._lock.release()
        else:
            conn = self._conn
            if conn is not None:
                conn.kill()

    @property
    def pid(self) -> int | None:
        """The running process's id, or None."""
        conn = self._conn
        return conn.pid if conn is not None else None

