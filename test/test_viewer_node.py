"""``reconstruction_node``'s ``query_points`` topic and ``viewer_node`` as programs: the node in another process
(random-weight TEST DOUBLE checkpoint, its meshes are padded boxes) fed with a generated scene; a query ->
a PointCloud2 on query_points holding the query's points and the probabilities answered. The viewer starts,
prints its page address, serves the page, exits on SIGINT; bad parameters stop it with exit code 2."""
from __future__ import annotations

import array
import signal
import socket
import urllib.request

import numpy as np
import pytest
from ros_helpers import (node_in_process, node_process, random_domain_id, render_scene, start_program, stop_program,
                         wait_until)

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("rerun")
from rclpy.qos import QoSProfile  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402

from occnet_ros.ros.conversions import cloud_layout  # noqa: E402
from occnet_ros.srv import QueryOccupancy  # noqa: E402
from occnet_ros.viewer.query_points import MAX_QUERY_POINTS  # noqa: E402
from occnet_ros.viewer.scene import even_indices, query_point_arrays  # noqa: E402
from ros_client import FRAME, Client  # noqa: E402

NODE_ARGS = ["-p", "reconstruction.device:=cpu", "-p", "reconstruction.resolution0:=8",
             "-p", "reconstruction.upsampling_steps:=1", "-p", "segmentation.min_points:=20",
             "-p", "filter.min_range:=0.05", "-p", "color_from_image:=false",
             "-p", "up:=[{:.9f}, {:.9f}, {:.9f}]".format(*render_scene(160, 120).up)]


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that were free a moment ago."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def viewer_args(web_port: int, grpc_port: int, *extra: str) -> list[str]:
    return ["-p", f"web_port:={web_port}", "-p", f"grpc_port:={grpc_port}", "-p", "log_throttle_sec:=0.0", *extra]


def test_query_points_published_with_probabilities(tmp_path):
    domain = random_domain_id()
    scene = render_scene(160, 120)
    with node_process(tmp_path, domain, NODE_ARGS) as proc:
        client = Client(domain)
        try:
            got: list[PointCloud2] = []
            client.node.create_subscription(PointCloud2, "query_points", got.append, QoSProfile(depth=5))
            assert client.feed_until_objects(scene, 50.0, timeout=60) is not None, proc.log_path.read_text()[-2000:]
            assert wait_until(lambda: client.node.count_publishers("query_points") > 0, 10, spin=client.spin)
            rng = np.random.default_rng(0)
            n = MAX_QUERY_POINTS + 1234  # more than are published: evenly subsampled
            pts = (scene.sphere_center + rng.uniform(-0.1, 0.1, size=(n, 3))).astype(np.float32)
            res = client.query(pts)
            assert res.success, res.message
            assert wait_until(lambda: len(got) > 0, 10, spin=client.spin), "nothing on query_points"
            msg = got[-1]
            assert msg.header.frame_id == FRAME  # the request's empty frame = the objects' frame
            out_pts, out_prob = query_point_arrays(msg.data, cloud_layout(msg))
            idx = even_indices(n, MAX_QUERY_POINTS)
            np.testing.assert_array_equal(out_pts, pts[idx])
            np.testing.assert_array_equal(out_prob, np.asarray(res.probabilities, np.float32)[idx])
            assert (out_prob > 0.5).any() and (out_prob < 0.5).any()  # inside and outside the sphere's box
            # a refused query publishes nothing
            before = len(got)
            assert not client.query(np.full((2, 3), np.nan, np.float32)).success
            wait_until(lambda: len(got) > before, 1.0, spin=client.spin)
            assert len(got) == before
        finally:
            client.close()


def test_query_points_only_with_subscribers(tmp_path):
    with node_in_process(tmp_path) as node:
        req = QueryOccupancy.Request()
        req.points = array.array("f", np.zeros(6, np.float32).tobytes())
        res = node.queries.handle(req, QueryOccupancy.Response())
        assert res.success
        assert node.queries.query_points._pending is None and node.queries.query_points.published == 0


def test_viewer_node_serves_the_page_and_stops(tmp_path):
    web, grpc = free_ports(2)
    log = tmp_path / "viewer.log"
    proc = start_program("viewer_node", viewer_args(web, grpc), random_domain_id(), log)
    try:
        url = f"http://localhost:{web}/?url=rerun%2Bhttp%3A%2F%2Flocalhost%3A{grpc}%2Fproxy"
        assert wait_until(lambda: url in log.read_text(), 30), log.read_text()
        page = urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=10).read().decode()
        assert "rerun" in page.lower()
        # a second viewer on the same ports stops with a message naming the parameter
        second = start_program("viewer_node", viewer_args(web, grpc), random_domain_id(), tmp_path / "second.log")
        assert second.wait(60) == 2
        assert "port" in (tmp_path / "second.log").read_text()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        stop_program(proc)


@pytest.mark.parametrize("args,name", [(["-p", "max_cloud_points:=0"], "max_cloud_points"),
                                       (["-p", "cloud_topic:=bad topic"], "cloud_topic"),
                                       (["-p", "axes:=XYZ"], "axes")])
def test_viewer_node_bad_parameters(tmp_path, args, name):
    web, grpc = free_ports(2)
    log = tmp_path / "viewer.log"
    proc = start_program("viewer_node", viewer_args(web, grpc, *args), random_domain_id(), log)
    try:
        assert proc.wait(60) == 2
        assert name in log.read_text()
    finally:
        stop_program(proc)
