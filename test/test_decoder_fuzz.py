"""Property-based fuzzing of the decoders of incoming messages (hypothesis, derandomized so CI is
reproducible): arbitrary content gives a result or the decoder's own error, never another exception;
results are checked against an independent reading of the bytes; valid clouds round-trip exactly."""
import array
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

pytest.importorskip("sensor_msgs.msg", reason="ROS message packages not installed")
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField  # noqa: E402

from occnet_ros.geometry import PinholeCamera, RigidTransform, TransformError  # noqa: E402
from occnet_ros.perception.object_store import ObjectStore, StoredObject  # noqa: E402
from occnet_ros.perception.pointcloud2 import (FLOAT32, FLOAT64, INT8, INT32, UINT8, UINT32,  # noqa: E402
                                               CloudArrays, CloudFormatError, CloudLayout, Field, parse_cloud)
from occnet_ros.perception.query import QueryAnswer, answer_query  # noqa: E402
from occnet_ros.reconstruction.normalization import BOX_HALF, canonical_frame_from_observation  # noqa: E402
from occnet_ros.ros import conversions as conv  # noqa: E402
from occnet_ros.ros.conversions import MessageError  # noqa: E402

FUZZ = settings(deadline=None, max_examples=250, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
BIG = 2**32 - 1
U32 = st.one_of(st.integers(0, 12), st.sampled_from([2**31 - 1, 2**31, BIG - 1, BIG]), st.integers(0, BIG))
STRUCT = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}


def same(a, b) -> bool:
    """Equal arrays, NaN equal to NaN."""
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def to_msg(layout: CloudLayout, data: bytes) -> PointCloud2:
    return PointCloud2(height=layout.height, width=layout.width, point_step=layout.point_step,
                       row_step=layout.row_step, is_bigendian=layout.is_bigendian, data=data,
                       fields=[PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                               for f in layout.fields])


# ---------------------------------------------------------------- (a) arbitrary clouds

NAMES = st.one_of(st.sampled_from(["x", "y", "z", "rgb", "rgba", "r", "g", "b", "", "intensity"]),
                  st.text(max_size=3))
FIELDS = st.builds(Field, NAMES, st.one_of(st.integers(0, 24), U32),
                   st.one_of(st.integers(1, 8), st.integers(0, 255)), st.one_of(st.integers(0, 3), U32))


@st.composite
def arbitrary_clouds(draw):
    """Half of them plausible (coordinates, maybe colour, small consistent sizes and enough data) so that
    many get past the checks; the rest anything a message can hold."""
    plausible, fields = draw(st.booleans()), []
    if plausible or draw(st.booleans()):
        dt = draw(st.sampled_from([FLOAT32, FLOAT32, FLOAT64, INT8, UINT32]))
        size = 8 if dt == FLOAT64 else 4
        fields = [Field(a, i * size, dt) for i, a in enumerate("xyz")]
        if draw(st.booleans()):
            fields.append(Field(draw(st.sampled_from(["rgb", "rgba"])), 3 * size,
                                draw(st.sampled_from([FLOAT32, UINT32, INT32, FLOAT64, UINT8])),
                                draw(st.sampled_from([1, 1, 1, 2]))))
    fields = draw(st.permutations(fields + draw(st.lists(FIELDS, max_size=2 if plausible else 5))))
    if plausible:
        end = max([f.offset + 8 * f.count for f in fields if f.name in ("x", "y", "z", "rgb", "rgba")] + [12])
        h, w, ps = draw(st.integers(0, 4)), draw(st.integers(0, 6)), end + draw(st.integers(-4, 8))
        rs = w * ps + draw(st.integers(0, 8))
    else:
        h, w = (draw(st.one_of(st.integers(0, 4), U32)) for _ in range(2))
        ps = draw(st.one_of(st.integers(0, 40), U32))
        rs = draw(st.one_of(st.just(min(w * ps, BIG)), st.integers(0, 200), U32))
    need = (h - 1) * rs + w * ps if h and w else 0
    if 0 <= need <= 2048 and (plausible or draw(st.booleans())):
        data = draw(st.binary(min_size=need, max_size=need + 5))
    else:
        data = draw(st.binary(max_size=300))
    return CloudLayout(tuple(fields), h, w, ps, rs, draw(st.booleans())), data


