"""PointCloud2 byte layout <-> numpy, checked against a per-point struct.unpack reference."""
import struct

import numpy as np
import pytest

from occnet_ros.geometry import RigidTransform
from occnet_ros.perception.pointcloud2 import (FLOAT32, FLOAT64, INT16, UINT8, UINT32, CloudFormatError, CloudLayout,
                                    Field, build_cloud, pack_rgb, parse_cloud)

STRUCT_CODES = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}


def reference_parse(data: bytes, layout: CloudLayout):
    """Slow reference: struct.unpack each field of each point."""
    order = ">" if layout.is_bigendian else "<"
    fields = {f.name: f for f in layout.fields}
    xyz = np.empty((layout.height, layout.width, 3), np.float32)
    rgb = None
    if "rgb" in fields:
        rgb = np.empty((layout.height, layout.width, 3), np.uint8)
    for r in range(layout.height):
        for c in range(layout.width):
            base = r * layout.row_step + c * layout.point_step
            for i, a in enumerate("xyz"):
                f = fields[a]
                xyz[r, c, i] = struct.unpack_from(order + STRUCT_CODES[f.datatype], data, base + f.offset)[0]
            if rgb is not None:
                v = struct.unpack_from(order + "I", data, base + fields["rgb"].offset)[0]
                rgb[r, c] = ((v >> 16) & 255, (v >> 8) & 255, v & 255)
    if layout.height <= 1:
        xyz = xyz.reshape(-1, 3)
        rgb = rgb.reshape(-1, 3) if rgb is not None else None
    return xyz, rgb


def make_padded_cloud(rng, height, width, bigendian, xyz_type=FLOAT32, row_pad=0, nan_frac=0.1):
    """A cloud with a padding field, an unused intensity field, an rgb field and row padding, written
    point by point with struct.pack. Returns (layout, data, xyz (H,W,3), rgb (H,W,3))."""
    order = ">" if bigendian else "<"
    size = 4 if xyz_type == FLOAT32 else 8
    fields = (
        Field("x", 0, xyz_type), Field("y", size, xyz_type), Field("z", 2 * size, xyz_type),
        # bytes 3*size .. 3*size+4 are padding (PCL's _ field)
        Field("rgb", 3 * size + 4, FLOAT32),
        Field("intensity", 3 * size + 8, INT16),
        Field("ring", 3 * size + 10, UINT8, count=2),
    )
    point_step = 3 * size + 16
    row_step = width * point_step + row_pad
    xyz = rng.uniform(-3, 3, size=(height, width, 3)).astype(np.float32)
    xyz[rng.random((height, width)) < nan_frac] = np.nan
    rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buf = bytearray(rng.integers(0, 256, size=height * row_step, dtype=np.uint8).tobytes())  # junk padding
    code = STRUCT_CODES[xyz_type]
    for r in range(height):
        for c in range(width):
            base = r * row_step + c * point_step
            struct.pack_into(order + 3 * code, buf, base, *[float(v) for v in xyz[r, c]])
            packed = (int(rgb[r, c, 0]) << 16) | (int(rgb[r, c, 1]) << 8) | int(rgb[r, c, 2]) | (0xAB << 24)
            struct.pack_into(order + "I", buf, base + fields[3].offset, packed)
    layout = CloudLayout(fields, height, width, point_step, row_step, bigendian)
    return layout, bytes(buf), xyz, rgb


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("height,width,row_pad", [(1, 57, 0), (6, 9, 0), (5, 7, 13)])
@pytest.mark.parametrize("xyz_type", [FLOAT32, FLOAT64])
def test_parse_matches_struct_reference(bigendian, height, width, row_pad, xyz_type):
    rng = np.random.default_rng(height * 100 + width + int(bigendian))
    layout, data, xyz, rgb = make_padded_cloud(rng, height, width, bigendian, xyz_type, row_pad)
    out = parse_cloud(data, layout)
    ref_xyz, ref_rgb = reference_parse(data, layout)
    np.testing.assert_array_equal(out.xyz, ref_xyz)  # NaN == NaN for assert_array_equal
    np.testing.assert_array_equal(out.rgb, ref_rgb)
    expected_shape = (height, width, 3) if height > 1 else (width, 3)
    assert out.xyz.shape == expected_shape and out.xyz.dtype == np.float32
    assert out.rgb.dtype == np.uint8
    assert out.organized == (height > 1)
    # and against the generating arrays
    np.testing.assert_array_equal(out.xyz.reshape(-1, 3), xyz.reshape(-1, 3))
    np.testing.assert_array_equal(out.rgb.reshape(-1, 3), rgb.reshape(-1, 3))
    assert np.isnan(out.xyz).any()


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("shape", [(40, 3), (4, 6, 3)])
@pytest.mark.parametrize("with_rgb", [False, True])
def test_build_round_trip_and_reference(bigendian, shape, with_rgb):
    rng = np.random.default_rng(7)
    xyz = rng.normal(size=shape).astype(np.float32)
    xyz.reshape(-1, 3)[3] = np.nan
    rgb = rng.integers(0, 256, size=shape, dtype=np.uint8) if with_rgb else None
    layout, data = build_cloud(xyz, rgb, is_bigendian=bigendian)
    assert len(data) == layout.row_step * layout.height
    assert layout.point_step == (16 if with_rgb else 12)
    out = parse_cloud(data, layout)
    np.testing.assert_array_equal(out.xyz, xyz)
    ref_xyz, ref_rgb = reference_parse(data, layout)
    np.testing.assert_array_equal(ref_xyz, xyz)
    if with_rgb:
        np.testing.assert_array_equal(out.rgb, rgb)
        np.testing.assert_array_equal(ref_rgb, rgb)
    else:
        assert out.rgb is None


