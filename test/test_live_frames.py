"""The node's choice of its next frame (perception.live_frames): which partners a cloud waits for, and a partner
whose stamps never pair stops blocking and is reported, rate-limited. Plain data and a fake clock."""
import pytest

from occnet_ros.perception.frame_sync import FrameSync
from occnet_ros.perception.live_frames import LiveFrames

STREAMS = ["points", "mask", "image", "pose"]


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def make(mode="auto", colour=True, pose=False, timeout=2.0, throttle=5.0, publishers=None):
    clock, warnings = Clock(), []
    sync = FrameSync(STREAMS, "points", tolerance=0.05, history=3)
    frames = LiveFrames(sync, mode, colour, pose, timeout, 0.05, warnings.append, throttle, clock=clock,
                        publishers=publishers)
    return sync, frames, clock, warnings


@pytest.mark.parametrize("mode,colour,pose,partners", [
    ("geometric", False, False, []),
    ("mask", False, False, [("mask", True)]),
    ("auto", True, True, [("mask", False), ("image", False), ("pose", False)]),
])
def test_partners_follow_the_settings(mode, colour, pose, partners):
    assert make(mode, colour, pose)[1].partners == partners


def test_bad_segmentation_mode_is_refused():
    with pytest.raises(ValueError, match="segmentation_mode"):
        LiveFrames(FrameSync(STREAMS, "points", 0.05), "instances", False, False, 2.0, 0.05, print, 5.0)


def test_mask_mode_waits_for_the_mask_and_takes_the_cloud_with_it():
    sync, frames, clock, warnings = make("mask", colour=False)
    sync.push("points", 1.0, "cloud", now=clock.t)
    clock.t += 1.0
    assert frames.take() is None  # no mask: mask mode cannot segment without it
    sync.push("mask", 1.01, "labels", now=clock.t)
    frame = frames.take()
    assert frame.stamp == 1.0 and frame.items == {"points": "cloud", "mask": "labels"}
    assert warnings == []


def test_an_active_partner_is_waited_for_an_idle_one_is_not():
    sync, frames, clock, _ = make("auto", colour=True)
    sync.push("image", 0.5, "old image", now=clock.t)
    clock.t += 3.0  # the image stream went quiet longer than stream_timeout ago
    sync.push("points", 1.0, "cloud", now=clock.t)
    clock.t += 0.2  # past the grace period for optional partners
    frame = frames.take()
    assert frame.items == {"points": "cloud"}
    sync.push("image", 2.0, "image", now=clock.t)  # delivering again: the next cloud waits for it
    sync.push("points", 2.1, "cloud 2", now=clock.t)
    clock.t += 0.2
    assert frames.take() is None
    sync.push("image", 2.1, "image 2", now=clock.t)
    assert frames.take().items == {"points": "cloud 2", "image": "image 2"}


def test_a_partner_that_never_pairs_stops_blocking_and_is_reported_once_per_throttle():
    sync, frames, clock, warnings = make("auto", colour=False, timeout=2.0, throttle=5.0)
    taken = []
    for i in range(1, 41):  # 8 s of clouds at 5 Hz, each with a mask stamped 100 s off (a wrong clock)
        stamp = 0.2 * i
        clock.t = 100.0 + stamp
        sync.push("points", stamp, f"cloud {stamp:.1f}", now=clock.t)
        sync.push("mask", stamp + 100.0, "labels", now=clock.t)
        frame = frames.take()
        if frame is not None:
            taken.append(frame)
    assert taken and all("mask" not in f.items for f in taken)
    assert 1.8 <= taken[0].stamp <= 2.6  # the active mask stream was waited for about stream_timeout first
    assert len(warnings) == 2  # at about 2 s and again after the 5 s throttle
    assert "'mask' has paired with no cloud" in warnings[0] and "closest stamp offset +99.600 s" in warnings[0]  # the oldest mask held (history 3)
    assert "segmenting geometrically meanwhile" in warnings[0]


@pytest.mark.parametrize("mask_publishers, expected", [(1, {"points": "cloud 1", "mask": "labels 1"}),
                                                       (0, {"points": "cloud 1"})])
def test_the_first_cloud_waits_for_a_partner_whose_topic_has_a_publisher(mask_publishers, expected):
    """Mode auto at start: the segmenter's first mask comes 0.3 s after its cloud (past the 0.1 s grace period). With a
    publisher on the mask topic the first cloud waits for it; with none it is taken alone (geometric segmentation)."""
    asked = []

    def publishers(stream):
        asked.append(stream)
        return mask_publishers
    sync, frames, clock, warnings = make("auto", colour=False, publishers=publishers)
    sync.push("points", 1.0, "cloud 1", now=clock.t)
    clock.t += 0.3
    frame = frames.take()
    if mask_publishers:
        assert frame is None  # still waiting for the mask
        sync.push("mask", 1.0, "labels 1", now=clock.t)
        frame = frames.take()
    assert frame.items == expected and warnings == [] and asked and set(asked) == {"mask"}
    asked.clear()
    sync.push("points", 1.2, "cloud 2", now=clock.t)
    sync.push("mask", 1.2, "labels 2", now=clock.t)
    frames.take()
    assert mask_publishers == 0 or asked == []  # once the mask has delivered, its publishers are not counted again


def test_the_first_mask_lost_the_next_cloud_is_taken_with_its_mask():
    """The segmenter's first mask never arrives (its reader matched after that publication): the first cloud waits,
    and the next cloud is taken with its own mask."""
    sync, frames, clock, _ = make("auto", colour=False, publishers=lambda stream: 1)
    sync.push("points", 1.0, "cloud 1", now=clock.t)
    clock.t += 0.2
    assert frames.take() is None
    sync.push("points", 1.2, "cloud 2", now=clock.t)
    sync.push("mask", 1.2, "labels 2", now=clock.t)
    frame = frames.take()
    assert frame.items == {"points": "cloud 2", "mask": "labels 2"} and sync.dropped == 1


def test_a_partner_with_a_publisher_that_never_delivers_stops_blocking_and_is_reported():
    sync, frames, clock, warnings = make("auto", colour=True, timeout=2.0, throttle=5.0, publishers=lambda s: 2)
    taken = []
    for i in range(1, 31):  # 6 s of clouds at 5 Hz; mask and image topics have publishers, nothing arrives
        clock.t = 100.0 + 0.2 * i
        sync.push("points", 0.2 * i, f"cloud {i}", now=clock.t)
        frame = frames.take()
        if frame is not None:
            taken.append(frame)
    assert taken and all(f.items.keys() == {"points"} for f in taken)
    assert 2.0 <= taken[0].stamp <= 2.6  # waited about stream_timeout from the first cloud
    mask = [w for w in warnings if w.startswith("'mask'")]
    image = [w for w in warnings if w.startswith("'image'")]
    assert len(mask) == len(image) == 1  # once, then throttled
    assert "has 2 publisher(s) but delivered nothing" in mask[0] and "segmenting geometrically meanwhile" in mask[0]
    assert "no colour from the image" in image[0]
