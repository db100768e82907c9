"""The object map: association by 3D overlap across views, touching objects, moved / removed / hidden / out of
view objects, bounded memory, incremental staleness, the order of due objects, the reconstruction inputs
against the Reconstructor API, the settings. Scenes: axis-aligned boxes on a table (z = 0, world z up,
metres), ray cast in numpy by a small pinhole camera."""
from dataclasses import replace

import numpy as np
import pytest

from occnet_ros.config_io import describe
from occnet_ros.data.virtual_camera import look_at_pose
from occnet_ros.geometry import PinholeCamera, Plane, RigidTransform
from occnet_ros.network.model import ModelConfig, OccupancyNetwork
from occnet_ros.perception.map_config import MapFrame, ObjectMapConfig
from occnet_ros.perception.object_map import ObjectMap
from occnet_ros.reconstruction.known_empty import DepthView, KnownEmpty, KnownEmptyConfig
from occnet_ros.reconstruction.normalization import BOX_HALF, canonical_frame_from_observation
from occnet_ros.reconstruction.reconstructor import Reconstructor, ReconstructorConfig
from fixtures_geometry import randomize_like_trained

CAM = PinholeCamera(width=160, height=120, fx=140.0, fy=140.0, cx=79.5, cy=59.5)


def box(center_xy, size, height):
    """(lo, hi) of an axis-aligned box standing on the table, metres."""
    cx, cy = center_xy
    return (np.array([cx - size / 2, cy - size / 2, 0.0]), np.array([cx + size / 2, cy + size / 2, height]))