@FUZZ
@given(arbitrary_clouds())
def test_arbitrary_clouds_decode_or_raise_cloud_format_error(case):
    layout, data = case
    try:
        out = parse_cloud(data, layout)
    except CloudFormatError as e:
        event("refused")
        assert str(e)
        with pytest.raises(CloudFormatError) as via_msg:
            conv.pointcloud2_to_cloud(to_msg(layout, data))
        assert str(via_msg.value) == str(e)
        return
    event("decoded, " + ("no colour" if out.rgb is None and out.rgb_problem is None else
                         "colour problem" if out.rgb is None else "colour"))
    assert isinstance(out, CloudArrays) and out.xyz.dtype == np.float32
    h, w = layout.height, layout.width
    assert out.xyz.shape == ((h, w, 3) if h > 1 else (h * w, 3))
    assert out.rgb is None or (out.rgb.shape == out.xyz.shape and out.rgb.dtype == np.uint8)
    assert out.rgb_problem is None or (out.rgb is None and out.rgb_problem)
    via_msg = conv.pointcloud2_to_cloud(to_msg(layout, data))
    assert same(via_msg.xyz, out.xyz) and via_msg.rgb_problem == out.rgb_problem
    if h * w:  # the last point against struct.unpack
        order = ">" if layout.is_bigendian else "<"
        base = (h - 1) * layout.row_step + (w - 1) * layout.point_step
        for i, axis in enumerate("xyz"):
            f = next(f for f in layout.fields if f.name == axis)
            assert f.datatype in (FLOAT32, FLOAT64) and f.count == 1
            with np.errstate(over="ignore"):
                v = np.float32(struct.unpack_from(order + STRUCT[f.datatype], data, base + f.offset)[0])
            assert same(out.xyz.reshape(-1, 3)[-1, i:i + 1], np.array([v]))


# ---------------------------------------------------------------- (b) valid clouds round-trip


