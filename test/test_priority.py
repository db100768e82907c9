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