def test_rgba_uint32_and_separate_channels():
    rng = np.random.default_rng(3)
    n = 10
    rgb = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    arr = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgba", "<u4")])
    arr["rgba"] = pack_rgb(rgb) | np.uint32(0xFF000000)
    layout = CloudLayout((Field("x", 0, FLOAT32), Field("y", 4, FLOAT32), Field("z", 8, FLOAT32),
                          Field("rgba", 12, UINT32)), 1, n, 16, 16 * n)
    np.testing.assert_array_equal(parse_cloud(arr.tobytes(), layout).rgb, rgb)

    arr2 = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("b", "u1"), ("g", "u1"),
                              ("r", "u1"), ("pad", "u1")])
    arr2["r"], arr2["g"], arr2["b"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    layout2 = CloudLayout((Field("x", 0, FLOAT32), Field("y", 4, FLOAT32), Field("z", 8, FLOAT32),
                           Field("b", 12, UINT8), Field("g", 13, UINT8), Field("r", 14, UINT8)), 1, n, 16, 16 * n)
    np.testing.assert_array_equal(parse_cloud(arr2.tobytes(), layout2).rgb, rgb)


def test_empty_cloud():
    layout, data = build_cloud(np.zeros((0, 3), np.float32))
    out = parse_cloud(data, layout)
    assert out.xyz.shape == (0, 3)


@pytest.mark.parametrize("mutate,match", [
    (lambda L: L.__class__(L.fields, L.height, L.width, L.point_step, L.row_step - 1, L.is_bigendian),
     "row_step"),
    (lambda L: L.__class__(L.fields, L.height + 1, L.width, L.point_step, L.row_step, L.is_bigendian),
     "needs"),
    (lambda L: L.__class__(L.fields[1:], L.height, L.width, L.point_step, L.row_step, L.is_bigendian),
     "no 'x' field"),
    (lambda L: L.__class__(L.fields + (Field("x", 0, FLOAT32),), L.height, L.width, L.point_step, L.row_step,
                           L.is_bigendian), "twice"),
    (lambda L: L.__class__((Field("x", 10, FLOAT32),) + L.fields[1:], L.height, L.width, L.point_step,
                           L.row_step, L.is_bigendian), "does not fit"),
    (lambda L: L.__class__((Field("x", 0, 42),) + L.fields[1:], L.height, L.width, L.point_step,
                           L.row_step, L.is_bigendian), "unknown datatype"),
    (lambda L: L.__class__(L.fields, L.height, L.width, 0, L.row_step, L.is_bigendian), "point_step"),
])
def test_malformed_layouts_are_rejected(mutate, match):
    layout, data = build_cloud(np.zeros((3, 4, 3), np.float32))
    with pytest.raises(CloudFormatError, match=match):
        parse_cloud(data, mutate(layout))


def test_build_rejects_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        build_cloud(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="rgb shape"):
        build_cloud(np.zeros((5, 3)), np.zeros((4, 3), np.uint8))


# ---------------------------------------------------------------- ROS message conversions (occnet_ros.ros)

ros_conv = pytest.importorskip("occnet_ros.ros.conversions", reason="ROS message packages not installed")


def test_pointcloud2_message_round_trip():
    from std_msgs.msg import Header

    rng = np.random.default_rng(11)
    for shape in ((5, 7, 3), (33, 3)):
        xyz = rng.normal(size=shape).astype(np.float32)
        xyz.reshape(-1, 3)[0] = np.nan
        rgb = rng.integers(0, 256, size=shape, dtype=np.uint8)
        msg = ros_conv.arrays_to_pointcloud2(xyz, rgb, Header(frame_id="cam"))
        assert msg.header.frame_id == "cam" and not msg.is_dense
        assert (msg.height, msg.width) == ((5, 7) if len(shape) == 3 else (1, 33))
        out_xyz, out_rgb = ros_conv.pointcloud2_to_arrays(msg)
        np.testing.assert_array_equal(out_xyz, xyz)
        np.testing.assert_array_equal(out_rgb, rgb)


def test_pointcloud2_message_bigendian_padded():
    from sensor_msgs.msg import PointCloud2, PointField

    rng = np.random.default_rng(12)
    layout, data, xyz, rgb = make_padded_cloud(rng, 4, 5, True, FLOAT32, row_pad=8)
    msg = PointCloud2(height=4, width=5, point_step=layout.point_step, row_step=layout.row_step, is_bigendian=True)
    msg.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count) for f in layout.fields]
    msg.data = data
    out_xyz, out_rgb = ros_conv.pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(out_xyz, xyz)
    np.testing.assert_array_equal(out_rgb, rgb)


