"""How many malloc arenas the process's threads may use (pure Python, no ROS).

glibc's malloc gives threads that allocate at the same time separate arenas, up to 8 per core, and an arena keeps
the pages of the buffers freed in it for reuse. The node's threads (the executor's, the reconstruction worker, its
compute threads, DDS's) each allocate and free buffers of many sizes every frame (clouds, grids, meshes,
messages), so with many arenas the freed pages are spread thin and the resident memory creeps up. Measured with
``occnet_soak --minutes 10`` on a 2-core AMD EPYC (5 objects at 0.5 Hz, 10 queries/s): node RSS +10.0 % after the
warm-up with glibc's default arenas (632.6 -> 696.1 MB), -0.0 % with ``MALLOC_ARENA_MAX=2`` (546.2 -> 546.1 MB);
``docs/results/soak_results.md`` holds the run of the node as shipped.
:func:`limit_malloc_arenas` sets the limit with ``mallopt(M_ARENA_MAX)``, as the ``MALLOC_ARENA_MAX``
environment variable does (which, where set, is left to rule).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["limit_malloc_arenas", "M_ARENA_MAX", "NODE_MALLOC_ARENAS"]

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number for the arena limit (``<malloc.h>``)."""
NODE_MALLOC_ARENAS = 2
"""The arena limit of ``reconstruction_node``'s process, set by its console command before torch and rclpy are
imported (importing them alone made 3 arenas)."""


def limit_malloc_arenas(arenas: int) -> str:
    """Limit glibc's malloc to ``arenas`` arenas (>= 1) for the rest of the process's life -> what was done, one
    sentence. Nothing where ``MALLOC_ARENA_MAX`` is set in the environment (it rules), the C library is not glibc or
    not Linux, or ``mallopt`` refuses; the sentence says which. ValueError for ``arenas`` < 1."""
    if isinstance(arenas, bool) or not isinstance(arenas, int) or arenas < 1:
        raise ValueError(f"arenas must be an integer >= 1, got {arenas!r}")
    if os.environ.get("MALLOC_ARENA_MAX"):
        return f"malloc arenas left to MALLOC_ARENA_MAX={os.environ['MALLOC_ARENA_MAX']}"
    if not sys.platform.startswith("linux"):
        return "malloc arenas not limited: not Linux"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "malloc arenas not limited: no glibc mallopt"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_ARENA_MAX, arenas) != 1:
        return "malloc arenas not limited: mallopt refused"
    return f"malloc arenas limited to {arenas}"
