"""The reconstruction node, in its own process, against a hostile neighbour: malformed and extreme clouds,
masks, images and camera_info, stamps that never pair, bad queries and bursts. Each case must end one of
three ways, never in a crash, a hang or a silent wrong answer:
- refused: the frame is dropped with a logged reason naming the problem;
- degraded: a problem in an optional input (image, camera_info, colour field, a mask in auto mode) costs
  only what that input adds, with a logged reason, and the frame's objects are still published;
- accepted: the message is used as its definition allows (full label ranges, odd but legal encodings).
After every case the node is alive; the module ends with a valid frame reconstructed as at the start.

The network is a TEST DOUBLE (random weights, ros_helpers.write_random_checkpoint): meshes are boxes,
which is all the plumbing needs. Signals and concurrent service clients have their own modules
(test_process_lifetime.py, test_query_concurrency.py); the decoders are fuzzed in test_decoder_fuzz.py.
"""
from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from ros_helpers import (BOX_LABEL, SPHERE_LABEL, random_domain_id, render_scene, start_program, stop_program,
                         wait_until, write_random_checkpoint)

rclpy = pytest.importorskip("rclpy")
from occnet_ros.perception.pointcloud2 import INT8, UINT16, build_cloud  # noqa: E402
from occnet_ros.ros import conversions  # noqa: E402
from ros_client import Client, header  # noqa: E402

NODE_ARGS = ["-p", "reconstruction.device:=cpu", "-p", "reconstruction.resolution0:=8",
             "-p", "reconstruction.upsampling_steps:=1", "-p", "segmentation.min_points:=20",
             "-p", "filter.min_range:=0.05", "-p", "log_throttle_sec:=0.0", "-p", "sync.stream_timeout:=1.0",
             "-p", "query_max_points:=200000",
             "-p", "up:=[{:.9f}, {:.9f}, {:.9f}]".format(*render_scene(160, 120).up)]  # gravity in the camera frame
STAMPS = itertools.count(1000)


class Log:
    """The node's log file, read on demand."""

    def __init__(self, path):
        self.path = path

    def text(self) -> str:
        return self.path.read_text(errors="replace")


@pytest.fixture(scope="module")
def scene():
    return render_scene(160, 120)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    ckpt = write_random_checkpoint(d / "random_test_double.pt")
    domain = random_domain_id()
    proc = start_program("reconstruction_node", NODE_ARGS + ["-p", f"checkpoint:={ckpt}"], domain, d / "node.log")
    proc.log = Log(d / "node.log")
    proc.domain = domain
    yield proc
    rc = stop_program(proc)
    assert rc == 0, proc.log.text()[-3000:]


@pytest.fixture(scope="module")
def client(node, scene):
    c = Client(node.domain)
    msg = c.feed_until_objects(scene, 1.0, timeout=60)
    assert msg is not None and [o.id for o in msg.objects] == [BOX_LABEL, SPHERE_LABEL], node.log.text()[-3000:]
    yield c
    # the node still serves a valid frame exactly as at the start
    msg = c.feed_until_objects(scene, 99999.0, timeout=30)
    assert msg is not None and [o.id for o in msg.objects] == [BOX_LABEL, SPHERE_LABEL], node.log.text()[-3000:]
    c.close()


def run_frame(client, node, scene, mangle=None, timeout=15.0, **encodings):
    """Publish one frame (``mangle(msgs)`` edits the messages first) at a fresh stamp; wait until the node
    published objects of that stamp or logged about it. -> (stamp, objects message or None, log text)."""
    stamp = float(next(STAMPS))
    msgs = client.scene_messages(scene, stamp, **encodings)
    if mangle is not None:
        mangle(msgs)
    client.publish({"camera_info": msgs.pop("camera_info")})  # kept as the latest: before the frame's cloud
    wait_until(lambda: False, 0.1, spin=client.spin)
    client.publish(msgs)
    tag = f"{stamp:.3f}"
    done = wait_until(lambda: client.objects_at(stamp) is not None or f"dropped frame at {tag}" in node.log.text(),
                      timeout, spin=client.spin)
    assert node.poll() is None, "the node died:\n" + node.log.text()[-3000:]
    assert done, f"no reaction to the frame at {tag}:\n" + node.log.text()[-3000:]
    wait_until(lambda: False, 0.1, spin=client.spin)  # the frame's log lines (written just before publishing)
    return stamp, client.objects_at(stamp), node.log.text()