def pose_at(azimuth_deg, elevation_deg=40.0, distance=0.7, target=(0.0, 0.0, 0.03)):
    """(4, 4) optical -> world pose of a camera on a sphere around ``target`` looking at it."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    t = np.asarray(target, np.float64)
    return look_at_pose(t + distance * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)]), t)


def cast(boxes, pose, noise=0.0, seed=0):
    """Depth (H, W) float32 optical z, metres (NaN: no hit) and hit ids (H, W) (-1 none, 0 table, k + 1 box k)
    of ``CAM`` at ``pose`` looking at ``boxes`` on a 4 m table at z = 0; ``noise``: depth sigma, metres."""
    rows, cols = np.mgrid[0:CAM.height, 0:CAM.width]
    d = CAM.rays(rows, cols).reshape(-1, 3) @ pose[:3, :3].T  # z = 1 in the optical frame: t is the depth
    o = pose[:3, 3]
    t, ids = np.full(len(d), np.inf), np.full(len(d), -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        tt = -o[2] / d[:, 2]
        hit = (tt > 0) & (np.abs(o[0] + tt * d[:, 0]) < 2) & (np.abs(o[1] + tt * d[:, 1]) < 2)
        t[hit], ids[hit] = tt[hit], 0
        for k, (lo, hi) in enumerate(boxes):
            t1, t2 = (lo - o) / d, (hi - o) / d
            near, far = np.minimum(t1, t2).max(axis=1), np.maximum(t1, t2).min(axis=1)
            hit = (near <= far) & (near > 0) & (near < t)
            t[hit], ids[hit] = near[hit], k + 1
    depth = np.where(np.isfinite(t), t, np.nan)
    if noise:
        depth = depth + np.random.default_rng(seed).normal(0.0, noise, depth.shape)
    return depth.reshape(CAM.shape).astype(np.float32), ids.reshape(CAM.shape)


def frame(boxes, pose, stamp, with_depth=True, noise=0.0, seed=0, order=None, cloud_to_world=None):
    """A :class:`MapFrame` of the boxes seen from ``pose``: one segment per box (in ``order``, a permutation
    of the box indices), the cloud frame the camera's optical frame, or the frame whose pose in world is
    ``cloud_to_world`` (then the viewpoint and the depth camera are given in it)."""
    depth, ids = cast(boxes, pose, noise, seed)
    cam_to_world = RigidTransform.from_matrix(pose)
    cloud_to_world = cloud_to_world or cam_to_world
    cam_to_cloud = cloud_to_world.inverse() @ cam_to_world
    pts = cam_to_cloud.apply(CAM.unproject(depth).reshape(-1, 3)).astype(np.float32)
    order = range(len(boxes)) if order is None else order
    segments = [pts[ids.ravel() == k + 1] for k in order]
    view = DepthView(depth, CAM, camera_to_source=cam_to_cloud) if with_depth else None
    return MapFrame(stamp, cloud_to_world, segments, view, viewpoint=cam_to_cloud.translation)


def true_box(obj, boxes):
    """Index of the box whose centre is nearest to the object's points' bounding-box centre."""
    return int(np.argmin([np.linalg.norm(obj.center - 0.5 * (lo + hi)) for lo, hi in boxes]))


THREE = [box((-0.15, 0.0), 0.07, 0.08), box((0.12, 0.08), 0.06, 0.05), box((0.02, -0.14), 0.08, 0.06)]


def test_association_by_overlap_keeps_ids_across_views_with_shuffled_segments():
    m = ObjectMap()
    rng = np.random.default_rng(0)
    ids = None
    for i, az in enumerate([30, 120, 210, 300]):
        order = rng.permutation(3)
        u = m.integrate(frame(THREE, pose_at(az), float(i), order=order))
        by_box = {int(k): u.segment_ids[j] for j, k in enumerate(order)}
        if ids is None:
            assert sorted(u.added) == sorted(by_box.values()) and len(u.added) == 3
            ids = by_box
        else:
            assert u.added == [] and by_box == ids and sorted(u.updated) == sorted(ids.values())
            assert sorted(u.stale) == sorted(ids.values())  # each side is a new view direction
        assert all(true_box(m[ids[k]], THREE) == k for k in range(3))
    assert len(m) == 3 and all(o.n_views == 4 and len(o.views) == 4 for o in m.objects)


def test_two_touching_boxes_stay_two_objects():
    # the contact plane x = 0.035 lies inside a 1 cm voxel column: both boxes have points in that column
    touching = [(np.array([-0.05, -0.04, 0.0]), np.array([0.035, 0.04, 0.08])),
                (np.array([0.035, -0.04, 0.0]), np.array([0.115, 0.04, 0.05]))]
    m = ObjectMap()
    ids = None
    for i, az in enumerate([-60, -20, 20, 60, 100, 160, 220]):
        u = m.integrate(frame(touching, pose_at(az, 35), float(i)))
        assert len(m) == 2
        seen = [u.segment_ids[k] for k in range(2)]
        ids = ids or seen
        assert seen == ids and ids[0] != ids[1]
    assert [true_box(m[ids[k]], touching) for k in range(2)] == [0, 1]
    a, b = (m[ids[k]].points_world for k in range(2))
    assert a[:, 0].max() < 0.036 and b[:, 0].min() > 0.034  # no points of the one fused into the other


def test_a_moved_object_is_removed_and_found_again_at_its_new_place():
    old, new = box((0.0, 0.0), 0.06, 0.07), box((0.2, 0.12), 0.06, 0.07)
    m = ObjectMap()
    (first,) = m.integrate(frame([old], pose_at(0), 0.0)).added
    assert m.integrate(frame([old], pose_at(50), 1.0)).updated == [first]
    u = m.integrate(frame([new], pose_at(25), 2.0))
    assert u.removed == [first] and first not in m
    (second,) = u.added
    assert second != first and len(m) == 1
    assert np.allclose(m[second].center[:2], [0.2, 0.12], atol=0.02)


def test_a_removed_object_is_deleted_a_hidden_or_out_of_view_object_is_kept():
    a = box((0.0, 0.0), 0.06, 0.06)
    wall = (np.array([-0.098, -0.1, 0.0]), np.array([-0.092, 0.1, 0.2]))  # thinner than a voxel
    far = box((0.9, 0.9), 0.06, 0.06)
    base = RigidTransform.from_matrix(look_at_pose([0.3, -0.2, 0.5], [0.3, 1.0, 0.5]))  # a robot's frame
    m = ObjectMap()
    (far_id,) = m.integrate(frame([far], pose_at(-90, target=(0.9, 0.9, 0.03)), 0.0, cloud_to_world=base)).added
    u = m.integrate(frame([a, wall], pose_at(0, 35, 0.6), 1.0, cloud_to_world=base))
    a_id, wall_id = u.segment_ids
    assert sorted(u.added) == sorted([a_id, wall_id]) and far_id in m  # far is out of view: kept
    hidden = frame([a, wall], pose_at(180, 25, 0.6), 2.0, cloud_to_world=base)
    assert len(hidden.segments[0]) == 0  # the wall hides the box from behind
    u = m.integrate(hidden)
    assert u.removed == [] and a_id in m and far_id in m
    u = m.integrate(frame([wall], pose_at(0, 35, 0.6), 3.0, cloud_to_world=base))  # the box taken away
    assert u.removed == [a_id] and a_id not in m and far_id in m and wall_id in m
    with pytest.raises(KeyError):
        m[a_id]
    assert m.integrate(frame([wall], pose_at(0, 35, 0.6), 4.0)).removed == []  # nothing left to remove


def test_memory_stays_bounded_over_200_frames():
    cfg = ObjectMapConfig(max_points=1500, max_views=3, max_objects=4, new_view_angle_deg=10.0)
    m = ObjectMap(cfg)
    rng = np.random.default_rng(1)
    main = [box((-0.06, 0.0), 0.06, 0.07), box((0.07, 0.0), 0.05, 0.05)]
    main_ids, added, removed, evicted = None, [], 0, 0
    for i in range(200):
        a = rng.uniform(0, 2 * np.pi)
        clutter = box((0.3 * np.cos(a), 0.3 * np.sin(a)), 0.04, 0.04)  # a new box each frame, gone the next
        # frames 100-149 come without depth: their clutter is not seen gone, the map evicts it
        u = m.integrate(frame(main + [clutter], pose_at(7.0 * i, 25 + 15 * np.sin(i / 9), 0.8), float(i),
                              with_depth=not 100 <= i < 150, noise=0.0005, seed=i))
        main_ids = main_ids or u.segment_ids[:2]
        assert u.segment_ids[:2] == main_ids and all(k in m for k in main_ids)
        added += u.added
        removed, evicted = removed + len(u.removed), evicted + len(u.evicted)
        assert len(m) <= cfg.max_objects
        for o in m.objects:
            assert len(o.points_world) == len(o.point_viewpoints) <= cfg.max_points and len(o.views) <= cfg.max_views
            crops = [v.depth.depth for v in o.views if v.depth is not None]
            assert all(c.size <= CAM.width * CAM.height and c.base is None for c in crops)  # copies, not views
    assert added == sorted(set(added)) and len(added) > 150  # ids increase, never reused
    assert removed > 50 and evicted > 20 and removed + evicted == len(added) - len(m)
    assert all(len(m[k].points_world) == cfg.max_points and len(m[k].views) == cfg.max_views for k in main_ids)


def test_the_least_recently_seen_objects_are_evicted_first():
    boxes = [box((-0.15, 0.0), 0.06, 0.06), box((0.0, 0.0), 0.06, 0.06), box((0.15, 0.0), 0.06, 0.06)]
    m = ObjectMap(ObjectMapConfig(max_objects=2))
    a, b = m.integrate(frame(boxes[:2], pose_at(90), 0.0, with_depth=False)).segment_ids
    assert m.integrate(frame(boxes[:1], pose_at(90), 1.0, with_depth=False)).updated == [a]
    u = m.integrate(frame(boxes[2:], pose_at(90), 2.0, with_depth=False))
    assert u.evicted == [b] and [o.id for o in m.objects] == [a, u.added[0]]


def test_only_new_information_makes_an_object_stale():
    a = [box((0.0, 0.0), 0.07, 0.06)]
    m = ObjectMap()
    (oid,) = m.integrate(frame(a, pose_at(0), 0.0, noise=0.0005, seed=0)).stale
    assert m.mark_reconstructed(oid) and m.due(5) == []
    version = m[oid].version
    for stamp, az, seed in [(1.0, 0, 0), (2.0, 0, 1), (3.0, 5, 2)]:  # identical, re-noised, 5 degrees on
        u = m.integrate(frame(a, pose_at(az), stamp, noise=0.0005, seed=seed))
        assert u.updated == [oid] and u.stale == [] and not m[oid].stale and m[oid].last_seen == stamp
    assert m[oid].version == version and m.due(5) == []
    u = m.integrate(frame(a, pose_at(90), 4.0, noise=0.0005, seed=3))  # a new side
    assert u.stale == [oid] and m.due(5) == [m[oid]] and m[oid].pending_views == 1 and m[oid].n_views == 2


def test_unexplained_points_from_the_same_direction_make_an_object_stale():
    f = frame([box((0.0, 0.0), 0.07, 0.06)], pose_at(0), 0.0, with_depth=False)
    whole = f.segments[0]
    half = whole[RigidTransform.from_matrix(pose_at(0)).apply(whole)[:, 1] < 0]  # the rest was hidden
    m = ObjectMap()
    (oid,) = m.integrate(replace(f, segments=[half])).added
    m.mark_reconstructed(oid)
    assert m.integrate(replace(f, stamp=1.0, segments=[whole])).stale == [oid]
    m.mark_reconstructed(oid)
    assert m.integrate(replace(f, stamp=2.0, segments=[whole])).stale == []


def test_due_returns_at_most_n_the_most_out_of_date_first():
    m = ObjectMap()
    u = m.integrate(frame(THREE, pose_at(0), 1.0, with_depth=False))
    a, b, c = u.segment_ids
    assert [o.id for o in m.due(2)] == sorted(u.added)[:2] and m.due(0) == [] and len(m.due(10)) == 3
    m.mark_reconstructed(a)                                           # at stamp 1
    m.integrate(frame(THREE, pose_at(0), 2.0, with_depth=False))     # nothing new
    m.mark_reconstructed(b)                                           # at stamp 2
    m.integrate(frame(THREE, pose_at(60), 3.0, with_depth=False))    # new for all three
    assert [o.id for o in m.due(3)] == [c, a, b] and [o.id for o in m.due(2)] == [c, a]
    for k in (a, b, c):
        m.mark_reconstructed(k)                                       # all at stamp 3
    m.integrate(frame(THREE, pose_at(120), 4.0, with_depth=False))
    f = frame(THREE, pose_at(180), 5.0, with_depth=False)
    version = m[b].version
    m.integrate(replace(f, segments=[f.segments[1]]))                 # a second new view of b only
    assert m[b].pending_views == 2
    assert [o.id for o in m.due(3)] == [b] + sorted([a, c])  # reconstructed together: most new views first
    assert not m.mark_reconstructed(b, version) and m[b].stale  # fused again since that version
    assert m.mark_reconstructed(b, m[b].version) and not m[b].stale


def _random_reconstructor():
    """A small random network; the threshold is set within its narrow range of probabilities, so that the
    surface lies inside the box."""
    net = randomize_like_trained(OccupancyNetwork(ModelConfig(c_dim=16, encoder_hidden=16, encoder_blocks=2,
                                                              decoder_hidden=16, decoder_blocks=2)), 1, 0.2)
    return Reconstructor(net.eval(), device="cpu", config=ReconstructorConfig(
        resolution0=8, upsampling_steps=1, n_input_points=64, threshold=0.565))


def _views(obj_box, azimuths):
    """The frames of one box from each azimuth, with the box's world points and camera centre per point."""
    frames = [frame([obj_box], pose_at(az), float(i), with_depth=False) for i, az in enumerate(azimuths)]
    pts = [RigidTransform.from_matrix(pose_at(az)).apply(f.segments[0]).astype(np.float32)
           for az, f in zip(azimuths, frames)]
    vps = [np.repeat(pose_at(az)[None, :3, 3].astype(np.float32), len(p), axis=0) for az, p in zip(azimuths, pts)]
    return frames, np.concatenate(pts), np.concatenate(vps)


