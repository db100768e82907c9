"""``query_occupancy`` under concurrent clients: the real node in its own process (own ROS_DOMAIN_ID and a
namespace of its own) with a random-weight checkpoint (TEST DOUBLE) and a published scene, queried through
:class:`occnet_ros.ros.query_client.OccupancyQueryClient` by 20 fresh clients at once (each its own rclpy
context, i.e. its own DDS participant, the way separate planner processes are), 10 calls each: every call
answered before its deadline and equal to a reference answer. Then requests the node must refuse (too many
points, NaN, a length that is not a multiple of 3) next to a valid client, which must not be delayed.
"""
import array
import os
import re
import threading
import time

import numpy as np
import pytest
from ros_helpers import (node_process, random_domain_id, render_scene, wait_until)

rclpy = pytest.importorskip("rclpy")
from rclpy.context import Context  # noqa: E402
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile  # noqa: E402
from rclpy.signals import SignalHandlerOptions  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from occnet_ros.msg import ReconstructedObjectArray  # noqa: E402
from occnet_ros.ros import conversions  # noqa: E402
from occnet_ros.ros.query_client import OccupancyQueryClient, QueryRefused, QueryTimeout  # noqa: E402
from occnet_ros.srv import QueryOccupancy  # noqa: E402

FRAME = "camera_color_optical_frame"
NAMESPACE = f"/query_concurrency_{os.getpid()}"  # no other node on a shared domain answers our calls
MAX_POINTS = 5000
NODE_ARGS = ["-r", f"__ns:={NAMESPACE}",
             "--log-level", NAMESPACE.strip("/") + ".reconstruction_node:=debug",  # one line per request
             "-p", "reconstruction.device:=cpu", "-p", "reconstruction.resolution0:=8",
             "-p", "reconstruction.upsampling_steps:=1", "-p", "segmentation.min_points:=20",
             "-p", "filter.min_range:=0.05", "-p", "log_throttle_sec:=0.0", "-p", f"query_max_points:={MAX_POINTS}"]
CLIENTS, CALLS = 20, 10
DEADLINE_S, ATTEMPT_S = 20.0, 1.0  # generous: 20 participants' discovery on 2 shared cores takes seconds


