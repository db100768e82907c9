"""The reconstruction node without ``up`` and without ``world_frame``, fed one frame of a camera tilted about
35 degrees down at a table (ros_helpers.render_scene, no mask: geometric segmentation): it estimates
gravity-up from the table, logs it once, and a query at the centre of each object comes back occupied. An
explicit ``up`` far from the table's normal is used as set, with a warning naming the value to set.

Uses the SHIPPED weights (the network must recognise the objects; exact queries do not depend on the mesh
resolution, kept coarse here)."""
import numpy as np
import pytest
from ros_helpers import node_in_process, render_scene

rclpy = pytest.importorskip("rclpy")
from std_msgs.msg import Header  # noqa: E402

from occnet_ros.perception.frame_sync import SyncedFrame  # noqa: E402
from occnet_ros.perception.gravity import angle_deg  # noqa: E402
from occnet_ros.ros import conversions  # noqa: E402


class LogRecorder:
    """Stands in for the node's logger: keeps (level, text) of every call."""

    def __init__(self):
        self.lines = []

    def __getattr__(self, level):
        def log(message, **kwargs):
            self.lines.append((level, str(message)))
        return log


def run_one_frame(node, scene):
    log = LogRecorder()
    node.get_logger = lambda: log
    h = Header(frame_id="cam")
    h.stamp.sec = 1
    node._process(SyncedFrame(1.0, {"points": conversions.arrays_to_pointcloud2(scene.xyz, None, h)}))
    return log.lines


def query(node, points):
    from occnet_ros.srv import QueryOccupancy

    req = QueryOccupancy.Request()
    req.points = np.asarray(points, np.float32).reshape(-1).tolist()
    res = node.queries.handle(req, QueryOccupancy.Response())
    assert res.success, res.message
    return np.asarray(res.probabilities)


def test_the_node_estimates_up_from_the_table_and_finds_the_objects(tmp_path):
    scene = render_scene(320, 240)
    # in this process, to read its gravity tracker (the log lines come from either)
    with node_in_process(tmp_path, checkpoint="", segmentation__mode="geometric", mesh__max_faces=0,
                         reconstruction_process=False) as node:
        lines = run_one_frame(node, scene)
        said = [text for level, text in lines if "gravity-up estimated" in text]
        assert len(said) == 1 and ("info", said[0]) in lines, lines
        used = node.processor.up_and_camera.gravity.current
        assert used is not None and angle_deg(used, scene.up) < 2.0
        probs = query(node, [scene.box_center, scene.sphere_center])
        assert (probs > node.reconstructor.threshold).all(), probs


def test_an_explicit_up_off_the_table_is_used_as_set_and_reported(tmp_path):
    scene = render_scene(320, 240)
    with node_in_process(tmp_path, up=[0.0, -1.0, 0.0], segmentation__mode="geometric",
                         reconstruction_process=False) as node:
        lines = run_one_frame(node, scene)
        warned = [text for level, text in lines if level == "warning" and "gravity-up" in text]
        assert len(warned) == 1 and "parameter 'up' = [0.000, -1.000, 0.000]" in warned[0], lines
        suggested = np.array([float(v) for v in warned[0].split("to [")[1].split("]")[0].split(",")])
        assert angle_deg(suggested, scene.up) < 2.0
        assert node.processor.up_and_camera.gravity.current is None  # nothing estimated: the set up is used


@pytest.mark.parametrize("args, expected", [
    ([], None),  # not set: estimated
    (["-p", "up:=[0, 0, 1]"], [0.0, 0.0, 1.0]),  # integers, as typed on a command line
    (["-p", "up:=[0.0, -0.8, -0.6]"], [0.0, -0.8, -0.6]),
    (["--params-file", "config/reconstruct.yaml"], None),  # the shipped file: [0.0, 0.0, 0.0], a double array
    (["--params-file", "config/reconstruct.yaml", "-p", "up:=[0.0, -1.0, 0.0]"], [0.0, -1.0, 0.0]),
])
def test_the_up_parameter_through_rclpy(args, expected):
    """[0, 0, 0], not an empty list, means "not set": rclpy types an empty-list default as a byte array and
    reads `up: []` from a parameter file as no value at all."""
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.signals import SignalHandlerOptions
    from rcl_interfaces.msg import ParameterType
    from ros_helpers import REPO, random_domain_id

    from occnet_ros.ros.node_params import NODE_NAME, declare_parameters

    ctx = Context()
    ros_args = ["--ros-args"] + [a.replace("config/", f"{REPO}/config/") for a in args] if args else None
    rclpy.init(context=ctx, args=ros_args, domain_id=random_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = Node(NODE_NAME, context=ctx)
        try:
            assert declare_parameters(node).explicit_up() == expected
            assert node.get_parameter("up").get_parameter_value().type in (ParameterType.PARAMETER_DOUBLE_ARRAY,
                                                                           ParameterType.PARAMETER_INTEGER_ARRAY)
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
