"""The node's pure per-frame part over several frames: published meshes simplified to mesh.max_faces,
reuse of unchanged objects (reconstruction.reuse_tolerance), and bounded memory (the pipeline and the object store
hold only the current frame's objects; earlier objects are freed). Then the outgoing messages of a frame
(serialized from the arrays, markers only when asked).

The network is a TEST DOUBLE (random weights, ros_helpers.write_random_checkpoint).
"""
import gc
import threading
import weakref

import numpy as np
import pytest
from ros_helpers import BOX_LABEL, SPHERE_LABEL, render_scene, write_random_checkpoint

from occnet_ros import neighbours
from occnet_ros.perception.mesh_ops import is_closed_surface
from occnet_ros.perception.object_store import ObjectStore
from occnet_ros.ros.node_params import default_values, params_from_values
from occnet_ros.perception.frame_pipeline import FrameInput, FramePipeline
from occnet_ros.perception.processed_frame import stored_objects
from occnet_ros.reconstruction.reconstructor import Reconstructor


@pytest.fixture(scope="module")
def scene():
    return render_scene(160, 120)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random_test_double.pt")


def make_pipeline(checkpoint, **overrides):
    values = default_values()
    values.update({"reconstruction.device": "cpu", "checkpoint": str(checkpoint), "reconstruction.resolution0": 8,
                   "reconstruction.upsampling_steps": 1, "segmentation.min_points": 20, **overrides})
    params = params_from_values(values)
    return FramePipeline(Reconstructor.from_config(params.reconstruction, params.checkpoint), params)


def frame(scene, mask=None, xyz=None):
    return FrameInput(xyz=scene.xyz if xyz is None else xyz,
                      mask=(scene.mask if mask is None else mask).astype(np.int64), image=scene.rgb, up=scene.up)


def test_published_meshes_simplified(scene, checkpoint):
    full = make_pipeline(checkpoint, **{"mesh.max_faces": 0}).process(frame(scene))
    small = make_pipeline(checkpoint, **{"mesh.max_faces": 100}).process(frame(scene))
    assert [r.segment.id for r in small.objects] == [BOX_LABEL, SPHERE_LABEL]
    for f, s in zip(full.objects, small.objects):
        assert len(f.faces) == len(f.obj.mesh.faces) > 300  # max_faces 0: the extracted mesh as is
        np.testing.assert_array_equal(f.vertices, f.obj.mesh.vertices)
        assert 0 < len(s.faces) <= 100 and s.obj.mesh_note == ""
        # reduced inside the reconstruction, before the anchoring: the object's mesh is the published one
        assert s.obj.simplified_by is not None and len(f.obj.mesh.faces) > 300
        np.testing.assert_allclose(s.obj.mesh.vertices, s.vertices)
        assert is_closed_surface(s.faces)
        assert s.vertex_colors.shape == (len(s.vertices), 3)  # colours of the published vertices
        # the simplified mesh lies where the full one does (within a cell of the 16^3 grid, metres)
        lo, hi = f.obj.mesh.bounds
        cell = (hi - lo).max() / 16
        assert np.all(s.vertices >= lo - cell) and np.all(s.vertices <= hi + cell)


def test_a_decimation_worker_publishes_the_same_meshes(scene, checkpoint):
    """The node's worker-process decimation (mesh.decimate_in_worker) and the in-process one agree."""
    from occnet_ros.perception.decimation_worker import ProcessDecimation

    here = make_pipeline(checkpoint, **{"mesh.max_faces": 100}).process(frame(scene))
    pipe = make_pipeline(checkpoint, **{"mesh.max_faces": 100})
    with ProcessDecimation() as worker:
        there = FramePipeline(pipe.reconstructor, pipe.config, decimate=worker).process(frame(scene))
    assert len(here.objects) == len(there.objects) == 2
    for a, b in zip(here.objects, there.objects):
        assert 0 < len(b.faces) <= 100 and b.obj.mesh_note == "" and b.obj.timings["simplify"] > 0
        np.testing.assert_array_equal(a.faces, b.faces)
        np.testing.assert_array_equal(a.vertices, b.vertices)


