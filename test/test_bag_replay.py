"""occnet_replay on rosbag2 recordings written here (MCAP and sqlite3): frames pair and replay through the node's
path; bad input (missing topics, a foreign message type, corrupt bytes, a cloud the node refuses, a truncated
file) is reported by name and the rest goes on; the output bag reopens and its messages deserialize with rclpy
and with the definitions it carries; recorded-rate pacing follows the bag's timestamps.

The network is a TEST DOUBLE (random weights, ros_helpers.write_random_checkpoint)."""
from __future__ import annotations

import numpy as np
import pytest
from ros_helpers import render_scene, write_random_checkpoint

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import PointField  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from occnet_ros.bag.reader import BagError, BagReader  # noqa: E402
from occnet_ros.replay.replay import ReplayError, ReplayOptions, load_params, replay  # noqa: E402
from occnet_ros.bag.timeline import FrameAssembler, Pacer  # noqa: E402
from occnet_ros.bag.writer import BagWriter, typestore  # noqa: E402
from occnet_ros.cli import replay as cli  # noqa: E402
from occnet_ros.msg import ReconstructedObjectArray  # noqa: E402
from occnet_ros.ros import conversions  # noqa: E402
from occnet_ros.ros.frame_processor import load_reconstructor  # noqa: E402

PARAMS = """/**:
  ros__parameters:
    up: [{up}]
    reconstruction: {{device: cpu, resolution0: 8, upsampling_steps: 1}}
    segmentation: {{min_points: 20}}
    mesh: {{max_faces: 200, decimate_in_worker: false}}
"""
SCENE = render_scene(96, 72)
T0 = 1_700_000_000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("replay")
    ckpt = write_random_checkpoint(d / "random_test_double.pt")
    params_file = d / "params.yaml"
    params_file.write_text(PARAMS.format(up=", ".join(f"{v:.6f}" for v in SCENE.up)))
    params = load_params(params_file, ckpt)
    return {"ckpt": ckpt, "params_file": params_file, "params": params, "rec": load_reconstructor(params)}


def header(t: float) -> Header:
    h = Header(frame_id="cam")
    h.stamp.sec, h.stamp.nanosec = int(t), int(round((t - int(t)) * 1e9))
    return h


def frame_messages(t: float, mask: bool = True) -> list[tuple[str, object]]:
    """(topic, message) of one frame at stamp ``t``: info, image, mask, points (points last, as sim_camera)."""
    h = header(t)
    out = [("/camera_info", conversions.camera_info(SCENE.camera, h)),
           ("/image", conversions.array_to_image(SCENE.rgb, "rgb8", h))]
    if mask:
        out.append(("/mask", conversions.array_to_image(SCENE.mask, "mono16", h)))
    out.append(("/points", conversions.arrays_to_pointcloud2(SCENE.xyz, SCENE.rgb, h)))
    return out


def msgtype(msg) -> str:
    return f"{type(msg).__module__.split('.')[0]}/msg/{type(msg).__name__}"


def write_bag(path, entries, storage="mcap"):
    """entries: (topic, message or (msgtype, raw bytes), bag time s)."""
    with BagWriter(path, storage) as w:
        for topic, msg, t in entries:
            mt, data = msg if isinstance(msg, tuple) else (msgtype(msg), serialize_message(msg))
            if not w.has_topic(topic):
                w.add_topic(topic, mt)
            w.write(topic, int(round(t * 1e9)), data)
    return path


def frames_bag(path, n=3, storage="mcap", period=0.5, **kw):
    entries = []
    for i in range(n):
        t = T0 + i * period
        entries += [(topic, m, t + 0.001 * j) for j, (topic, m) in enumerate(frame_messages(t, **kw))]
    return write_bag(path, entries, storage)


def run(setup, bag, out, notes=None, pacer=None):
    opts = ReplayOptions(bag=bag, out=out, params=setup["params"], progress=False)
    return replay(opts, setup["rec"], pacer=pacer, emit=(notes.append if notes is not None else lambda t: None))


def object_arrays(out_bag):
    """[(bag time, ReconstructedObjectArray)] and [MarkerArray] of an output bag, through rclpy."""
    with BagReader(out_bag) as r:
        msgs = list(r.messages(["/objects", "/markers"]))
    objs = [(m.log_time_ns, deserialize_message(m.data, ReconstructedObjectArray)) for m in msgs
            if m.topic == "/objects"]
    markers = [deserialize_message(m.data, MarkerArray) for m in msgs if m.topic == "/markers"]
    return objs, markers


