"""Stamp pairing: tolerance, latest-only, bounded memory, consumption, threads."""
import threading

import numpy as np
import pytest

from occnet_ros.perception.frame_sync import FrameSync


def make(tol=0.01, history=4):
    return FrameSync(["points", "mask", "image"], "points", tol, history)


def test_pairs_within_tolerance_only():
    fs = make(0.01)
    fs.push("points", 1.000, "p1")
    fs.push("mask", 1.02, "m_far")
    assert fs.take(required=["mask"]) is None
    fs.push("mask", 1.006, "m_near")
    f = fs.take(required=["mask"], optional=["image"])
    assert f.items == {"points": "p1", "mask": "m_near"} and f.stamp == 1.0
    assert fs.take(required=["mask"]) is None  # consumed


def test_latest_only_and_cleanup():
    fs = make(0.01, history=8)
    for i in range(5):
        fs.push("points", float(i), f"p{i}")
        fs.push("mask", i + 0.001, f"m{i}")
    fs.push("image", 3.0, "i3")
    f = fs.take(required=["mask"], optional=["image"])
    assert f.items == {"points": "p4", "mask": "m4"}  # newest; image 3 is not within tolerance of 4
    assert fs.dropped == 4
    assert fs.sizes() == {"points": 0, "mask": 0, "image": 1}


def test_newest_matchable_is_taken_when_newest_lacks_partner():
    fs = make(0.01)
    fs.push("points", 1.0, "p1")
    fs.push("points", 2.0, "p2")
    fs.push("mask", 1.0, "m1")
    f = fs.take(required=["mask"])
    assert f.items["points"] == "p1"
    fs.push("mask", 2.0, "m2")
    assert fs.take(required=["mask"]).items["points"] == "p2"


def test_out_of_order_stamps_and_closest_partner():
    fs = make(0.05)
    fs.push("mask", 1.03, "m103")
    fs.push("mask", 0.99, "m099")
    fs.push("points", 1.0, "p")
    f = fs.take(required=["mask"])
    assert f.items["mask"] == "m099"
    assert fs.sizes()["mask"] == 1  # m103 is newer than the match and stays


def test_bounded_memory():
    fs = make(0.0, history=3)
    for i in range(100):
        fs.push("points", float(i), i)
        fs.push("image", float(i) + 0.5, i)
    assert fs.sizes() == {"points": 3, "mask": 0, "image": 3}
    assert fs.dropped == 97
    assert fs.take().items == {"points": 99}


def test_grace_period_for_optional_partners():
    fs = make(0.01)
    fs.push("points", 1.0, "p", now=10.0)
    assert fs.take(optional=["mask"], min_age=0.2, now=10.1) is None  # mask may still come
    fs.push("mask", 1.0, "m", now=10.15)
    assert fs.take(optional=["mask"], min_age=0.2, now=10.15).items == {"points": "p", "mask": "m"}
    fs.push("points", 2.0, "p2", now=11.0)
    assert fs.take(optional=["mask"], min_age=0.2, now=11.1) is None
    assert fs.take(optional=["mask"], min_age=0.2, now=11.25).items == {"points": "p2"}  # grace over


def test_activity_and_errors():
    fs = make()
    assert not fs.active("mask", 1.0)
    fs.push("mask", 0.0, "m", now=100.0)
    assert fs.active("mask", 1.0, now=100.5) and not fs.active("mask", 1.0, now=101.5)
    # a slow camera: frames 5 s apart, every frame brings a mask -> still active long after `within`
    slow = make()
    for k in range(3):
        slow.push("points", float(k), "p", now=100.0 + 5 * k)
        slow.push("mask", float(k), "m", now=100.3 + 5 * k)
    slow.push("points", 3.0, "p", now=115.0)
    assert slow.active("mask", 1.0, now=115.05)  # the mask of the previous frame came after its cloud
    slow.push("points", 4.0, "p", now=120.0)  # no mask came for frame 3
    assert not slow.active("mask", 1.0, now=120.05)
    with pytest.raises(KeyError, match="unknown stream"):
        fs.push("depth", 0.0, None)
    with pytest.raises(KeyError, match="partner"):
        fs.take(required=["points"])
    with pytest.raises(ValueError, match="primary"):
        FrameSync(["a"], "b", 0.1)
    with pytest.raises(ValueError, match="tolerance"):
        FrameSync(["a"], "a", -1)