def test_unchanged_objects_are_reused(scene, checkpoint):
    pipe = make_pipeline(checkpoint, **{"mesh.max_faces": 100, "reconstruction.reuse_tolerance": 0.05})
    first = pipe.process(frame(scene))
    second = pipe.process(frame(scene))
    assert not any(r.reused for r in first.objects) and all(r.reused for r in second.objects)
    for a, b in zip(first.objects, second.objects):
        assert b.obj.mesh is a.obj.mesh and b.obj.code is a.obj.code  # not re-encoded, not re-extracted
        assert b.vertices is a.vertices and b.faces is a.faces  # not re-simplified
        assert b.vertex_colors.shape == (len(b.vertices), 3)
    moved = scene.xyz.copy()
    moved[scene.mask == SPHERE_LABEL] += np.array([0.05, 0.0, 0.0], np.float32)  # the sphere moves 5 cm
    third = pipe.process(frame(scene, xyz=moved))
    by_id = {r.segment.id: r for r in third.objects}
    assert by_id[BOX_LABEL].reused and not by_id[SPHERE_LABEL].reused
    assert by_id[SPHERE_LABEL].obj.mesh is not second.objects[1].obj.mesh
    off = make_pipeline(checkpoint, **{"reconstruction.reuse_tolerance": 0.0})
    off.process(frame(scene))
    assert not any(r.reused for r in off.process(frame(scene)).objects)


def test_memory_holds_only_the_current_objects(scene, checkpoint):
    pipe = make_pipeline(checkpoint, **{"mesh.max_faces": 100, "reconstruction.reuse_tolerance": 0.05})
    store = ObjectStore()
    only_box = np.where(scene.mask == SPHERE_LABEL, 0, scene.mask)
    moved = scene.xyz.copy()
    moved[scene.mask == BOX_LABEL] += np.array([0.0, 0.0, 0.03], np.float32)
    frames = [frame(scene), frame(scene, mask=only_box), frame(scene), frame(scene, xyz=moved), frame(scene)]
    both = [BOX_LABEL, SPHERE_LABEL]
    expected_ids = [both, [BOX_LABEL], both, both, both]
    earlier = []  # weak references to every reconstruction of earlier frames
    for i, f in enumerate(frames):
        result = pipe.process(f)
        store.replace(stored_objects(result), "cam", float(i))  # as the node does
        ids = [r.segment.id for r in result.objects]
        assert ids == expected_ids[i]
        assert pipe.kept_ids == ids and list(store.snapshot().ids) == ids
        current = {id(r.obj) for r in result.objects}
        del result, f
        gc.collect()
        alive = [r() for r in earlier if r() is not None]
        # an earlier reconstruction is alive only if it is one of the current objects
        assert all(id(o) in current for o in alive), f"frame {i}: {len(alive)} stale object(s) alive"
        del alive
        earlier += [weakref.ref(o.obj) for o in store.snapshot().objects]
    assert sum(r() is not None for r in earlier) == len(store.snapshot().objects)
    store.clear()
    pipe_ref = weakref.ref(pipe)
    del pipe
    gc.collect()
    assert pipe_ref() is None and all(r() is None for r in earlier)


