"""The viewer's pure conversions (numpy only): cloud subsampling, colours, the query_points cloud, poses,
parameters."""
from __future__ import annotations

import numpy as np
import pytest

from occnet_ros.perception.pointcloud2 import FLOAT32, CloudFormatError, CloudLayout, Field, build_cloud
from occnet_ros.viewer.config import PARAMETERS, ViewerConfig, ViewerParamError, viewer_config
from occnet_ros.viewer.objects_cdr import ObjectView
from occnet_ros.viewer.query_points import query_cloud
from occnet_ros.viewer.scene import (PROBABILITY_STOPS, PoseHistory, StampedPose, even_indices, mesh_colors,
                                     object_color, probability_colors, query_point_arrays, subsample_cloud)


@pytest.mark.parametrize("n,m", [(0, 5), (3, 5), (5, 5), (6, 5), (1000, 7), (10_001, 3000)])
def test_even_indices_spread_and_bounded(n, m):
    idx = even_indices(n, m)
    assert idx.size == min(n, m)
    assert np.all(np.diff(idx) > 0) and (idx.size == 0 or (idx[0] == 0 and idx[-1] < n))
    if n > m:  # gaps differ by at most one
        gaps = np.diff(np.append(idx, n))
        assert gaps.max() - gaps.min() <= 1


def test_even_indices_rejects_zero():
    with pytest.raises(ValueError, match="max_count"):
        even_indices(10, 0)


def test_subsample_cloud_keeps_finite_points_with_their_colours():
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(40, 50, 3)).astype(np.float32)
    xyz[rng.random((40, 50)) < 0.3] = np.nan
    xyz[0, 0, 2] = np.inf
    rgb = rng.integers(0, 256, size=(40, 50, 3), dtype=np.uint8)
    pts, cols = subsample_cloud(xyz, rgb, 500)
    assert pts.shape == (500, 3) and pts.dtype == np.float32 and cols.shape == (500, 3)
    assert np.isfinite(pts).all()
    # each shown point is an input point, with that point's colour (reference: a dictionary lookup)
    lookup = {tuple(p): tuple(c) for p, c in zip(xyz.reshape(-1, 3), rgb.reshape(-1, 3)) if np.isfinite(p).all()}
    assert all(lookup[tuple(p)] == tuple(c) for p, c in zip(pts, cols))
    everything, no_cols = subsample_cloud(xyz, None, 10**6)
    assert everything.shape[0] == len(lookup) and no_cols is None


def test_probability_colors_follow_the_ramp():
    p = np.array([0.0, 0.5, 1.0, -3.0, 7.0, np.nan, 0.25], np.float32)
    c = probability_colors(p)
    stops = PROBABILITY_STOPS[:, 1:].astype(np.uint8)
    assert c.dtype == np.uint8 and c.shape == (7, 3)
    np.testing.assert_array_equal(c[[0, 1, 2]], stops)
    np.testing.assert_array_equal(c[3], stops[0])  # clipped
    np.testing.assert_array_equal(c[4], stops[2])
    np.testing.assert_array_equal(c[5], stops[0])  # NaN as 0
    np.testing.assert_array_equal(c[6], np.round((stops[0].astype(float) + stops[1]) / 2).astype(np.uint8))


def _view(object_id, n_vertices, rgba=None):
    return ObjectView(object_id, f"mask_{object_id}", "cam", np.zeros((n_vertices, 3), np.float32),
                      np.zeros((0, 3), np.uint32), rgba, np.zeros(3), np.array([0, 0, 0, 1.0]), np.ones(3), 1)


def test_mesh_colors_from_vertex_colours_or_id():
    rgba = np.array([[1.0, 0.0, 0.5, 1.0], [0.2, 1.5, -1.0, 0.3]], np.float32)
    np.testing.assert_array_equal(mesh_colors(_view(3, 2, rgba)), [[255, 0, 128], [51, 255, 0]])
    c = mesh_colors(_view(7, 4))
    assert c.shape == (4, 3) and (c == object_color(7)).all()
    assert not np.array_equal(object_color(1), object_color(2))


def test_query_cloud_round_trip_subsampled():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(1234, 3)).astype(np.float32)
    prob = rng.random(1234).astype(np.float32)
    layout, data = query_cloud(pts.reshape(-1).tobytes(), prob, max_points=100)
    assert layout.width == 100 and layout.height == 1 and len(data) == 100 * layout.point_step
    out_pts, out_prob = query_point_arrays(data, layout)
    idx = even_indices(1234, 100)
    np.testing.assert_array_equal(out_pts, pts[idx])
    np.testing.assert_array_equal(out_prob, prob[idx])
    small, _ = query_cloud(pts[:10], prob[:10], max_points=100)
    assert small.width == 10


def test_query_cloud_size_mismatch_and_missing_field():
    with pytest.raises(ValueError, match="3 per probability"):
        query_cloud(np.zeros(9, np.float32), np.zeros(4, np.float32))
    layout, data = build_cloud(np.zeros((5, 3), np.float32))
    with pytest.raises(CloudFormatError, match="probability"):
        query_point_arrays(data, layout)
    bad = CloudLayout(layout.fields + (Field("probability", 12, FLOAT32 + 1),), 1, 5, 20, 100)
    with pytest.raises(CloudFormatError, match="probability"):
        query_point_arrays(bytes(100), bad)


def test_pose_history_nearest_within_tolerance():
    h = PoseHistory(size=3)
    for t in (1.0, 2.0, 3.0, 4.0):
        h.add(StampedPose(t, "world", np.array([t, 0, 0]), np.array([0, 0, 0, 1.0])))
    assert h.find(2.04, "world", 0.05).stamp == 2.0
    assert h.find(1.0, "world", 0.05) is None  # dropped: only the last 3 are kept
    assert h.find(3.2, "world", 0.05) is None
    assert h.find(3.0, "map", 0.05) is None
    with pytest.raises(ValueError, match="quaternion"):
        h.add(StampedPose(5.0, "world", np.zeros(3), np.zeros(4)))


def test_viewer_config_defaults_and_errors():
    assert viewer_config({}) == ViewerConfig()
    assert all(info.doc for info in PARAMETERS.values())
    assert viewer_config({"max_cloud_rate": 5, "axes": "FLU"}).max_cloud_rate == 5
    for values, name in [({"web_port": 0}, "web_port"), ({"max_cloud_points": 0}, "max_cloud_points"),
                         ({"cloud_topic": "no spaces"}, "cloud_topic"), ({"axes": "XYZ"}, "axes"),
                         ({"grpc_port": 9090}, "grpc_port"), ({"memory_limit": "lots"}, "memory_limit"),
                         ({"frame": "/world"}, "frame"), ({"nope": 1}, "nope"), ({"web_port": "80"}, "web_port")]:
        with pytest.raises(ViewerParamError, match=name):
            viewer_config(values)
    assert viewer_config({"cloud_topic": "", "query_topic": ""}).cloud_topic == ""


def test_page_url_and_axes():
    from occnet_ros.viewer.rerun_sink import axes_for, page_url

    assert page_url("localhost", 9090, 9876) == \
        "http://localhost:9090/?url=rerun%2Bhttp%3A%2F%2Flocalhost%3A9876%2Fproxy"
    assert axes_for("camera_color_optical_frame", "auto") == "RDF"
    assert axes_for("world", "auto") == "FLU"
    assert axes_for("world", "RUB") == "RUB"
