"""Object store: batched max-over-objects queries against a per-point reference, box culling (the union box
first), query modes (exact / cached grid), atomic swaps under concurrent queries."""
import threading

import numpy as np
import pytest

from occnet_ros.reconstruction.normalization import BOX_HALF, canonical_frame_from_observation
from occnet_ros.perception.object_store import ObjectStore, StoredObject, UnknownObjectError, query_objects


class BallDouble:
    """TEST DOUBLE of a reconstruction: occupancy = value * (1 - |c| / BOX_HALF) clipped at 0, in the
    canonical frame of ``points`` (mode "grid": that value rounded to 1/64, a stand-in for an
    interpolated grid); records every canonical point and mode it is asked about."""

    def __init__(self, points, value=1.0, up=(0, -1, 0)):
        self.frame = canonical_frame_from_observation(points, up)
        self.value = value
        self.asked = []
        self.modes = []

    def query_canonical(self, c, mode="exact"):
        c = np.asarray(c, np.float32)
        self.asked.append(c.copy())
        self.modes.append(mode)
        v = (self.value * np.clip(1 - np.linalg.norm(c, axis=1) / BOX_HALF, 0, 1)).astype(np.float32)
        return np.round(v * 64) / 64 if mode == "grid" else v


def blob(rng, centre, scale=0.05, n=200):
    return (rng.normal(size=(n, 3)) * scale + centre).astype(np.float32)


def reference_query(objs, points):
    probs = np.zeros(len(points), np.float32)
    ids = -np.ones(len(points), np.int32)
    best = -1.0
    for i, q in enumerate(points):
        best = -1.0
        for o in sorted(objs, key=lambda o: o.id):
            c = o.obj.frame.to_canonical(q[None])[0]
            if np.all(np.abs(c) <= BOX_HALF):
                v = float(o.obj.query_canonical(c[None])[0])
                if v > best:
                    best, ids[i] = v, o.id
        probs[i] = max(best, 0.0)
    return probs, ids


@pytest.fixture
def store_and_objects():
    rng = np.random.default_rng(0)
    objs = [StoredObject(7, "a", BallDouble(blob(rng, [0, 0, 1]))),
            StoredObject(3, "b", BallDouble(blob(rng, [0.08, 0, 1.02]), value=0.8)),  # overlaps a
            StoredObject(11, "c", BallDouble(blob(rng, [1, 0.5, 2]), value=0.5))]
    store = ObjectStore()
    added, removed = store.replace(objs, "cam", 1.5)
    assert added == [3, 7, 11] and removed == []
    return store, objs


def test_query_matches_reference(store_and_objects):
    store, objs = store_and_objects
    rng = np.random.default_rng(1)
    pts = np.concatenate([blob(rng, [0, 0, 1], 0.1, 300), blob(rng, [1, 0.5, 2], 0.1, 100),
                          rng.uniform(-3, 3, size=(200, 3))]).astype(np.float32)
    probs, ids = store.query(pts)
    rp, ri = reference_query(objs, pts)
    np.testing.assert_allclose(probs, rp, atol=1e-6)
    np.testing.assert_array_equal(ids, ri)
    assert probs.dtype == np.float32 and ids.dtype == np.int64
    assert set(np.unique(ids)) == {-1, 3, 7, 11}
    assert np.all(probs[ids == -1] == 0)


def test_points_outside_boxes_never_reach_network(store_and_objects):
    store, objs = store_and_objects
    for o in objs:
        o.obj.asked.clear()
    far = np.random.default_rng(2).uniform(10, 20, size=(100000, 3)).astype(np.float32)
    probs, ids = store.query(far)
    assert not probs.any() and np.all(ids == -1)
    assert all(len(o.obj.asked) == 0 for o in objs)
    near = blob(np.random.default_rng(3), [0, 0, 1], 0.3, 5000)
    store.query(near)
    for o in objs:
        asked = np.concatenate(o.obj.asked) if o.obj.asked else np.zeros((0, 3))
        assert np.all(np.abs(asked) <= BOX_HALF * (1 + 1e-5))


