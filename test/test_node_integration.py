"""The reconstruction node end to end: in-process pipeline checks, then the real node in a separate
process (its own ROS_DOMAIN_ID) fed with a generated scene by this process: objects, markers, the query
service with good and malformed requests, a malformed PointCloud2, bad parameters, SIGINT.

The network is a TEST DOUBLE (random weights; see ros_helpers.write_random_checkpoint): it is nearly
constant, so every mesh is the object's padded box. That is enough for the plumbing tested here.
"""
import signal
import subprocess
import time

import numpy as np
import pytest
from ros_helpers import (BOX_LABEL, SPHERE_LABEL, VENV_BIN, node_env, node_process, random_domain_id, render_scene,
                         wait_until, write_random_checkpoint)

rclpy = pytest.importorskip("rclpy")
from visualization_msgs.msg import Marker  # noqa: E402

from occnet_ros.ros import conversions  # noqa: E402
from ros_client import FRAME, Client  # noqa: E402

NODE_ARGS = ["-p", "reconstruction.device:=cpu", "-p", "reconstruction.resolution0:=8", "-p", "reconstruction.upsampling_steps:=1",
             "-p", "segmentation.min_points:=20", "-p", "filter.min_range:=0.05", "-p", "log_throttle_sec:=0.0",
             "-p", "up:=[{:.9f}, {:.9f}, {:.9f}]".format(*render_scene(160, 120).up)]  # gravity in the camera frame


@pytest.fixture(scope="module")
def scene():
    return render_scene(160, 120)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random_test_double.pt")


# ---------------------------------------------------------------- in process: the pipeline


def test_pipeline_mask_and_geometric(scene, checkpoint):
    from occnet_ros.reconstruction.reconstructor import Reconstructor
    from occnet_ros.ros.node_params import default_values, params_from_values
    from occnet_ros.perception.frame_pipeline import FrameInput, FramePipeline

    rec = Reconstructor.from_pretrained(str(checkpoint), device="cpu", resolution0=8, upsampling_steps=1)
    values = default_values()
    values["segmentation.min_points"] = 20
    pipe = FramePipeline(rec, params_from_values(values))
    by_mask = pipe.process(FrameInput(xyz=scene.xyz, mask=scene.mask.astype(np.int64), image=scene.rgb,
                                      up=scene.up))
    assert by_mask.method == "mask" and [o.segment.id for o in by_mask.objects] == [BOX_LABEL, SPHERE_LABEL]
    for o in by_mask.objects:
        assert len(o.obj.mesh.faces) > 0
        assert o.vertex_colors.shape == (len(o.obj.mesh.vertices), 3)
        expected = scene.rgb[scene.mask == o.segment.id][0]
        np.testing.assert_array_equal(np.median(o.vertex_colors, axis=0), expected)
        # the observation (but the few points cleaning removed) lies inside the object's padded box
        assert np.mean(o.obj.query(o.segment.points) > 0) > 0.95
    geo = pipe.process(FrameInput(xyz=scene.xyz, image=scene.rgb, up=scene.up))
    assert geo.method == "geometric" and len(geo.objects) == 2
    again = pipe.process(FrameInput(xyz=scene.xyz, image=scene.rgb, up=scene.up))
    assert [o.segment.id for o in again.objects] == [o.segment.id for o in geo.objects]  # tracked ids


# ---------------------------------------------------------------- the node in another process

@pytest.fixture(scope="module")
def domain_id():
    return random_domain_id()


@pytest.fixture(scope="module")
def node_proc(domain_id, checkpoint, tmp_path_factory):
    with node_process(tmp_path_factory.mktemp("node"), domain_id, NODE_ARGS, checkpoint) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(domain_id, node_proc):
    c = Client(domain_id)
    yield c
    c.close()


@pytest.fixture(scope="module")
def first_objects(client, scene, node_proc):
    msg = client.feed_until_objects(scene, 100.0, timeout=45)
    assert msg is not None, "no objects from the node:\n" + node_proc.log_path.read_text()[-3000:]
    return msg


def test_objects_from_masked_scene(first_objects, scene):
    msg = first_objects
    assert msg.header.frame_id == FRAME
    assert [o.id for o in msg.objects] == [BOX_LABEL, SPHERE_LABEL]
    assert [o.label for o in msg.objects] == ["mask_1", "mask_2"]
    for o, centre in zip(msg.objects, (scene.box_center, scene.sphere_center)):
        verts, faces = conversions.mesh_msg_to_arrays(o.mesh)
        assert len(faces) > 0 and faces.max() < len(verts)
        assert np.linalg.norm(verts.mean(axis=0) - centre) < 0.15  # mesh around the object, metres
        assert len(o.vertex_colors) == len(verts)
        assert o.num_observed_points >= 20 and o.reconstruction_time > 0
        assert o.scale > 0 and o.bbox_size.x > 0
        assert abs(np.linalg.norm([o.pose.orientation.x, o.pose.orientation.y, o.pose.orientation.z,
                                   o.pose.orientation.w]) - 1) < 1e-6


