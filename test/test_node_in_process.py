"""The reconstruction node inside this process (its own rclpy context and random domain), driven frame by
frame through its worker's processing step: objects are always published, markers only while ``markers``
has a subscriber; the object store and the marker bookkeeping follow the current objects; queries use the
configured mode.

The network is a TEST DOUBLE (random weights, ros_helpers.write_random_checkpoint).
"""
import numpy as np
import pytest
from ros_helpers import (BOX_LABEL, SPHERE_LABEL, node_in_process, random_domain_id, render_scene, wait_until,
                         write_random_checkpoint)

rclpy = pytest.importorskip("rclpy")
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.serialization import deserialize_message  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from occnet_ros.perception.frame_sync import SyncedFrame  # noqa: E402
from occnet_ros.ros import conversions  # noqa: E402


class Recorder:
    """Counts what a publisher is asked to publish (wraps ``publish``)."""

    def __init__(self, publisher):
        self.sent = []
        self._publish = publisher.publish
        self._type = publisher.msg_type
        publisher.publish = self

    def __call__(self, msg):
        # the node publishes serialized messages (bytes): recorded as message objects
        self.sent.append(deserialize_message(msg, self._type) if isinstance(msg, bytes) else msg)
        self._publish(msg)


@pytest.fixture
def node(tmp_path):
    with node_in_process(tmp_path, reconstruction__keep_grid=True, mesh__max_faces=100, segmentation__min_points=20,
                         query_mode="grid") as n:
        yield n


def synced(scene, stamp, mask):
    h = Header(frame_id="cam")
    h.stamp.sec = int(stamp)
    return SyncedFrame(stamp, {"points": conversions.arrays_to_pointcloud2(scene.xyz, None, h),
                               "mask": conversions.array_to_image(mask, "mono16", h)})


def test_markers_only_with_subscribers(node):
    scene = render_scene(160, 120)
    objects, markers = Recorder(node.pub_objects), Recorder(node.pub_markers)
    node._process(synced(scene, 1.0, scene.mask))
    assert len(objects.sent) == 1 and len(markers.sent) == 0  # nobody listens to markers
    assert [o.id for o in objects.sent[0].objects] == [BOX_LABEL, SPHERE_LABEL]
    assert all(len(o.mesh.triangles) <= 100 for o in objects.sent[0].objects)
    assert node.marker_ids == set()

    received = []
    sub = node.create_subscription(MarkerArray, "markers", received.append, 5)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        assert wait_until(lambda: node.pub_markers.get_subscription_count() > 0, 10)
        node._process(synced(scene, 2.0, np.where(scene.mask == SPHERE_LABEL, 0, scene.mask)))
        assert len(objects.sent) == 2 and len(markers.sent) == 1
        assert [m.id for m in markers.sent[0].markers if m.action == Marker.ADD] == [BOX_LABEL]
        assert node.marker_ids == {BOX_LABEL} and node.store.snapshot().ids == (BOX_LABEL,)
        assert wait_until(lambda: len(received) == 1, 5, spin=lambda: executor.spin_once(timeout_sec=0.05))
        node.destroy_subscription(sub)
        assert wait_until(lambda: node.pub_markers.get_subscription_count() == 0, 10)
        node._process(synced(scene, 3.0, scene.mask))
        assert len(objects.sent) == 3 and len(markers.sent) == 1  # the subscriber left: no markers again
        assert node.marker_ids == {BOX_LABEL}  # what the last marker message showed
        assert node.store.snapshot().ids == (BOX_LABEL, SPHERE_LABEL)
    finally:
        executor.shutdown()

    # the query service uses the configured mode (grid): answers equal the store's grid answers
    from occnet_ros.srv import QueryOccupancy

    pts = np.array([scene.box_center, scene.sphere_center, [5, 5, 5]], np.float32)
    req = QueryOccupancy.Request()
    req.points = pts.reshape(-1).tolist()
    res = node.queries.handle(req, QueryOccupancy.Response())
    assert res.success, res.message
    probs, ids = node.store.query(pts, mode="grid")
    np.testing.assert_array_equal(np.asarray(res.probabilities), probs)
    assert list(res.object_ids) == ids.tolist() == [BOX_LABEL, SPHERE_LABEL, -1]