def _image(arr, encoding, bigendian=False, pad=0):
    """A sensor_msgs/Image written row by row with struct-like byte order and ``pad`` bytes per row."""
    from sensor_msgs.msg import Image

    a = np.asarray(arr)
    order = ">" if bigendian else "<"
    a = a.astype(a.dtype.newbyteorder(order))
    rows = [a[r].tobytes() + b"\xee" * pad for r in range(a.shape[0])]
    return Image(height=a.shape[0], width=a.shape[1], encoding=encoding, is_bigendian=bigendian,
                 step=len(rows[0]), data=b"".join(rows))


@pytest.mark.parametrize("encoding,dtype", [("mono8", np.uint8), ("mono16", np.uint16), ("16UC1", np.uint16),
                                            ("32SC1", np.int32), ("32UC1", np.uint32)])
@pytest.mark.parametrize("bigendian", [False, True])
def test_mask_images(encoding, dtype, bigendian):
    rng = np.random.default_rng(13)
    mask = rng.integers(0, min(np.iinfo(dtype).max, 70000), size=(6, 9)).astype(dtype)
    out = ros_conv.image_to_mask(_image(mask, encoding, bigendian, pad=5))
    np.testing.assert_array_equal(out, mask.astype(np.int64))
    assert out.shape == (6, 9)


