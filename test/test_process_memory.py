"""The malloc arena limit: the arenas glibc reports after many threads allocated at once, with and without it, in
fresh processes; the environment variable rules where set; bad values refused. Keeping freed buffers: the page faults
of a thread that allocates and frees a frame's worth of 5 MB buffers again and again, with and without it."""
import subprocess
import sys
import textwrap

import pytest

from occnet_ros.process_memory import NODE_MMAP_THRESHOLD, keep_freed_buffers, limit_malloc_arenas

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc arenas: Linux only")

PROBE = textwrap.dedent("""
    import ctypes, ctypes.util, os, re, sys, tempfile, threading
    from occnet_ros.process_memory import limit_malloc_arenas
    said = limit_malloc_arenas(2) if sys.argv[1] == "limit" else "default"
    start = threading.Barrier(8)

    def churn():
        start.wait()
        for _ in range(2000):
            blocks = [bytearray(4096) for _ in range(16)]  # malloc'd by this thread, freed on the next round
        return blocks

    threads = [threading.Thread(target=churn) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.fopen.restype = ctypes.c_void_p
    path = tempfile.mktemp()
    fp = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(fp))
    libc.fclose(ctypes.c_void_p(fp))
    heaps = len(re.findall(r"<heap nr=", open(path).read()))
    os.remove(path)
    print(said, "|", heaps)
""")


def arenas(mode: str, env: dict | None = None) -> tuple[str, int]:
    import os

    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **(env or {})} if env is not None else
                         {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"})
    assert out.returncode == 0, out.stderr
    said, heaps = out.stdout.strip().rsplit("|", 1)
    return said.strip(), int(heaps)


def test_the_limit_caps_the_arenas_of_many_threads_and_the_environment_rules():
    said, limited = arenas("limit")
    assert said == "malloc arenas limited to 2" and limited <= 2
    _, default = arenas("default")
    assert default > 2  # eight threads allocating at once get more arenas by default
    said, _ = arenas("limit", {"MALLOC_ARENA_MAX": "4"})
    assert said == "malloc arenas left to MALLOC_ARENA_MAX=4"


def test_bad_arena_counts_are_refused():
    for bad in (0, -1, True, 2.0):
        with pytest.raises(ValueError, match="arenas"):
            limit_malloc_arenas(bad)


def test_the_node_command_sets_the_limit_before_anything_heavy_is_imported():
    code = ("import sys; import occnet_ros.ros.node_entry; "
            "print(sorted(m for m in ('torch', 'rclpy', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


FAULTS = textwrap.dedent("""
    import resource, sys, threading
    from occnet_ros.process_memory import keep_freed_buffers
    said = keep_freed_buffers() if sys.argv[1] == "keep" else "default"
    out = []

    def frames(n):
        for _ in range(n):  # a frame's buffers alive at once (a cloud, its copy, a request, an answer), then freed
            buffers = [bytearray(5 << 20) for _ in range(4)]
            del buffers

    def run():  # a thread of its own, as the node's executor and worker are
        frames(3)
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        frames(10)
        out.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    print(said, "|", out[0])
""")


def faults(mode: str, env: dict | None = None) -> tuple[str, int]:
    import os

    base = {k: v for k, v in os.environ.items()
            if k not in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")}
    out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, timeout=120,
                         env={**base, **(env or {})})
    assert out.returncode == 0, out.stderr
    said, count = out.stdout.strip().rsplit("|", 1)
    return said.strip(), int(count)


def test_kept_buffers_are_reused_without_page_faults_and_the_environment_rules():
    said, kept = faults("keep")
    assert said == "freed buffers of up to 32 MiB kept for reuse"
    _, default = faults("default")
    # 10 frames of 4 x 5 MB: glibc's defaults give the pages back and fault them in again (about 1280 per buffer)
    assert default > 5000, default
    assert kept < default / 50, (kept, default)
    said, _ = faults("keep", {"MALLOC_TRIM_THRESHOLD_": "1000000"})
    assert said == "freed buffers left to MALLOC_TRIM_THRESHOLD_=1000000"


def test_bad_buffer_thresholds_are_refused():
    for bad in ({"mmap_threshold": 1000}, {"mmap_threshold": NODE_MMAP_THRESHOLD + 1}, {"trim_threshold": True},
                {"mmap_threshold": 8 << 20, "trim_threshold": 4 << 20}, {"trim_threshold": 1 << 31}):
        with pytest.raises(ValueError, match="threshold"):
            keep_freed_buffers(**bad)