@st.composite
def valid_clouds(draw):
    h, w = draw(st.integers(0, 4)), draw(st.integers(0, 6))
    coord = draw(st.sampled_from([FLOAT32, FLOAT64]))
    colour = draw(st.sampled_from([None, FLOAT32, UINT32, INT32, "rgba", "channels"]))
    big = draw(st.booleans())
    parts = [(a, coord, 8 if coord == FLOAT64 else 4) for a in "xyz"]
    if colour == "channels":
        parts += [(c, UINT8, 1) for c in "rgb"]
    elif colour is not None:
        parts += [("rgba", UINT32, 4)] if colour == "rgba" else [("rgb", colour, 4)]
    parts = draw(st.permutations(parts))
    offsets, cursor = {}, 0
    for name, dt, size in parts:
        cursor += draw(st.integers(0, 3))  # gaps: unnamed padding
        offsets[name], cursor = cursor, cursor + size
    ps = cursor + draw(st.integers(0, 5))
    rs = w * ps + draw(st.integers(0, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    xyz = rng.normal(scale=3, size=(h, w, 3)).astype(np.float32)
    xyz[rng.random((h, w, 3)) < 0.1] = np.nan
    xyz[rng.random((h, w, 3)) < 0.03] = np.inf
    rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    order = ">" if big else "<"
    formats = [order + ("u1" if dt == UINT8 else "u4" if name in ("rgb", "rgba")  # packed colour: its bits
                        else "f8" if dt == FLOAT64 else "f4") for name, dt, _ in parts]
    write = np.dtype({"names": [p[0] for p in parts], "offsets": [offsets[p[0]] for p in parts],
                      "formats": formats, "itemsize": ps})
    arr = np.zeros((h, w), write)
    for i, a in enumerate("xyz"):
        arr[a] = xyz[..., i]
    packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
    for name in ("rgb", "rgba"):
        if name in offsets:
            arr[name] = packed | np.uint32(rng.integers(0, 256) << 24)
    for i, c in enumerate("rgb"):
        if c in offsets and colour == "channels":
            arr[c] = rgb[..., i]
    buf = rng.integers(0, 256, size=(h, rs), dtype=np.uint8)  # junk padding
    if h and w:
        buf[:, :w * ps] = arr.view(np.uint8).reshape(h, w * ps)
    fields = [Field(n, offsets[n], dt) for n, dt, _ in parts] + [Field("", 0, 0, BIG)]
    layout = CloudLayout(tuple(draw(st.permutations(fields))), h, w, ps, rs, big)
    return layout, buf.tobytes(), xyz, (rgb if colour is not None else None)


@FUZZ
@given(valid_clouds())
def test_valid_clouds_round_trip_exactly(case):
    layout, data, xyz, rgb = case
    out = conv.pointcloud2_to_cloud(to_msg(layout, data))
    shape = (layout.height, layout.width, 3) if layout.height > 1 else (-1, 3)
    assert same(out.xyz, xyz.reshape(shape)) and out.organized == (layout.height > 1)
    assert out.rgb_problem is None
    if rgb is None:
        assert out.rgb is None
    else:
        np.testing.assert_array_equal(out.rgb, rgb.reshape(shape))


# ---------------------------------------------------------------- (c) images

ENCODINGS = st.one_of(st.sampled_from(sorted(conv.ENCODINGS) + ["yuv422", "yuv422_yuy2", "", "MONO8", "bgr16",
                                                                 "8UC2", "uyvy", "nv12"]), st.text(max_size=5))


@st.composite
def images(draw):
    """Half of them plausible (a known encoding, small sizes, a step >= the row, enough data)."""
    plausible = draw(st.booleans())
    enc = draw(st.sampled_from(sorted(conv.ENCODINGS) + ["yuv422", "yuv422_yuy2"]) if plausible else ENCODINGS)
    base, ch = conv.ENCODINGS.get(enc, ("u1", 2))
    row_of = lambda width: width * ch * np.dtype(base).itemsize  # noqa: E731
    if plausible:
        h, w = draw(st.integers(1, 5)), draw(st.integers(1, 6))
        step = row_of(w) + draw(st.integers(0, 3))
    else:
        h, w = (draw(st.one_of(st.integers(0, 5), U32)) for _ in range(2))
        step = draw(st.one_of(st.just(min(row_of(w), BIG)), st.just(min(row_of(w) + 1, BIG)), st.integers(0, 64),
                              U32))
    row = row_of(w)
    need = (h - 1) * step + row if h and w else 0
    if 0 <= need <= 2048 and (plausible or draw(st.booleans())):
        data = draw(st.binary(min_size=need, max_size=need + 3))
    else:
        data = draw(st.binary(max_size=200))
    return Image(height=h, width=w, encoding=enc, step=step, data=data, is_bigendian=draw(st.integers(0, 255)))


@FUZZ
@given(images())
def test_arbitrary_images_decode_or_raise_message_error(msg):
    h, w = msg.height, msg.width
    try:
        a = conv.image_to_array(msg)
    except MessageError as e:
        event("refused")
        assert str(e)
    else:
        event("decoded")
        base, ch = conv.ENCODINGS[msg.encoding]
        assert a.shape == ((h, w) if ch == 1 else (h, w, ch)) and a.dtype == np.dtype(base)
        dt = np.dtype(base).newbyteorder(">" if msg.is_bigendian else "<")
        start = (h - 1) * msg.step + (w - 1) * ch * dt.itemsize
        last = np.frombuffer(bytes(msg.data)[start:start + ch * dt.itemsize], dt)
        assert same(a.reshape(h, w, ch)[-1, -1].astype(float), last.astype(float))
    for decode, dtype, shape in ((conv.image_to_mask, np.int64, (h, w)), (conv.image_to_rgb, np.uint8, (h, w, 3))):
        try:
            out = decode(msg)
        except MessageError as e:
            assert str(e)
        else:
            assert out.dtype == dtype and out.shape == shape


# ---------------------------------------------------------------- (d) camera info

K_VALUES = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-2000, 2000),
                     st.sampled_from([0.0, -0.0, 1.0, 5e-324]))


