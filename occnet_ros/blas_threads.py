"""How many threads numpy's BLAS library may use in the node's processes (pure Python, no ROS).

numpy's linear algebra (matrix products such as the support plane's RANSAC scores, least squares, eigen-decompositions)
runs on the BLAS library numpy was built with: OpenBLAS in the PyPI wheels, which keeps one thread per core. After a
call that used them, OpenBLAS's threads go on spinning on their cores for a while (``OPENBLAS_THREAD_TIMEOUT``, about
2^28 cycles) before they sleep, and on a 2-core machine that is the core the network's threads need next: the
encoding that follows a frame's segmentation ran 55-69 ms against 31-36 ms for the same object encoded on its own.
The node's numpy work is on small matrices, where a second BLAS thread gains nothing, so the node's processes give
BLAS one thread. Measured on a 2-core AMD EPYC (a 640x480 frame of 4 objects and a frame of 1 object from the
benchmark's scene, ``FramePipeline`` with the decimation worker processes, 24 frames per variant alternated in one
process): one object 217.5 -> 196.5 ms, 4 objects 638.7 -> 609.5 ms with the limit in that process only; with it in the
worker processes too (``OPENBLAS_NUM_THREADS=1`` for the whole process tree, two runs): one object 190.6 and 168.0 ms
against 236.5 and 221.7 ms, its encoding 36-54 ms against 67-69 ms; no stage took longer.

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
