"""Observed or inferred: the ``source`` of each occupancy answer, on a box seen from one side where the answer is
known: points in front of the visible faces (known-empty space) are observed empty, points on the visible faces
observed surface, points behind them (the unseen inside and far side) inferred, points outside every object 0.
Through the Python API (field, store, answer_query) and through the node's ``query_occupancy`` callback.

The network is a TEST DOUBLE (random weights): sources do not depend on it.
"""
import numpy as np
import pytest
from ros_helpers import BOX_LABEL, render_scene, write_random_checkpoint

from occnet_ros.geometry import Plane
from occnet_ros.perception.object_store import ObjectStore, StoredObject
from occnet_ros.perception.query import answer_query
from occnet_ros.reconstruction.known_empty import DepthView, KnownEmpty, KnownEmptyConfig, depth_bound
from occnet_ros.reconstruction.occupancy_field import (SOURCE_INFERRED, SOURCE_NONE, SOURCE_OBSERVED_EMPTY,
                                                       SOURCE_OBSERVED_SURFACE, inside_box)


def probe_points(scene, frame):
    """(points (M, 3) camera frame, expected source (M,)) for the box of ``scene`` whose object frame is ``frame``:
    its observed points (surface), those points moved 2 cm towards the camera (empty; only rays of pixels
    not at a depth edge, whose free ray ends at the nearest depth around them) and 2 cm away from it
    (behind the visible faces: inferred), the box centre (inferred), and two points far from every object (none);
    only points inside the padded box are kept for the first three kinds."""
    seen = scene.xyz[scene.mask == BOX_LABEL].astype(np.float64)[::3]
    ray = seen / np.linalg.norm(seen, axis=1, keepdims=True)
    cfg = KnownEmptyConfig()
    bound = depth_bound(scene.xyz[..., 2], cfg.edge_window_px, cfg.n_sigma * cfg.sigma_a, cfg.n_sigma * cfg.sigma_b)
    row, col, _ = scene.camera.pixels(seen)
    plain = bound[row, col] == scene.xyz[row, col, 2]  # not at a depth edge, where the free ray ends nearer
    groups = [(seen, SOURCE_OBSERVED_SURFACE), ((seen - 0.02 * ray)[plain], SOURCE_OBSERVED_EMPTY),
              (seen + 0.02 * ray, SOURCE_INFERRED)]
    pts, want = [], []
    for p, s in groups:
        p = p[inside_box(frame.to_canonical(p))]
        assert len(p) >= 5, f"too few probe points of source {s} inside the box"
        pts.append(p)
        want.append(np.full(len(p), s, np.uint8))
    pts.append(np.array([scene.box_center, [0.0, 0.0, 3.0], [2.0, 0.0, 0.5]]))
    want.append(np.array([SOURCE_INFERRED, SOURCE_NONE, SOURCE_NONE], np.uint8))
    return np.concatenate(pts).astype(np.float32), np.concatenate(want)


@pytest.fixture(scope="module")
def scene():
    return render_scene(160, 120)


def test_sources_through_the_python_api(scene, tmp_path):
    from occnet_ros.reconstruction.reconstructor import Reconstructor

    rec = Reconstructor.from_pretrained(write_random_checkpoint(tmp_path / "random.pt"), device="cpu",
                                        resolution0=8, upsampling_steps=1)
    config = KnownEmptyConfig(support_plane=False)  # the depth alone (the plane is tested in test_known_empty)
    depth = scene.xyz[..., 2].copy()
    empty = KnownEmpty(config, None, [DepthView(depth, scene.camera)])
    pts = scene.xyz[scene.mask == BOX_LABEL]
    obj = rec.reconstruct(pts, up=scene.up, known_empty=empty)
    probe, want = probe_points(scene, obj.frame)
    store = ObjectStore()
    store.replace([StoredObject(BOX_LABEL, "box", obj)], "cam", 1.0)
    probs, ids, sources = store.query_with_sources(probe)
    assert np.array_equal(sources, want)
    assert np.all(probs[want == SOURCE_OBSERVED_EMPTY] == 0.0)  # known-empty space answers 0
    assert np.array_equal(ids == BOX_LABEL, want != SOURCE_NONE)
    same, _ = store.query(probe)
    assert np.array_equal(same, probs)
    ans = answer_query(store, probe.reshape(-1).tobytes(), "", b"", None, 10_000, with_sources=True)
    assert ans.success and np.array_equal(ans.sources, want)
    assert answer_query(store, probe.reshape(-1).tobytes(), "", b"", None, 10_000).sources is None
    refused = answer_query(store, b"\x00" * 5, "", b"", None, 10_000, with_sources=True)
    assert not refused.success and refused.sources.size == 0
    # without a depth image nothing is observed: every covered point is inferred
    blind = rec.reconstruct(pts, up=scene.up)
    store.replace([StoredObject(BOX_LABEL, "box", blind)], "cam", 2.0)
    _, _, blind_sources = store.query_with_sources(probe)
    covered = inside_box(blind.frame.to_canonical(probe))
    assert np.array_equal(blind_sources, np.where(covered, SOURCE_INFERRED, SOURCE_NONE))


