"""The one geometry (occnet_ros.geometry): pinhole projection and unprojection, planes and rigid
transforms, each vectorised routine against a slow per-point / per-pixel Python reference."""
import math

import numpy as np
import pytest

from occnet_ros.geometry import PinholeCamera, Plane, RigidTransform, all_columns, finite_rows, rotate_rows

CAM = PinholeCamera(width=40, height=30, fx=64.0, fy=32.0, cx=19.5, cy=14.0)


def _pixel_reference(cam, p):
    """One point: (row, col) of the nearest pixel centre, or None (not finite, not in front, off the image)."""
    x, y, z = (float(c) for c in p)
    if not all(math.isfinite(c) for c in (x, y, z)) or z <= 0:
        return None
    u, v = cam.fx * x / z + cam.cx, cam.fy * y / z + cam.cy
    if not (math.isfinite(u) and math.isfinite(v)):
        return None
    col, row = math.floor(u + 0.5), math.floor(v + 0.5)
    return (row, col) if 0 <= col < cam.width and 0 <= row < cam.height else None


def _test_points(seed=0, n=3000):
    """Random points around the view: in front, behind (z < 0), on the camera plane (z = 0), off the
    image, non-finite, a denormal depth, and points exactly on pixel borders (u or v = k + 0.5)."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-0.5, 3.0, n)
    u, v = rng.uniform(-10, CAM.width + 10, n), rng.uniform(-10, CAM.height + 10, n)
    p = np.column_stack([(u - CAM.cx) / CAM.fx * z, (v - CAM.cy) / CAM.fy * z, z])
    p[:20, 2] = 0.0
    p[20:30, 0] = np.nan
    p[30:35, 1] = np.inf
    p[35:40] = [1.0, 0.0, 1e-310]
    # exact borders: the focal lengths, principal point and these depths are binary fractions, so u and v
    # are exact halves
    k = rng.integers(-2, CAM.width + 2, 200)
    m = rng.integers(-2, CAM.height + 2, 200)
    zz = rng.choice([0.5, 1.0, 2.0], 200)
    half = np.column_stack([(k + 0.5 - CAM.cx) / CAM.fx * zz, (m + 0.5 - CAM.cy) / CAM.fy * zz, zz])
    u_half, v_half = CAM.project(half)
    assert np.array_equal(u_half, k + 0.5) and np.array_equal(v_half, m + 0.5)  # really on the borders
    return np.concatenate([p, half])


def test_project_matches_the_formula_per_point():
    p = _test_points()
    u, v = CAM.project(p)
    assert u.dtype == np.float64 and u.shape == v.shape == (p.shape[0],)
    for i, (x, y, z) in enumerate(p.tolist()):
        if z == 0.0 or not all(math.isfinite(c) for c in (x, y, z)):
            assert not (np.isfinite(u[i]) and np.isfinite(v[i]))
            continue
        assert u[i] == CAM.fx * x / z + CAM.cx and v[i] == CAM.fy * y / z + CAM.cy
    # a point behind the camera projects like its mirror image through the centre
    np.testing.assert_allclose(np.ravel(CAM.project([[0.1, -0.2, -1.0]])), np.ravel(CAM.project([[-0.1, 0.2, 1.0]])))


def test_pixels_and_pixel_index_match_a_per_point_loop():
    p = _test_points()
    row, col, valid = CAM.pixels(p)
    flat, valid2 = CAM.pixel_index(p)
    assert row.dtype == col.dtype == flat.dtype == np.int64 and valid.dtype == bool
    np.testing.assert_array_equal(valid, valid2)
    for i, q in enumerate(p):
        ref = _pixel_reference(CAM, q)
        assert valid[i] == (ref is not None), (i, q)
        if ref is None:
            assert row[i] == col[i] == flat[i] == 0
        else:
            assert (row[i], col[i]) == ref and flat[i] == ref[0] * CAM.width + ref[1]
    # every kind of point occurs
    assert 1000 < valid.sum() < len(p) - 500
    assert (~valid[:40]).all()  # z = 0, NaN, inf, denormal depth


def test_pixel_borders_belong_to_the_pixel_to_their_right_and_below():
    """u = k + 0.5 rounds to column k + 1: column 0 spans [-0.5, 0.5), the last [w - 1.5, w - 0.5)."""
    cam = PinholeCamera(width=4, height=3, fx=2.0, fy=2.0, cx=1.5, cy=1.0)

    def at(u, v):  # a point at depth 1 projecting exactly onto (u, v)
        return [(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, 1.0]

    pts = np.array([at(-0.5, -0.5), at(0.5, 0.5), at(1.5, 1.0), at(2.5, 1.5), at(3.5, 1.0), at(1.0, 2.5),
                    at(-0.5000001, 0.0), at(3.4999999, 2.4999999)])
    row, col, valid = cam.pixels(pts)
    assert valid.tolist() == [True, True, True, True, False, False, False, True]
    assert list(zip(row[valid].tolist(), col[valid].tolist())) == [(0, 0), (1, 1), (1, 2), (2, 3), (2, 3)]


def test_unproject_matches_a_per_pixel_loop():
    rng = np.random.default_rng(1)
    depth = rng.uniform(0.3, 2.0, (6, 7)).astype(np.float32)
    depth[2, 3] = np.nan
    for origin in ((0, 0), (10, 20)):
        pts = CAM.unproject(depth, roi_origin=origin)
        assert pts.shape == (6, 7, 3) and pts.dtype == np.float32
        for r in range(6):
            for c in range(7):
                d = float(depth[r, c])
                ref = np.array([(c + origin[1] - CAM.cx) / CAM.fx * d, (r + origin[0] - CAM.cy) / CAM.fy * d, d],
                               np.float32)
                np.testing.assert_array_equal(pts[r, c], ref)
    assert np.isnan(CAM.unproject(depth)[2, 3]).all()


def test_rays_match_a_per_pixel_loop():
    rows, cols = np.mgrid[-1:4, 2:9]
    rays = CAM.rays(rows, cols)
    assert rays.shape == rows.shape + (3,)
    for r, c, ray in zip(rows.ravel(), cols.ravel(), rays.reshape(-1, 3)):
        assert ray.tolist() == [(c - CAM.cx) / CAM.fx, (r - CAM.cy) / CAM.fy, 1.0]


@pytest.mark.parametrize("origin", [(0, 0), (7, 11)])
def test_unproject_then_pixels_gives_every_pixel_back(origin):
    cam = PinholeCamera()  # the 640 x 480 default
    rng = np.random.default_rng(2)
    depth = rng.uniform(0.1, 5.0, (48, 64)).astype(np.float32)
    pts = cam.unproject(depth, roi_origin=origin).reshape(-1, 3)
    row, col, valid = cam.pixels(pts)
    rr, cc = np.mgrid[0:48, 0:64]
    assert valid.all()
    np.testing.assert_array_equal(row, rr.ravel() + origin[0])
    np.testing.assert_array_equal(col, cc.ravel() + origin[1])
    flat, _ = cam.pixel_index(pts)
    np.testing.assert_array_equal(flat, (rr.ravel() + origin[0]) * cam.width + cc.ravel() + origin[1])


def test_camera_defaults_matrix_and_validation():
    cam = PinholeCamera()
    assert (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy) == (640, 480, 615.0, 615.0, 319.5, 239.5)
    assert cam.shape == (480, 640)
    cam.validate()
    np.testing.assert_array_equal(CAM.matrix(), [[64.0, 0, 19.5], [0, 32.0, 14.0], [0, 0, 1]])
    k_uv = CAM.matrix() @ np.array([0.3, -0.2, 1.5])
    np.testing.assert_allclose(np.ravel(CAM.project([[0.3, -0.2, 1.5]])), k_uv[:2] / k_uv[2])
    with pytest.raises(TypeError):
        PinholeCamera(640, 480)  # keyword-only: the order of the fields can never be mixed up
    for bad, words in ((dict(width=0), "size"), (dict(height=-3), "size"), (dict(fx=0.0), "focal"),
                       (dict(fy=float("nan")), "focal"), (dict(fx=float("inf")), "focal"),
                       (dict(cx=float("nan")), "principal"), (dict(cy=float("inf")), "principal")):
        with pytest.raises(ValueError, match=words):
            PinholeCamera(**bad).validate()


# ---------------------------------------------------------------- Plane

def test_plane_from_coefficients_normalises_and_orients():
    p = Plane.from_coefficients(0.0, 2.0, 0.0, -0.12)
    np.testing.assert_array_equal(p.normal, [0.0, 1.0, 0.0])
    assert p.offset == pytest.approx(-0.06)
    q = Plane.from_coefficients(0.0, 2.0, 0.0, -0.12, towards=(0.0, -1.0, 0.0))
    np.testing.assert_array_equal(q.normal, [0.0, -1.0, 0.0])
    assert q.offset == pytest.approx(0.06)
    same = Plane.from_coefficients(0.0, 2.0, 0.0, -0.12, towards=(0.1, 1.0, 0.3))
    np.testing.assert_array_equal(same.normal, p.normal)
    assert same.offset == p.offset
    r = Plane.from_coefficients(1.0, -2.0, 2.0, 6.0)
    assert np.linalg.norm(r.normal) == pytest.approx(1.0)
    np.testing.assert_allclose(r.normal, [1 / 3, -2 / 3, 2 / 3])
    assert r.offset == pytest.approx(2.0)
    f = r.flipped()
    np.testing.assert_array_equal(f.normal, -r.normal)
    assert f.offset == -r.offset
    for bad in ((0.0, 0.0, 0.0, 1.0), (float("nan"), 1.0, 0.0, 0.0), (0.0, 1.0, 0.0, float("inf"))):
        with pytest.raises(ValueError, match="plane coefficients"):
            Plane.from_coefficients(*bad)


def test_plane_signed_distance_matches_a_loop():
    rng = np.random.default_rng(3)
    coef = rng.normal(size=4)
    plane = Plane.from_coefficients(*coef)
    pts = rng.normal(size=(500, 3))
    got = plane.signed_distance(pts)
    assert got.shape == (500,) and got.dtype == np.float64
    n = float(np.linalg.norm(coef[:3]))
    ref = [(coef[0] * x + coef[1] * y + coef[2] * z + coef[3]) / n for x, y, z in pts.tolist()]
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(plane.flipped().signed_distance(pts), -got, rtol=1e-12, atol=1e-12)
    # the side a point lies on: along the normal is positive
    on = -plane.offset * plane.normal
    assert abs(plane.signed_distance(on[None])[0]) < 1e-12
    assert plane.signed_distance((on + 0.25 * plane.normal)[None])[0] == pytest.approx(0.25)


# ---------------------------------------------------------------- RigidTransform

def _rotation(rng):
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


def _transform(rng):
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = _rotation(rng), rng.normal(size=3)
    return m


def test_from_matrix_matrix_round_trip_and_identity():
    rng = np.random.default_rng(4)
    m = _transform(rng)
    t = RigidTransform.from_matrix(m)
    np.testing.assert_array_equal(t.matrix(), m)
    np.testing.assert_array_equal(t.rotation, m[:3, :3])
    np.testing.assert_array_equal(t.translation, m[:3, 3])
    np.testing.assert_array_equal(RigidTransform().matrix(), np.eye(4))
    np.testing.assert_array_equal(RigidTransform.identity().matrix(), np.eye(4))


def test_apply_matches_the_homogeneous_product_per_point():
    rng = np.random.default_rng(5)
    m = _transform(rng)
    t = RigidTransform.from_matrix(m)
    pts = rng.normal(size=(200, 3))
    got = t.apply(pts)
    assert got.shape == (200, 3) and got.dtype == np.float64
    for p, g in zip(pts, got):
        np.testing.assert_allclose(g, (m @ np.append(p, 1.0))[:3], rtol=1e-12, atol=1e-12)
    d = t.apply_direction(pts)
    np.testing.assert_allclose(d, pts @ m[:3, :3].T, rtol=1e-12, atol=1e-12)
    one = t.apply_direction(np.array([0.0, 0.0, 1.0]))
    assert one.shape == (3,)
    np.testing.assert_allclose(one, m[:3, 2])
    np.testing.assert_allclose(t.apply(pts.astype(np.float32)), pts.astype(np.float32) @ m[:3, :3].T + m[:3, 3],
                               rtol=1e-12, atol=1e-12)


def test_inverse_and_composition_match_4x4_products():
    rng = np.random.default_rng(6)
    a_m, b_m = _transform(rng), _transform(rng)
    a, b = RigidTransform.from_matrix(a_m), RigidTransform.from_matrix(b_m)
    np.testing.assert_allclose(a.inverse().matrix(), np.linalg.inv(a_m), atol=1e-12)
    np.testing.assert_allclose((a @ b).matrix(), a_m @ b_m, atol=1e-12)
    np.testing.assert_allclose((a @ a.inverse()).matrix(), np.eye(4), atol=1e-12)
    np.testing.assert_allclose((a.inverse() @ a).matrix(), np.eye(4), atol=1e-12)
    pts = rng.normal(size=(50, 3))
    np.testing.assert_allclose((a @ b).apply(pts), a.apply(b.apply(pts)), atol=1e-12)
    np.testing.assert_allclose(a.inverse().apply(a.apply(pts)), pts, atol=1e-12)


def _rodrigues(axis, angle):
    k = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def test_from_quaternion_matches_known_rotations():
    s = np.sqrt(0.5)
    t = RigidTransform.from_quaternion((0.0, 0.0, s, s), (1.0, 2.0, 3.0))  # 90 degrees about z
    np.testing.assert_allclose(t.rotation, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_array_equal(t.translation, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(t.apply([[1.0, 0.0, 0.0]]), [[1.0, 3.0, 3.0]], atol=1e-15)
    np.testing.assert_allclose(RigidTransform.from_quaternion((1.0, 0.0, 0.0, 0.0), np.zeros(3)).rotation,
                               np.diag([1.0, -1.0, -1.0]), atol=1e-15)  # 180 degrees about x
    rng = np.random.default_rng(7)
    for _ in range(20):
        axis, angle = rng.normal(size=3), rng.uniform(-np.pi, np.pi)
        q = np.append(np.sin(angle / 2) * axis / np.linalg.norm(axis), np.cos(angle / 2))
        ref = _rodrigues(axis, angle)
        np.testing.assert_allclose(RigidTransform.from_quaternion(q, np.zeros(3)).rotation, ref, atol=1e-12)
        np.testing.assert_allclose(RigidTransform.from_quaternion(-3.0 * q, np.zeros(3)).rotation, ref, atol=1e-12)
    for bad_q, bad_t in (((0.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0)), ((np.nan, 0.0, 0.0, 1.0), (0.0, 0.0, 0.0)),
                         ((0.0, 0.0, 0.0, 1.0), (0.0, np.inf, 0.0))):
        with pytest.raises(ValueError, match="quaternion"):
            RigidTransform.from_quaternion(bad_q, bad_t)


def test_from_matrix_rejects_matrices_that_are_not_rigid():
    rng = np.random.default_rng(8)
    good = _transform(rng)
    RigidTransform.from_matrix(good + 1e-6)  # within the tolerance
    reflection = good.copy()
    reflection[:3, 0] *= -1
    scaled = good.copy()
    scaled[:3, :3] *= 1.1
    shear = good.copy()
    shear[0, 1] += 0.2
    projective = good.copy()
    projective[3, 0] = 0.5
    not_finite = good.copy()
    not_finite[1, 3] = np.nan
    for bad, words in ((reflection, "proper rotation"), (scaled, "proper rotation"), (shear, "proper rotation"),
                       (projective, "last row"), (not_finite, "finite"), (good[:3], "finite \\(4, 4\\)")):
        with pytest.raises(ValueError, match=words):
            RigidTransform.from_matrix(bad)


def test_rotate_rows_matches_a_loop():
    rng = np.random.default_rng(9)
    pts, m = rng.normal(size=(100, 3)), rng.normal(size=(3, 3))
    got = rotate_rows(pts, m)
    for p, g in zip(pts, got):
        np.testing.assert_allclose(g, [sum(m[j, k] * p[k] for k in range(3)) for j in range(3)], rtol=1e-12,
                                   atol=1e-12)


def test_constructors_copy_and_convert_their_arrays():
    r, t = np.eye(3), [0.0, 1.0, 2.0]
    tf = RigidTransform(r, t)
    r[0, 0] = 5.0  # the caller's array changes later: the transform does not
    assert tf.rotation.dtype == tf.translation.dtype == np.float64 and tf.rotation[0, 0] == 1.0
    np.testing.assert_array_equal(tf.translation, [0.0, 1.0, 2.0])
    with pytest.raises(TypeError):
        tf @ np.eye(4)  # a matrix is not a transform: say so instead of guessing
    plane = Plane([0, 0, 1], 2)
    assert plane.normal.dtype == np.float64 and isinstance(plane.offset, float)
    np.testing.assert_array_equal(plane.signed_distance([[0.0, 0.0, -2.0], [1.0, 1.0, 0.5]]), [0.0, 2.5])


def test_finite_rows_equals_numpy_all_finite():
    """finite_rows is np.isfinite(points).all(axis=1), for NaN and +-inf in any column, float32, float64 and
    integer points, and no points."""
    rng = np.random.default_rng(11)
    for dtype in (np.float32, np.float64):
        p = rng.normal(size=(5000, 3)).astype(dtype)
        hit = rng.random(p.shape) < 0.05
        p[hit] = rng.choice(np.array([np.nan, np.inf, -np.inf], dtype), hit.sum())
        p[0] = np.finfo(dtype).max  # huge but finite
        assert np.array_equal(finite_rows(p), np.isfinite(p).all(axis=1))
        assert finite_rows(p)[0] and not finite_rows(p).all()
    assert finite_rows(np.arange(12).reshape(4, 3)).all()
    assert finite_rows(np.zeros((0, 3))).shape == (0,)


def test_all_columns_equals_numpy_all_along_rows():
    rng = np.random.default_rng(13)
    m = rng.random((4000, 3)) < 0.8
    assert np.array_equal(all_columns(m), m.all(axis=1))
    assert all_columns(np.zeros((0, 3), bool)).shape == (0,)
