"""HeapRelease: glibc's malloc_trim hands a fragmented heap's free pages back (measured in a child process, whose
heap this test fragments on purpose), and where there is no malloc_trim it does nothing and says why."""
import subprocess
import sys

import pytest

from occnet_ros.perception.heap_release import HeapRelease

FRAGMENT = """
import os
from occnet_ros.perception.heap_release import HeapRelease
def rss_mb():
    with open(f"/proc/{os.getpid()}/status") as f:
        return int(f.read().split("VmRSS:")[1].split()[0]) / 1024
heap = HeapRelease()
assert heap.available, heap.note
blocks = [bytearray(4000) for _ in range(50_000)]  # 200 MB of glibc chunks (over pymalloc's 512-byte limit)
kept = blocks[::16]                                 # every 16th stays: the heap's top is not free
del blocks
before = rss_mb()
returned = heap.release()
print(before, rss_mb(), returned, len(kept))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or not HeapRelease().available,
                    reason="needs glibc's malloc_trim (Linux)")
def test_release_returns_the_free_pages_of_a_fragmented_heap():
    out = subprocess.run([sys.executable, "-c", FRAGMENT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after, returned, _ = out.stdout.split()
    before, after = float(before), float(after)
    assert returned == "True"
    assert before - after > 120, (before, after)  # ~190 of the 200 MB were freed inside the heap


def test_without_malloc_trim_nothing_happens_and_the_reason_is_given():
    class NotGlibc:  # a C library without malloc_trim
        pass

    heap = HeapRelease(libc=NotGlibc())
    assert not heap.available and "malloc_trim" in heap.note
    assert heap.release() is False


def test_release_frees_cyclic_garbage_when_asked():
    """A reference cycle holding an array (as a trimesh mesh and its visuals do) is freed by release() with
    collect_garbage, and only then (automatic collection off meanwhile, so the test decides when it runs)."""
    import gc
    import weakref

    import numpy as np

    class Holder:
        pass

    def cycle():
        a, b = Holder(), Holder()
        a.other, b.other = b, a
        a.data = np.ones(1000)
        return weakref.ref(a)

    heap = HeapRelease(libc=type("NotGlibc", (), {})())
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        kept = cycle()
        heap.release()
        assert kept() is not None  # not collecting: the cycle stays
        heap.collect_garbage = True
        heap.release()
        assert kept() is None
    finally:
        if was_enabled:
            gc.enable()


class Fn:
    """A C function's stand-in: callable, and takes argtypes / restype as ctypes functions do."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args):
        return self.fn(*args)


def test_with_a_bound_release_trims_only_when_the_heaps_hold_more_free_bytes():
    """A process that keeps its freed buffers (process_memory.keep_freed_buffers) sets keep_free_bytes: release()
    still frees the cyclic garbage every time, and calls malloc_trim only when mallinfo2 says more bytes are free."""
    import gc
    import weakref

    from occnet_ros.perception.heap_release import MallInfo2

    class FakeLibc:  # malloc_trim counted, mallinfo2 reporting a settable free byte count
        def __init__(self):
            self.trims, self.free = 0, 0
            self.malloc_trim, self.mallinfo2 = Fn(self._trim), Fn(lambda: MallInfo2(fordblks=self.free))

        def _trim(self, pad):
            self.trims += 1
            return 1

    class Holder:
        pass

    libc = FakeLibc()
    heap = HeapRelease(libc=libc)
    assert heap.available and heap.keep_free_bytes == 0
    libc.free = 10 << 20
    assert heap.release() is True and libc.trims == 1  # no bound: every release trims
    heap.keep_free_bytes, heap.collect_garbage = 64 << 20, True
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        a, b = Holder(), Holder()
        a.other, b.other = b, a
        kept = weakref.ref(a)
        del a, b
        assert heap.release() is False  # 10 MB free: under the bound
        assert kept() is None and libc.trims == 1  # collected, not trimmed
        libc.free = 65 << 20
        assert heap.release() is True and libc.trims == 2
    finally:
        if was_enabled:
            gc.enable()


def test_without_mallinfo2_a_bound_still_trims_after_every_release():
    class OldGlibc:  # malloc_trim, but no mallinfo2 (glibc < 2.33)
        def __init__(self):
            self.trims = 0
            self.malloc_trim = Fn(self._trim)

        def _trim(self, pad):
            self.trims += 1
            return 1

    libc = OldGlibc()
    heap = HeapRelease(libc=libc)
    heap.keep_free_bytes = 64 << 20
    assert heap.free_bytes() is None
    assert heap.release() is True and heap.release() is True and libc.trims == 2


FREED = """
from occnet_ros.perception.heap_release import HeapRelease
from occnet_ros.process_memory import keep_freed_buffers
keep_freed_buffers()  # an 8 MB block then comes from the heap, not from an mmap of its own
heap = HeapRelease()
heap.keep_free_bytes = 1 << 40  # never trims here
before = heap.free_bytes()
block = bytearray(8 << 20)
pin = bytearray(4096)  # keeps the block off the heap's top
del block
print(before, heap.free_bytes(), heap.release())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or HeapRelease().free_bytes() is None,
                    reason="needs glibc's mallinfo2 (glibc >= 2.33)")
def test_free_bytes_reports_a_freed_block_and_a_bound_above_it_keeps_it():
    out = subprocess.run([sys.executable, "-c", FREED], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    before, after, returned = out.stdout.split()
    assert int(after) - int(before) >= 7 << 20 and returned == "False"  # the 8 MB block, less what was reused
