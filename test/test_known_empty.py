"""Known-empty space (support plane, free space in front of the depth): the vectorised tests against
per-pixel / per-point references, the geometry on hand-made depth images, and the Reconstructor using it
for the mesh and the queries alike."""
import dataclasses

import numpy as np
import pytest

from occnet_ros.geometry import PinholeCamera, Plane, RigidTransform
from scipy import ndimage

from occnet_ros.reconstruction.known_empty import (DepthView, KnownEmpty, KnownEmptyConfig, depth_bound, stands_on,
                                                   window_extreme)
from occnet_ros.reconstruction.reconstructor import Reconstructor, ReconstructorConfig
from occnet_ros.reconstruction.surface_anchor import AnchorConfig
from fixtures_geometry import front_half_sphere
from test_reconstructor import SphereOccupancyTestModel

FX = FY = 100.0
CX, CY = 31.5, 23.5
CAM = PinholeCamera(width=64, height=48, fx=FX, fy=FY, cx=CX, cy=CY)


def _random_depth(seed=0, shape=(48, 64)):
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.4, 1.5, shape).astype(np.float32)
    d[rng.random(shape) < 0.1] = np.nan
    d[rng.random(shape) < 0.03] = 0.0
    return d


def _bound_reference(depth, window, band_a=0.0, band_b=0.0):
    """One pixel at a time: its own depth unless it lies more than the band from both the nearest and the
    farthest valid depth of its square (a possible flying pixel), then the nearest."""
    h, w = depth.shape
    r = window // 2
    out = np.full((h, w), np.nan)
    for i in range(h):
        for j in range(w):
            d = float(depth[i, j])
            if not (np.isfinite(d) and d > 0):
                continue
            patch = depth[max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].astype(np.float64)
            ok = patch[np.isfinite(patch) & (patch > 0)]
            band = band_a + band_b * d * d
            out[i, j] = d if (d - ok.min() <= band or ok.max() - d <= band) else ok.min()
    return out


