"""The node as an object mapper (world_frame set, poses from the camera_pose topic), inside this process and
driven frame by frame through its worker's processing step: objects are published in world with stable ids
across views whose mask labels change, queries are answered in world and in the newest cloud's frame, and a
cloud without a usable pose is refused with the reason. Scenes: boxes on a table ray cast in numpy
(test_object_map). The network is a TEST DOUBLE (random weights)."""
import numpy as np
import pytest
from ros_helpers import node_in_process, random_domain_id, write_random_checkpoint
from test_map_pipeline import BOXES, frame_at

rclpy = pytest.importorskip("rclpy")
from geometry_msgs.msg import PoseStamped  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from occnet_ros.perception.frame_sync import SyncedFrame  # noqa: E402
from occnet_ros.ros import conversions  # noqa: E402
from occnet_ros.ros.conversions import MessageError  # noqa: E402

WORLD, CAM_FRAME = "world", "cam"


MAP_NODE = dict(segmentation__min_points=20, filter__min_range=0.05, world_frame=WORLD, pose_source="topic",
                map__reconstructions_per_frame=3)


@pytest.fixture
def node(tmp_path):
    """The node as shipped: the map lives in its reconstruction process."""
    with node_in_process(tmp_path, **MAP_NODE) as n:
        yield n


@pytest.fixture
def local_node(tmp_path):
    """The map in this process, where a test reads the pipeline's state."""
    with node_in_process(tmp_path, reconstruction_process=False, **MAP_NODE) as n:
        yield n


def header(frame_id, stamp):
    h = Header(frame_id=frame_id)
    h.stamp.sec = int(stamp)
    return h


def pose_msg(cloud_to_world, stamp, frame_id=WORLD):
    msg = PoseStamped(header=header(frame_id, stamp))
    msg.pose = conversions.pose_from_rt(cloud_to_world.rotation, cloud_to_world.translation)
    return msg


def synced(node, azimuth, stamp, labels=None, pose=True):
    """The messages of one view: cloud and mask in the camera frame, its camera_info given to the node, and
    (``pose``) its camera_pose in world."""
    inp, cloud_to_world = frame_at(BOXES, azimuth, stamp, labels)
    h = header(CAM_FRAME, stamp)
    node._on_info(conversions.camera_info(inp.intrinsics, h))
    items = {"points": conversions.arrays_to_pointcloud2(inp.xyz, None, h),
             "mask": conversions.array_to_image(inp.mask.astype(np.uint16), "mono16", h)}
    if pose:
        items["pose"] = pose_msg(cloud_to_world, stamp)
    return SyncedFrame(float(stamp), items), cloud_to_world


class Recorder:
    def __init__(self, publisher):
        self.sent, self._publish = [], publisher.publish
        self._type = publisher.msg_type
        publisher.publish = self

    def __call__(self, msg):
        # the node publishes serialized messages (bytes): recorded as message objects
        self.sent.append(deserialize_message(msg, self._type) if isinstance(msg, bytes) else msg)
        self._publish(msg)


def test_objects_are_mapped_in_world_and_queried_in_world_and_camera_frames(node):
    from occnet_ros.srv import QueryOccupancy

    assert node.pose_source == "topic"
    objects = Recorder(node.pub_objects)
    rng = np.random.default_rng(3)
    for i, az in enumerate([0.0, 70.0, 150.0]):
        frame, cloud_to_world = synced(node, az, float(i + 1), labels=list(rng.permutation([4, 9, 2])))
        node._process(frame)
    ids = [[o.id for o in msg.objects] for msg in objects.sent]
    assert ids[-1] == [0, 1, 2] and all(msg.header.frame_id == WORLD for msg in objects.sent)
    assert all(o.num_views >= 2 for o in objects.sent[-1].objects)  # fused from the views that saw it
    assert node.store.snapshot().frame_id == WORLD
    centres = np.array([(lo + hi) / 2 for lo, hi in BOXES], np.float32)
    req = QueryOccupancy.Request()
    req.header.frame_id = WORLD
    req.points = centres.reshape(-1).tolist()
    world = node.queries.handle(req, QueryOccupancy.Response())
    assert world.success, world.message
    assert sorted(world.object_ids) == [0, 1, 2]  # each box centre lies in its own object's box
    # the same points in the newest cloud's frame, through its pose
    req.header.frame_id = CAM_FRAME
    req.points = cloud_to_world.inverse().apply(centres).astype(np.float32).reshape(-1).tolist()
    cam = node.queries.handle(req, QueryOccupancy.Response())
    assert cam.success, cam.message
    assert list(cam.object_ids) == list(world.object_ids)
    np.testing.assert_allclose(cam.probabilities, world.probabilities, atol=1e-4)
    req.header.frame_id = "elsewhere"
    other = node.queries.handle(req, QueryOccupancy.Response())
    assert not other.success and "elsewhere" in other.message


