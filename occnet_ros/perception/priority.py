"""CPU scheduling priority of the node's background work (pure Python, no ROS).

On Linux each thread has its own nice value, and threads and processes it creates inherit it. The node's
reconstruction worker lowers its own priority before it first runs the network, so the threads it then starts
(the reconstructor's compute threads, torch's own) run at that priority too, and so do the decimation worker
processes; the executor's threads
(the query service, the subscriptions) keep theirs, so on a machine with fewer free cores than busy threads
the kernel gives them a core first. Elsewhere (no per-thread nice), nothing changes and the caller is told.

The node's own threads also ask the kernel for short time slices (:func:`request_process_time_slice`, Linux >= 6.12),
so that a thread that wakes for a query takes a core sooner; background work (the reconstruction, worker
processes) returns to the kernel's default (:func:`request_time_slice` with 0).
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading

__all__ = ["lower_thread_priority", "thread_nice", "time_slice", "request_time_slice", "request_process_time_slice"]


def thread_nice(native_id: int | None = None) -> int | None:
    """The nice value of the thread ``native_id`` (None = the calling thread), or None where the platform
    has no per-thread priorities."""
    if not sys.platform.startswith("linux"):
        return None
    tid = threading.get_native_id() if native_id is None else native_id
    try:
        return os.getpriority(os.PRIO_PROCESS, tid)
    except OSError:
        return None


def lower_thread_priority(increment: int) -> int | None:
    """Add ``increment`` (0..19) to the calling thread's nice value (capped at 19) -> the new value, or None
    where per-thread priorities do not exist (not Linux) or the kernel refused. ValueError for an increment
    outside 0..19 (raising a priority needs privileges the node does not ask for)."""
    if isinstance(increment, bool) or not isinstance(increment, int) or not 0 <= increment <= 19:
        raise ValueError(f"nice increment must be an integer in 0..19, got {increment!r}")
    now = thread_nice()
    if now is None:
        return None
    if increment == 0:
        return now
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, now + increment))
    except OSError:
        return None
    return thread_nice()


_SCHED_SYSCALLS = {"x86_64": (314, 315), "aarch64": (274, 275)}
"""(sched_setattr, sched_getattr) system call numbers per machine (Linux)."""


class _SchedAttr(ctypes.Structure):
    """``struct sched_attr`` of <linux/sched/types.h> (version 1, 56 bytes)."""

    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64), ("sched_util_min", ctypes.c_uint32),
                ("sched_util_max", ctypes.c_uint32)]


def _sched_calls():
    if not sys.platform.startswith("linux"):
        return None
    numbers = _SCHED_SYSCALLS.get(platform.machine())
    if numbers is None:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return libc.syscall, numbers


def time_slice(native_id: int | None = None) -> float | None:
    """The scheduler time slice of the thread ``native_id`` (None = the calling thread), s: the one it asked for, or
    the kernel's default; 0.0 on kernels older than 6.12 (no slice requests); None where it cannot be read (not
    Linux, an unknown machine, a thread not under the fair policy)."""
    calls = _sched_calls()
    if calls is None:
        return None
    syscall, (_, getattr_nr) = calls
    attr = _SchedAttr()
    tid = 0 if native_id is None else native_id
    if syscall(getattr_nr, tid, ctypes.byref(attr), ctypes.sizeof(attr), 0) != 0:
        return None
    return attr.sched_runtime * 1e-9 if attr.sched_policy in (0, 3) else None


def request_time_slice(seconds: float, native_id: int | None = None) -> float | None:
    """Ask the kernel's fair scheduler for time slices of ``seconds`` for the thread ``native_id`` (None = the calling
    thread; threads and processes it starts later inherit it) -> the slice in effect afterwards, s, or None where
    there are no slice requests (not Linux, an unknown machine, a thread not under the fair policy, a refusal).

    Linux >= 6.12 (EEVDF) takes ``sched_setattr``'s ``sched_runtime`` of a SCHED_OTHER / SCHED_BATCH thread as its
    requested slice (clamped to 0.1-100 ms): a shorter slice gives the thread earlier virtual deadlines, so when it
    wakes it takes a core from a thread with a longer slice sooner, while its share of the CPU stays what its nice
    value gives it; 0 returns to the kernel's default. Older kernels ignore the request (read back as 0: None is
    returned for a non-zero request). The nice value and policy are kept. ValueError outside 0..0.1 s."""
    if not (isinstance(seconds, (int, float)) and 0.0 <= seconds <= 0.1):
        raise ValueError(f"time slice must be 0..0.1 s, got {seconds!r}")
    calls = _sched_calls()
    if calls is None:
        return None
    syscall, (setattr_nr, getattr_nr) = calls
    tid = 0 if native_id is None else native_id
    attr = _SchedAttr()
    if syscall(getattr_nr, tid, ctypes.byref(attr), ctypes.sizeof(attr), 0) != 0 or attr.sched_policy not in (0, 3):
        return None  # 0 = SCHED_OTHER, 3 = SCHED_BATCH
    attr.size = ctypes.sizeof(attr)
    attr.sched_flags = 0
    attr.sched_runtime = int(round(seconds * 1e9))
    if syscall(setattr_nr, tid, ctypes.byref(attr), 0) != 0:
        return None
    now = time_slice(native_id)
    if now is None or (seconds > 0 and now == 0):
        return None
    return now


def request_process_time_slice(seconds: float, skip: set[int] = frozenset()) -> float | None:
    """:func:`request_time_slice` for every thread of this process but the native ids in ``skip`` -> the slice in
    effect for the calling thread, s, or None (as there; threads that ended meanwhile are passed over)."""
    here = threading.get_native_id()
    for name in sorted(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else ():
        tid = int(name)
        if tid != here and tid not in skip:
            request_time_slice(seconds, tid)
    return request_time_slice(seconds)
