"""How many threads numpy's BLAS library may use in the node's processes (pure Python, no ROS).

numpy's linear algebra (matrix products such as the support plane's RANSAC scores, least squares, eigen-decompositions)
runs on the BLAS library numpy was built with: OpenBLAS in the PyPI wheels, which keeps one thread per core. After a
call that used them, OpenBLAS's threads go on spinning on their cores for a while (``OPENBLAS_THREAD_TIMEOUT``, about
2^28 cycles) before they sleep, and on a 2-core machine that is the core the network's threads need next. The node's
numpy work is on small matrices, where a second BLAS thread gains nothing, so the node's processes give BLAS one
thread. Measured on a 2-core AMD EPYC with the benchmark's 640x480 scene (``FramePipeline`` with the decimation worker
processes, the medians of 12 frames each of the first object alone and of all 4 objects, 4 pairs of processes
alternated, ``OPENBLAS_NUM_THREADS=1`` for the whole process tree against no limit): one object 169.7-192.6 ms against
213.9-251.2 ms, its encoding 33.6-37.7 ms against 58.8-86.3 ms (the RANSAC support plane's matrix products ran just
before it); 4 objects 553.8-598.3 ms against 601.1-665.0 ms.

:func:`limit_blas_threads` limits the BLAS libraries the process has loaded (threadpoolctl) and sets
``OPENBLAS_NUM_THREADS``, which the OpenBLAS copies loaded later (scipy's) and the process's children read; where that
variable is set to another value, it is left to rule.
"""
from __future__ import annotations

import os

__all__ = ["BLAS_THREADS_ENV", "NODE_BLAS_THREADS", "blas_thread_counts", "limit_blas_threads"]

NODE_BLAS_THREADS = 1
"""BLAS threads of ``reconstruction_node``'s processes (the node, its reconstruction process, the decimation
workers)."""
BLAS_THREADS_ENV = "OPENBLAS_NUM_THREADS"
"""The environment variable OpenBLAS reads when it is loaded."""


def limit_blas_threads(threads: int) -> str:
    """Limit numpy's (and scipy's) BLAS to ``threads`` threads in this process and the processes it starts -> what
    was done, one sentence. Nothing where ``OPENBLAS_NUM_THREADS`` is set to another value (it rules). ValueError for
    ``threads`` < 1."""
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    existing = os.environ.get(BLAS_THREADS_ENV)
    if existing and existing != str(threads):
        return f"BLAS threads left to {BLAS_THREADS_ENV}={existing}"
    os.environ[BLAS_THREADS_ENV] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads, user_api="blas")  # the libraries loaded already (numpy's, once numpy is imported)
    return f"BLAS threads limited to {threads}"


def blas_thread_counts() -> list[int]:
    """The thread count of each BLAS library loaded in this process (threadpoolctl's view; empty before numpy is
    imported)."""
    from threadpoolctl import threadpool_info

    return [int(lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"]