def test_markers_are_sent_again_only_for_changed_objects_or_a_new_listener(node):
    from visualization_msgs.msg import Marker

    markers = Recorder(node.pub_markers)
    listeners = [1]
    node.pub_markers.get_subscription_count = lambda: listeners[0]

    def sent_ids(i):
        return sorted(m.id for m in markers.sent[i].markers if m.action == Marker.ADD)

    node._process(synced(node, 0.0, 1.0)[0])
    shown = sent_ids(0)
    assert shown and set(shown) == node.marker_ids
    node._process(synced(node, 0.0, 2.0)[0])  # the same view: nothing changed, no marker sent again
    assert sent_ids(1) == [] and node.marker_ids == set(shown)
    listeners[0] = 2  # a new listener (RViz started) gets every object
    node._process(synced(node, 0.0, 3.0)[0])
    assert sent_ids(2) == shown


def test_the_message_of_an_unchanged_object_is_reused_with_a_fresh_header(local_node):
    from rclpy.serialization import deserialize_message

    from occnet_ros.msg import ReconstructedObjectArray
    from occnet_ros.ros.object_msgs import ObjectMessageCache, frame_messages

    local_node._process(synced(local_node, 0.0, 1.0)[0])
    results = local_node.processor.pipeline._published
    first = list(results.values())
    cache = ObjectMessageCache()
    a = frame_messages(first, header(WORLD, 1.0), set(), False, cache=cache)
    bodies = [cache.get(r) for r in first]
    b = frame_messages(first, header("w", 2.0), set(), False, cache=cache)  # other offsets in the message
    assert all(cache.get(r) is x for r, x in zip(first, bodies))  # not encoded again
    objects = deserialize_message(b.objects, ReconstructedObjectArray).objects
    assert all(m.header.stamp.sec == 2 and m.header.frame_id == "w" for m in objects)
    fresh = frame_messages(first, header("w", 2.0), set(), False)
    assert b.objects == fresh.objects and a.objects != b.objects  # the same bytes as encoding afresh
    from dataclasses import replace

    changed = [replace(first[0])] + first[1:]  # a new result for the first object: encoded again
    frame_messages(changed, header(WORLD, 3.0), set(), False, cache=cache)
    assert cache.get(changed[0]) is not bodies[0] and cache.get(changed[1]) is bodies[1]
    frame_messages(first[1:], header(WORLD, 4.0), set(), False, cache=cache)
    assert set(cache._entries) == {r.segment.id for r in first[1:]}  # objects gone from the frame are dropped


def test_a_cloud_without_a_usable_pose_is_refused_with_the_reason(node):
    objects = Recorder(node.pub_objects)
    frame, _ = synced(node, 0.0, 1.0, pose=False)
    with pytest.raises(MessageError, match="no camera_pose within sync.tolerance"):
        node._process(frame)
    frame, cloud_to_world = synced(node, 0.0, 2.0)
    frame.items["pose"] = pose_msg(cloud_to_world, 2.0, frame_id="odom")
    with pytest.raises(MessageError, match="'odom', not world_frame 'world'"):
        node._process(frame)
    frame.items["pose"] = pose_msg(cloud_to_world, 2.0)
    frame.items["pose"].pose.orientation.w *= 2.0
    with pytest.raises(MessageError, match="not a unit quaternion"):
        node._process(frame)
    frame.items["pose"].pose.orientation.x = float("nan")
    with pytest.raises(MessageError, match="not a unit quaternion"):
        node._process(frame)
    assert node.frames_done == 0 and not objects.sent
    node._process(synced(node, 0.0, 3.0)[0])
    assert node.frames_done == 1 and len(objects.sent[0].objects) == 3
    assert all(o.num_views == 1 for o in objects.sent[0].objects)  # none of the refused views entered the map