def test_frame_messages_encode_the_published_meshes_and_skip_markers(scene, checkpoint):
    pytest.importorskip("rclpy")
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker, MarkerArray

    from occnet_ros.msg import ReconstructedObjectArray
    from occnet_ros.ros.object_msgs import frame_messages

    pipe = make_pipeline(checkpoint, **{"mesh.max_faces": 100})
    result = pipe.process(frame(scene))
    header = Header(frame_id="cam")
    out = frame_messages(result.objects, header, {7}, with_markers=True, marker_alpha=0.5)
    assert isinstance(out.objects, bytes) and isinstance(out.markers, bytes)  # published as they are
    assert out.marker_ids == {BOX_LABEL, SPHERE_LABEL}
    markers = deserialize_message(out.markers, MarkerArray).markers  # the bytes read back as messages
    adds = {m.id: m for m in markers if m.action == Marker.ADD}
    assert [m.id for m in markers if m.action == Marker.DELETE] == [7]
    for r, o in zip(result.objects, deserialize_message(out.objects, ReconstructedObjectArray).objects):
        assert o.id == r.segment.id and len(o.mesh.triangles) == len(r.faces) <= 100
        assert len(o.mesh.vertices) == len(r.vertices) == len(o.vertex_colors)
        got = np.array([[p.x, p.y, p.z] for p in o.mesh.vertices])
        np.testing.assert_array_equal(got, r.vertices)
        np.testing.assert_array_equal(np.array([t.vertex_indices for t in o.mesh.triangles]), r.faces)
        m = adds[r.segment.id]
        assert len(m.points) == 3 * len(r.faces) and len(m.colors) == len(m.points)
        np.testing.assert_array_equal([[p.x, p.y, p.z] for p in m.points], r.vertices[r.faces.reshape(-1)])
        np.testing.assert_allclose([[c.r, c.g, c.b] for c in m.colors],
                                   r.vertex_colors[r.faces.reshape(-1)] / 255.0, atol=1e-7)
        assert all(c.a == 0.5 for c in m.colors)
    quiet = frame_messages(result.objects, header, {7}, with_markers=False)
    assert quiet.markers is None and quiet.marker_ids == {7}  # nothing shown changed
    assert len(deserialize_message(quiet.objects, ReconstructedObjectArray).objects) == 2


def test_parameters_reach_the_reconstructor(scene, checkpoint):
    exact = make_pipeline(checkpoint, **{"reconstruction.reuse_tolerance": 0.02})
    assert exact.reconstructor.config.reuse_tolerance == 0.02 and exact.reconstructor.config.mirror_average
    single = make_pipeline(checkpoint, **{"reconstruction.mirror_average": False})
    assert not single.reconstructor.config.mirror_average
    assert all(r.obj.mirror_code is None for r in single.process(frame(scene)).objects)
    # exact queries need no probability grid: none is kept (4 * (R+1)^3 bytes per object)
    objs = exact.process(frame(scene)).objects
    assert all(r.obj.grid is None and r.obj.mirror_code is not None for r in objs)
    grid = make_pipeline(checkpoint, query_mode="grid", **{"reconstruction.keep_grid": True})
    objs = grid.process(frame(scene)).objects
    assert all(r.obj.grid is not None and r.obj.grid.resolution == 16 for r in objs)


def test_known_empty_space_reaches_every_object(scene, checkpoint):
    """With the camera pose known, each object's reconstruction gets the frame's support plane (the
    rendered table z = 0) and depth image: queries under the table and between the camera and the
    object's observed surface answer 0, whatever the (random) network says; inside the object they
    are the network's. Without the pose, the free-space test is skipped with a warning, not silently."""
    from occnet_ros.geometry import RigidTransform

    intr = scene.camera
    assert intr.shape == scene.xyz.shape[:2]
    inp = FrameInput(xyz=scene.xyz, mask=scene.mask.astype(np.int64), image=scene.rgb, up=scene.up,
                     intrinsics=intr, camera_to_cloud=RigidTransform())
    pipe = make_pipeline(checkpoint)
    plane = pipe.support_plane(inp)
    table = scene.xyz[scene.mask == 0]
    table = table[np.isfinite(table).all(axis=1)]
    assert np.abs(plane.signed_distance(table)).max() < 1e-3 and plane.normal @ scene.up > 0.999
    result = pipe.process(inp)
    assert len(result.objects) == 2 and not result.warnings
    for r in result.objects:
        ke = r.obj.known_empty
        assert ke is not None and ke.plane is not None and ke.n_views == 1
        pts = r.segment.points[::10].astype(np.float64)
        under = pts - 0.05 * scene.up  # 5 cm under the visible surface, mostly under the table too
        in_front = pts * 0.9  # on the rays from the camera, 10 % nearer than the measured depth
        assert np.all(r.obj.query(in_front) == 0.0)
        below = under[plane.signed_distance(under) < -0.005]
        assert below.shape[0] > 0 and np.all(r.obj.query(below) == 0.0)
    free = make_pipeline(checkpoint, **{"known_empty.free_space": False, "known_empty.support_plane": False})
    raw = free.process(inp)
    assert all(r.obj.known_empty is None for r in raw.objects)
    no_pose = make_pipeline(checkpoint).process(FrameInput(xyz=scene.xyz, mask=scene.mask.astype(np.int64),
                                                           up=scene.up, intrinsics=intr))
    assert any("free_space not applied" in w for w in no_pose.warnings)
    assert all(r.obj.known_empty.plane is not None and r.obj.known_empty.n_views == 0 for r in no_pose.objects)


