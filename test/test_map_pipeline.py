"""The map pipeline: organized frames of a moving camera (boxes on a table, ray cast in numpy) segmented by
mask, fused into the object map in world and reconstructed at most ``reconstructions_per_frame`` objects a
frame; unchanged objects are kept without recomputation; a removed object leaves the published set."""
import numpy as np
import pytest
from ros_helpers import write_random_checkpoint
from test_object_map import CAM, box, cast, pose_at

from occnet_ros.geometry import Plane, RigidTransform
from occnet_ros.perception.config import PerceptionConfig
from occnet_ros.perception.frame_pipeline import FrameInput
from occnet_ros.perception.map_config import ObjectMapConfig
from occnet_ros.perception.map_pipeline import MAP_STAGES, MapPipeline, plane_in_world
from occnet_ros.reconstruction.config import ReconstructorConfig
from occnet_ros.reconstruction.reconstructor import Reconstructor

BOXES = [box((-0.08, 0.0), 0.08, 0.1), box((0.1, 0.05), 0.06, 0.07), box((0.0, -0.12), 0.05, 0.12)]


class CountingReconstructor:
    """The API's Reconstructor, counting its calls (a test double around the real thing)."""

    def __init__(self, rec):
        self.rec, self.calls = rec, 0

    def reconstruct(self, *args, **kwargs):
        self.calls += 1
        return self.rec.reconstruct(*args, **kwargs)


@pytest.fixture(scope="module")
def reconstructor(tmp_path_factory):
    path = write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random_test_double.pt")
    return Reconstructor.from_config(ReconstructorConfig(resolution0=8, upsampling_steps=1, device="cpu"), path)


