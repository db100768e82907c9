"""The viewer's numpy decoder of serialized ReconstructedObjectArray messages, against rclpy's serializer
(the reference), and its errors on malformed bytes."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
from rclpy.serialization import serialize_message  # noqa: E402

from occnet_ros.msg import ReconstructedObject, ReconstructedObjectArray  # noqa: E402
from occnet_ros.ros.conversions import colors_to_msgs, mesh_to_msg, pose_from_rt, vector3  # noqa: E402
from occnet_ros.ros.markers import id_color  # noqa: E402
from occnet_ros.viewer.objects_cdr import ObjectsDecodeError, decode_object_array  # noqa: E402
from occnet_ros.viewer.scene import object_color  # noqa: E402


def _message(seed: int = 0) -> tuple[ReconstructedObjectArray, list[dict]]:
    rng = np.random.default_rng(seed)
    msg = ReconstructedObjectArray()
    msg.header.frame_id = "camera_color_optical_frame"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 500_000_000
    truth = []
    for k, (oid, nv, nf, coloured) in enumerate([(3, 7, 5, True), (2**32 - 2, 4, 2, False), (9, 0, 0, False)]):
        o = ReconstructedObject()
        o.header = msg.header
        o.id, o.label = oid, f"mask_{oid}é"
        v = rng.normal(size=(nv, 3))
        f = rng.integers(0, max(nv, 1), size=(nf, 3))
        o.mesh = mesh_to_msg(v, f)
        rgb = rng.integers(0, 256, size=(nv, 3)) if coloured else None
        if coloured:
            o.vertex_colors = colors_to_msgs(rgb)
        o.pose = pose_from_rt(np.eye(3), rng.normal(size=3))
        o.scale = 0.1 * (k + 1)
        centre, size = rng.normal(size=3), rng.random(3)
        o.bbox_pose = pose_from_rt(np.eye(3), centre)
        o.bbox_size = vector3(size)
        o.num_observed_points, o.num_views, o.reconstruction_time = 100 + k, k + 1, 0.25
        msg.objects.append(o)
        truth.append(dict(id=oid, v=v, f=f, rgb=rgb, centre=centre, size=size, views=k + 1))
    return msg, truth


def test_decode_matches_the_message():
    msg, truth = _message()
    out = decode_object_array(serialize_message(msg))
    assert out.frame_id == "camera_color_optical_frame" and out.stamp == pytest.approx(12.5)
    assert len(out.objects) == 3
    for o, t in zip(out.objects, truth):
        assert o.object_id == t["id"] and o.label == f"mask_{t['id']}é" and o.frame_id == out.frame_id
        np.testing.assert_allclose(o.vertices, t["v"].reshape(-1, 3), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(o.faces, t["f"].reshape(-1, 3))
        assert o.vertices.dtype == np.float32 and o.faces.dtype == np.uint32
        if t["rgb"] is None:
            assert o.vertex_rgba is None
        else:
            np.testing.assert_allclose(o.vertex_rgba[:, :3] * 255, t["rgb"], atol=1e-3)
        np.testing.assert_allclose(o.bbox_center, t["centre"])
        np.testing.assert_allclose(o.bbox_size, t["size"])
        np.testing.assert_allclose(o.bbox_quaternion, [0, 0, 0, 1], atol=1e-12)
        assert o.num_views == t["views"]


def test_decode_empty_array():
    msg = ReconstructedObjectArray()
    msg.header.frame_id = "world"
    out = decode_object_array(serialize_message(msg))
    assert out.objects == [] and out.frame_id == "world"


def test_malformed_bytes_raise_named_errors():
    data = serialize_message(_message()[0])
    for cut in (0, 3, 10, len(data) // 2, len(data) - 1):
        with pytest.raises(ObjectsDecodeError):
            decode_object_array(data[:cut])
    with pytest.raises(ObjectsDecodeError, match="encapsulation"):
        decode_object_array(b"\x00\x07" + data[2:])
    huge = bytearray(data)
    pos = 4 + 8 + 4 + len("camera_color_optical_frame") + 1
    pos += -(pos - 4) % 4
    huge[pos:pos + 4] = (10**9).to_bytes(4, "little")
    with pytest.raises(ObjectsDecodeError, match="objects"):
        decode_object_array(bytes(huge))


def test_object_colour_matches_rviz_markers():
    for oid in (0, 1, 2, 5, 77, 2**32 - 1):
        np.testing.assert_array_equal(object_color(oid), np.round(np.array(id_color(oid)) * 255).astype(np.uint8))