def test_objects_of_a_frame_batched_publish_the_meshes_of_one_after_the_other(scene, checkpoint):
    """reconstruction.batch_objects on (the GPU default): the frame's objects share their network calls and
    publish the meshes that one object after the other gives (same face counts, vertices within float rounding)."""
    alone = make_pipeline(checkpoint, **{"reconstruction.batch_objects": "off"}).process(frame(scene))
    together = make_pipeline(checkpoint, **{"reconstruction.batch_objects": "on"}).process(frame(scene))
    assert [r.segment.id for r in together.objects] == [r.segment.id for r in alone.objects] == [BOX_LABEL, SPHERE_LABEL]
    for a, b in zip(alone.objects, together.objects):
        assert len(a.faces) == len(b.faces) > 0
        np.testing.assert_allclose(b.vertices, a.vertices, atol=1e-4)
    assert together.stage_seconds["encode"] > 0 and together.stage_seconds["mise"] > 0


def test_objects_on_the_compute_threads_publish_what_one_after_the_other_does(scene, checkpoint):
    """Two compute threads on a CPU take whole objects at once (each object's network on its own thread); one
    compute thread takes them one after the other: the same objects, meshes and colours, in the same order. A stop
    request before the frame stops both with nothing done."""
    serial = make_pipeline(checkpoint, **{"reconstruction.compute_threads": 1})
    threaded = make_pipeline(checkpoint, **{"reconstruction.compute_threads": 2})
    seen = []
    original = threaded.reconstructor.reconstruct

    def spy(**kw):
        seen.append((threading.current_thread().name, threaded.reconstructor.pool.in_pool_thread(),
                     neighbours._ALONE.get()))
        return original(**kw)

    threaded.reconstructor.reconstruct = spy
    a, b = serial.process(frame(scene)), threaded.process(frame(scene))
    # on the compute threads, and their neighbour searches on those threads alone (the cores are busy already)
    assert all(name.startswith("occnet_compute") and member and alone for name, member, alone in seen)
    assert not neighbours._ALONE.get()
    assert len(seen) == 2
    assert [r.segment.id for r in b.objects] == [r.segment.id for r in a.objects] == [BOX_LABEL, SPHERE_LABEL]
    for x, y in zip(a.objects, b.objects):
        assert len(x.faces) == len(y.faces) > 0 and x.n_observed == y.n_observed
        np.testing.assert_allclose(y.vertices, x.vertices, atol=1e-4)
        np.testing.assert_array_equal(y.vertex_colors, x.vertex_colors)
    assert b.stage_seconds["clean"] > 0 and b.stage_seconds["encode"] > 0 and b.stage_seconds["colour"] > 0
    for p in (serial, threaded):
        stopped = p.process(frame(scene), should_stop=lambda: True)
        assert stopped.cancelled and stopped.objects == []
