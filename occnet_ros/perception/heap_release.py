"""Handing the C heap's free memory back to the operating system after each frame (pure Python, no ROS).

Why: a frame allocates and frees a few hundred MB (clouds, MISE points and grids, meshes) in several threads.
glibc's malloc keeps freed chunks inside its heaps for reuse and on its own returns only the free space at a heap's
top, so a long-running node's resident memory creeps up with fragmentation although nothing leaks. In a 12-minute
``occnet_soak`` the node grew from 531 to 604 MB (+13.7 %); ``malloc_trim(0)`` called on that process (from gdb)
returned 81 MB at once (596 -> 515 MB). In process, one 64^3 object per frame, each call took 2.6-3.2 ms and
returned 37-45 MB (2-core AMD EPYC). ``malloc_trim`` also gives back free pages inside a heap (glibc >= 2.8).

ctypes releases the GIL for the call, so the query service runs meanwhile. Where there is no glibc ``malloc_trim``
(musl, macOS, Windows) :class:`HeapRelease` trims nothing and says why.

With :attr:`HeapRelease.collect_garbage` set, ``release`` first runs a full collection of Python's cyclic garbage
collector, so that a frame's reference cycles (a trimesh mesh and its visuals, with their arrays) are freed before
the trim. With :attr:`HeapRelease.keep_free_bytes` set, ``release`` trims only once the heaps hold more free
bytes than that (glibc's ``mallinfo2``): a process that keeps its freed buffers for reuse
(:func:`occnet_ros.process_memory.keep_freed_buffers`; the node's, where the reconstruction runs in a process of
its own) would otherwise fault every page of the next frame's buffers in again, and the bound still caps what
fragmentation can hold (the node held 38-65 MB free after its frames under the benchmark's load). Where there is
no ``mallinfo2`` (glibc < 2.33) it trims after every frame, as without the bound. Set
``collect_garbage`` only once the process's start-up objects are frozen (``gc.freeze()``): a full collection then takes
about 0.05 ms, against 135-160 ms with the 275k objects of a node's start-up unfrozen (2-core AMD EPYC).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

__all__ = ["HeapRelease", "MallInfo2"]


class MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2`` (``<malloc.h>``, glibc >= 2.33): byte counts over all arenas."""

    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


class HeapRelease:
    """``release()`` returns the C heap's free pages to the system (glibc's ``malloc_trim(0)``).
    ``libc``: the C library to use (None = the process's own); :attr:`available` and :attr:`note` say whether it
    has ``malloc_trim`` and, if not, why."""

    def __init__(self, libc=None):
        self.note = ""
        self._trim = None
        self.collect_garbage = False
        """Whether :meth:`release` runs a full garbage collection first (module docstring)."""
        self.keep_free_bytes = 0
        """Free heap bytes :meth:`release` leaves in place: it trims only when the heaps hold more (0: always)."""
        self._mallinfo2 = None
        if libc is None:
            if not sys.platform.startswith("linux"):
                self.note = f"no glibc malloc_trim on {sys.platform}"
                return
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            except OSError as e:
                self.note = f"C library not loadable: {e}"
                return
        trim = getattr(libc, "malloc_trim", None)
        if trim is None:
            self.note = "the C library has no malloc_trim (not glibc)"
            return
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        self._trim = trim
        info = getattr(libc, "mallinfo2", None)
        if info is not None:
            info.argtypes, info.restype = [], MallInfo2
            self._mallinfo2 = info

    def free_bytes(self) -> int | None:
        """Bytes free inside the C heaps (``mallinfo2().fordblks``, all arenas), or None where glibc cannot say."""
        return int(self._mallinfo2().fordblks) if self._mallinfo2 is not None else None

    @property
    def available(self) -> bool:
        return self._trim is not None

    def release(self) -> bool:
        """Free the cyclic garbage (with :attr:`collect_garbage`), then give the free memory back if the heaps hold
        more than :attr:`keep_free_bytes` free -> True when some was returned to the system (False also where there
        is no malloc_trim or the heaps were under the bound)."""
        if self.collect_garbage:
            gc.collect()
        if self._trim is None:
            return False
        if self.keep_free_bytes > 0:
            free = self.free_bytes()
            if free is not None and free <= self.keep_free_bytes:
                return False
        return bool(self._trim(0))