def test_mcap_and_sqlite3_replay_to_the_same_objects_and_the_output_bag_decodes(setup, tmp_path):
    results = {}
    for storage in ("mcap", "sqlite3"):
        bag = frames_bag(tmp_path / f"in_{storage}", storage=storage)
        res = run(setup, bag, tmp_path / f"out_{storage}")
        assert [f.dropped for f in res.frames] == ["", "", ""]
        assert res.topics == {"points": "/points", "mask": "/mask", "image": "/image", "camera_info": "/camera_info"}
        results[storage] = res
    a, b = (results[s].frames for s in ("mcap", "sqlite3"))
    for fa, fb in zip(a, b):
        assert [o[0] for o in fa.objects] == [o[0] for o in fb.objects] == [1, 2]
        for oa, ob in zip(fa.objects, fb.objects):
            np.testing.assert_array_equal(oa[2], ob[2])
            np.testing.assert_array_equal(oa[3], ob[3])

    out_bag = results["mcap"].out_bag
    objs, markers = object_arrays(out_bag)
    assert [t for t, _ in objs] == [f.log_time_ns for f in a]  # written at the clouds' bag times
    first = objs[0][1]
    assert [o.id for o in first.objects] == [1, 2] and first.header.frame_id == "cam"
    v = np.array([(p.x, p.y, p.z) for p in first.objects[0].mesh.vertices])
    np.testing.assert_allclose(v, a[0].objects[0][2])
    assert len(markers) == 3 and {m.id for m in markers[0].markers} == {1, 2}
    with BagReader(out_bag) as r:  # input topics copied; definitions carried for Foxglove
        assert set(r.topics) == {"/points", "/mask", "/image", "/camera_info", "/objects", "/markers"}
        assert r.topics["/points"].count == 3
        t = r.topics["/objects"]
        assert t.msgtype == "occnet_ros/msg/ReconstructedObjectArray" and t.msgdef_format == "ros2msg"
        assert "MSG: occnet_ros/ReconstructedObject" in t.msgdef and "MSG: shape_msgs/Mesh" in t.msgdef
        data = next(r.messages(["/objects"])).data
    # the carried definition decodes the node's bytes (what Foxglove does with it)
    decoded = typestore().deserialize_cdr(data, "occnet_ros/msg/ReconstructedObjectArray")
    assert [o.id for o in decoded.objects] == [1, 2]
    np.testing.assert_allclose(decoded.objects[0].mesh.vertices[0].x, v[0, 0])