@FUZZ
@given(st.lists(K_VALUES, min_size=9, max_size=9), U32, U32)
def test_arbitrary_camera_info(k, width, height):
    msg = CameraInfo(k=k, width=width, height=height)
    valid = bool(np.isfinite(k).all()) and k[0] > 0 and k[4] > 0 and width > 0 and height > 0
    try:
        cam = conv.camera_info_to_intrinsics(msg)
    except MessageError as e:
        assert not valid and str(e)
        event("refused")
        return
    event("accepted")
    assert valid and isinstance(cam, PinholeCamera)
    cam.validate()
    assert (cam.width, cam.height, cam.fx, cam.fy, cam.cx, cam.cy) == (width, height, k[0], k[4], k[2], k[5])


# ---------------------------------------------------------------- (e) occupancy queries


class Ball:
    """TEST DOUBLE of a reconstruction: occupancy 1 - |c| / BOX_HALF (clipped) in its canonical frame."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.frame = canonical_frame_from_observation(rng.normal(size=(200, 3)) * 0.05 + [0, 0, 1], (0, -1, 0))

    def query_canonical(self, c, mode="exact"):
        return np.clip(1 - np.linalg.norm(c, axis=1) / BOX_HALF, 0, 1).astype(np.float32)


STORES = {"empty": ObjectStore(), "one": ObjectStore()}
STORES["one"].replace([StoredObject(7, "ball", Ball())], "cam", 1.0)
CAM_TO_WORLD = RigidTransform(np.array([[np.cos(0.3), -np.sin(0.3), 0], [np.sin(0.3), np.cos(0.3), 0], [0, 0, 1]]),
                              [0.1, 0.0, -0.2])


def transform(target, source):
    if (target, source) == ("cam", "world"):
        return CAM_TO_WORLD.inverse()
    if (target, source) == ("world", "cam"):
        return CAM_TO_WORLD
    raise TransformError(f"no transform from '{source}' to '{target}'")


def near_object(values) -> array.array:
    """Flat offsets -> flat float32 points around the ball's centre (0, 0, 1), whole triples only."""
    p = np.asarray(values[:len(values) // 3 * 3], np.float32).reshape(-1, 3) + np.float32([0, 0, 1])
    return array.array("f", p.ravel().tobytes())


FLOATS32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
# Byte strings are cut to whole 4-byte elements: the service's float32[] / uint32[] fields deliver no less.
POINTS = st.one_of(st.lists(FLOATS32, max_size=30).map(lambda v: array.array("f", v)),
                   st.lists(st.floats(-1.5, 1.5, width=32), max_size=60).map(lambda v: array.array("f", v)),
                   st.lists(st.floats(-0.125, 0.125, width=32), max_size=45).map(near_object),
                   st.binary(max_size=120).map(lambda b: b[:len(b) // 4 * 4]))
IDS = st.one_of(st.just(array.array("I")), st.just(array.array("I", [7])),
                st.lists(st.one_of(st.sampled_from([7, 0, 1, BIG]), st.integers(0, BIG)), max_size=4)
                .map(lambda v: array.array("I", v)),
                st.binary(max_size=12).map(lambda b: b[:len(b) // 4 * 4]))


@FUZZ
@given(st.sampled_from(sorted(STORES)), POINTS, st.one_of(st.sampled_from(["", "cam", "world", "nowhere"]),
                                                       st.text(max_size=4)),
       IDS, st.one_of(st.integers(0, 40), st.integers(-3, 2**31)), st.sampled_from(["exact", "grid"]))
def test_arbitrary_queries_are_answered(store, flat_points, frame_id, object_ids, max_points, mode):
    ans = answer_query(STORES[store], flat_points, frame_id, object_ids, transform, max_points, mode)
    assert isinstance(ans, QueryAnswer) and isinstance(ans.message, str) and ans.message
    if not ans.success:
        event("refused: " + ans.message.split(" ")[0 if ans.message[0].isalpha() else 1][:12])
        assert ans.probabilities.size == 0 and ans.object_ids.size == 0
        return
    n = len(bytes(flat_points)) // 12
    assert ans.probabilities.shape == (n,) and ans.object_ids.shape == (n,)
    assert np.all((ans.probabilities >= 0) & (ans.probabilities <= 1))
    assert set(ans.object_ids.tolist()) <= {-1} | set(STORES[store].snapshot().ids)
    assert np.all(ans.probabilities[ans.object_ids == -1] == 0)
    event("answered, some inside" if (ans.object_ids != -1).any() else "answered, none inside")