def test_reconstruction_inputs_are_the_api_call_on_the_fused_world_points():
    b = box((0.03, -0.02), 0.07, 0.06)
    azimuths = [0, 70, 140]
    frames, pts, vps = _views(b, azimuths)
    plane = Plane((0.0, 0.0, 1.0), 0.0)
    m = ObjectMap(ObjectMapConfig(fusion_voxel_m=0.0, max_points=10**6), support_plane=plane)
    for f in frames:
        m.integrate(f)
    (obj,) = m.objects
    assert np.array_equal(obj.points_world, pts) and np.array_equal(obj.point_viewpoints, vps)
    rec = _random_reconstructor()
    inputs = m.reconstruction_inputs(obj.id)
    assert inputs["n_views"] == 3 and np.array_equal(inputs["viewpoint"], pose_at(140)[:3, 3])
    assert inputs["known_empty"].plane is plane and inputs["known_empty"].n_views == 0
    obj.reconstruction = rec.reconstruct(**inputs)
    direct = rec.reconstruct(pts, up=(0.0, 0.0, 1.0), viewpoint=pose_at(140)[:3, 3], point_viewpoints=vps,
                             n_views=3, known_empty=KnownEmpty(KnownEmptyConfig(), plane))
    assert len(direct.mesh.faces) > 100 and direct.mesh.is_watertight
    assert np.allclose(obj.reconstruction.mesh.vertices, direct.mesh.vertices)
    assert np.array_equal(obj.reconstruction.mesh.faces, direct.mesh.faces)
    below = ObjectMap(support_plane=Plane((0.0, 0.0, 1.0), -0.2))  # the object is not above this plane
    below.integrate(frames[0])
    assert below.reconstruction_inputs(below.objects[0].id)["known_empty"] is None


