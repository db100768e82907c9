"""The ``reconstruction_node`` console command: the process is set up before the node's heavy imports (torch,
rclpy, numpy) start threads that allocate or load numpy's BLAS, then :func:`occnet_ros.ros.reconstruction_node.main`
runs."""
from __future__ import annotations

from occnet_ros.blas_threads import NODE_BLAS_THREADS, limit_blas_threads
from occnet_ros.process_memory import NODE_MALLOC_ARENAS, keep_freed_buffers, limit_malloc_arenas


def main(args=None) -> int:
    """glibc's malloc limited to :data:`~occnet_ros.process_memory.NODE_MALLOC_ARENAS` arenas and keeping freed
    buffers for reuse (:func:`~occnet_ros.process_memory.keep_freed_buffers`; this process only), numpy's BLAS to
    :data:`~occnet_ros.blas_threads.NODE_BLAS_THREADS` threads (here and in the node's worker processes), then the
    node."""
    limit_malloc_arenas(NODE_MALLOC_ARENAS)
    keep_freed_buffers()
    limit_blas_threads(NODE_BLAS_THREADS)
    from occnet_ros.ros.reconstruction_node import main as node_main

    return node_main(args)
