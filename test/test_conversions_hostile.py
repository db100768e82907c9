"""Hostile but legal PointCloud2 / Image / CameraInfo content: every decoder either decodes correctly or
raises its own error (CloudFormatError, MessageError) with a clear reason; never another exception, a
huge allocation, a hang or silently wrong numbers. Plus the valid round trips."""
import re
import tracemalloc
import warnings

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg", reason="ROS message packages not installed")
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField  # noqa: E402

from occnet_ros.geometry import PinholeCamera  # noqa: E402
from occnet_ros.perception.pointcloud2 import (FLOAT32, FLOAT64, INT8, INT16, INT32, UINT8, UINT16,  # noqa: E402
                                               UINT32, CloudFormatError, build_cloud)
from occnet_ros.ros import conversions as conv  # noqa: E402
from occnet_ros.ros.conversions import MessageError  # noqa: E402

BIG = 2**32 - 1
XYZ = [("x", 0, FLOAT32, 1), ("y", 4, FLOAT32, 1), ("z", 8, FLOAT32, 1)]


def cloud(fields, data, height=1, width=None, point_step=16, row_step=None, bigendian=False):
    """A PointCloud2 with ``fields`` as (name, offset, datatype, count) tuples."""
    width = len(data) // point_step if width is None else width
    return PointCloud2(height=height, width=width, point_step=point_step,
                       row_step=width * point_step if row_step is None else row_step, is_bigendian=bigendian,
                       fields=[PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields],
                       data=bytes(data))