def test_markers_match_objects(first_objects, client):
    """Each frame's markers against that frame's objects. The client re-sent the frame until objects came, so the
    node may reconstruct it more than once, and two reconstructions of one frame can differ by a few faces (the
    support plane's RANSAC draws anew each frame): compare the last messages once the node has gone quiet."""
    assert wait_until(lambda: len(client.markers) > 0, 10, spin=client.spin)
    counts, quiet_since, end = None, time.monotonic(), time.monotonic() + 20
    while time.monotonic() < end:
        now = (len(client.objects), len(client.markers))
        if now != counts:
            counts, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since > 1.5 and counts[0] == counts[1]:
            break
        client.spin(0.1)
    assert counts[0] == counts[1], f"objects and markers messages never paired up: {counts}"
    markers = client.markers[-1].markers
    by_id = {o.id: o for o in client.objects[-1].objects}
    assert sorted(by_id) == sorted(o.id for o in first_objects.objects)
    adds = [m for m in markers if m.action == Marker.ADD]
    assert sorted(m.id for m in adds) == sorted(by_id)
    for m in adds:
        assert m.type == Marker.TRIANGLE_LIST and m.header.frame_id == FRAME
        assert len(m.points) == 3 * len(by_id[m.id].mesh.triangles)
        assert len(m.colors) == len(m.points)


def test_query_service(first_objects, client, scene):
    pts = np.array([scene.sphere_center, scene.box_center, [5, 5, 5], [-3, 0, 1]], np.float32)
    res = client.query(pts)
    assert res.success, res.message
    probs, ids = np.asarray(res.probabilities), np.asarray(res.object_ids)
    assert ids.tolist() == [SPHERE_LABEL, BOX_LABEL, -1, -1]
    assert probs[0] > probs[2] and probs[1] > probs[3] and probs[2] == 0 and probs[3] == 0
    # restricted to the box: the sphere centre is outside its box
    res = client.query(pts[:2], object_ids=[BOX_LABEL])
    assert res.success and np.asarray(res.object_ids).tolist() == [-1, BOX_LABEL]
    # the objects' own frame by name is fine
    assert client.query(pts, frame_id=FRAME).success
    # a big query
    big = np.random.default_rng(0).uniform(-0.3, 0.3, size=(100000, 3)).astype(np.float32) + scene.box_center
    res = client.query(big)
    assert res.success and len(res.probabilities) == 100000 and (np.asarray(res.object_ids) >= 0).any()


@pytest.mark.parametrize("points,ids,frame,words", [
    (np.zeros(4, np.float32), (), "", "multiple of 3"),
    (np.array([0, 0, np.nan], np.float32), (), "", "NaN"),
    (np.zeros(3, np.float32), (999,), "", "unknown object id"),
    (np.zeros(3, np.float32), (), "some_other_frame", "tf2"),
])
def test_query_malformed(first_objects, client, points, ids, frame, words):
    res = client.query(points, object_ids=ids, frame_id=frame)
    assert not res.success and words in res.message
    assert len(res.probabilities) == 0


def test_survives_malformed_cloud(first_objects, client, scene, node_proc):
    def truncate(cloud):
        cloud.data = cloud.data[: len(cloud.data) // 2]

    def bad_step(mask):
        mask.step = 3  # smaller than one row

    client.publish_scene(scene, 200.0, mangle_cloud=truncate)
    wait_until(lambda: False, 1.0, spin=client.spin)
    client.publish_scene(scene, 201.0, mangle_mask=bad_step)  # an unusable mask: segmented geometrically
    assert wait_until(lambda: client.objects_at(201.0) is not None, 10.0, spin=client.spin)
    labels = [o.label for o in client.objects_at(201.0).objects]
    assert len(labels) == 2 and all(lab.startswith("cluster_") for lab in labels), labels
    msg = client.feed_until_objects(scene, 300.0, timeout=20)
    assert msg is not None and len(msg.objects) == 2
    assert node_proc.poll() is None
    assert client.objects_at(200.0) is None
    log = node_proc.log_path.read_text()
    assert "dropped frame at 200.000" in log and "needs" in log
    assert "frame 201.000: mask unusable" in log and "step 3" in log


def test_bad_parameters_stop_the_node(domain_id, checkpoint, tmp_path):
    # (range and type errors of every parameter are tested in process: test_node_params.py)
    cases = [(["-p", f"checkpoint:={checkpoint}", "-p", "segmentation.mode:=magic"], "segmentation.mode"),
             (["-p", "checkpoint:=/no/such/file.pt"], "/no/such/file.pt")]
    procs = [subprocess.Popen([str(VENV_BIN / "reconstruction_node"), "--ros-args"] + args, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=node_env(domain_id)) for args, _ in cases]
    for proc, (_, words) in zip(procs, cases):
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2, err
        assert words in err


def test_sigint_clean_shutdown(first_objects, node_proc, client, scene):
    client.publish_scene(scene, 400.0)  # keep the worker busy while the signal comes
    t0 = time.monotonic()
    node_proc.send_signal(signal.SIGINT)
    rc = node_proc.wait(15)
    assert rc == 0, node_proc.log_path.read_text()[-2000:]
    assert time.monotonic() - t0 < 5.0
