"""The node's reconstruction in a process of its own (occnet_ros.ros.reconstruction_process): the same outcome as
the in-process FrameProcessor, frame for frame (published bytes, stored objects, query answers); objects arrive
without the network and answer once the node's copy is attached; a lost process drops its frame and is replaced,
with a warning; a closed one refuses frames.

Network: the shipped feature-plane checkpoint at a 16^3 grid, so the plane path (the node's default) is the one
carried across.
"""
import array
import os
import pickle
import signal

import numpy as np
import pytest
from ros_helpers import BOX_LABEL, SPHERE_LABEL, render_scene

pytest.importorskip("sensor_msgs")
from std_msgs.msg import Header  # noqa: E402

from occnet_ros.blas_threads import BLAS_THREADS_ENV, NODE_BLAS_THREADS  # noqa: E402
from occnet_ros.perception.object_store import ObjectStore  # noqa: E402
from occnet_ros.perception.pointcloud2 import CloudFormatError  # noqa: E402
from occnet_ros.reconstruction.occupancy_field import SOURCE_INFERRED  # noqa: E402
from occnet_ros.ros import conversions  # noqa: E402
from occnet_ros.ros.frame_processor import FrameProcessor, FrameRequest, load_reconstructor  # noqa: E402
from occnet_ros.ros.node_params import params_from_values  # noqa: E402
from occnet_ros.ros.reconstruction_process import ReconstructionProcess, ReconstructionProcessError  # noqa: E402

VALUES = {"reconstruction.device": "cpu", "reconstruction.resolution0": 8, "reconstruction.upsampling_steps": 1,
          "mesh.max_faces": 100, "segmentation.min_points": 20}


@pytest.fixture(scope="module")
def scene():
    return render_scene(160, 120)


def request(scene, stamp: float, mask, listeners: int = 1) -> FrameRequest:
    h = Header(frame_id="cam")
    h.stamp.sec = int(stamp)
    items = {"points": conversions.arrays_to_pointcloud2(scene.xyz, None, h),
             "mask": conversions.array_to_image(mask, "mono16", h)}
    return FrameRequest(items, stamp, camera_info=None, marker_listeners=listeners)


def probe(scene) -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = np.array([scene.box_center, scene.sphere_center], np.float32)
    return (centres[rng.integers(0, 2, 400)] + rng.normal(0.0, 0.05, (400, 3))).astype(np.float32)


def without_times(objects: bytes):
    """The ReconstructedObjectArray of these bytes with every reconstruction_time (measured, so never equal) zeroed."""
    from rclpy.serialization import deserialize_message

    from occnet_ros.msg import ReconstructedObjectArray

    msg = deserialize_message(objects, ReconstructedObjectArray)
    for o in msg.objects:
        o.reconstruction_time = 0.0
    return msg


def answers(outcome, points):
    store = ObjectStore()
    store.replace(outcome.stored, outcome.frame_id, outcome.stamp)
    return store.query_with_sources(points)


def test_the_process_gives_the_in_process_outcome_and_its_objects_answer_once_attached(scene, monkeypatch):
    monkeypatch.delenv(BLAS_THREADS_ENV, raising=False)  # not inherited: the process limits its own BLAS
    params = params_from_values(VALUES)
    reconstructor = load_reconstructor(params)
    local = FrameProcessor(params, reconstructor)
    remote = ReconstructionProcess(params, "", reconstructor.model, reconstructor.query_graph, nice=5)
    try:
        info = remote.start()
        assert info["pid"] == remote.pid != os.getpid()
        if info["nice"] is not None:
            assert info["nice"] >= os.getpriority(os.PRIO_PROCESS, 0) + 5
        assert info["blas_threads"] and set(info["blas_threads"]) == {NODE_BLAS_THREADS}  # numpy's BLAS as in the node
        without_sphere = np.where(scene.mask == SPHERE_LABEL, 0, scene.mask)
        points = probe(scene)
        for stamp, mask in ((1.0, scene.mask), (2.0, without_sphere), (3.0, scene.mask)):
            here, there = local.process(request(scene, stamp, mask)), remote.process(request(scene, stamp, mask))
            assert without_times(there.objects) == without_times(here.objects) and there.markers == here.markers
            assert there.marker_ids == here.marker_ids and there.summary == here.summary
            assert [s.id for s in there.stored] == [s.id for s in here.stored]
            assert all(s.obj.mesh is None for s in there.stored)  # meshes stay in the process
            for a, b in zip(answers(there, points), answers(here, points)):
                np.testing.assert_array_equal(a, b)
        assert [s.id for s in there.stored] == [BOX_LABEL, SPHERE_LABEL]
        probs, ids, sources = answers(there, points)
        assert (ids >= 0).sum() > 50 and (sources == SOURCE_INFERRED).any() and probs.max() > 0
        bad = request(scene, 4.0, scene.mask)
        bad.items["points"].data = array.array("B", bytes(10))  # far fewer bytes than its layout promises
        with pytest.raises(CloudFormatError):  # raised there, re-raised here: the node drops the frame
            remote.process(bad)
        assert [s.id for s in remote.process(request(scene, 5.0, scene.mask)).stored] == [BOX_LABEL, SPHERE_LABEL]
    finally:
        remote.close()
    with pytest.raises(ReconstructionProcessError, match="closed"):
        remote.process(request(scene, 4.0, scene.mask))


def test_a_field_travels_without_its_network(scene):
    params = params_from_values(VALUES)
    reconstructor = load_reconstructor(params)
    outcome = FrameProcessor(params, reconstructor).process(request(scene, 1.0, scene.mask, listeners=0))
    field = outcome.stored[0].obj.occupancy
    copy = pickle.loads(pickle.dumps(outcome.stored[0].obj))
    assert copy.occupancy.model is None and copy.occupancy.query_graph is None
    points = outcome.stored[0].obj.frame.to_canonical(probe(scene))
    with pytest.raises(RuntimeError, match="attach"):
        copy.query_with_sources_canonical(points)
    copy.occupancy.attach(reconstructor.model, reconstructor.query_graph)
    for a, b in zip(copy.query_with_sources_canonical(points), field.query_with_sources_canonical(points)):
        np.testing.assert_array_equal(a, b)
    other = load_reconstructor(params)
    with pytest.raises(ValueError, match="another network"):
        copy.occupancy.attach(reconstructor.model, other.query_graph)


def test_a_lost_process_drops_its_frame_and_is_replaced_with_a_warning(scene):
    params = params_from_values(VALUES)
    reconstructor = load_reconstructor(params)
    warnings = []
    remote = ReconstructionProcess(params, "", reconstructor.model, reconstructor.query_graph,
                                   warn=warnings.append)
    try:
        remote.start()
        first = remote.pid
        os.kill(first, signal.SIGKILL)
        with pytest.raises(ReconstructionProcessError, match=f"pid {first}.*killed by SIGKILL.*frame dropped"):
            remote.process(request(scene, 1.0, scene.mask))
        outcome = remote.process(request(scene, 2.0, scene.mask))
        assert remote.pid != first and remote.restarts == 1
        assert [s.id for s in outcome.stored] == [BOX_LABEL, SPHERE_LABEL]
        assert len(warnings) == 1 and f"pid {first}" in warnings[0] and "start empty" in warnings[0]
    finally:
        remote.close()
