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


def test_without_return_memory_release_collects_but_never_trims():
    """A process that keeps its freed buffers (process_memory.keep_freed_buffers) clears return_memory: release()
    still frees the cyclic garbage, and malloc_trim is not called."""
    import gc
    import weakref

    class CountingLibc:
        def __init__(self):
            self.trims = 0
            self.malloc_trim = self

        def __call__(self, pad):
            self.trims += 1
            return 1

    class Holder:
        pass

    libc = CountingLibc()
    heap = HeapRelease(libc=libc)
    assert heap.available and heap.return_memory
    assert heap.release() is True and libc.trims == 1
    heap.return_memory, heap.collect_garbage = False, True
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        a, b = Holder(), Holder()
        a.other, b.other = b, a
        kept = weakref.ref(a)
        del a, b
        assert heap.release() is False
        assert kept() is None and libc.trims == 1
    finally:
        if was_enabled:
            gc.enable()