def test_missing_points_topic_exits_nonzero_listing_the_topics(setup, tmp_path, capsys):
    bag = write_bag(tmp_path / "in", [(t, m, T0) for t, m in frame_messages(T0) if t != "/points"])
    rc = cli.main([str(bag), "--out", str(tmp_path / "out"), "--params", str(setup["params_file"]),
                   "--weights", str(setup["ckpt"]), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "points topic 'points'" in err and "/mask [sensor_msgs/msg/Image]" in err and "/camera_info" in err


def test_missing_files_and_bad_arguments_stop_at_start(setup, tmp_path, capsys):
    bag = frames_bag(tmp_path / "in", n=1)
    cases = [([str(tmp_path / "nope"), "--out", str(tmp_path / "o1")], "bag not found"),
             ([str(bag), "--out", str(tmp_path / "o2"), "--weights", str(tmp_path / "x.pt")], "--weights: file not"),
             ([str(bag), "--out", str(tmp_path / "o3"), "--params", str(tmp_path / "p.yaml")], "--params: file not")]
    for argv, text in cases:
        assert cli.main(argv + ["--no-progress"]) == 2
        assert text in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([str(bag), "--out", str(tmp_path / "o4"), "--rate", "fast"])


def test_foreign_type_on_the_mask_topic_and_corrupt_messages_are_reported_and_skipped(setup, tmp_path):
    entries = []
    for i in range(3):
        t = T0 + i * 0.5
        entries += [(topic, m, t) for topic, m in frame_messages(t, mask=False)]
        entries.append(("/mask", String(data="not a mask"), t))
    entries.append(("/points", ("sensor_msgs/msg/PointCloud2", b"\x00\x01\x00\x00garbage"), T0 + 0.7))
    bag = write_bag(tmp_path / "in", entries)
    notes = []
    res = run(setup, bag, tmp_path / "out", notes)
    assert "mask" not in res.topics
    assert any("'/mask' holds std_msgs/msg/String, not sensor_msgs/msg/Image" in n for n in notes)
    assert any("topic '/points'" in n and "not a valid sensor_msgs/msg/PointCloud2" in n for n in notes)
    assert [f.dropped for f in res.frames] == ["", "", ""]
    assert {f.method for f in res.frames} == {"geometric"}  # no mask: segmented geometrically (mode auto)


def test_a_cloud_the_node_refuses_is_dropped_and_the_others_replay(setup, tmp_path):
    entries = []
    for i in range(3):
        t = T0 + i * 0.5
        for topic, m in frame_messages(t):
            if topic == "/points" and i == 1:  # integer x, y, z: not a cloud the node takes
                m.fields = [PointField(name=n, offset=4 * k, datatype=PointField.INT32, count=1)
                            for k, n in enumerate("xyz")] + [m.fields[3]]
            entries.append((topic, m, t))
    res = run(setup, write_bag(tmp_path / "in", entries), tmp_path / "out")
    assert res.frames[0].dropped == res.frames[2].dropped == ""
    assert "CloudFormatError" in res.frames[1].dropped and "'x'" in res.frames[1].dropped
    assert any("dropped" in n for n in res.notes)
    objs, _ = object_arrays(res.out_bag)
    assert len(objs) == 2


def test_truncated_bag_is_refused_with_its_name(setup, tmp_path, capsys):
    bag = frames_bag(tmp_path / "in", n=2)
    f = next(bag.glob("*.mcap"))
    f.write_bytes(f.read_bytes()[: f.stat().st_size * 6 // 10])
    with pytest.raises(BagError, match=f"cannot open bag {bag}"):
        run(setup, bag, tmp_path / "out")
    rc = cli.main([str(bag), "--out", str(tmp_path / "out2"), "--params", str(setup["params_file"]),
                   "--weights", str(setup["ckpt"]), "--no-progress"])
    assert rc == 1 and "cannot open bag" in capsys.readouterr().err


def test_object_map_from_camera_pose_and_required_partners(setup, tmp_path):
    from dataclasses import replace

    entries = []
    for i in range(2):
        t = T0 + i * 0.5
        entries += [(topic, m, t) for topic, m in frame_messages(t)]
        pose = PoseStamped(header=header(t))
        pose.header.frame_id = "world"
        pose.pose = conversions.pose_from_rt(np.eye(3), np.zeros(3))  # world = the cloud frame
        if i == 0:
            entries.append(("/camera_pose", pose, t))
    bag = write_bag(tmp_path / "in", entries)
    params = replace(setup["params"], world_frame="world")
    res = replay(ReplayOptions(bag=bag, out=tmp_path / "out", params=params, progress=False), setup["rec"],
                 emit=lambda t: None)
    assert res.frames[0].dropped == "" and res.frames[0].frame_id == "world"
    assert "no pose within sync.tolerance" in res.frames[1].dropped
    with pytest.raises(ReplayError, match="camera_pose"):
        replay(ReplayOptions(bag=frames_bag(tmp_path / "in2", n=1), out=tmp_path / "out2", params=params,
                             progress=False), setup["rec"])


def test_recorded_rate_waits_by_the_bag_timestamps(setup, tmp_path):
    class FakeClock:
        def __init__(self):
            self.now, self.sleeps = 0.0, []

        def __call__(self):
            return self.now

        def sleep(self, s):
            self.sleeps.append(s)
            self.now += s

    bag = frames_bag(tmp_path / "in", n=3, period=0.4)
    clock = FakeClock()
    res = run(setup, bag, tmp_path / "out", pacer=Pacer("recorded", clock, clock.sleep))
    with BagReader(bag) as r:
        span = (r.end_ns - r.start_ns) * 1e-9
    # processing takes no fake time: the waits add up to the bag's span, one per message after the first
    assert sum(clock.sleeps) == pytest.approx(span, abs=1e-6) and res.waited_s == pytest.approx(span, abs=1e-6)
    assert max(clock.sleeps) == pytest.approx(0.4 - 0.003, abs=1e-6)
    fast = Pacer("max", clock, clock.sleep)
    assert fast.wait(0) == fast.wait(10**9) == 0.0


def test_frame_assembler_pairs_late_partners_and_reports_missing_required_ones():
    a = FrameAssembler("points", ["mask", "image"], ["mask"], tolerance=0.05, stream_timeout=2.0)
    ns = lambda s: int(s * 1e9)  # noqa: E731
    out = a.push("points", 1.0, ns(1.0), "p1")
    out += a.push("points", 2.0, ns(1.1), "p2")  # the next cloud before the first one's partners
    out += a.push("image", 1.01, ns(1.2), "i1")
    out += a.push("mask", 0.99, ns(1.3), "m1")
    assert out == []  # partners may still come closer in stamp
    out += a.push("mask", 2.0, ns(2.1), "m2")
    out += a.push("image", 2.2, ns(2.2), "i2")  # past 1.0 + tolerance on every partner: cloud 1 is done
    assert [(f.frame.items, f.missing) for f in out] == [({"points": "p1", "mask": "m1", "image": "i1"}, [])]
    out = a.push("points", 3.0, ns(3.0), "p3")  # stamp 2.2 image: 0.2 s off cloud 2, not paired
    out += a.push("image", 3.1, ns(3.1), "i3") + a.push("mask", 3.2, ns(3.2), "m3")
    # cloud 3: no mask near 3.0 (m3 is 0.2 s off, and past it: nothing closer can come) -> the mask is missing
    assert [(f.frame.items, f.unpaired, f.missing) for f in out] == [
        ({"points": "p2", "mask": "m2"}, ["image"], []), ({"points": "p3"}, ["image"], ["mask"])]
    out = a.push("points", 9.0, ns(9.0), "p9") + a.finish()
    assert [(f.frame.stamp, f.missing) for f in out] == [(9.0, ["mask"])]
    b = FrameAssembler("points", ["mask"], [], tolerance=0.05, stream_timeout=1.0)
    b.push("points", 1.0, ns(1.0), "p1")
    out = b.push("points", 1.5, ns(2.5), "p2")  # the mask stream never delivers: the timeout lets cloud 1 go
    assert [f.frame.stamp for f in out] == [1.0]
