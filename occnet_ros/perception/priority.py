"""CPU scheduling priority of the node's background work (pure Python, no ROS).

On Linux each thread has its own nice value, and threads and processes it creates inherit it. The node's
reconstruction worker lowers its own priority before it first runs the network, so the threads it then starts
(the reconstructor's compute threads, torch's own) run at that priority too, and so do the decimation worker
processes; the executor's threads
(the query service, the subscriptions) keep theirs, so on a machine with fewer free cores than busy threads
the kernel gives them a core first. Elsewhere (no per-thread nice), nothing changes and the caller is told.
"""
from __future__ import annotations

import os
import sys
import threading

__all__ = ["lower_thread_priority", "thread_nice"]


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