class RosSide:
    """A context of this process on the node's domain: publishes the scene, sees the objects."""

    def __init__(self, domain_id):
        self.ctx = Context()
        rclpy.init(context=self.ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("query_concurrency_feed", namespace=NAMESPACE, context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=5)
        self.pubs = {name: self.node.create_publisher(t, name, qos) for name, t in
                     (("points", PointCloud2), ("mask", Image), ("image", Image), ("camera_info", CameraInfo))}
        self.objects = []
        self.node.create_subscription(ReconstructedObjectArray, "objects", self.objects.append, qos)

    def spin(self):
        self.executor.spin_once(timeout_sec=0.05)

    def publish(self, scene, stamp_s):
        h = Header(frame_id=FRAME)
        h.stamp.sec, h.stamp.nanosec = int(stamp_s), int(round((stamp_s % 1) * 1e9))
        self.pubs["camera_info"].publish(conversions.camera_info(scene.camera, h))
        self.pubs["mask"].publish(conversions.array_to_image(scene.mask, "mono16", h))
        self.pubs["image"].publish(conversions.array_to_image(scene.rgb, "rgb8", h))
        self.pubs["points"].publish(conversions.arrays_to_pointcloud2(scene.xyz, None, h))

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture(scope="module")
def scene():
    return render_scene(160, 120)


@pytest.fixture(scope="module")
def domain_id():
    return random_domain_id()


@pytest.fixture(scope="module")
def node_proc(domain_id, tmp_path_factory):
    with node_process(tmp_path_factory.mktemp("query_concurrency"), domain_id, NODE_ARGS) as proc:
        yield proc


@pytest.fixture(scope="module")
def ros(domain_id, node_proc):
    side = RosSide(domain_id)
    yield side
    side.close()


@pytest.fixture(scope="module")
def objects_ready(ros, scene, node_proc):
    """Publishes the scene until the node has objects, then lets the node settle (no frame in progress)."""
    end = time.monotonic() + 60
    while not ros.objects and time.monotonic() < end:
        ros.publish(scene, 100.0)
        wait_until(lambda: bool(ros.objects), 0.5, spin=ros.spin)
    assert ros.objects, "no objects from the node:\n" + node_proc.log_path.read_text()[-3000:]
    n = -1
    while n != len(ros.objects):  # until a second passes without another frame
        n = len(ros.objects)
        wait_until(lambda: False, 1.0, spin=ros.spin)
    assert len(ros.objects[-1].objects) == 2
    return ros.objects[-1]


def requests_received(node_proc) -> int:
    return len(re.findall(r"query_occupancy request \d+:", node_proc.log_path.read_text(errors="replace")))


class QueryingClient:
    """A planner stand-in: its own context (DDS participant) and node; with ``spin_thread`` the node is
    spun by a MultiThreadedExecutor in a background thread, else the helper spins it."""

    def __init__(self, domain_id, name, spin_thread):
        self.ctx = Context()
        rclpy.init(context=self.ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self.ctx)
        self.occ = OccupancyQueryClient(self.node, f"{NAMESPACE}/query_occupancy")
        self.executor = self.thread = None
        if spin_thread:
            self.executor = MultiThreadedExecutor(num_threads=2, context=self.ctx)
            self.executor.add_node(self.node)
            self.thread = threading.Thread(target=self.executor.spin, daemon=True)
            self.thread.start()

    def close(self):
        if self.executor is not None:
            # no new work first: rclpy's MultiThreadedExecutor.shutdown can race a task it just created
            self.executor.remove_node(self.node)
            time.sleep(0.1)
            self.executor.shutdown(timeout_sec=2.0)
            self.thread.join(timeout=2.0)
        self.occ.close()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def client_points(i, scene):
    """Client ``i``'s 64 query points (metres, objects' frame): around both objects and far away."""
    rng = np.random.default_rng(1000 + i)
    centre = scene.box_center if i % 2 else scene.sphere_center
    near = centre + rng.uniform(-0.12, 0.12, size=(48, 3))
    far = rng.uniform(-3, 3, size=(16, 3)) + np.array([0, 0, 5.0])
    return np.concatenate([near, far]).astype(np.float32)


@pytest.mark.timeout(150)
def test_twenty_fresh_clients_every_call_answered_and_correct(objects_ready, domain_id, node_proc, scene):
    points = [client_points(i, scene) for i in range(CLIENTS)]
    ref_client = QueryingClient(domain_id, "query_concurrency_reference", spin_thread=False)
    try:
        reference = [ref_client.occ.query(p, deadline_s=DEADLINE_S, attempt_timeout_s=ATTEMPT_S) for p in points]
    finally:
        ref_client.close()
    assert any((ids >= 0).any() for _, ids in reference)  # the points do hit objects
    received_before = requests_received(node_proc)

    start = threading.Barrier(CLIENTS)
    results = [None] * CLIENTS

    def run(i):
        c = QueryingClient(domain_id, f"query_concurrency_client_{i}", spin_thread=bool(i % 2))
        got = []
        try:
            start.wait(timeout=60)  # every client's participant exists, none discovered the node yet
            for k in range(CALLS):
                pts = np.roll(points[i], k, axis=0)  # a different request each call, same expected answer
                t = time.monotonic()
                try:
                    probs, ids = c.occ.query(pts, deadline_s=DEADLINE_S, attempt_timeout_s=ATTEMPT_S)
                    got.append((k, time.monotonic() - t, probs, ids, None))
                except Exception as e:
                    got.append((k, time.monotonic() - t, None, None, e))
        finally:
            c.close()
            results[i] = got

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=CALLS * DEADLINE_S + 60)
    wall = time.monotonic() - t0

    failures = []
    for i, got in enumerate(results):
        assert got is not None and len(got) == CALLS, f"client {i} did not finish: {got}"
        ref_probs, ref_ids = reference[i]
        for k, dt, probs, ids, err in got:
            if err is not None:
                failures.append(f"client {i} call {k}: {type(err).__name__}: {err}")
                continue
            np.testing.assert_array_equal(ids, np.roll(ref_ids, k))
            np.testing.assert_allclose(probs, np.roll(ref_probs, k), rtol=0, atol=1e-6)
    assert not failures, "\n".join(failures)
    received = requests_received(node_proc) - received_before
    slowest = max(dt for got in results for _, dt, *_ in got)
    print(f"\n{CLIENTS * CALLS} calls answered in {wall:.1f} s; the node received {received} requests "
          f"({received - CLIENTS * CALLS} re-sent); slowest call {slowest:.2f} s")
    assert received >= CLIENTS * CALLS


