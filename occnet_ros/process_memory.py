"""How glibc's malloc serves the node's process: how many arenas its threads may use, and whether the buffers of a
few MB that it frees are kept for reuse (pure Python, no ROS).

glibc's malloc gives threads that allocate at the same time separate arenas, up to 8 per core, and an arena keeps
the pages of the buffers freed in it for reuse. The node's threads (the executor's, the reconstruction worker, its
compute threads, DDS's) each allocate and free buffers of many sizes every frame (clouds, grids, meshes,
messages), so with many arenas the freed pages are spread thin and the resident memory creeps up. Measured with
``occnet_soak --minutes 10`` on a 2-core AMD EPYC (5 objects at 0.5 Hz, 10 queries/s): node RSS +10.0 % after the
warm-up with glibc's default arenas (632.6 -> 696.1 MB), -0.0 % with ``MALLOC_ARENA_MAX=2`` (546.2 -> 546.1 MB);
``docs/results/soak_results.md`` holds the run of the node as shipped.
:func:`limit_malloc_arenas` sets the limit with ``mallopt(M_ARENA_MAX)``, as the ``MALLOC_ARENA_MAX``
environment variable does (which, where set, is left to rule).

By default glibc serves every block of over 128 KiB (a threshold that grows with the blocks freed, up to 32 MiB) with
a fresh ``mmap`` and unmaps it when freed, and hands a heap's free top back once it exceeds twice that. So each
received 5 MB cloud and each frame's pickled request and answer came in pages the kernel faulted in and zeroed one
by one: the node process took 11-16k minor page faults a second under the benchmark's load. Part of that happens
under the GIL: rclpy takes a subscription's message without releasing it, and taking a 640x480 cloud (4.9 MB) held
it for a median 7.9-8.4 ms (max 11.5 ms) with glibc's defaults and 1.3-1.4 ms with the buffers kept (the first
takes, before there are buffers to reuse: up to 6.8 ms); 110 clouds at 10 Hz from another process, two alternated
pairs of runs, 2-core AMD EPYC. A query that needs the GIL meanwhile waits that long.
:func:`keep_freed_buffers` sets the mmap threshold to :data:`NODE_MMAP_THRESHOLD` (blocks up to that size come from
the heaps and are reused when freed) and the trim threshold to :data:`NODE_TRIM_THRESHOLD` (``mallopt``, as the
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` variables do, which rule where set). The node then trims
its heap after a frame only once it holds more than 128 MiB free
(:class:`~occnet_ros.perception.heap_release.HeapRelease`'s ``keep_free_bytes``) where the reconstruction runs in its
own process, which still returns its heap after every frame.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["limit_malloc_arenas", "keep_freed_buffers", "M_ARENA_MAX", "M_MMAP_THRESHOLD", "M_TRIM_THRESHOLD",
           "NODE_MALLOC_ARENAS", "NODE_MMAP_THRESHOLD", "NODE_TRIM_THRESHOLD"]

M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter number for the arena limit (``<malloc.h>``)."""
M_TRIM_THRESHOLD = -1
"""``mallopt`` parameter: free bytes at a heap's top above which glibc gives them back (``<malloc.h>``)."""
M_MMAP_THRESHOLD = -3
"""``mallopt`` parameter: blocks at least this large get an ``mmap`` of their own (``<malloc.h>``)."""
NODE_MMAP_THRESHOLD = 32 << 20
"""The node process's mmap threshold, bytes: glibc's upper limit on 64-bit systems (half its 64 MiB heap size);
a cloud, a frame's request and its answer (5-7 MB each) come from the heaps."""
NODE_TRIM_THRESHOLD = 128 << 20
"""The node process's trim threshold, bytes: well above a frame's buffers, so they stay for the next frame."""
NODE_MALLOC_ARENAS = 2
"""The arena limit of ``reconstruction_node``'s process, set by its console command before torch and rclpy are
imported (importing them alone made 3 arenas)."""


def _glibc_mallopt():
    """glibc's ``mallopt`` (argtypes set), or the reason there is none, one phrase."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "no glibc mallopt"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def limit_malloc_arenas(arenas: int) -> str:
    """Limit glibc's malloc to ``arenas`` arenas (>= 1) for the rest of the process's life -> what was done, one
    sentence. Nothing where ``MALLOC_ARENA_MAX`` is set in the environment (it rules), the C library is not glibc or
    not Linux, or ``mallopt`` refuses; the sentence says which. ValueError for ``arenas`` < 1."""
    if isinstance(arenas, bool) or not isinstance(arenas, int) or arenas < 1:
        raise ValueError(f"arenas must be an integer >= 1, got {arenas!r}")
    if os.environ.get("MALLOC_ARENA_MAX"):
        return f"malloc arenas left to MALLOC_ARENA_MAX={os.environ['MALLOC_ARENA_MAX']}"
    mallopt = _glibc_mallopt()
    if isinstance(mallopt, str):
        return f"malloc arenas not limited: {mallopt}"
    if mallopt(M_ARENA_MAX, arenas) != 1:
        return "malloc arenas not limited: mallopt refused"
    return f"malloc arenas limited to {arenas}"


def keep_freed_buffers(mmap_threshold: int = NODE_MMAP_THRESHOLD, trim_threshold: int = NODE_TRIM_THRESHOLD) -> str:
    """Serve blocks smaller than ``mmap_threshold`` bytes (1 MiB..32 MiB) from glibc's heaps and keep up to
    ``trim_threshold`` bytes (>= ``mmap_threshold``) free at a heap's top, for the rest of the process's life, so
    freed buffers are reused instead of unmapped (module docstring) -> what was done, one sentence. Nothing where
    ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or ``MALLOC_TOP_PAD_`` is set (they rule), the C library is
    not glibc or not Linux, or ``mallopt`` refuses; the sentence says which. ValueError for values out of range."""
    for name, value, low in (("mmap_threshold", mmap_threshold, 1 << 20), ("trim_threshold", trim_threshold, 1 << 20)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value < 1 << 31:
            raise ValueError(f"{name} must be an integer of at least {low} bytes and below 2 GiB, got {value!r}")
    if mmap_threshold > NODE_MMAP_THRESHOLD:
        raise ValueError(f"mmap_threshold must be at most {NODE_MMAP_THRESHOLD} bytes (glibc ignores larger ones), "
                         f"got {mmap_threshold}")
    if trim_threshold < mmap_threshold:
        raise ValueError(f"trim_threshold ({trim_threshold}) must be at least mmap_threshold ({mmap_threshold})")
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
        if os.environ.get(var):
            return f"freed buffers left to {var}={os.environ[var]}"
    mallopt = _glibc_mallopt()
    if isinstance(mallopt, str):
        return f"freed buffers not kept: {mallopt}"
    if mallopt(M_MMAP_THRESHOLD, mmap_threshold) != 1 or mallopt(M_TRIM_THRESHOLD, trim_threshold) != 1:
        return "freed buffers not kept: mallopt refused"
    return f"freed buffers of up to {mmap_threshold >> 20} MiB kept for reuse"