# ---------------------------------------------------------------- clouds refused with a reason

def _field(msgs, name):
    return next(f for f in msgs["points"].fields if f.name == name)


def _set(attr, value):
    def mangle(msgs):
        setattr(msgs["points"], attr, value)
    return mangle


def _field_set(name, attr, value):
    def mangle(msgs):
        setattr(_field(msgs, name), attr, value)
    return mangle


def _truncate(msgs):
    msgs["points"].data = msgs["points"].data[: len(msgs["points"].data) // 3]


def _drop_z(msgs):
    msgs["points"].fields = [f for f in msgs["points"].fields if f.name != "z"]


def _duplicate_x(msgs):
    msgs["points"].fields = list(msgs["points"].fields) + [_field(msgs, "x")]


REFUSED_CLOUDS = {
    "truncated data": (_truncate, "needs"),
    "no z field": (_drop_z, "no 'z' field"),
    "x as INT8": (_field_set("x", "datatype", INT8), "INT8"),
    "y as UINT16": (_field_set("y", "datatype", UINT16), "UINT16"),
    "point_step 0": (_set("point_step", 0), "point_step"),
    "row_step too small": (_set("row_step", 10), "row_step"),
    "field past point_step": (_field_set("z", "offset", 2 ** 32 - 1), "does not fit"),
    "field twice": (_duplicate_x, "twice"),
    "datatype 0": (_field_set("x", "datatype", 0), "datatype"),
    "datatype 200": (_field_set("z", "datatype", 200), "datatype"),
    "count 2^32-1": (_field_set("x", "count", 2 ** 32 - 1), "count"),
    "width 2^32-1": (_set("width", 2 ** 32 - 1), "row_step"),
    "height 2^32-1": (_set("height", 2 ** 32 - 1), "needs"),
    "empty frame_id": (lambda m: setattr(m["points"].header, "frame_id", ""), "frame_id"),
}


@pytest.mark.parametrize("case", list(REFUSED_CLOUDS))
def test_malformed_cloud_is_dropped_with_its_reason(client, node, scene, case):
    mangle, words = REFUSED_CLOUDS[case]
    stamp, objects, log = run_frame(client, node, scene, mangle)
    assert objects is None
    line = next(ln for ln in log.splitlines() if f"dropped frame at {stamp:.3f}" in ln)
    assert words in line, line


# ---------------------------------------------------------------- optional inputs: degrade, never drop

def _mask(attr, value):
    def mangle(msgs):
        setattr(msgs["mask"], attr, value)
    return mangle


def _image(attr, value):
    def mangle(msgs):
        setattr(msgs["image"], attr, value)
    return mangle


def _truncate_image(topic):
    def mangle(msgs):
        msgs[topic].data = msgs[topic].data[:100]
    return mangle


def _k(index, value):
    def mangle(msgs):
        k = list(msgs["camera_info"].k)
        k[index] = value
        msgs["camera_info"].k = k
    return mangle


def _coloured_cloud(datatype=None, count=None):
    def mangle(msgs):
        h = msgs["points"].header
        scene = render_scene(160, 120)
        msgs["points"] = conversions.arrays_to_pointcloud2(scene.xyz, scene.rgb, h)
        rgb = _field(msgs, "rgb")
        if datatype is not None:
            rgb.datatype = datatype
        if count is not None:
            rgb.count = count
    return mangle


DEGRADED = {
    "mask encoding rgb8": (_mask("encoding", "rgb8"), "mask unusable", False),
    "mask encoding unknown": (_mask("encoding", "no_such_encoding"), "mask unusable", False),
    "mask 8SC1": (_mask("encoding", "8SC1"), "mask unusable", False),
    "mask truncated": (_truncate_image("mask"), "mask unusable", False),
    "mask step too small": (_mask("step", 3), "mask unusable", False),
    "mask width 2^32-1": (_mask("width", 2 ** 32 - 1), "mask unusable", False),
    "image truncated": (_truncate_image("image"), "image unusable", True),
    "image encoding unknown": (_image("encoding", "yuv444_imaginary"), "image unusable", True),
    "image 16UC1": (_image("encoding", "16UC1"), "image unusable", True),
    "image height 2^32-1": (_image("height", 2 ** 32 - 1), "image unusable", True),
    "camera_info fx 0": (_k(0, 0.0), "camera_info unusable", True),
    "camera_info fy negative": (_k(4, -100.0), "camera_info unusable", True),
    "camera_info cx NaN": (_k(2, math.nan), "camera_info unusable", True),
    "camera_info 0x0": (lambda m: (setattr(m["camera_info"], "width", 0), setattr(m["camera_info"], "height", 0)),
                        "camera_info unusable", True),
    "cloud rgb as INT8": (_coloured_cloud(datatype=INT8), "no colour from the cloud", True),
    "cloud rgb count 3": (_coloured_cloud(count=3), "no colour from the cloud", True),
}


@pytest.mark.parametrize("case", list(DEGRADED))
def test_bad_optional_input_degrades_only_what_it_adds(client, node, scene, case):
    mangle, words, by_mask = DEGRADED[case]
    stamp, objects, log = run_frame(client, node, scene, mangle)
    assert objects is not None, f"frame dropped for a bad optional input:\n{log[-2000:]}"
    labels = [o.label for o in objects.objects]
    if by_mask:
        assert labels == ["mask_1", "mask_2"], labels
    else:  # auto mode without a usable mask: geometric segmentation
        assert len(labels) == 2 and all(lab.startswith("cluster_") for lab in labels), labels
    if words == "image unusable":  # and the cloud has no colour field
        assert all(len(o.vertex_colors) == 0 for o in objects.objects)
    line = next(ln for ln in log.splitlines() if f"frame {stamp:.3f}:" in ln and words in ln)
    assert len(line) > len(words) + 20  # the reason follows


# ---------------------------------------------------------------- legal extremes: used as defined

def _mask_labels(labels, encoding):
    def mangle(msgs):
        m = conversions.image_to_mask(msgs["mask"])
        out = np.zeros(m.shape, np.int64)
        for old, new in zip((BOX_LABEL, SPHERE_LABEL), labels):
            out[m == old] = new
        msgs["mask"] = conversions.array_to_image(out, encoding, msgs["mask"].header)
    return mangle


@pytest.mark.parametrize("labels,encoding,ids,names", [
    ((2 ** 31, 2 ** 32 - 1), "32UC1", [2 ** 31, 2 ** 32 - 1], ["mask_2147483648", "mask_4294967295"]),
    ((-5, -1), "32SC1", [2 ** 32 - 5, 2 ** 32 - 1], ["mask_-5", "mask_-1"]),
    ((2 ** 31 - 1, -2 ** 31), "32SC1", [2 ** 31 - 1, 2 ** 31], ["mask_2147483647", "mask_-2147483648"]),
    ((255, 7), "mono8", [7, 255], ["mask_7", "mask_255"]),
    ((65535, 3), "16UC1", [3, 65535], ["mask_3", "mask_65535"]),
])
def test_full_label_range_gives_ids_the_service_accepts(client, node, scene, labels, encoding, ids, names):
    stamp, objects, log = run_frame(client, node, scene, _mask_labels(labels, encoding))
    assert objects is not None, log[-2000:]
    got = sorted((o.id, o.label) for o in objects.objects)
    assert got == sorted(zip(ids, names)), got
    centres = {lab: c for lab, c in zip(labels, (scene.box_center, scene.sphere_center))}
    for oid, name in zip(ids, names):
        centre = centres[int(name[len("mask_"):])]
        res = client.query([centre], object_ids=[oid])
        assert res.success, res.message
        assert list(res.object_ids) == [oid]  # exactly the published id: no wrap, never -1
    res = client.query([[50.0, 50.0, 50.0]])
    assert res.success and list(res.object_ids) == [-1]  # -1 only for "no object"


def _big_endian(msgs):
    cloud = msgs["points"]
    xyz, _ = conversions.pointcloud2_to_arrays(cloud)
    _, data = build_cloud(xyz, None, is_bigendian=True)
    cloud.is_bigendian, cloud.data = True, data


def _padded_rows(msgs):
    c = msgs["points"]
    rows = np.frombuffer(bytes(c.data), np.uint8).reshape(c.height, c.row_step)
    padded = np.concatenate([rows, np.full((c.height, 13), 0xAB, np.uint8)], axis=1)
    c.row_step += 13
    c.data = padded.tobytes()


def _colour(encoding):
    def mangle(msgs):
        rgb = render_scene(160, 120).rgb.astype(np.int64)
        if encoding == "mono16":
            arr = rgb.mean(axis=2).astype(np.uint16) * 257
            msgs["image"] = conversions.array_to_image(arr, "mono16", msgs["image"].header)
        elif encoding == "bgra8":
            arr = np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 255)], axis=2)
            msgs["image"] = conversions.array_to_image(arr, "bgra8", msgs["image"].header)
        else:  # yuv422 (UYVY): grey pixels, U = V = 128
            y = rgb.mean(axis=2).astype(np.uint8)
            uyvy = np.stack([np.full_like(y, 128), y], axis=2).reshape(y.shape[0], -1)
            img = msgs["image"]
            img.encoding, img.step, img.data = "yuv422", y.shape[1] * 2, uyvy.astype(np.uint8).tobytes()
    return mangle


