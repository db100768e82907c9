"""The ``reconstruction_node`` command: the process is set up before the node's heavy imports (torch, rclpy, numpy)
start threads that allocate or load numpy's BLAS, then the node
(:class:`~occnet_ros.ros.reconstruction_node.ReconstructionNode`) is built and spun until SIGINT.

``main`` spins the node (subscriptions, ``query_points``, parameters; the service has a thread of its own) with a
SingleThreadedExecutor, whose callbacks only store messages. ``main`` shortens the interpreter's thread switch
interval (:data:`SWITCH_INTERVAL_S`) so that a query waits at most about that long each time it takes the GIL back
from another thread running Python code (the in-process reconstruction, or the worker receiving a frame's objects).
numpy's BLAS runs on one thread in the node's process and its worker processes (:mod:`occnet_ros.blas_threads`: its
spinning threads took the core the network needed). A full collection of Python's cyclic garbage collector also holds
the GIL while it walks every tracked object; after start-up the node holds some 240k-280k of them (torch, the model,
rclpy; ``gc.get_freeze_count()`` after the freeze), and one collection took 0.2-0.25 s on a 2-core EPYC, so ``main``
freezes them (``gc.freeze()``) once the node is built. Freezing alone stopped full collections altogether: CPython
starts one only when the objects that entered the oldest generation since the last full collection exceed a quarter
of those it held then (the frozen ones), so cycles such as a trimesh mesh and its visuals waited there with their
arrays (59-63 meshes alive in a 4-minute soak, no full collection after start-up). ``main`` therefore also collects
once after the freeze (which resets that count), and the worker collects after every frame
(:class:`~occnet_ros.perception.heap_release.HeapRelease`; 0.05 ms once frozen, against 135-160 ms before). Before
torch and rclpy are imported, ``main`` limits glibc's malloc to two arenas, so memory the threads free is reused
rather than kept per thread, and has it keep freed buffers of up to 32 MiB for reuse rather than unmap them, so a
received cloud does not fault its pages in under the GIL (:mod:`occnet_ros.process_memory`).
"""
from __future__ import annotations

import sys

from occnet_ros.blas_threads import NODE_BLAS_THREADS, limit_blas_threads
from occnet_ros.process_memory import NODE_MALLOC_ARENAS, keep_freed_buffers, limit_malloc_arenas

SWITCH_INTERVAL_S = 0.0002
"""sys.setswitchinterval of the node process (Python's default is 0.005 s): how long a thread that holds
the GIL in Python code keeps it before a waiting thread (the query service) may take it. A query takes the GIL
back after each torch or large numpy call, dozens of times per query even with the one-call decoder
(:mod:`occnet_ros.network.query_graph`), and each time may wait this long while the reconstruction runs Python.
On the 2-core AMD EPYC (``occnet_bench --sections ros``, 3 runs of 500-723 calls each): at 1 ms the slowest
service calls spent up to 54 ms waiting off the CPU and the runs' p99 were 17.6-21.2 ms, max 28.7-134.4 ms;
at 0.2 ms p99 14.6-19.3 ms, max 18.0-32.6 ms, and frames were reconstructed as fast (0.61 against 0.55 frames/s)."""


def main(args=None) -> int:
    """The process set up (module docstring), then the node until SIGINT -> exit code: 0, or 2 for bad parameters
    or a missing/unreadable checkpoint."""
    arenas = limit_malloc_arenas(NODE_MALLOC_ARENAS)  # before the heavy imports below start threads that allocate
    buffers = keep_freed_buffers()
    blas = limit_blas_threads(NODE_BLAS_THREADS)  # before numpy loads; inherited by the worker processes
    import gc
    import warnings

    import rclpy
    import torch
    from rclpy.executors import SingleThreadedExecutor

    from occnet_ros.ros.node_params import NODE_NAME, ParamError
    from occnet_ros.ros.reconstruction_node import ReconstructionNode
    from occnet_ros.ros.shutdown import end_program, spin_until_shutdown

    sys.setswitchinterval(SWITCH_INTERVAL_S)  # queries get the GIL soon while the worker runs Python code
    # rclpy reports an answer it could not deliver (the client's response reader not matched yet, a new client's
    # first call racing discovery) as a RuntimeWarning, which Python would print only once
    warnings.filterwarnings("always", message=".*failed to send response", category=RuntimeWarning)
    rclpy.init(args=args)
    node = None
    try:
        node = ReconstructionNode()
    except Exception as e:
        from occnet_ros.network.checkpoint import CheckpointError  # an unreadable or foreign checkpoint file

        if not isinstance(e, (ParamError, FileNotFoundError, CheckpointError)):
            raise
        print(f"{NODE_NAME}: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    if node.reconstructor.pool.threads > 1:
        # the network's parallel work runs on the reconstructor's pool, one torch thread per pool thread; the
        # executor's threads (queries) then use one torch thread each too, so no OpenMP team of theirs waits on a
        # core the pool holds (reconstruction.compute_threads; occnet_ros.reconstruction.compute_pool)
        torch.set_num_threads(1)
    node.get_logger().info(f"{arenas}; {buffers}; {blas}")
    executor = SingleThreadedExecutor()  # the service spins in its own thread (QueryServer)
    executor.add_node(node)
    gc.freeze()  # start-up's objects (torch, the model, rclpy) out of the collector's reach: module docstring
    gc.collect()  # and the oldest generation's count reset, so that full collections happen again
    node.heap.collect_garbage = True  # cheap now: the worker collects the cycles of each frame
    try:
        spin_until_shutdown(executor, node.context)  # SIGINT lands in this thread's wait, not in a message take
    finally:
        if not node.stop(timeout=3.0):
            print(f"{NODE_NAME}: reconstruction still running at shutdown; exiting anyway", file=sys.stderr)
        end_program(executor, node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
