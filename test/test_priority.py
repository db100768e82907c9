"""Per-thread scheduling priority of the node's background work."""
import sys
import threading

import pytest

from occnet_ros.perception.priority import lower_thread_priority, thread_nice

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")


@linux
def test_lowering_one_thread_leaves_the_others_and_is_inherited_by_its_threads():
    before = thread_nice()
    seen = {}

    def child():
        seen["child"] = thread_nice()

    def background():
        seen["after"] = lower_thread_priority(5)
        t = threading.Thread(target=child)  # torch's pool threads are created like this, by the worker
        t.start()
        t.join()

    t = threading.Thread(target=background)
    t.start()
    t.join()
    assert seen["after"] == min(19, before + 5)
    assert seen["child"] == seen["after"]
    assert thread_nice() == before  # the calling (service) thread keeps its priority


@linux
def test_zero_changes_nothing_and_the_value_is_capped():
    out = {}

    def run():
        out["zero"] = lower_thread_priority(0)
        out["capped"] = lower_thread_priority(19)
        out["again"] = lower_thread_priority(19)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert out["zero"] == thread_nice() and out["capped"] == out["again"] == 19


@pytest.mark.parametrize("bad", [-1, 20, 2.5, True, "5"])
def test_bad_increments_are_refused(bad):
    with pytest.raises(ValueError, match="0..19"):
        lower_thread_priority(bad)


def _slices_supported() -> bool:
    from occnet_ros.perception.priority import request_time_slice

    out = {}

    def probe():
        out["ok"] = request_time_slice(0.0005) is not None

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return out["ok"]


slices = pytest.mark.skipif(not sys.platform.startswith("linux") or not _slices_supported(),
                            reason="slice requests need Linux >= 6.12 (EEVDF) on x86_64 or aarch64")


@slices
def test_a_time_slice_request_is_kept_by_the_thread_and_inherited_by_its_threads():
    from occnet_ros.perception.priority import request_time_slice, time_slice

    mine = time_slice()
    seen = {}

    def child():
        seen["child"] = time_slice()

    def latency():
        seen["asked"] = request_time_slice(0.0003)
        t = threading.Thread(target=child)
        t.start()
        t.join()
        seen["default"] = request_time_slice(0.0)

    t = threading.Thread(target=latency)
    t.start()
    t.join()
    assert seen["asked"] == pytest.approx(0.0003) and seen["child"] == pytest.approx(0.0003)
    assert seen["default"] == pytest.approx(mine)  # 0: back to the kernel's default
    assert time_slice() == pytest.approx(mine)  # other threads untouched


@slices
def test_a_whole_process_request_skips_the_named_threads():
    from occnet_ros.perception.priority import request_process_time_slice, request_time_slice, time_slice

    ready, done = threading.Event(), threading.Event()
    ids = {}

    def idle(name):
        ids[name] = threading.get_native_id()
        ready.set() if len(ids) == 2 else None
        done.wait(10)

    threads = [threading.Thread(target=idle, args=(n,)) for n in ("asked", "skipped")]
    for t in threads:
        t.start()
    ready.wait(10)
    default = time_slice(ids["skipped"])
    try:
        assert request_process_time_slice(0.0004, skip={ids["skipped"]}) == pytest.approx(0.0004)
        assert time_slice(ids["asked"]) == pytest.approx(0.0004)
        assert time_slice(ids["skipped"]) == pytest.approx(default)
    finally:
        request_process_time_slice(0.0)
        done.set()
        for t in threads:
            t.join()
    assert time_slice() == pytest.approx(default)


@pytest.mark.parametrize("bad", [-0.001, 0.2, "0.001", None])
def test_bad_slices_are_refused(bad):
    from occnet_ros.perception.priority import request_time_slice

    with pytest.raises(ValueError, match="0..0.1 s"):
        request_time_slice(bad)