def test_threads_producer_consumer_never_duplicates():
    fs = make(0.001, history=2)
    seen = []
    stop = threading.Event()

    def consumer():
        v = fs.version
        while not stop.is_set() or fs.sizes()["points"]:
            v = fs.wait(v, 0.01)
            f = fs.take(required=["mask"])
            if f is not None:
                assert f.items["points"] == f.items["mask"]
                seen.append(f.items["points"])
            elif stop.is_set():
                break

    t = threading.Thread(target=consumer)
    t.start()
    for i in range(2000):
        fs.push("points", i * 0.01, i)
        fs.push("mask", i * 0.01, i)
    stop.set()
    t.join(10)
    assert not t.is_alive()
    assert seen == sorted(set(seen))  # strictly increasing: no frame twice, never an older one later
    assert len(seen) >= 1
    assert len(seen) + fs.dropped + fs.sizes()["points"] == 2000
    assert np.all(np.diff(seen) > 0)


def test_unpaired_streams_are_timed_and_their_offset_reported():
    fs = make(0.05)
    assert fs.unpaired_for("mask", now=0.0) == 0.0 and fs.closest_offset("mask") is None
    # the mask arrives 0.2 s before each cloud: beyond the tolerance, never pairs
    for i in range(3):
        fs.push("mask", 10.0 + i - 0.2, f"m{i}", now=float(i))
        fs.push("points", 10.0 + i, f"p{i}", now=float(i))
        assert fs.take(required=["mask"], now=float(i)) is None
    assert fs.unpaired_for("mask", now=2.0) == pytest.approx(2.0)  # since the first failed take
    assert fs.unpaired_for("image", now=2.0) == 0.0  # never asked for
    assert fs.closest_offset("mask") == pytest.approx(-0.2)
    # a take that is not attempted (busy consumer) does not add failures; a pairing clears the clock
    fs.push("mask", 12.0, "m_ok", now=2.5)
    f = fs.take(required=["mask"], now=3.0)
    assert f.items["mask"] == "m_ok" and fs.unpaired_for("mask", now=3.0) == 0.0


def test_far_future_cloud_is_reported_not_waited_for_silently():
    fs = make(0.05)
    fs.push("mask", 100.0, "m", now=0.0)
    fs.push("points", 100.0 + 3600.0, "p_future", now=0.0)
    assert fs.take(required=["mask"], now=0.0) is None
    assert fs.unpaired_for("mask", now=4.0) == pytest.approx(4.0)
    assert fs.closest_offset("mask") == pytest.approx(-3600.0)
    # a cloud with a sane stamp still pairs although the future one is held
    fs.push("mask", 101.0, "m2", now=4.1)
    fs.push("points", 101.0, "p", now=4.1)
    assert fs.take(required=["mask"], now=4.2).items == {"points": "p", "mask": "m2"}


def test_a_late_partner_that_came_while_the_consumer_was_busy_is_not_unpaired():
    fs = make(0.05)
    fs.push("points", 10.0, "p", now=0.0)
    assert fs.take(required=["mask"], now=0.0) is None  # the mask is a few ms late
    fs.push("mask", 10.001, "m", now=0.01)  # it comes while the consumer is busy for 3 s
    assert fs.unpaired_for("mask", now=3.0) == 0.0
    assert fs.take(required=["mask"], now=3.0).items == {"points": "p", "mask": "m"}