def test_union_box_rejection_gives_identical_answers():
    # many small objects far apart: most points lie outside the union of their boxes or between them
    rng = np.random.default_rng(6)
    centres = rng.uniform(-2, 2, size=(8, 3)) + [0, 0, 3]
    objs = [StoredObject(i + 1, f"o{i}", BallDouble(blob(rng, c, 0.03), value=0.3 + 0.08 * i))
            for i, c in enumerate(centres)]
    store = ObjectStore()
    store.replace(objs, "cam", 0.0)
    snap = store.snapshot()
    pts = np.concatenate([rng.uniform(-6, 6, size=(4000, 3)) + [0, 0, 3],
                          np.concatenate([blob(rng, c, 0.08, 200) for c in centres])]).astype(np.float32)
    for mode in ("exact", "grid"):
        probs, ids = store.query(pts, mode=mode)
        no_union_probs, no_union_ids = query_objects(pts, snap.objects, mode)  # every point meets every box
        np.testing.assert_array_equal(probs, no_union_probs)
        np.testing.assert_array_equal(ids, no_union_ids)
        assert (ids > 0).sum() > 500 and (ids == -1).sum() > 3000  # both kinds of points are present
    rp, ri = reference_query(objs, pts)
    np.testing.assert_allclose(store.query(pts)[0], rp, atol=1e-6)
    np.testing.assert_array_equal(store.query(pts)[1], ri)
    # restricted to two objects: the union of those two boxes
    sub_probs, sub_ids = store.query(pts, object_ids=[2, 5])
    ref_probs, ref_ids = query_objects(pts, [snap.get(2), snap.get(5)])
    np.testing.assert_array_equal(sub_probs, ref_probs)
    np.testing.assert_array_equal(sub_ids, ref_ids)
    assert set(np.unique(sub_ids)) == {-1, 2, 5}


def test_mode_reaches_the_objects(store_and_objects):
    store, objs = store_and_objects
    pts = blob(np.random.default_rng(7), [0, 0, 1], 0.05, 100)
    for o in objs:
        o.obj.modes.clear()
    exact, exact_ids = store.query(pts)
    grid, grid_ids = store.query(pts, mode="grid")
    assert objs[0].obj.modes == ["exact", "grid"]
    np.testing.assert_array_equal(grid, np.round(exact * 64) / 64)  # the double's grid answer, max over objects
    assert not np.array_equal(grid, exact)
    with pytest.raises(ValueError, match="mode must be one of"):
        store.query(pts, mode="fast")