def test_in_process_the_decimation_workers_start_with_the_node_or_stop_it_naming_the_parameter(tmp_path, monkeypatch):
    from occnet_ros.perception.decimation_worker import DecimationWorkerError, ProcessDecimation
    from occnet_ros.perception.parallel_decimation import ParallelDecimation
    from occnet_ros.perception.mesh_ops import fast_or_open3d_decimation
    from occnet_ros.ros.node_params import ParamError
    from occnet_ros.ros.reconstruction_node import ReconstructionNode

    ckpt = write_random_checkpoint(tmp_path / "random_test_double.pt")
    ctx = Context()
    rclpy.init(context=ctx, domain_id=random_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    base = [Parameter("reconstruction.device", value="cpu"), Parameter("checkpoint", value=str(ckpt)),
            Parameter("mesh.max_faces", value=100), Parameter("reconstruction_process", value=False)]
    try:
        n = ReconstructionNode(context=ctx, parameter_overrides=base)
        assert isinstance(n.decimation, ParallelDecimation) and n.processor.pipeline.decimate is n.decimation
        assert n.heap.keep_free_bytes == 0  # the frames' heap churn is this process's own: trimmed after each frame
        assert n.processor.pipeline.objects_at_once is False  # the objects' Python would share the queries' GIL
        assert len(n.decimation.slots) == 2  # mesh.decimation_workers
        assert n.stop() and all(s._closed for s in n.decimation.slots)  # the worker processes end with the node
        n.destroy_node()

        def cannot_start(self):
            raise DecimationWorkerError("spawn refused (test)")

        monkeypatch.setattr(ProcessDecimation, "start", cannot_start)
        with pytest.raises(ParamError, match="mesh.decimate_in_worker.*spawn refused"):
            ReconstructionNode(context=ctx, parameter_overrides=base)
        n = ReconstructionNode(context=ctx, parameter_overrides=base + [Parameter("mesh.decimate_in_worker", value=False)])
        assert n.decimation is None and n.processor.pipeline.decimate is fast_or_open3d_decimation
        n.stop()
        n.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_the_reconstruction_process_and_its_decimation_workers_end_with_the_node(tmp_path):
    import psutil

    from occnet_ros.ros.reconstruction_node import NODE_KEEP_FREE_BYTES, ReconstructionNode
    from occnet_ros.ros.reconstruction_process import ReconstructionProcess

    ckpt = write_random_checkpoint(tmp_path / "random_test_double.pt")
    ctx = Context()
    rclpy.init(context=ctx, domain_id=random_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    try:
        n = ReconstructionNode(context=ctx, parameter_overrides=[
            Parameter("reconstruction.device", value="cpu"), Parameter("checkpoint", value=str(ckpt)),
            Parameter("mesh.max_faces", value=100)])
        assert isinstance(n.processor, ReconstructionProcess) and n.decimation is None
        assert n.heap.keep_free_bytes == NODE_KEEP_FREE_BYTES  # this process keeps its freed buffers (to a bound)
        child = psutil.Process(n.processor.pid)
        family = [child, *child.children()]
        assert len(family) == 3  # the process and its mesh.decimation_workers
        assert n.stop()
        gone, alive = psutil.wait_procs(family, timeout=5)
        assert not alive
        n.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_worker_releases_the_heap_after_each_frame(node):
    """The worker collects the frame's garbage (and, reconstructing in this process, hands the C heap's free memory
    back: perception/heap_release.py) after every frame it processed."""
    released = []
    node.heap.release = lambda: released.append(node.frames_done) or True
    scene = render_scene(160, 120)
    frame = synced(scene, 1.0, scene.mask)
    node.sync.push("mask", 1.0, frame.items["mask"])
    node.sync.push("points", 1.0, frame.items["points"])
    assert wait_until(lambda: released, 60), "no frame processed"
    assert released[0] == 1  # after the frame's objects went out



def test_the_node_counts_the_publishers_of_its_partner_topics(node):
    """LiveFrames waits for a partner whose topic has a publisher before its first message: the node counts them on
    the topics its subscriptions resolved (mask and image here; no pose topic without an object map)."""
    assert node._partner_publishers("mask") == node._partner_publishers("image") == 0
    assert node._partner_publishers("pose") == 0  # not subscribed
    source = rclpy.create_node("mask_source", context=node.context)
    try:
        source.create_publisher(Image, "mask", 1)
        assert wait_until(lambda: node._partner_publishers("mask") == 1, 10)
        assert node._partner_publishers("image") == 0
        node._stop.set()  # stopping: nothing is waited for any more
        assert node._partner_publishers("mask") == 0
    finally:
        source.destroy_node()