def raw_call(client, points_flat, attempts=5, timeout=2.0):
    """A request with ``points`` as given (any length), bypassing the helper's shape check, re-sent as the
    helper would; the client's node is spun by another thread."""
    req = QueryOccupancy.Request()
    req.points = array.array("f", np.asarray(points_flat, np.float32).tobytes())
    for _ in range(attempts):
        try:
            return client.call(req, timeout_sec=timeout)
        except TimeoutError:
            continue
    raise AssertionError("no answer to a malformed request")


@pytest.mark.timeout(120)
def test_bad_requests_refused_and_do_not_delay_a_valid_client(objects_ready, domain_id, scene):
    good = QueryingClient(domain_id, "query_concurrency_good", spin_thread=True)
    bad = QueryingClient(domain_id, "query_concurrency_bad", spin_thread=True)
    try:
        pts = client_points(0, scene)
        ref_probs, ref_ids = good.occ.query(pts, deadline_s=DEADLINE_S)  # discovery done before timing
        bad.occ.query(pts[:1], deadline_s=DEADLINE_S)
        # the malformed length needs a plain client (the helper only sends (M, 3) points)
        raw = bad.node.create_client(QueryOccupancy, f"{NAMESPACE}/query_occupancy")
        assert raw.wait_for_service(timeout_sec=DEADLINE_S)

        stop = threading.Event()
        latencies, errors = [], []

        def valid_loop():
            while not stop.is_set():
                t = time.monotonic()
                try:
                    probs, ids = good.occ.query(pts, deadline_s=5.0, attempt_timeout_s=1.0)
                    np.testing.assert_array_equal(ids, ref_ids)
                    latencies.append(time.monotonic() - t)
                except Exception as e:
                    errors.append(e)
                time.sleep(0.01)

        valid = threading.Thread(target=valid_loop)
        valid.start()
        refusals = []
        big = np.random.default_rng(0).uniform(-0.3, 0.3, size=(40 * MAX_POINTS, 3)).astype(np.float32)
        nan = pts.copy()
        nan[3, 1] = np.nan
        try:
            for _ in range(5):
                for bad_points, words in ((big, "exceed query_max_points"), (nan, "NaN")):
                    with pytest.raises(QueryRefused) as info:
                        bad.occ.query(bad_points, deadline_s=10.0, attempt_timeout_s=5.0)
                    assert words in info.value.reason
                    refusals.append(info.value.reason)
                res = raw_call(raw, np.zeros(3 * 7 + 2))
                assert not res.success and "multiple of 3" in res.message and len(res.probabilities) == 0
                refusals.append(res.message)
        finally:
            stop.set()
            valid.join(timeout=30)
        assert not errors, errors
        assert len(refusals) == 15 and len(latencies) >= 5
        assert max(latencies) < 2.0, f"valid calls delayed: max {max(latencies):.2f} s, {sorted(latencies)[-5:]}"
        # the service still answers after the refusals
        probs, ids, sources = good.occ.query(pts, deadline_s=DEADLINE_S, with_sources=True)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_allclose(probs, ref_probs, rtol=0, atol=1e-6)
        # what each answer rests on: nothing outside every object, something (1-3) wherever an object answered
        assert sources.dtype == np.uint8 and sources.shape == ids.shape
        assert np.all((sources == 0) == (ids == -1)) and set(np.unique(sources)) <= {0, 1, 2, 3}
    finally:
        good.close()
        bad.close()