ACCEPTED = {
    "big-endian cloud": _big_endian,
    "row padding": _padded_rows,
    "image mono16": _colour("mono16"),
    "image bgra8": _colour("bgra8"),
    "image yuv422": _colour("yuv422"),
    "negative stamp": None,
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_odd_but_legal_input_is_used(client, node, scene, case):
    if case == "negative stamp":
        msgs = client.scene_messages(scene, -5.25)
        client.publish(msgs)
        assert wait_until(lambda: client.objects_at(-5.25) is not None, 15.0, spin=client.spin), node.log.text()[-2000:]
        return
    stamp, objects, log = run_frame(client, node, scene, ACCEPTED[case])
    assert objects is not None and [o.id for o in objects.objects] == [BOX_LABEL, SPHERE_LABEL], log[-2000:]
    if case.startswith("image"):
        assert all(len(o.vertex_colors) == len(o.mesh.vertices) for o in objects.objects)


@pytest.mark.parametrize("case", ["all NaN", "all inf", "far away", "empty"])
def test_cloud_without_usable_points_gives_no_objects(client, node, scene, case):
    def mangle(msgs):
        xyz = render_scene(160, 120).xyz
        if case == "empty":
            xyz = np.zeros((0, 3), np.float32)
        else:
            xyz = np.full_like(xyz, {"all NaN": np.nan, "all inf": np.inf, "far away": 1e30}[case])
        msgs["points"] = conversions.arrays_to_pointcloud2(xyz, None, msgs["points"].header)
    stamp, objects, log = run_frame(client, node, scene, mangle)
    if objects is None:  # refused: then with a reason
        assert f"dropped frame at {stamp:.3f}" in log
    else:
        assert len(objects.objects) == 0


# ---------------------------------------------------------------- stamps

def test_mask_that_never_pairs_is_reported_and_does_not_block_frames(client, node, scene):
    """Masks stamped 0.2 s before their clouds (tolerance 0.05 s): reported with the offset within a few
    seconds; frames go on, segmented geometrically; a pairing mask later is used again."""
    seen = []
    for _ in range(40):
        stamp = float(next(STAMPS))
        msgs = client.scene_messages(scene, stamp)
        msgs["mask"].header = header(stamp - 0.2)
        client.publish(msgs)
        wait_until(lambda: False, 0.2, spin=client.spin)
        seen += [stamp] if client.objects_at(stamp) is not None else []
        if seen and "'mask' has paired with no cloud" in node.log.text():
            break
    log = node.log.text()
    line = next(ln for ln in log.splitlines() if "'mask' has paired with no cloud" in ln)
    # the closest mask held: this cloud's own (-0.2 s), or the previous cloud's (-1.2 s) where the report came
    # before this cloud's mask had arrived (seen once in a fresh-clone CI)
    assert ("offset -0.200 s" in line or "offset -1.200 s" in line) and "segmenting geometrically" in line
    assert seen and all(o.label.startswith("cluster_") for o in client.objects_at(seen[-1]).objects)
    stamp, objects, _ = run_frame(client, node, scene)  # pairs again
    assert objects is not None and [o.label for o in objects.objects] == ["mask_1", "mask_2"]


def test_cloud_from_the_far_future_is_reported(client, node, scene):
    future = 3600.0 * 24

    def reported():
        return [ln for ln in node.log.text().splitlines() if "'mask' has paired with no cloud" in ln
                and "-86400.000 s" in ln]

    for _ in range(40):
        stamp = float(next(STAMPS))
        msgs = client.scene_messages(scene, stamp)
        msgs["points"].header = header(stamp + future)
        client.publish(msgs)
        wait_until(lambda: False, 0.2, spin=client.spin)
        if reported():
            break
    assert reported(), node.log.text()[-2000:]
    assert node.poll() is None


# ---------------------------------------------------------------- queries

@pytest.mark.parametrize("points,ids,frame,words", [
    (np.zeros(4, np.float32), (), "", "multiple of 3"),
    (np.array([0, 0, np.nan], np.float32), (), "", "NaN"),
    (np.array([0, np.inf, 0], np.float32), (), "", "inf"),
    (np.zeros((200001, 3), np.float32), (), "", "query_max_points"),
    (np.zeros(3, np.float32), (2 ** 32 - 2,), "", "unknown object id"),
    (np.zeros(3, np.float32), (), "frame_nobody_publishes", "frame_nobody_publishes"),
])
def test_bad_query_is_refused_with_a_reason(client, node, points, ids, frame, words):
    res = client.query(points, object_ids=ids, frame_id=frame)
    assert not res.success and words in res.message, res.message
    assert len(res.probabilities) == 0 and len(res.object_ids) == 0


def test_empty_and_huge_valid_queries_are_answered(client, node, scene):
    client.feed_until_objects(scene, float(next(STAMPS)), timeout=20)
    res = client.query(np.zeros((0, 3), np.float32))
    assert res.success and len(res.probabilities) == 0
    big = np.random.default_rng(0).uniform(-0.3, 0.3, size=(200000, 3)).astype(np.float32) + scene.box_center
    res = client.query(big, timeout=60)
    assert res.success and len(res.probabilities) == 200000
    assert set(np.unique(res.object_ids)) <= {-1, BOX_LABEL, SPHERE_LABEL}


def test_burst_of_frames_keeps_the_newest(client, node, scene):
    """60 frames published back to back: the node skips what it cannot process instead of queueing it, and
    serves the next frame promptly."""
    stamps = [float(next(STAMPS)) for _ in range(60)]
    for s in stamps:
        client.publish(client.scene_messages(scene, s))
    # the subscriptions are best effort: a burst can lose the newest frame's messages in transport, so the camera
    # goes on sending its newest frame (every 0.5 s, as a streaming camera would) until the node serves one of the
    # last 10; a node that processes the burst's backlog, or hangs, still fails
    served = lambda: any(client.objects_at(s) is not None for s in stamps[-10:])  # noqa: E731
    end = time.monotonic() + 30.0
    while not served() and time.monotonic() < end:
        if not wait_until(served, 0.5, spin=client.spin):
            client.publish(client.scene_messages(scene, stamps[-1]))
    assert served(), node.log.text()[-2000:]
    wait_until(lambda: False, 1.0, spin=client.spin)  # whatever else the node publishes of the burst
    done = [s for s in stamps if client.objects_at(s) is not None]
    assert 0 < len(done) < len(stamps) and done[-1] >= stamps[-10], done
    assert client.feed_until_objects(scene, float(next(STAMPS)), timeout=20) is not None
    assert node.poll() is None
