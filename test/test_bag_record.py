"""sim_camera records what it publishes into a rosbag2 MCAP bag (``record_bag``); replaying that bag gives the
meshes the live node makes from the same frames, as it received them over DDS (same pipeline, same weights).

The network is a TEST DOUBLE (random weights, ros_helpers.write_random_checkpoint)."""
from __future__ import annotations

import numpy as np
import pytest
from ros_helpers import node_in_process, random_domain_id, wait_until

rclpy = pytest.importorskip("rclpy")
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402

from occnet_ros.bag.reader import BagReader  # noqa: E402
from occnet_ros.replay.replay import ReplayOptions, load_params, replay  # noqa: E402
from occnet_ros.msg import ReconstructedObjectArray  # noqa: E402
from occnet_ros.perception.frame_sync import SyncedFrame  # noqa: E402
from occnet_ros.ros.conversions import stamp_to_sec  # noqa: E402
from occnet_ros.ros.sim_camera_node import SimCameraNode  # noqa: E402

N = 2
NODE = {"segmentation__min_points": 20, "mesh__max_faces": 200, "mesh__decimate_in_worker": False}
PARAMS = """/**:
  ros__parameters:
    reconstruction: {device: cpu, resolution0: 8, upsampling_steps: 1}
    segmentation: {min_points: 20}
    mesh: {max_faces: 200, decimate_in_worker: false}
"""


def record(path):
    """Run sim_camera (160x120, two objects, N frames) with record_bag = ``path``; return the messages a
    subscriber received live, {topic: [message]}."""
    ctx = Context()
    rclpy.init(context=ctx, domain_id=random_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    received = {"points": [], "mask": [], "image": [], "camera_info": []}
    try:
        listener = rclpy.create_node("record_test_listener", context=ctx)
        types = {"points": PointCloud2, "mask": Image, "image": Image, "camera_info": CameraInfo}
        for topic, cls in types.items():
            listener.create_subscription(cls, topic, lambda m, t=topic: received[t].append(m), 10)
        sim = SimCameraNode(context=ctx, parameter_overrides=[
            Parameter("record_bag", value=str(path)), Parameter("max_frames", value=N), Parameter("rate_hz", value=4.0),
            Parameter("camera.width", value=160), Parameter("camera.height", value=120),
            Parameter("camera.fx", value=150.0), Parameter("camera.fy", value=150.0),
            Parameter("scene.objects", value=["mug", "sphere"])])
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(listener)
        executor.add_node(sim)
        assert wait_until(lambda: sim.finished.is_set() and all(len(v) == N for v in received.values()), 60,
                          spin=lambda: executor.spin_once(timeout_sec=0.05)), {k: len(v) for k, v in received.items()}
        sim.stop()
        executor.shutdown()
        sim.destroy_node()
        listener.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
    return received


def test_replay_of_a_sim_camera_recording_equals_the_live_node(tmp_path):
    bag = tmp_path / "sim_bag"
    live = record(bag)
    with BagReader(bag) as r:
        assert {t: i.count for t, i in r.topics.items()} == {
            "/camera_info": N, "/camera_pose": N, "/image": N, "/mask": N, "/points": N}
        assert r.topics["/points"].msgtype == "sensor_msgs/msg/PointCloud2"
        stamps = [m.log_time_ns for m in r.messages(["/points"])]
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in live["points"]] == stamps  # bag time = stamp

    # the live node, fed the frames it received (the worker's processing step, frame by frame)
    with node_in_process(tmp_path, **NODE) as node:
        sent = []
        publish = node.pub_objects.publish
        node.pub_objects.publish = lambda msg: (sent.append(msg), publish(msg))
        for i in range(N):
            node._on_info(live["camera_info"][i])
            items = {k: live[k][i] for k in ("points", "mask", "image")}
            node._process(SyncedFrame(stamp_to_sec(items["points"].header.stamp), items))
        ckpt = tmp_path / "random_test_double.pt"
    node_objects = [deserialize_message(b, ReconstructedObjectArray) for b in sent]

    params_file = tmp_path / "params.yaml"
    params_file.write_text(PARAMS)
    params = load_params(params_file, ckpt)
    from occnet_ros.ros.frame_processor import load_reconstructor

    res = replay(ReplayOptions(bag=bag, out=tmp_path / "out", params=params, progress=False),
                 load_reconstructor(params), emit=lambda t: None)
    assert [f.dropped for f in res.frames] == [""] * N
    with BagReader(res.out_bag) as r:
        replayed = [deserialize_message(m.data, ReconstructedObjectArray) for m in r.messages(["/objects"])]
    assert len(replayed) == len(node_objects) == N
    n_objects = 0
    for a, b in zip(node_objects, replayed):
        assert a.header.stamp == b.header.stamp and a.header.frame_id == b.header.frame_id
        assert [o.id for o in a.objects] == [o.id for o in b.objects]
        for oa, ob in zip(a.objects, b.objects):
            va = np.array([(p.x, p.y, p.z) for p in oa.mesh.vertices])
            vb = np.array([(p.x, p.y, p.z) for p in ob.mesh.vertices])
            np.testing.assert_allclose(va, vb, atol=1e-6)
            np.testing.assert_array_equal([t.vertex_indices for t in oa.mesh.triangles],
                                          [t.vertex_indices for t in ob.mesh.triangles])
            n_objects += len(oa.mesh.triangles) > 0
    assert n_objects >= N  # real meshes were compared, not empty frames