@pytest.mark.parametrize("window", [1, 3, 5, 11])
@pytest.mark.parametrize("band", [(0.0, 0.0), (0.05, 0.1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depth_bound_matches_a_per_pixel_loop(window, band, dtype):
    d = _random_depth(1).astype(dtype)
    got = depth_bound(d, window, *band)
    ref = _bound_reference(d, window, *band)
    assert np.array_equal(got, ref, equal_nan=True)
    if 1 < window <= 5:  # both kinds of pixel occur (a wide window with no band leaves few pixels their own)
        own = got == d
        assert own.sum() > 100 and (np.isfinite(got) & ~own).sum() > 100


@pytest.mark.parametrize("window", [3, 5, 9, 11])
@pytest.mark.parametrize("shape", [(48, 64), (1, 1), (2, 7), (9, 1)])
def test_window_extreme_matches_scipy_filters(window, shape):
    rng = np.random.default_rng(window * 100 + shape[0])
    a = rng.uniform(0.4, 1.5, shape).astype(np.float32)
    a[rng.random(shape) < 0.2] = np.inf
    for reduce, filt in ((np.minimum, ndimage.minimum_filter), (np.maximum, ndimage.maximum_filter)):
        got = window_extreme(a, window, reduce)
        assert got.dtype == a.dtype and got.shape == a.shape
        assert np.array_equal(got, filt(a, size=window, mode="nearest"))


def _pose(seed):
    """A random rigid camera_to_source transform."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    return RigidTransform(q, rng.normal(scale=0.2, size=3))


def _free_reference(points, view, cfg):
    """One point at a time: into the camera, round to a pixel, compare with the window's bound."""
    to_cam = np.linalg.inv(view.camera_to_source.matrix())
    bound = _bound_reference(view.depth, cfg.edge_window_px, cfg.n_sigma * cfg.sigma_a, cfg.n_sigma * cfg.sigma_b)
    h, w = view.depth.shape
    out = []
    for p in points:
        c = to_cam[:3, :3] @ p + to_cam[:3, 3]
        if c[2] <= 0:
            out.append(False)
            continue
        k = view.camera
        u = int(np.floor(k.fx * c[0] / c[2] + k.cx + 0.5)) - view.roi_origin[1]
        v = int(np.floor(k.fy * c[1] / c[2] + k.cy + 0.5)) - view.roi_origin[0]
        if not (0 <= u < w and 0 <= v < h) or not np.isfinite(bound[v, u]):
            out.append(False)
            continue
        b = bound[v, u]
        out.append(bool(c[2] < b - cfg.n_sigma * (cfg.sigma_a + cfg.sigma_b * b * b)))
    return np.array(out)


def test_free_space_matches_a_per_point_reference_with_a_posed_cropped_view():
    cfg = KnownEmptyConfig(support_plane=False)
    pose = _pose(2)
    view = DepthView(_random_depth(3, (30, 40)), CAM, roi_origin=(9, 12), camera_to_source=pose)
    rng = np.random.default_rng(4)
    u, v, z = rng.uniform(5, 60, 3000), rng.uniform(0, 45, 3000), rng.uniform(-0.2, 1.6, 3000)  # crop +- margin
    cam = np.column_stack([(u - CX) / FX * z, (v - CY) / FY * z, z])
    pts = cam @ pose.rotation.T + pose.translation  # camera -> source
    got = KnownEmpty(cfg, None, [view]).in_free_space(pts)
    ref = _free_reference(pts, view, cfg)
    assert np.array_equal(got, ref)
    assert 100 < got.sum() < 2900  # both answers occur


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classify_equals_mask_and_on_depth_surface(seed):
    """One projection per view for both answers: the same as the two tests it replaces in queries, with a plane,
    a posed cropped view and a full view, points near the depths (surface band), in front and behind."""
    rng = np.random.default_rng(seed)
    plane = Plane(normal=np.array([0.0, -1.0, 0.0]), offset=0.3)
    crop = DepthView(_random_depth(seed + 5, (30, 40)), CAM, roi_origin=(9, 12), camera_to_source=_pose(seed + 1))
    full = DepthView(_random_depth(seed + 9), CAM)
    cfg = KnownEmptyConfig(plane_margin_m=0.01)
    for name, views in (("crop", [crop]), ("full", [full]), ("both", [crop, full]), ("none", [])):
        ke = KnownEmpty(cfg, plane, views)
        u, v = rng.uniform(-5, 70, 4000), rng.uniform(-5, 53, 4000)
        z = rng.uniform(-0.2, 1.7, 4000)
        row = np.clip(np.floor(v + 0.5).astype(int), 0, 47)
        col = np.clip(np.floor(u + 0.5).astype(int), 0, 63)
        d = full.depth[row, col]
        on = rng.random(4000) < 0.4  # many points at a measured depth, within the noise band
        z = np.where(on & np.isfinite(d) & (d > 0), d + rng.normal(0, 0.003, 4000), z)
        pts = np.column_stack([(u - CX) / FX * z, (v - CY) / FY * z, z])
        pts[::97] = np.nan
        empty, surface = ke.classify(pts)
        assert np.array_equal(empty, ke.mask(pts))
        assert np.array_equal(surface, ~empty & ke.on_depth_surface(pts))
        if name == "full":
            assert 100 < surface.sum() and 100 < empty.sum() < 3900 and not (empty & surface).any()


def _wall(depth_m=1.0, shape=(48, 64)):
    return np.full(shape, depth_m, np.float32)


def test_free_space_on_a_flat_wall():
    cfg = KnownEmptyConfig(support_plane=False)
    ke = KnownEmpty(cfg, None, [DepthView(_wall(), CAM)])
    margin = cfg.n_sigma * (cfg.sigma_a + cfg.sigma_b)
    pts = np.array([[0, 0, 0.5], [0.05, -0.03, 1.0 - 2 * margin], [0, 0, 1.0 - 0.5 * margin],
                    [0, 0, 1.2], [0, 0, -0.5], [5.0, 0, 1.0 - 2 * margin], [np.nan, 0, 0.5]])
    # free, free, within the noise band; behind the wall, behind the camera, off the image, NaN
    assert ke.in_free_space(pts).tolist() == [True, True, False, False, False, False, False]
    holes = _wall()
    holes[20:28, 28:36] = np.nan  # no return around the optical axis: nothing known there
    assert not KnownEmpty(cfg, None, [DepthView(holes, CAM)]).in_free_space(pts[:1]).any()


def test_flying_pixel_is_bounded_by_the_nearest_depth_but_the_background_beside_a_silhouette_carves():
    """A 0.5 m box in front of a 1 m wall; the box's right edge column is a flying pixel at 0.75 m (mixed
    between the box and the wall). A point 0.6 m deep on that pixel's ray may be the box's hidden side:
    with the 3-pixel test its bound is the box's 0.5 m and it is kept; with every pixel bounding its own
    ray (window 1) it is carved. A point 0.7 m deep on the wall pixel beside it is carved by both: that
    ray passes beside the box."""
    d = _wall()
    d[14:34, 22:42] = 0.5
    d[14:34, 41] = 0.75  # the flying column
    cam = lambda col, z: np.array([[(col - CX) / FX * z, (24 - CY) / FY * z, z]])  # noqa: E731
    keep = KnownEmpty(KnownEmptyConfig(support_plane=False, edge_window_px=3), None, [DepthView(d, CAM)])
    carve = KnownEmpty(KnownEmptyConfig(support_plane=False, edge_window_px=1), None, [DepthView(d, CAM)])
    assert not keep.in_free_space(cam(41, 0.6))[0] and carve.in_free_space(cam(41, 0.6))[0]
    assert keep.in_free_space(cam(42, 0.7))[0] and carve.in_free_space(cam(42, 0.7))[0]
    assert not keep.in_free_space(cam(30, 0.55))[0]  # behind the box's face: never free
    assert keep.in_free_space(cam(30, 0.45))[0]


def test_several_views_any_view_decides():
    cfg = KnownEmptyConfig(support_plane=False)
    back = RigidTransform(np.diag([-1.0, 1.0, -1.0]), np.array([0.0, 0.0, 2.0]))  # at 2 m looking back along -z
    views = [DepthView(_wall(1.0), CAM), DepthView(_wall(0.5), CAM, camera_to_source=back)]
    ke = KnownEmpty(cfg, None, views)
    # z = 0.4: in front of the first wall; z = 1.8: behind it, but 0.2 m in front of the second camera,
    # whose wall is 0.5 m away (z = 1.5); z = 1.3: behind both walls
    pts = np.array([[0, 0, 0.4], [0, 0, 1.8], [0, 0, 1.3]])
    assert ke.in_free_space(pts).tolist() == [True, True, False]


def test_support_plane():
    plane = Plane(normal=np.array([0.0, -1.0, 0.0]), offset=0.1)  # y = 0.1 is the table, objects at y < 0.1
    wall = [DepthView(_wall(), CAM)]
    ke = KnownEmpty(KnownEmptyConfig(free_space=False, plane_margin_m=0.002), plane, wall)
    pts = np.array([[0, 0.05, 1], [0, 0.101, 1], [0, 0.103, 1], [0, 0.5, 0.2]])
    assert ke.mask(pts).tolist() == [False, False, True, True]
    assert ke.active
    off = KnownEmpty(KnownEmptyConfig(support_plane=False, free_space=False), plane, wall)
    assert not off.active and not off.mask(pts).any()


def test_bad_config_and_views():
    for bad in (dict(n_sigma=-1.0), dict(edge_window_px=4), dict(sigma_b=float("nan"))):
        with pytest.raises(ValueError, match="known_empty"):
            KnownEmptyConfig(**bad).validate()
    with pytest.raises(ValueError, match="depth"):
        KnownEmpty(KnownEmptyConfig(), None, [DepthView(np.zeros(5, np.float32), CAM)])
    with pytest.raises(ValueError, match="intrinsics"):
        KnownEmpty(KnownEmptyConfig(), None, [DepthView(_wall(), dataclasses.replace(CAM, fx=0.0))])
    with pytest.raises(ValueError, match="does not fit"):  # the crop reaches past the image's last row
        KnownEmpty(KnownEmptyConfig(), None, [DepthView(_wall(shape=(30, 40)), CAM, roi_origin=(19, 0))])
    with pytest.raises(ValueError, match="does not fit"):
        KnownEmpty(KnownEmptyConfig(), None, [DepthView(_wall(shape=(30, 40)), CAM, roi_origin=(0, -1))])
    with pytest.raises(ValueError, match="camera_to_source"):
        KnownEmpty(KnownEmptyConfig(), None, [DepthView(_wall(), CAM, camera_to_source=np.eye(4))])
    KnownEmpty(KnownEmptyConfig(), None, [DepthView(_wall(shape=(30, 40)), CAM, roi_origin=(18, 24))])  # fits


def test_reconstructor_removes_known_empty_space_from_mesh_and_queries():
    """The test double's sphere (radius 0.35 canonical) cut by a support plane through its centre:
    the mesh keeps only the upper half and stays closed, and the queries agree with the mesh."""
    pts = front_half_sphere(800, 0, center=(0.05, 0.02, 0.8))
    up = np.array([0.0, -1.0, 0.0])
    model = SphereOccupancyTestModel()
    cfg = ReconstructorConfig(resolution0=16, upsampling_steps=2, anchor=AnchorConfig(radius=0.0), keep_grid=True,
                              mirror_average=False)  # one decoding per point, counted below
    rec = Reconstructor(model, device="cpu", config=cfg)
    whole = rec.reconstruct(pts, up=up)
    centre_y = float(whole.frame.center[1])
    plane = Plane(normal=up, offset=centre_y)  # signed distance = centre_y - y: positive above (y smaller)
    ke = KnownEmpty(KnownEmptyConfig(free_space=False, plane_margin_m=0.0), plane)
    cut = rec.reconstruct(pts, up=up, known_empty=ke)
    assert cut.mesh.is_watertight
    assert cut.mesh.vertices[:, 1].max() <= centre_y + 0.01 * whole.frame.scale  # nothing below the plane
    assert 0.4 < cut.mesh.volume / whole.mesh.volume < 0.6
    f = cut.frame
    below = f.from_canonical(np.array([[0.0, 0.0, -0.1], [0.1, 0.05, -0.2]], np.float32))
    above = f.from_canonical(np.array([[0.0, 0.0, 0.1], [0.1, 0.05, 0.2]], np.float32))
    assert np.all(cut.query(below) == 0.0) and np.all(cut.query(above) > 0.9)
    assert np.all(whole.query(below) > 0.9)
    assert np.all(cut.query(below, mode="grid") < 0.01)
    # points the test marks never reach the network (the test runs first), unmarked ones all do
    q = f.from_canonical(np.random.default_rng(0).uniform(-0.5, 0.5, (500, 3)).astype(np.float32))
    marked = ke.mask(q)
    assert 100 < marked.sum() < 400
    model.n_decoded = 0
    p = cut.query(q)
    assert model.n_decoded == int((~marked).sum()) and np.all(p[marked] == 0.0)
    np.testing.assert_array_equal(p[~marked], whole.query(q)[~marked])


def test_an_object_stands_on_a_plane_only_when_its_points_lie_above_it():
    table = Plane(np.array([0.0, 0.0, 1.0]), 0.0)  # z = 0, up
    pts = np.random.default_rng(0).uniform([-0.05, -0.05, 0.0], [0.05, 0.05, 0.1], (500, 3))
    assert stands_on(table, pts, 0.01)
    assert stands_on(table, pts - [0, 0, 0.005], 0.01)  # sensor noise below the table: within the tolerance
    assert not stands_on(Plane(np.array([0.0, 0.0, 1.0]), -0.2), pts, 0.01)  # a shelf 20 cm up, above the object
    assert not stands_on(table, pts - [0, 0, 0.05], 0.01)  # half of it below: not standing on it
    assert not stands_on(None, pts, 0.01) and not stands_on(table, np.zeros((0, 3)), 0.01)
