"""``query_occupancy`` on a node and a thread of its own (ros.query_service.QueryServer): answered while nobody spins
the reconstruction node, named after it (also where a global remap renames the node), in its namespace, under the
service's usual name; its thread ends with the node.

The network is a TEST DOUBLE (random weights, ros_helpers.write_random_checkpoint).
"""
import array

import numpy as np
import pytest
from ros_helpers import node_in_process, render_scene, wait_until

rclpy = pytest.importorskip("rclpy")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from occnet_ros.perception.frame_sync import SyncedFrame  # noqa: E402
from occnet_ros.ros import conversions  # noqa: E402
from occnet_ros.srv import QueryOccupancy  # noqa: E402


def test_the_service_answers_from_its_own_thread_while_nobody_spins_the_node(tmp_path):
    scene = render_scene(160, 120)
    h = Header(frame_id="cam")
    h.stamp.sec = 1
    frame = SyncedFrame(1.0, {"points": conversions.arrays_to_pointcloud2(scene.xyz, None, h),
                              "mask": conversions.array_to_image(scene.mask, "mono16", h)})
    with node_in_process(tmp_path, ros_args=("-r", "__node:=arm_recon", "-r", "__ns:=/cell"),
                         segmentation__min_points=20) as node:
        server = node.query_server
        assert (node.get_name(), node.get_namespace()) == ("arm_recon", "/cell")
        assert (server.node.get_name(), server.node.get_namespace()) == ("arm_recon_query", "/cell")
        node._process(frame)  # the store holds the scene's objects; the node is in no executor
        ids = node.store.snapshot().ids
        assert len(ids) == 2

        client_node = rclpy.create_node("query_server_test_client", context=node.context)
        executor = SingleThreadedExecutor(context=node.context)
        executor.add_node(client_node)  # only the client: the reconstruction node is spun by nobody
        try:
            client = client_node.create_client(QueryOccupancy, "/cell/query_occupancy")
            assert client.wait_for_service(timeout_sec=10.0)
            obj = node.store.snapshot().objects[0]
            pts = np.vstack([(obj.box_min + obj.box_max) / 2, obj.box_max + 1.0]).astype(np.float32)
            req = QueryOccupancy.Request()
            req.header.frame_id = "cam"
            req.points = array.array("f", pts.ravel().tobytes())
            future = client.call_async(req)
            assert wait_until(future.done, 20.0, spin=lambda: executor.spin_once(timeout_sec=0.05))
            res = future.result()
            assert res.success, res.message
            assert len(res.probabilities) == 2 and list(res.object_ids)[1] == -1  # the far point: no object
            assert list(res.object_ids)[0] in ids
            assert node.queries.received == 1  # answered by the node's own service object
        finally:
            executor.shutdown()
            client_node.destroy_node()
        thread = server.thread
        assert thread.is_alive()
    assert not thread.is_alive()  # destroy_node closed the service's executor and thread