def test_colour_images_and_round_trip():
    rng = np.random.default_rng(14)
    rgb = rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(ros_conv.image_to_rgb(_image(rgb, "rgb8", pad=3)), rgb)
    np.testing.assert_array_equal(ros_conv.image_to_rgb(_image(rgb[..., ::-1], "bgr8", pad=2)), rgb)
    rgba = np.concatenate([rgb[..., ::-1], np.full((4, 6, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(ros_conv.image_to_rgb(_image(rgba, "bgra8")), rgb)
    for enc, arr in (("rgb8", rgb), ("mono16", rgb[..., 0].astype(np.uint16) * 200)):
        msg = ros_conv.array_to_image(arr, enc)
        np.testing.assert_array_equal(ros_conv.image_to_array(msg), arr)


@pytest.mark.parametrize("mutate,words", [
    (lambda m: setattr(m, "encoding", "yuv422"), "not an integer label image"),
    (lambda m: setattr(m, "step", 3), "step 3"),
    (lambda m: setattr(m, "data", bytes(m.data)[:-1]), "needs"),
    (lambda m: setattr(m, "height", 0), "empty"),
])
def test_malformed_images(mutate, words):
    msg = ros_conv.array_to_image(np.zeros((4, 5), np.uint16), "mono16")
    mutate(msg)
    with pytest.raises(ros_conv.MessageError, match=words):
        ros_conv.image_to_mask(msg)


def test_wrong_kind_of_image():
    with pytest.raises(ros_conv.MessageError, match="unsupported image encoding 'yuv422'"):
        ros_conv.image_to_array(ros_conv.Image(encoding="yuv422", height=2, width=2, step=4, data=bytes(8)))
    with pytest.raises(ros_conv.MessageError, match="not an integer label"):
        ros_conv.image_to_mask(ros_conv.array_to_image(np.zeros((2, 2, 3)), "rgb8"))
    with pytest.raises(ros_conv.MessageError, match="not a colour"):
        ros_conv.image_to_rgb(ros_conv.array_to_image(np.zeros((2, 2)), "16UC1"))
    with pytest.raises(ros_conv.MessageError, match="does not fit encoding"):
        ros_conv.array_to_image(np.zeros((2, 2)), "rgb8")


def test_camera_info():
    from occnet_ros.geometry import PinholeCamera

    cam = PinholeCamera(width=640, height=480, fx=615.0, fy=616.0, cx=319.5, cy=239.5)
    info = ros_conv.camera_info(cam)
    assert list(info.k) == [615.0, 0.0, 319.5, 0.0, 616.0, 239.5, 0.0, 0.0, 1.0]
    assert list(info.p) == [615.0, 0.0, 319.5, 0.0, 0.0, 616.0, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert (info.width, info.height) == (640, 480) and list(info.d) == [0.0] * 5
    assert ros_conv.camera_info_to_intrinsics(info) == cam
    info.k = [0.0] * 9
    with pytest.raises(ros_conv.MessageError, match="focal"):
        ros_conv.camera_info_to_intrinsics(info)


def test_mesh_and_pose_conversions():
    from geometry_msgs.msg import Quaternion, Transform, Vector3

    rng = np.random.default_rng(15)
    v = rng.normal(size=(10, 3))
    f = rng.integers(0, 10, size=(7, 3))
    v2, f2 = ros_conv.mesh_msg_to_arrays(ros_conv.mesh_to_msg(v, f))
    np.testing.assert_allclose(v2, v)
    np.testing.assert_array_equal(f2, f)
    with pytest.raises(ValueError, match="face indices"):
        ros_conv.mesh_to_msg(v, f + 10)
    for _ in range(20):
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        q *= np.sign(np.linalg.det(q))
        quat = ros_conv.quaternion_from_matrix(q)
        assert abs(np.linalg.norm(quat) - 1) < 1e-9 and quat[3] >= 0
        np.testing.assert_allclose(RigidTransform.from_quaternion(quat, np.zeros(3)).rotation, q, atol=1e-9)
        t = rng.normal(size=3)
        m = ros_conv.pose_to_transform(ros_conv.pose_from_rt(q, t))
        np.testing.assert_allclose(m.rotation, q, atol=1e-9)
        np.testing.assert_allclose(m.translation, t)
        msg = Transform(translation=Vector3(x=t[0], y=t[1], z=t[2]),
                        rotation=Quaternion(x=quat[0], y=quat[1], z=quat[2], w=quat[3]))
        tf = ros_conv.transform_msg_to_rigid(msg)
        np.testing.assert_allclose(tf.rotation, q, atol=1e-9)
        np.testing.assert_allclose(tf.translation, t)
    with pytest.raises(ros_conv.MessageError, match="quaternion"):
        ros_conv.transform_msg_to_rigid(Transform(rotation=Quaternion(x=0.0, y=0.0, z=0.0, w=0.0)))


def test_markers():
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker, MarkerArray

    from occnet_ros.ros.markers import MeshView, marker_array, marker_id

    assert marker_id(5) == 5 and marker_id(2**32 - 1) == -1 and marker_id(2**31) == -(2**31)
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    f = np.array([[0, 1, 2], [0, 2, 3]])
    col = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]], np.uint8)
    views = [MeshView(1, v, f, col), MeshView(2, v, f), MeshView(3, v, np.zeros((0, 3), int))]
    data, shown = marker_array(views, {2, 3, 9}, Header(frame_id="cam"), alpha=0.5)
    assert shown == {1, 2} and isinstance(data, bytes)  # the serialized MarkerArray
    arr = deserialize_message(data, MarkerArray)
    adds = {m.id: m for m in arr.markers if m.action == Marker.ADD}
    deletes = sorted(m.id for m in arr.markers if m.action == Marker.DELETE)
    assert sorted(adds) == [1, 2] and deletes == [3, 9]
    m1 = adds[1]
    assert m1.type == Marker.TRIANGLE_LIST and len(m1.points) == 6 and len(m1.colors) == 6
    pts = np.array([(p.x, p.y, p.z) for p in m1.points])
    np.testing.assert_array_equal(pts, v[f.reshape(-1)])
    assert (m1.colors[2].b, m1.colors[5].r, m1.colors[0].a) == (1.0, 1.0, 0.5)
    assert len(adds[2].colors) == 0 and adds[2].color.a == 0.5
