"""Threads that run the network on parts of one batch at the same time (pure Python, no ROS).

Why: torch's own intra-op threads form an OpenMP team per calling thread, and a team whose members the kernel
has given to other threads stalls at every barrier. In the node the reconstruction and the query service run
the network at once on a machine with as many cores as busy threads, so each slowed the other. With the work
split here over threads of one torch thread each, and every other thread of the node at one torch thread
too (``node_entry.main``), no thread waits on a team. Measured on a 2-core AMD EPYC with
``occnet_bench --sections ros`` (4 objects per frame at 64^3, 10k-point queries while frames are reconstructed,
two runs of the section each): query p50 6.4-8.4 ms against 9.8-12.3 ms with ``compute_threads`` 1, calls over
20 ms 1.7 % against 3.0 %, frame latency 0.88-0.98 s against 1.34-1.57 s; the worst call of a run was not
better (79-235 ms against 52-180 ms). One object's MISE decodes at the same rate either way (about 2e6
points/s); the encoder's batch of 12 inputs took 51-53 ms split over two threads against 55-58 ms with two
torch threads.

:class:`ComputePool` holds ``threads`` worker threads, created on first use by the thread that first submits
work (so they inherit its scheduling priority: the node's reconstruction worker lowers its own before it
first runs the network, :mod:`occnet_ros.perception.priority`). Each sets its torch intra-op thread count to
1 when it starts; torch keeps that count per thread, but takes it as the default of threads that first use
torch afterwards. With ``threads`` 1 there are no worker threads: work runs in the calling thread with
torch's own threads. Work given to :meth:`ComputePool.run` by one of the pool's own threads runs in that thread (one
torch thread), so a task may itself call code that uses the pool: the frame pipeline runs whole objects on the pool's
threads at once, each object's network then on its own thread
(:meth:`~occnet_ros.perception.frame_pipeline.FramePipeline.process`).
"""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

import torch

__all__ = ["ComputePool", "split_range", "usable_cores"]

T = TypeVar("T")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def split_range(n: int, parts: int, align: int = 1) -> list[tuple[int, int]]:
    """[0, n) cut into at most ``parts`` contiguous non-empty ranges of about equal size whose inner bounds are
    multiples of ``align`` (so each part's chunks of ``align`` items are the undivided call's chunks) ->
    [(start, stop), ...] in order; [] for n == 0. ValueError for parts or align < 1 or n < 0."""
    if parts < 1 or align < 1 or n < 0:
        raise ValueError(f"need n >= 0, parts >= 1 and align >= 1, got n={n}, parts={parts}, align={align}")
    chunks = -(-n // align)
    parts = min(parts, chunks)
    out, start = [], 0
    for i in range(parts):
        stop = min(n, (chunks * (i + 1) // parts) * align)
        if stop > start:
            out.append((start, stop))
        start = stop
    return out


class ComputePool:
    """``threads`` worker threads with one torch intra-op thread each (see the module's docstring); 1 = none.
    Safe to share between threads: :meth:`run` calls from several threads queue their tasks in one pool."""

    def __init__(self, threads: int = 1):
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
        self.threads = threads
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._member = threading.local()

    def _start_thread(self) -> None:
        torch.set_num_threads(1)
        self._member.yes = True

    def in_pool_thread(self) -> bool:
        """Whether the calling thread is one of this pool's worker threads."""
        return getattr(self._member, "yes", False)

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise RuntimeError("the compute pool is closed")
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix="occnet_compute",
                                                    initializer=self._start_thread)
            return self._executor

    def run(self, tasks: Sequence[Callable[[], T]]) -> list[T]:
        """Call each task, on the pool's threads at the same time when there are several tasks and threads (in the
        calling thread, one after the other, when that is one of the pool's threads) -> their results in order. A
        task's exception is raised here after every task has ended."""
        if len(tasks) <= 1 or self.threads == 1 or self.in_pool_thread():
            return [t() for t in tasks]
        futures = [self._pool().submit(t) for t in tasks]
        errors = [f.exception() for f in futures]
        for e in errors:
            if e is not None:
                raise e
        return [f.result() for f in futures]

    def close(self) -> None:
        """End the worker threads (after the tasks already given); :meth:`run` with several tasks then raises."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