def _reference_sources_query(objs, points):
    """The store's answer from each object's two separate calls (query_canonical, sources_canonical): the highest
    probability, the first object on ties, and the source of the object that gave it."""
    best, ids, src = np.full(len(points), -1.0, np.float32), np.full(len(points), -1), np.zeros(len(points), np.uint8)
    for oid, obj in objs:
        c = obj.frame.to_canonical(points)
        inside = inside_box(c)
        p, s = obj.query_canonical(c), obj.sources_canonical(c)
        better = inside & (p > best)
        best[better], ids[better], src[better] = p[better], oid, s[better]
    return np.maximum(best, 0.0), ids, src


def test_one_pass_answers_equal_the_separate_probability_and_source_calls(scene, tmp_path):
    """ObjectStore.query_with_sources asks each object once (query_with_sources_canonical): the same probabilities,
    ids and sources as the separate calls, for two overlapping objects with a support plane and a depth view, and
    for objects without a known-empty test."""
    from occnet_ros.reconstruction.reconstructor import Reconstructor

    rec = Reconstructor.from_pretrained(write_random_checkpoint(tmp_path / "random.pt"), device="cpu",
                                        resolution0=8, upsampling_steps=1)
    depth = scene.xyz[..., 2].copy()
    pts = scene.xyz[scene.mask == BOX_LABEL]
    plane = Plane(normal=np.asarray(scene.up, np.float64), offset=0.5)  # the table z = 0, the camera 0.5 m above it
    empty = KnownEmpty(KnownEmptyConfig(), plane, [DepthView(depth, scene.camera)])
    rng = np.random.default_rng(7)
    a = rec.reconstruct(pts, up=scene.up, known_empty=empty)
    b = rec.reconstruct(pts[::2] + np.float32([0.03, 0.0, 0.01]), up=scene.up, known_empty=empty)
    plain = rec.reconstruct(pts + np.float32([-0.05, 0.0, 0.0]), up=scene.up)
    objs = [(3, a), (5, b), (9, plain)]
    lo, hi = pts.min(axis=0) - 0.15, pts.max(axis=0) + 0.15
    probe = np.concatenate([rng.uniform(lo, hi, (3000, 3)), probe_points(scene, a.frame)[0]]).astype(np.float32)
    store = ObjectStore()
    store.replace([StoredObject(i, f"o{i}", o) for i, o in objs], "cam", 1.0)
    probs, ids, sources = store.query_with_sources(probe)
    ref = _reference_sources_query(objs, probe)
    assert np.allclose(probs, ref[0], atol=1e-6) and np.array_equal(ids, ref[1]) and np.array_equal(sources, ref[2])
    for kind in (SOURCE_NONE, SOURCE_INFERRED, SOURCE_OBSERVED_EMPTY, SOURCE_OBSERVED_SURFACE):
        assert (sources == kind).sum() >= 5, f"too few answers of source {kind} to compare"
    assert len(set(ids.tolist())) == 4  # every object wins points, and some points are in none
    for obj in (a, plain):
        c = obj.frame.to_canonical(probe)
        p1, s1 = obj.query_with_sources_canonical(c)
        assert np.array_equal(p1, obj.query_canonical(c)) and np.array_equal(s1, obj.sources_canonical(c))


def test_srv_constants_match_the_python_codes():
    srv = pytest.importorskip("occnet_ros.srv")
    r = srv.QueryOccupancy.Response
    assert (r.SOURCE_NONE, r.SOURCE_INFERRED, r.SOURCE_OBSERVED_EMPTY, r.SOURCE_OBSERVED_SURFACE) == \
        (SOURCE_NONE, SOURCE_INFERRED, SOURCE_OBSERVED_EMPTY, SOURCE_OBSERVED_SURFACE)
    assert "source" in r.get_fields_and_field_types()


def test_sources_through_the_node(scene, tmp_path):
    pytest.importorskip("rclpy")
    from ros_helpers import node_in_process
    from std_msgs.msg import Header

    from occnet_ros.perception.frame_sync import SyncedFrame
    from occnet_ros.ros import conversions
    from occnet_ros.srv import QueryOccupancy

    with node_in_process(tmp_path, segmentation__min_points=20, known_empty__support_plane=False) as node:
        h = Header(frame_id="cam")
        h.stamp.sec = 1
        node._camera_info = conversions.camera_info(scene.camera, h)
        node._process(SyncedFrame(1.0, {"points": conversions.arrays_to_pointcloud2(scene.xyz, None, h),
                                        "mask": conversions.array_to_image(scene.mask, "mono16", h)}))
        box = node.store.snapshot().get(BOX_LABEL)
        assert box is not None
        probe, want = probe_points(scene, box.obj.frame)
        request = QueryOccupancy.Request(points=probe.reshape(-1).tolist(), object_ids=[BOX_LABEL])
        request.header.frame_id = "cam"
        response = node.queries.handle(request, QueryOccupancy.Response())
        assert response.success, response.message
        got = np.frombuffer(bytes(response.source), np.uint8)
        assert np.array_equal(got, want)
        assert len(response.probabilities) == len(probe)
        bad = node.queries.handle(QueryOccupancy.Request(points=[0.0, 1.0]), QueryOccupancy.Response())
        assert not bad.success and len(bad.source) == 0