def test_object_id_filter_and_errors(store_and_objects):
    store, _ = store_and_objects
    p = np.array([[0, 0, 1]], np.float32)
    _, ids = store.query(p)
    assert ids[0] == 7
    probs, ids = store.query(p, object_ids=[3])
    assert ids[0] == 3 and 0 < probs[0] <= 0.8
    assert store.query(p, object_ids=[])[1][0] == 7  # empty = all
    with pytest.raises(UnknownObjectError, match=r"\[99\]"):
        store.query(p, object_ids=[3, 99])
    with pytest.raises(ValueError, match="shape"):
        store.query(np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        store.query(np.array([[np.nan, 0, 1]], np.float32))
    assert store.query(np.zeros((0, 3), np.float32))[0].shape == (0,)


def test_replace_reports_changes_and_rejects_duplicates(store_and_objects):
    store, objs = store_and_objects
    added, removed = store.replace([objs[0], StoredObject(20, "d", objs[2].obj)], "cam", 2.0)
    assert added == [20] and removed == [3, 11]
    assert store.snapshot().ids == (7, 20) and store.snapshot().stamp == 2.0
    with pytest.raises(ValueError, match="duplicate"):
        store.replace([objs[0], objs[0]], "cam", 3.0)
    assert store.snapshot().ids == (7, 20)  # failed replace leaves the store unchanged
    assert store.clear() == [7, 20] and store.snapshot().ids == ()


def test_atomic_swaps_under_concurrent_queries():
    rng = np.random.default_rng(4)
    centres = [[0, 0, 1], [0.5, 0, 1], [0, 0.5, 1.5]]
    sets = []
    for k in range(1, 6):  # generation k: every object answers k / 10 at its centre
        sets.append([StoredObject(i + 1, f"o{i}", BallDouble(blob(rng, c), value=k / 10.0))
                     for i, c in enumerate(centres)])
    store = ObjectStore()
    store.replace(sets[0], "cam", 0.0)
    centre_pts = np.array([o.obj.frame.center for o in sets[0]], np.float32)
    # each reader checks that one query saw one generation only and agrees with that snapshot
    stop = threading.Event()
    errors = []

    def writer():
        i = 0
        while not stop.is_set():
            store.replace(sets[i % len(sets)], "cam", float(i))
            i += 1

    def reader():
        for _ in range(300):
            snap = store.snapshot()
            probs, ids = store.query(centre_pts, snapshot=snap)
            values = {round(o.obj.value, 3) for o in snap.objects}
            if len(values) != 1:
                errors.append("mixed snapshot")
            ref, _ = reference_query(list(snap.objects), centre_pts)
            if not np.allclose(probs, ref, atol=1e-6):
                errors.append("query disagrees with its snapshot")

    w = threading.Thread(target=writer)
    readers = [threading.Thread(target=reader) for _ in range(2)]
    w.start()
    for r in readers:
        r.start()
    for r in readers:
        r.join(30)
    stop.set()
    w.join(5)
    assert not errors


def test_with_real_reconstruction(tmp_path):
    torch = pytest.importorskip("torch")
    from occnet_ros.network.model import ModelConfig, OccupancyNetwork
    from occnet_ros.reconstruction.reconstructor import Reconstructor

    torch.manual_seed(0)
    model = OccupancyNetwork(ModelConfig(c_dim=16, encoder_hidden=16, encoder_blocks=2, decoder_hidden=16,
                                         decoder_blocks=1))  # TEST DOUBLE: random weights
    rec = Reconstructor(model, device="cpu")
    rng = np.random.default_rng(5)
    obj = rec.reconstruct(blob(rng, [0, 0, 1]), extract_mesh=False)
    store = ObjectStore()
    store.replace([StoredObject(1, "x", obj)], "cam", 0.0)
    pts = np.concatenate([blob(rng, [0, 0, 1], 0.1, 500), rng.uniform(5, 6, size=(500, 3))]).astype(np.float32)
    probs, ids = store.query(pts)
    np.testing.assert_allclose(probs, obj.query(pts), atol=1e-6)
    inside = np.all(np.abs(obj.frame.to_canonical(pts)) <= BOX_HALF, axis=1)
    np.testing.assert_array_equal(ids, np.where(inside, 1, -1))


def test_grid_mode_close_to_exact_on_a_test_network():
    torch = pytest.importorskip("torch")
    from occnet_ros.network.model import ModelConfig, OccupancyNetwork
    from occnet_ros.reconstruction.reconstructor import Reconstructor, ReconstructorConfig

    torch.manual_seed(0)
    model = OccupancyNetwork(ModelConfig(c_dim=16, encoder_hidden=16, encoder_blocks=2, decoder_hidden=16,
                                         decoder_blocks=1))  # TEST DOUBLE: random weights
    with torch.no_grad():
        model.decoder.fc_out.weight.mul_(40)  # a field that spans (0, 1), not a near-constant one
    rec = Reconstructor(model, device="cpu", config=ReconstructorConfig(resolution0=16, upsampling_steps=1,
                                                                        threshold=0.5, keep_grid=True))
    rng = np.random.default_rng(8)
    objs = [rec.reconstruct(blob(rng, c)) for c in ([0, 0, 1], [0.6, 0, 1.2])]
    assert all(o.grid is not None and len(o.mesh.faces) for o in objs)
    store = ObjectStore()
    store.replace([StoredObject(i + 1, f"o{i}", o) for i, o in enumerate(objs)], "cam", 0.0)
    pts = np.concatenate([blob(rng, [0, 0, 1], 0.1, 2000), blob(rng, [0.6, 0, 1.2], 0.1, 2000),
                          rng.uniform(-1, 2, size=(1000, 3))]).astype(np.float32)
    exact, exact_ids = store.query(pts, mode="exact")
    grid, grid_ids = store.query(pts, mode="grid")
    inside = exact_ids >= 0
    assert inside.sum() > 2000 and exact[inside].std() > 0.1
    np.testing.assert_array_equal(grid_ids, exact_ids)  # the boxes do not overlap: ids from box membership
    err = np.abs(grid - exact)
    assert err.max() < 0.05 and err.mean() < 0.01, (err.max(), err.mean())
    np.testing.assert_allclose(exact, np.maximum(objs[0].query(pts), objs[1].query(pts)), atol=1e-6)
    np.testing.assert_allclose(grid, np.maximum(objs[0].query(pts, mode="grid"), objs[1].query(pts, mode="grid")),
                               atol=1e-6)


def test_answer_query_checks_requests(store_and_objects):
    from occnet_ros.geometry import RigidTransform, TransformError
    from occnet_ros.perception.query import answer_query

    store, objs = store_and_objects
    pts = np.array([[0, 0, 1], [9, 9, 9]], np.float32)

    def no_tf(target, source):
        raise TransformError(f"cannot transform from '{source}' to '{target}': tf2_ros is not available")

    def shift_tf(target, source):  # 'shifted' = cam translated by +1 m in x
        return RigidTransform(np.eye(3), np.array([1.0, 0.0, 0.0]))

    ok = answer_query(store, pts.reshape(-1).tobytes(), "", b"", no_tf, 10)
    assert ok.success and ok.object_ids.tolist() == [7, -1] and ok.probabilities[1] == 0
    assert "2 points, 3 object(s) in 'cam'" == ok.message
    same = answer_query(store, pts.reshape(-1).tobytes(), "cam", b"", no_tf, 10)
    np.testing.assert_array_equal(same.probabilities, ok.probabilities)
    moved = answer_query(store, (pts - [1, 0, 0]).astype(np.float32).tobytes(), "shifted", b"", shift_tf, 10)
    np.testing.assert_allclose(moved.probabilities, ok.probabilities, atol=1e-6)
    only = answer_query(store, pts.tobytes(), "", np.array([3], np.uint32).tobytes(), no_tf, 10)
    assert only.success and only.object_ids.tolist() == [3, -1]
    for flat, frame, ids, limit, words in [
        (np.zeros(4, np.float32), "", b"", 10, "not a multiple of 3"),
        (np.array([0, np.inf, 1], np.float32), "", b"", 10, "NaN or inf"),
        (pts, "", np.array([42], np.uint32), 10, "unknown object id(s) [42]"),
        (pts, "base_link", b"", 10, "differs from the objects' frame 'cam'"),
        (pts, "", b"", 1, "exceed query_max_points"),
    ]:
        ans = answer_query(store, np.asarray(flat).tobytes(), frame, bytes(ids), no_tf, limit)
        assert not ans.success and words in ans.message, ans.message
        assert ans.probabilities.size == 0 and ans.object_ids.size == 0
    grid = answer_query(store, pts.reshape(-1).tobytes(), "", b"", no_tf, 10, mode="grid")
    assert grid.success and grid.object_ids.tolist() == [7, -1]
    assert all(o.obj.modes[-1] == "grid" for o in objs if o.obj.modes)
    bad_mode = answer_query(store, pts.reshape(-1).tobytes(), "", b"", no_tf, 10, mode="fast")
    assert not bad_mode.success and "cannot answer in mode 'fast'" in bad_mode.message
    empty = answer_query(ObjectStore(), pts.tobytes(), "anything", b"", no_tf, 10)
    assert empty.success and empty.message.endswith("no objects yet") and np.all(empty.object_ids == -1)
