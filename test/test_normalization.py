"""The canonical frame: round trips, axes, invariances, and that a partial view's object fits the box."""
import numpy as np
import pytest

from occnet_ros.reconstruction.normalization import (
    BOX_HALF,
    NormalizationError,
    canonical_frame_from_observation,
)


def _rot_about(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _front_of_sphere(center, radius, n, rng, viewpoint=np.zeros(3)):
    """Points on the half of a sphere that faces the viewpoint."""
    d = rng.normal(size=(4 * n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    to_cam = viewpoint - center
    d = d[d @ to_cam > 0][:n]
    return center + radius * d


def test_round_trip_and_orthonormal_axes():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(500, 3)) * [0.1, 0.05, 0.02] + [0.1, -0.05, 0.8]
    frame = canonical_frame_from_observation(pts, up=(0, -1, 0))
    np.testing.assert_allclose(frame.rotation @ frame.rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(frame.rotation) == pytest.approx(1.0)
    back = frame.from_canonical(frame.to_canonical(pts))
    np.testing.assert_allclose(back, pts, atol=1e-5)
    m = frame.matrix()
    can = frame.to_canonical(pts)
    via_matrix = (m[:3, :3] @ can.T).T + m[:3, 3]
    np.testing.assert_allclose(via_matrix, pts, atol=1e-5)


def test_axes_follow_up_and_view_direction():
    rng = np.random.default_rng(1)
    pts = _front_of_sphere(np.array([0.0, 0.1, 1.0]), 0.05, 400, rng)
    up = np.array([0.0, -1.0, 0.0])
    frame = canonical_frame_from_observation(pts, up=up)
    np.testing.assert_allclose(frame.rotation[2], up, atol=1e-12)  # canonical z = up
    # x is horizontal (orthogonal to up) and points away from the camera (optical z for a level camera)
    assert abs(frame.rotation[0] @ up) < 1e-12
    assert frame.rotation[0] @ np.array([0, 0, 1.0]) > 0.99


def test_invariant_to_rigid_motion_about_up_and_to_scale():
    rng = np.random.default_rng(2)
    pts = _front_of_sphere(np.array([0.05, 0.0, 0.7]), 0.06, 300, rng)
    up = np.array([0.0, -1.0, 0.0])
    ref = canonical_frame_from_observation(pts, up=up).to_canonical(pts)
    r = _rot_about(up, 0.7)
    t = np.array([0.3, -0.2, 0.5])
    moved = (pts @ r.T + t) * 2.5
    viewpoint = t * 2.5  # the camera moves with the scene
    out = canonical_frame_from_observation(moved, up=r @ up, viewpoint=viewpoint).to_canonical(moved)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_partial_view_of_sphere_fits_box_and_is_centred():
    rng = np.random.default_rng(3)
    center = np.array([0.0, 0.0, 0.9])
    pts = _front_of_sphere(center, 0.1, 2000, rng)
    frame = canonical_frame_from_observation(pts, up=(0, -1, 0))
    full = center + 0.1 * rng.normal(size=(2000, 3)) / 1.0
    full = center + 0.1 * (full - center) / np.linalg.norm(full - center, axis=1, keepdims=True)
    can = frame.to_canonical(full)
    assert np.all(np.abs(can) <= BOX_HALF)
    # the assumed depth (= width) puts the canonical origin near the true centre
    np.testing.assert_allclose(frame.from_canonical(np.zeros((1, 3)))[0], center, atol=0.01)


def test_box_corners_and_scale():
    # symmetric about the optical axis, so the horizontal view direction is exactly optical z
    pts = np.array([[-0.1, -0.05, 1.0], [0.1, -0.05, 1.0], [-0.1, 0.05, 1.0], [0.1, 0.05, 1.05]])
    frame = canonical_frame_from_observation(pts, up=(0, -1, 0))
    assert frame.scale == pytest.approx(0.2)
    corners = frame.box_corners_source()
    assert corners.shape == (8, 3)
    edge = np.linalg.norm(corners[1] - corners[0])
    assert edge == pytest.approx(2 * BOX_HALF * 0.2, rel=1e-5)


@pytest.mark.parametrize(
    "pts,up,match",
    [
        (np.zeros((2, 3)), (0, -1, 0), "at least 3"),
        (np.array([[0, 0, 1.0], [np.nan, 0, 1], [0, 1, 1]]), (0, -1, 0), "NaN"),
        (np.random.default_rng(0).normal(size=(10, 3)), (0, 0, 0), "up vector"),
        (np.tile([[0.0, 0.0, 1.0]], (10, 1)), (0, -1, 0), "extent"),
    ],
)
def test_bad_observations_raise(pts, up, match):
    with pytest.raises(NormalizationError, match=match):
        canonical_frame_from_observation(pts, up=up)


def test_looking_straight_down_is_deterministic():
    rng = np.random.default_rng(4)
    pts = rng.uniform(-0.05, 0.05, size=(100, 3)) + [0, 0, 0.8]
    f1 = canonical_frame_from_observation(pts, up=(0, 0, -1))
    f2 = canonical_frame_from_observation(pts.copy(), up=(0, 0, -1))
    np.testing.assert_array_equal(f1.rotation, f2.rotation)
    np.testing.assert_allclose(f1.rotation[2], [0, 0, -1])