def test_timeout_when_no_server(domain_id):
    ctx = Context()
    rclpy.init(context=ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = rclpy.create_node("query_concurrency_lonely", context=ctx)
        occ = OccupancyQueryClient(node, f"{NAMESPACE}_nobody/query_occupancy")
        t = time.monotonic()
        with pytest.raises(QueryTimeout) as info:
            occ.query(np.zeros((1, 3), np.float32), deadline_s=0.5)
        assert 0.4 < time.monotonic() - t < 3.0
        assert not info.value.service_available and info.value.attempts == 0
        with pytest.raises(ValueError):
            occ.query(np.zeros((4,), np.float32))
        occ.close()
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


class DroppingServer:
    """A query_occupancy server in this process that answers nothing but every ``answer_every``-th request
    (0: none), the others lost as a discovery race or a full history would lose them. It takes requests
    itself (no executor), so it can leave one unanswered; each answer has probability 0.5, id 7."""

    def __init__(self, domain_id, namespace, answer_every):
        self.ctx = Context()
        rclpy.init(context=self.ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("dropping_server", namespace=namespace, context=self.ctx)
        self.srv = self.node.create_service(QueryOccupancy, "query_occupancy", lambda req, res: res)
        self.answer_every, self.received = answer_every, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.wait(0.005):
            with self.srv.handle:
                request, header = self.srv.handle.service_take_request(QueryOccupancy.Request)
            if request is None:
                continue
            self.received += 1
            if self.answer_every and self.received % self.answer_every == 0:
                n = len(request.points) // 3
                res = QueryOccupancy.Response(success=True, message="ok")
                res.probabilities = array.array("f", [0.5] * n)
                res.object_ids = array.array("q", [7] * n)
                self.srv.send_response(res, header)

    def close(self):
        self.stop.set()
        self.thread.join(2.0)
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.mark.parametrize("mode", ["helper_spins", "spin_thread", "from_callback"])
def test_unanswered_requests_are_resent(domain_id, mode):
    ns = f"{NAMESPACE}_dropping_{mode}"
    server = DroppingServer(domain_id, ns, answer_every=3)  # the 1st and 2nd request of a call are lost
    client = QueryingClient(domain_id, f"resend_{mode}", spin_thread=mode != "helper_spins")
    try:
        occ = OccupancyQueryClient(client.node, f"{ns}/query_occupancy")
        pts = np.zeros((4, 3), np.float32)
        if mode == "from_callback":  # a callback of the node's default group calls the helper
            done = []
            timer = client.node.create_timer(0.01, lambda: (timer.cancel(), done.append(
                occ.query(pts, deadline_s=5.0, attempt_timeout_s=0.3))))
            assert wait_until(lambda: bool(done), 10.0)
            probs, ids = done[0]
        else:
            probs, ids = occ.query(pts, deadline_s=5.0, attempt_timeout_s=0.3)
        assert probs.dtype == np.float32 and probs.tolist() == [0.5] * 4
        assert ids.dtype == np.int64 and ids.tolist() == [7] * 4
        assert 3 <= server.received <= 5  # answered on the 3rd request (a slow machine may send more)
        server.answer_every = 0  # nothing answered: QueryTimeout after about deadline / attempt_timeout tries
        t = time.monotonic()
        with pytest.raises(QueryTimeout) as info:
            occ.query(pts, deadline_s=1.0, attempt_timeout_s=0.3)
        assert 0.9 < time.monotonic() - t < 2.0
        assert info.value.service_available and 3 <= info.value.attempts <= 4  # sent at 0, 0.3, 0.6, 0.9 s
        occ.close()
    finally:
        client.close()
        server.close()