def points(n=5, seed=0):
    """(n,) structured float32 x, y, z + a uint32 packed rgb at 12; returns (bytes, xyz, rgb)."""
    rng = np.random.default_rng(seed)
    arr = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    xyz = rng.normal(size=(n, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=(n, 3), dtype=np.uint8)
    arr["x"], arr["y"], arr["z"] = xyz.T
    arr["rgb"] = (rgb[:, 0].astype(np.uint32) << 16) | (rgb[:, 1].astype(np.uint32) << 8) | rgb[:, 2]
    return arr.tobytes(), xyz, rgb


# ---------------------------------------------------------------- PointCloud2: refused


@pytest.mark.parametrize("axis", "xyz")
@pytest.mark.parametrize("datatype,name", [(INT8, "INT8"), (UINT8, "UINT8"), (INT16, "INT16"),
                                           (UINT16, "UINT16"), (INT32, "INT32"), (UINT32, "UINT32")])
def test_integer_coordinates_are_refused(axis, datatype, name):
    fields = [(n, o, datatype if n == axis else d, c) for n, o, d, c in XYZ]
    with pytest.raises(CloudFormatError, match=f"field '{axis}' has datatype {name}; coordinates must be "
                                               "FLOAT32 or FLOAT64"):
        conv.pointcloud2_to_arrays(cloud(fields, bytes(32)))


@pytest.mark.parametrize("datatype", [0, 9, 255])
def test_unknown_coordinate_datatype(datatype):
    with pytest.raises(CloudFormatError, match=f"field 'x' has unknown datatype {datatype}"):
        conv.pointcloud2_to_arrays(cloud([("x", 0, datatype, 1)] + XYZ[1:], bytes(32)))


@pytest.mark.parametrize("changes,words", [
    (dict(height=BIG, width=BIG, point_step=BIG, row_step=BIG), "row_step"),
    (dict(height=BIG, width=1, point_step=16, row_step=16), "needs"),
    (dict(height=1, width=BIG, point_step=16, row_step=BIG), "row_step"),
    (dict(height=2, width=1, point_step=16, row_step=BIG), "needs"),
    (dict(height=1, width=2, point_step=BIG, row_step=BIG), "row_step"),
    (dict(height=1, width=1, point_step=BIG, row_step=BIG), "needs"),
    (dict(height=3, width=1, point_step=0, row_step=0), "point_step is 0"),
])
def test_extreme_sizes_are_refused_without_allocating(changes, words):
    msg = cloud(XYZ, bytes(64), **changes)
    tracemalloc.start()
    try:
        with pytest.raises(CloudFormatError, match=words):
            conv.pointcloud2_to_cloud(msg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("field,words", [
    (("x", BIG, FLOAT32, 1), "offset 4294967295"),
    (("x", 0, FLOAT32, BIG), "count 4294967295"),
    (("x", 0, FLOAT64, 1), None),  # fits: 8 bytes in a 16-byte point, overlapping y (a correct decode)
    (("x", 13, FLOAT32, 1), "does not fit in point_step 16"),
])
def test_coordinate_field_offsets_and_counts(field, words):
    msg = cloud([field] + XYZ[1:], bytes(32))
    if words is None:
        assert conv.pointcloud2_to_arrays(msg)[0].shape == (2, 3)
        return
    with pytest.raises(CloudFormatError, match=words):
        conv.pointcloud2_to_arrays(msg)


def test_short_and_empty_data():
    data, _, _ = points(4)
    with pytest.raises(CloudFormatError, match="data has 63 bytes, a 1x4 cloud .* needs 64"):
        conv.pointcloud2_to_arrays(cloud(XYZ, data[:-1], width=4))
    with pytest.raises(CloudFormatError, match="data has 0 bytes"):
        conv.pointcloud2_to_arrays(cloud(XYZ, b"", width=4))
    with pytest.raises(CloudFormatError, match="row_step 31 is smaller than width\\*point_step = 2\\*16"):
        conv.pointcloud2_to_arrays(cloud(XYZ, data, height=2, width=2, row_step=31))


def test_repeated_and_missing_coordinates():
    with pytest.raises(CloudFormatError, match="field 'y' appears twice"):
        conv.pointcloud2_to_arrays(cloud(XYZ + [("y", 12, FLOAT32, 1)], bytes(32)))
    with pytest.raises(CloudFormatError, match="no 'z' field"):
        conv.pointcloud2_to_arrays(cloud(XYZ[:2], bytes(32)))


# ---------------------------------------------------------------- PointCloud2: decoded


@pytest.mark.parametrize("height,width", [(0, 0), (1, 0), (0, BIG), (BIG, 0), (5, 0)])
def test_clouds_without_points_are_empty(height, width):
    out = conv.pointcloud2_to_cloud(cloud(XYZ + [("rgb", 12, FLOAT32, 1)], b"", height=height, width=width,
                                          point_step=16, row_step=0))
    expected = (height, width, 3) if height > 1 else (0, 3)
    assert out.xyz.shape == expected and out.rgb.shape == expected and out.rgb_problem is None
    xyz, rgb = conv.pointcloud2_to_arrays(PointCloud2())  # all defaults: no fields, no steps
    assert xyz.shape == (0, 3) and xyz.dtype == np.float32 and rgb is None


def test_overlapping_repeated_unread_and_unnamed_fields_decode():
    data, xyz, rgb = points(6)
    fields = XYZ + [("rgb", 12, UINT32, 1), ("", 0, 0, BIG), ("", 3, 77, 1),  # unnamed padding, any content
                    ("intensity", 10, UINT16, 1), ("intensity", 2, INT8, 5),  # unread: repeated, overlapping
                    ("ring", BIG, 200, BIG),  # unread: does not fit, unknown datatype
                    ("xx", 0, FLOAT64, 2)]  # overlaps x, y, z, rgb
    out = conv.pointcloud2_to_cloud(cloud(fields, data))
    np.testing.assert_array_equal(out.xyz, xyz)
    np.testing.assert_array_equal(out.rgb, rgb)
    same = conv.pointcloud2_to_arrays(cloud([("x", 0, FLOAT32, 1), ("y", 0, FLOAT32, 1), ("z", 0, FLOAT32, 1)],
                                            data))[0]
    np.testing.assert_array_equal(same, np.repeat(xyz[:, :1], 3, axis=1))


def test_float64_beyond_float32_is_inf_without_warnings():
    arr = np.array([(1e300, -1e300, 0.5)], dtype=[("x", ">f8"), ("y", ">f8"), ("z", ">f8")])
    msg = cloud([("x", 0, FLOAT64, 1), ("y", 8, FLOAT64, 1), ("z", 16, FLOAT64, 1)], arr.tobytes(),
                point_step=24, bigendian=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xyz, _ = conv.pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(xyz, [[np.inf, -np.inf, 0.5]])


# ---------------------------------------------------------------- PointCloud2: colour degrades


@pytest.mark.parametrize("colour,words", [
    ([("rgb", 12, FLOAT64, 1)], "field 'rgb' is 1 x FLOAT64"),
    ([("rgb", 12, FLOAT32, 3)], "field 'rgb' is 3 x FLOAT32"),
    ([("rgba", 12, UINT8, 4)], "field 'rgba' is 4 x UINT8"),
    ([("rgb", 12, 99, 1)], "field 'rgb' is 1 x unknown \\(99\\)"),
    ([("rgb", 14, UINT32, 1)], "field 'rgb' \\(offset 14.* does not fit in point_step 16"),
    ([("rgb", BIG, UINT32, BIG)], "field 'rgb' is 4294967295 x UINT32"),
    ([("rgb", 12, UINT32, 1), ("rgb", 12, FLOAT32, 1)], "field 'rgb' appears twice"),
    ([("r", 12, UINT16, 1), ("g", 13, UINT8, 1), ("b", 14, UINT8, 1)], "field 'r' is 1 x UINT16"),
    ([("r", 12, UINT8, 1), ("g", 13, UINT8, 1)], "colour channel field 'b' is missing"),
    ([("r", 12, UINT8, 1), ("g", 13, UINT8, 1), ("b", 14, UINT8, 2)], "field 'b' is 2 x UINT8"),
    ([("r", 12, UINT8, 1), ("g", 13, UINT8, 1), ("b", BIG, UINT8, 1)], "field 'b' \\(offset 4294967295"),
])
def test_unusable_colour_leaves_the_cloud_without_colour(colour, words):
    data, xyz, _ = points(3)
    msg = cloud(XYZ + colour, data)
    out = conv.pointcloud2_to_cloud(msg)
    np.testing.assert_array_equal(out.xyz, xyz)
    assert out.rgb is None and out.rgb_problem
    assert out.rgb_problem.endswith("the cloud is decoded without colour")
    assert re.search(words, out.rgb_problem), out.rgb_problem
    xyz2, rgb2 = conv.pointcloud2_to_arrays(msg)
    assert rgb2 is None and np.array_equal(xyz2, xyz)
    assert conv.pointcloud2_to_cloud(msg, want_rgb=False).rgb_problem is None


def test_unusable_packed_colour_falls_back_to_channels():
    data, xyz, rgb = points(4)
    b, g, r = 12, 13, 14  # little-endian 0x00RRGGBB: bytes B, G, R, 0
    msg = cloud(XYZ + [("rgb", 12, FLOAT64, 1), ("r", r, UINT8, 1), ("g", g, UINT8, 1), ("b", b, UINT8, 1)], data)
    out = conv.pointcloud2_to_cloud(msg)
    np.testing.assert_array_equal(out.rgb, rgb)
    assert out.rgb_problem is None


# ---------------------------------------------------------------- PointCloud2: round trips


@pytest.mark.parametrize("shape", [(7, 3), (3, 4, 3), (1, 3)])
def test_arrays_pointcloud2_round_trip_with_row_padding(shape):
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=shape).astype(np.float32)
    xyz.reshape(-1, 3)[0, 1] = np.nan
    rgb = rng.integers(0, 256, size=shape, dtype=np.uint8)
    msg = conv.arrays_to_pointcloud2(xyz, rgb)
    out_xyz, out_rgb = conv.pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(out_xyz, xyz)
    np.testing.assert_array_equal(out_rgb, rgb)
    rows = bytes(msg.data)
    padded = b"".join(rows[r * msg.row_step:(r + 1) * msg.row_step] + b"\x7f" * 5 for r in range(msg.height))
    msg.row_step, msg.data = msg.row_step + 5, padded
    out_xyz, out_rgb = conv.pointcloud2_to_arrays(msg)
    np.testing.assert_array_equal(out_xyz, xyz)
    np.testing.assert_array_equal(out_rgb, rgb)


@pytest.mark.parametrize("organized", [False, True])
def test_bigendian_cloud_message(organized):
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(2, 5, 3) if organized else (9, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, size=xyz.shape, dtype=np.uint8)
    layout, data = build_cloud(xyz, rgb, is_bigendian=True)
    msg = cloud([(f.name, f.offset, f.datatype, f.count) for f in layout.fields], data, height=layout.height,
                width=layout.width, point_step=layout.point_step, bigendian=True)
    out = conv.pointcloud2_to_cloud(msg)
    np.testing.assert_array_equal(out.xyz, xyz)
    np.testing.assert_array_equal(out.rgb, rgb)
    assert out.organized == organized


# ---------------------------------------------------------------- Image


def image(height, width, encoding, step, data, bigendian=0):
    return Image(height=height, width=width, encoding=encoding, step=step, data=bytes(data),
                 is_bigendian=bigendian)


def padded_image(arr, encoding, bigendian=0, pad=0):
    """``arr`` (H, W[, C]) written row by row in the given byte order with ``pad`` junk bytes per row."""
    a = np.asarray(arr)
    a = a.astype(a.dtype.newbyteorder(">" if bigendian else "<"))
    rows = [a[r].tobytes() + b"\xa5" * pad for r in range(a.shape[0])]
    return image(a.shape[0], a.shape[1], encoding, len(rows[0]), b"".join(rows), bigendian)


DECODERS = (conv.image_to_array, conv.image_to_mask, conv.image_to_rgb)


@pytest.mark.parametrize("msg,words", [
    (image(2, 2, "", 2, bytes(4)), "unsupported image encoding ''"),
    (image(2, 2, "MONO8", 2, bytes(4)), "'MONO8'"),
    (image(2, 2, "8UC2", 4, bytes(8)), "'8UC2'"),
    (image(2, 2, "yuv420", 2, bytes(6)), "'yuv420'"),
    (image(2, 3, "mono16", 5, bytes(10)), "step 5 is smaller than width\\*channels\\*bytes = 3\\*1\\*2 = 6"),
    (image(2, 3, "rgb8", 9, bytes(17)), "17 bytes, 3x2 'rgb8' with step 9 needs 18"),
    (image(2, 2, "mono8", 2, b""), "0 bytes"),
    (image(BIG, BIG, "mono8", BIG, bytes(8)), "needs"),
    (image(1, BIG, "32SC1", BIG, bytes(8)), "smaller"),
    (image(BIG, 1, "64FC1", 8, bytes(16)), "needs"),
    (image(0, 5, "mono8", 5, bytes(5)), "empty image"),
    (image(5, 0, "mono8", 0, b""), "empty image"),
])
def test_hostile_images_raise_message_error_only(msg, words):
    tracemalloc.start()
    try:
        with pytest.raises(MessageError, match=words):
            conv.image_to_array(msg)
        for decode in DECODERS[1:]:
            with pytest.raises(MessageError):
                decode(msg)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


@pytest.mark.parametrize("encoding", sorted(conv.ENCODINGS))
def test_every_encoding_round_trips_plain_bigendian_and_padded(encoding):
    base, ch = conv.ENCODINGS[encoding]
    rng = np.random.default_rng(3)
    dt = np.dtype(base)
    shape = (3, 5) if ch == 1 else (3, 5, ch)
    if dt.kind == "f":
        arr = rng.normal(size=shape).astype(dt)
        arr.flat[0], arr.flat[1] = np.nan, -np.inf
    else:
        info = np.iinfo(dt)
        arr = rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
        arr.flat[0], arr.flat[1] = info.min, info.max
    np.testing.assert_array_equal(conv.image_to_array(conv.array_to_image(arr, encoding)), arr)
    # big endian (any non-zero is_bigendian) and a step that is not a multiple of the element size
    for bigendian, pad in ((1, 0), (2, 3), (255, 1), (0, 7)):
        out = conv.image_to_array(padded_image(arr, encoding, bigendian, pad))
        np.testing.assert_array_equal(out, arr)
        assert out.dtype == dt and out.dtype.isnative


@pytest.mark.parametrize("encoding,values", [
    ("32UC1", [0, 4294967295, 2**31]), ("32SC1", [-5, -2**31, 2**31 - 1]), ("16UC1", [0, 65535, 1]),
    ("mono16", [65535, 256, 0]), ("mono8", [255, 0, 1]), ("8UC1", [255, 7, 0]),
])
def test_mask_keeps_the_full_range(encoding, values):
    base = conv.ENCODINGS[encoding][0]
    arr = np.array([values, values[::-1]], dtype=base)
    for bigendian in (0, 1):
        out = conv.image_to_mask(padded_image(arr, encoding, bigendian, pad=1))
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, np.array([values, values[::-1]], np.int64))


def test_mono16_is_grey_from_the_high_byte():
    arr = np.array([[0, 255, 256, 65535]], np.uint16)
    out = conv.image_to_rgb(padded_image(arr, "mono16", bigendian=1, pad=1))
    np.testing.assert_array_equal(out, np.repeat(np.array([[0, 0, 1, 255]], np.uint8)[..., None], 3, axis=2))


def yuv_reference(y, u, v):
    """BT.601 studio range YCbCr -> RGB, floating point (u, v already repeated per pixel)."""
    c, d, e = np.maximum(y - 16.0, 0), u - 128.0, v - 128.0
    rgb = np.stack([1.164 * c + 1.596 * e, 1.164 * c - 0.391 * d - 0.813 * e, 1.164 * c + 2.018 * d], -1)
    return np.clip(np.round(rgb), 0, 255)


def test_yuv422_uyvy_and_yuy2():
    rng = np.random.default_rng(4)
    h, w = 4, 6
    y = rng.integers(0, 256, size=(h, w)).astype(np.uint8)
    u, v = (rng.integers(0, 256, size=(h, w // 2)).astype(np.uint8) for _ in range(2))
    y[0, :2], u[0, 0], v[0, 0] = 235, 128, 128  # white
    y[0, 2:4], u[0, 1], v[0, 1] = 16, 128, 128  # black
    y[0, 4:6], u[0, 2], v[0, 2] = 81, 90, 240  # red
    uyvy = np.stack([u, y[:, 0::2], v, y[:, 1::2]], -1).reshape(h, w, 2)
    yuyv = np.stack([y[:, 0::2], u, y[:, 1::2], v], -1).reshape(h, w, 2)
    ref = yuv_reference(y.astype(float), np.repeat(u, 2, 1).astype(float), np.repeat(v, 2, 1).astype(float))
    for enc, arr in (("yuv422", uyvy), ("yuv422_yuy2", yuyv)):
        out = conv.image_to_rgb(padded_image(arr, enc, pad=3))
        assert out.shape == (h, w, 3) and out.dtype == np.uint8
        assert np.abs(out.astype(int) - ref).max() <= 1
        np.testing.assert_array_equal(out[0, :4], [[255] * 3] * 2 + [[0] * 3] * 2)
        assert np.abs(out[0, 4:].astype(int) - [255, 0, 0]).max() <= 1
    with pytest.raises(MessageError, match="odd width 3"):
        conv.image_to_rgb(image(2, 3, "yuv422", 6, bytes(12)))
    with pytest.raises(MessageError, match="step 3 is smaller"):
        conv.image_to_rgb(image(2, 2, "yuv422_yuy2", 3, bytes(12)))


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "8UC3", "yuv420", "uyvy", "bgr16", ""])
def test_other_colour_encodings_are_refused_by_name(encoding):
    with pytest.raises(MessageError, match=f"image encoding '{encoding}' is not a colour encoding "
                                           r"\(supported: rgb8, .*mono16, yuv422, yuv422_yuy2\)"):
        conv.image_to_rgb(image(2, 2, encoding, 12, bytes(24)))


# ---------------------------------------------------------------- CameraInfo


def info(k=(615.0, 0.0, 319.5, 0.0, 616.0, 239.5, 0.0, 0.0, 1.0), width=640, height=480):
    return CameraInfo(k=[float(v) for v in k], width=width, height=height)


def with_k(i, value):
    k = [615.0, 0.0, 319.5, 0.0, 616.0, 239.5, 0.0, 0.0, 1.0]
    k[i] = value
    return info(k)


@pytest.mark.parametrize("msg,words", [
    (with_k(0, np.nan), r"field 'k' has non-finite k\[0\] \(fx\)"),
    (with_k(4, np.inf), r"non-finite k\[4\] \(fy\)"),
    (with_k(2, np.nan), r"non-finite k\[2\] \(cx\)"),
    (with_k(5, -np.inf), r"non-finite k\[5\] \(cy\)"),
    (with_k(8, np.nan), r"non-finite k\[8\]"),
    (with_k(0, 0.0), r"field 'k' has no valid focal lengths: k\[0\] \(fx\) = 0.0"),
    (with_k(4, -616.0), r"k\[4\] \(fy\) = -616.0 must be > 0"),
    (with_k(0, -0.0), "focal"),
    (info([0.0] * 9), "focal"),
    (info(width=0), "field 'width' is 0"),
    (info(height=0), "field 'height' is 0"),
])
def test_hostile_camera_info(msg, words):
    with pytest.raises(MessageError, match=words):
        conv.camera_info_to_intrinsics(msg)


def test_extreme_but_valid_camera_info():
    cam = conv.camera_info_to_intrinsics(info((1e308, 5.0, -1e308, 0.0, 5e-324, 1e300, 0.0, 0.0, 1.0), BIG, BIG))
    assert cam == PinholeCamera(width=BIG, height=BIG, fx=1e308, fy=5e-324, cx=-1e308, cy=1e300)
    cam.validate()