def test_kept_depth_crops_carve_the_reconstruction_box_as_the_full_views_do():
    b = box((0.0, 0.0), 0.07, 0.06)
    azimuths = [0, 90, 200]
    m = ObjectMap(ObjectMapConfig(max_views=8))
    full = []
    for i, az in enumerate(azimuths):
        f = frame([b], pose_at(az), float(i), noise=0.0005, seed=i)
        m.integrate(f)
        full.append(DepthView(f.depth.depth, CAM, camera_to_source=RigidTransform.from_matrix(pose_at(az))))
    (obj,) = m.objects
    crops = [v.depth for v in obj.views]
    assert all(c.depth.size < CAM.width * CAM.height for c in crops)
    inputs = m.reconstruction_inputs(obj.id)
    reference = KnownEmpty(KnownEmptyConfig(), None, full)
    rng = np.random.default_rng(0)
    q = np.concatenate([canonical_frame_from_observation(inputs["points"], inputs["up"], vp).from_canonical(
        rng.uniform(-BOX_HALF, BOX_HALF, (3000, 3))) for vp in [v.camera_center for v in obj.views]])
    expected = reference.in_free_space(q)
    assert 0.1 < expected.mean() < 0.9
    assert np.array_equal(inputs["known_empty"].in_free_space(q), expected)


def test_settings_are_described_and_validated_by_name():
    info = describe(ObjectMapConfig)
    names = [f for f in ObjectMapConfig.__dataclass_fields__]
    assert list(info) == names and len(names) >= 12
    for name, s in info.items():
        assert s.doc and s.range is not None and s.range[0] <= s.default <= s.range[1], name
    ObjectMapConfig().validate()
    for name, bad in [("min_overlap", 0.0), ("association_voxel_m", -1.0), ("max_points", 2.5),
                      ("removal_fraction", float("nan")), ("max_views", 0), ("new_view_angle_deg", 181.0)]:
        with pytest.raises(ValueError, match=name):
            replace(ObjectMapConfig(), **{name: bad}).validate()
        with pytest.raises(ValueError, match=name):
            ObjectMap(replace(ObjectMapConfig(), **{name: bad}))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        ObjectMap().integrate(MapFrame(0.0, RigidTransform(), [np.zeros((4, 2), np.float32)]))