@pytest.mark.parametrize("reliability", ["best_effort", "reliable"])
def test_the_input_subscriptions_take_the_configured_reliability(tmp_path, reliability):
    from rclpy.qos import ReliabilityPolicy

    with node_in_process(tmp_path, sensor_reliability=reliability, world_frame=WORLD, pose_source="topic") as n:
        for topic in ("points", "mask", "image", "camera_info", "camera_pose"):
            (info,) = n.get_subscriptions_info_by_topic(f"/{topic}")
            want = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
            assert info.qos_profile.reliability == want, topic


def test_pose_source_tf_without_tf2_stops_the_node_naming_the_parameter():
    from occnet_ros.ros.node_params import ParamError, default_values, params_from_values
    from occnet_ros.ros.reconstruction_node import check_startup
    from occnet_ros.ros.tf_lookup import tf2_available
    from occnet_ros.ros.world_pose import resolve_pose_source

    values = default_values()
    values.update({"world_frame": WORLD, "pose_source": "tf"})
    if not tf2_available():
        with pytest.raises(ParamError, match="'pose_source' = 'tf'"):
            check_startup(params_from_values(values))
    values["pose_source"] = "auto"
    check_startup(params_from_values(values))  # auto falls back to the camera_pose topic
    assert resolve_pose_source(WORLD, "auto", False) == "topic" and resolve_pose_source(WORLD, "auto", True) == "tf"
    assert resolve_pose_source("", "topic", False) == ""  # no world_frame: no map, as before


@pytest.mark.slow
def test_the_node_maps_an_orbiting_simulated_camera_over_dds(tmp_path):
    """sim_camera orbits a table of three objects and publishes camera_pose; reconstruction_node (world_frame,
    pose_source auto -> the topic here) publishes the map in world: the same three ids frame after frame,
    fused from more and more views."""
    from occnet_ros.msg import ReconstructedObjectArray
    from ros_helpers import REPO, start_program, stop_program, wait_until

    domain = random_domain_id()
    ckpt = write_random_checkpoint(tmp_path / "random_test_double.pt")
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain, signal_handler_options=SignalHandlerOptions.NO)
    listener = rclpy.create_node("map_listener", context=ctx)
    received = []
    listener.create_subscription(ReconstructedObjectArray, "objects", received.append, 10)
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(listener)
    sim = start_program("sim_camera", [
        "--params-file", str(REPO / "config" / "sim_camera.yaml"), "-p", "rate_hz:=2.0",
        "-p", "camera.width:=160", "-p", "camera.height:=120", "-p", "camera.fx:=150.0", "-p", "camera.fy:=150.0",
        "-p", "camera.orbit_deg_per_s:=30.0", "-p", "scene.objects:=[mug, sphere, torus]"],
        domain, tmp_path / "sim_camera.log")
    node = start_program("reconstruction_node", [
        "--params-file", str(REPO / "config" / "reconstruct.yaml"), "-p", "reconstruction.device:=cpu",
        "-p", f"checkpoint:={ckpt}", "-p", "reconstruction.resolution0:=8", "-p", "reconstruction.upsampling_steps:=1",
        "-p", "segmentation.min_points:=20", "-p", "world_frame:=world", "-p", "log_throttle_sec:=0.0"],
        domain, tmp_path / "node.log")
    try:
        ok = wait_until(lambda: len(received) >= 6 and len(received[-1].objects) == 3, 120.0,
                        spin=lambda: executor.spin_once(timeout_sec=0.1))
        log = (tmp_path / "node.log").read_text()
        assert ok, log[-3000:]
        assert "object map in world, poses from topic" in log
        last = received[-1]
        assert last.header.frame_id == "world" and sorted(o.id for o in last.objects) == [0, 1, 2]
        assert max(o.num_views for o in last.objects) >= 2  # the orbit brought new sides
        # the objects stand on the simulated table (top at z = 0.625 m in the world)
        for o in last.objects:
            assert 0.6 < o.pose.position.z < 0.9, o
    finally:
        stop_program(node)
        stop_program(sim)
        executor.shutdown()
        listener.destroy_node()
        rclpy.shutdown(context=ctx)