def frame_at(boxes, azimuth, stamp, labels=None):
    """(FrameInput in the camera optical frame, cloud_to_world) of ``boxes`` seen from ``azimuth`` degrees.
    ``labels``: the mask label of box k (default k + 1), as a segmenter that numbers objects per frame."""
    pose = pose_at(azimuth)
    depth, ids = cast(boxes, pose)
    labels = labels or list(range(1, len(boxes) + 1))
    mask = np.zeros(ids.shape, np.int64)
    for k, lab in enumerate(labels):
        mask[ids == k + 1] = lab
    up = pose[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    inp = FrameInput(xyz=CAM.unproject(depth), stamp=stamp, mask=mask, intrinsics=CAM, up=up,
                     camera_to_cloud=RigidTransform())
    return inp, RigidTransform.from_matrix(pose)


def make(reconstructor, per_frame=2):
    config = PerceptionConfig()
    config.filter.min_range, config.segmentation.min_points = 0.05, 20
    return MapPipeline(CountingReconstructor(reconstructor), config,
                       ObjectMapConfig(reconstructions_per_frame=per_frame))


def test_views_with_shuffled_labels_keep_one_object_per_box_in_world(reconstructor):
    pipe = make(reconstructor, per_frame=3)
    rng = np.random.default_rng(0)
    for i, az in enumerate([0.0, 60.0, 130.0, 200.0]):
        labels = list(rng.permutation([1, 2, 3]) * 7)  # the segmenter's ids change from view to view
        out = pipe.process(*frame_at(BOXES, az, float(i), labels))
        assert not out.gone and not out.cancelled
    assert len(pipe.map) == 3 and [o.segment.id for o in out.objects] == [0, 1, 2]
    for o in out.objects:  # each object's canonical frame is centred on one box, in world
        lo, hi = min(BOXES, key=lambda b: np.linalg.norm((b[0] + b[1]) / 2 - o.obj.frame.center))
        assert np.all(o.obj.frame.center > lo - 0.02) and np.all(o.obj.frame.center < hi + 0.02)
        assert pipe.map[o.segment.id].n_views >= 3


def test_reconstruction_work_is_bounded_and_a_repeated_view_costs_none(reconstructor):
    pipe = make(reconstructor, per_frame=1)
    counter = pipe.reconstructor
    out = pipe.process(*frame_at(BOXES, 30.0, 0.0))
    assert counter.calls == 1 and len(out.changed) == 1 and len(out.objects) == 1
    out = pipe.process(*frame_at(BOXES, 30.0, 1.0))
    out = pipe.process(*frame_at(BOXES, 30.0, 2.0))
    assert counter.calls == 3 and len(out.objects) == 3  # one object a frame until all have a mesh
    for stamp in (3.0, 4.0):  # the same view again: nothing is stale, nothing recomputed
        out = pipe.process(*frame_at(BOXES, 30.0, stamp))
        assert counter.calls == 3 and out.changed == [] and all(o.seconds == 0.0 for o in out.objects)
    assert list(out.stage_seconds) == list(MAP_STAGES) and all(t >= 0.0 for t in out.stage_seconds.values())
    assert out.stage_seconds["clean"] > 0.0 and out.stage_seconds["integrate"] > 0.0
    out = pipe.process(*frame_at(BOXES, 110.0, 5.0))  # a new side: at most one object recomputed
    assert counter.calls == 4 and len(out.changed) == 1


def test_a_removed_object_leaves_the_published_set(reconstructor):
    pipe = make(reconstructor, per_frame=3)
    first = pipe.process(*frame_at(BOXES, 0.0, 0.0))
    third = first.update.segment_ids[2]  # the segments come in mask-label order: box k has label k + 1
    out = pipe.process(*frame_at(BOXES[:2], 0.0, 1.0))  # the third box was taken away: its place is seen empty
    assert out.gone == [third] and third not in pipe.map
    assert sorted(o.segment.id for o in out.objects) == sorted(set(first.update.segment_ids) - {third})


def test_the_support_plane_goes_into_world(reconstructor):
    pipe = make(reconstructor)
    pipe.process(*frame_at(BOXES, 45.0, 0.0))
    plane = pipe.map.support_plane
    assert plane is not None and np.allclose(plane.normal, [0, 0, 1], atol=0.02) and abs(plane.offset) < 0.01
    pose = RigidTransform.from_matrix(pose_at(10.0))
    cloud = Plane.from_coefficients(0.0, 0.0, 1.0, -0.3)  # z = 0.3 in the cloud frame
    world = plane_in_world(cloud, pose)
    pts = np.random.default_rng(1).normal(size=(50, 3))
    np.testing.assert_allclose(world.signed_distance(pose.apply(pts)), cloud.signed_distance(pts), atol=1e-9)


def test_objects_due_in_a_frame_run_at_once_on_the_compute_threads(tmp_path):
    """With two compute threads on a CPU the frame's segments are cleaned and its due objects reconstructed at once
    (each on its own thread), and the map and the published objects come out as with one thread, one after the
    other."""
    path = write_random_checkpoint(tmp_path / "random_test_double.pt")
    out = {}
    for threads in (1, 2):
        rec = Reconstructor.from_config(ReconstructorConfig(resolution0=8, upsampling_steps=1, device="cpu",
                                                            compute_threads=threads), path)
        config = PerceptionConfig()
        config.filter.min_range, config.segmentation.min_points = 0.05, 20
        pipe = MapPipeline(rec, config, ObjectMapConfig(reconstructions_per_frame=3))
        inp, to_world = frame_at(BOXES, 30.0, 0.0)
        got = pipe.process(inp, to_world)
        assert not got.cancelled and sorted(got.changed) == sorted(o.segment.id for o in got.objects)
        assert len(got.objects) == 3 and not pipe.map.due(3)  # all reconstructed, none stale
        out[threads] = got
    for a, b in zip(out[1].objects, out[2].objects):
        assert a.segment.id == b.segment.id and len(a.faces) == len(b.faces) > 0
        assert a.n_observed == b.n_observed
        np.testing.assert_allclose(b.vertices, a.vertices, atol=1e-4)
        np.testing.assert_array_equal(b.vertex_colors, a.vertex_colors)
