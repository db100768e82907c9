"""ROS messages <-> numpy, done once at the edge of the node. No per-point Python for clouds and images
(vectorised through :mod:`occnet_ros.perception.pointcloud2` and strided numpy views). The node's outgoing
objects and markers are written straight to serialized bytes (:mod:`occnet_ros.ros.object_msgs`,
:mod:`occnet_ros.ros.cdr`); the message-object builders here (``mesh_to_msg``, ``points_to_msgs``,
``colors_to_msgs``: one message object per vertex / face / colour, one comprehension each) serve programs that
want message objects and the tests' reference encoding.

Frames and units are those of the messages: points in ``header.frame_id``, metres.
"""
from __future__ import annotations

import array

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from shape_msgs.msg import Mesh, MeshTriangle
from std_msgs.msg import ColorRGBA, Header

from occnet_ros.geometry import PinholeCamera, RigidTransform
from occnet_ros.perception.pointcloud2 import CloudArrays, CloudLayout, Field, build_cloud, parse_cloud


class MessageError(ValueError):
    """A message whose content cannot be converted (the message says what is wrong)."""


# ---------------------------------------------------------------- time

def stamp_to_sec(stamp) -> float:
    """builtin_interfaces/Time -> seconds (float)."""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


# ---------------------------------------------------------------- PointCloud2

def cloud_layout(msg: PointCloud2) -> CloudLayout:
    """The byte layout of a PointCloud2 message."""
    fields = tuple(Field(f.name, int(f.offset), int(f.datatype), int(f.count)) for f in msg.fields)
    return CloudLayout(fields, int(msg.height), int(msg.width), int(msg.point_step), int(msg.row_step),
                       bool(msg.is_bigendian))


def pointcloud2_to_cloud(msg: PointCloud2, want_rgb: bool = True) -> CloudArrays:
    """PointCloud2 -> :class:`~occnet_ros.perception.pointcloud2.CloudArrays`: ``xyz`` (H, W, 3) float32 if
    organized (height > 1) else (N, 3) float32, in ``msg.header.frame_id``, metres, NaN where invalid;
    ``rgb`` same leading shape x 3 uint8, or None without usable colour, and then ``rgb_problem`` says why
    when the message declares colour fields that cannot be used (colour never fails the cloud).
    Raises :class:`occnet_ros.perception.pointcloud2.CloudFormatError` (a ValueError, and the only
    exception) for a message whose points cannot be decoded; the message names the field or size."""
    return parse_cloud(msg.data, cloud_layout(msg), want_rgb=want_rgb)


def pointcloud2_to_arrays(msg: PointCloud2, want_rgb: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """PointCloud2 -> (xyz, rgb), as :func:`pointcloud2_to_cloud` without the reason for a missing
    colour. xyz: (H, W, 3) float32 if organized (height > 1) else (N, 3) float32,
    ``msg.header.frame_id``, metres, NaN where invalid; rgb: same leading shape x 3 uint8 or None.
    Raises :class:`occnet_ros.perception.pointcloud2.CloudFormatError` for a malformed message."""
    out = pointcloud2_to_cloud(msg, want_rgb=want_rgb)
    return out.xyz, out.rgb


def arrays_to_pointcloud2(xyz: np.ndarray, rgb: np.ndarray | None = None,
                          header: Header | None = None) -> PointCloud2:
    """xyz (H, W, 3) organized or (N, 3), metres, NaN = no return; rgb same shape uint8 or None ->
    PointCloud2 (FLOAT32 x, y, z and a packed FLOAT32 ``rgb`` field, little endian)."""
    layout, data = build_cloud(xyz, rgb, is_bigendian=False)
    return cloud_message(layout, data, header, bool(np.isfinite(np.asarray(xyz)).all()))


def cloud_message(layout, data, header: Header | None = None, is_dense: bool = True) -> PointCloud2:
    """A :class:`~occnet_ros.perception.pointcloud2.CloudLayout` and its bytes (as ``build_cloud`` or
    ``query_cloud`` make them) -> PointCloud2 with ``header`` (None = an empty one)."""
    msg = PointCloud2()
    msg.header = header if header is not None else Header()
    msg.height, msg.width = layout.height, layout.width
    msg.fields = [PointField(name=f.name, offset=f.offset, datatype=f.datatype, count=f.count)
                  for f in layout.fields]
    msg.is_bigendian = layout.is_bigendian
    msg.point_step, msg.row_step = layout.point_step, layout.row_step
    msg.data = array.array("B", data)
    msg.is_dense = is_dense
    return msg


# ---------------------------------------------------------------- Image

ENCODINGS: dict[str, tuple[str, int]] = {
    # encoding: (numpy base type, channels)
    "mono8": ("u1", 1), "8UC1": ("u1", 1), "8SC1": ("i1", 1),
    "mono16": ("u2", 1), "16UC1": ("u2", 1), "16SC1": ("i2", 1),
    "32SC1": ("i4", 1), "32UC1": ("u4", 1), "32FC1": ("f4", 1), "64FC1": ("f8", 1),
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "8UC3": ("u1", 3),
    "rgba8": ("u1", 4), "bgra8": ("u1", 4), "8UC4": ("u1", 4),
}
MASK_ENCODINGS = ("mono8", "8UC1", "mono16", "16UC1", "32SC1", "32UC1")
YUV422_ENCODINGS = ("yuv422", "yuv422_yuy2")  # byte order U Y0 V Y1 (UYVY) and Y0 U Y1 V (YUYV)
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16") + YUV422_ENCODINGS


def _pixels(msg: Image, dtype: np.dtype, channels: int) -> np.ndarray:
    """Zero-copy (H, W, channels) view of ``msg.data`` with ``dtype`` (byte order included), honouring
    ``step``. Sizes (uint32 in the message, up to 2**32 - 1) are checked with Python integers against the
    data's length before the view is built; a step that is not a multiple of the element size is fine
    (numpy reads unaligned elements). Raises :class:`MessageError`."""
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise MessageError(f"empty image {w}x{h}")
    pixel = channels * dtype.itemsize
    row = w * pixel
    if step < row:
        raise MessageError(f"image step {step} is smaller than width*channels*bytes = {w}*{channels}*"
                           f"{dtype.itemsize} = {row}")
    try:
        buf = np.frombuffer(msg.data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError) as e:
        raise MessageError(f"image data is not a byte buffer ({type(msg.data).__name__}: {e})") from e
    need = (h - 1) * step + row
    if buf.size < need:
        raise MessageError(f"image data has {buf.size} bytes, {w}x{h} '{msg.encoding}' with step {step} "
                           f"needs {need}")
    return np.ndarray((h, w, channels), dtype=dtype, buffer=buf, strides=(step, pixel, dtype.itemsize))


def image_to_array(msg: Image) -> np.ndarray:
    """Image -> (H, W) or (H, W, C) array (a copy) in native byte order, honouring ``step`` padding and
    ``is_bigendian`` (any non-zero value: big endian). Raises :class:`MessageError` (only) for unknown
    encodings, an empty image, a step smaller than a row and data shorter than the sizes say."""
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise MessageError(f"unsupported image encoding '{enc}' (supported: {sorted(ENCODINGS)})")
    base, ch = ENCODINGS[enc]
    dt = np.dtype(base).newbyteorder(">" if msg.is_bigendian else "<")
    out = _pixels(msg, dt, ch).astype(dt.newbyteorder("="), copy=True)
    return out[..., 0] if ch == 1 else out


def image_to_mask(msg: Image) -> np.ndarray:
    """Instance-label image (mono8/mono16/8UC1/16UC1/32SC1/32UC1, 0 = background) -> (H, W) int64, every
    value of each type kept (32UC1 up to 4294967295, negative 32SC1 labels stay negative). Raises
    :class:`MessageError` (only)."""
    if msg.encoding not in MASK_ENCODINGS:
        raise MessageError(f"mask encoding '{msg.encoding}' is not an integer label image {MASK_ENCODINGS}")
    return image_to_array(msg).astype(np.int64)


# BT.601 studio ("limited") range YCbCr -> RGB, the fixed-point coefficients (20 fractional bits) of
# OpenCV's YUV 4:2:2 conversions, which cv_bridge uses: with C = max(Y - 16, 0), D = U - 128, E = V - 128,
# R = 1.164 C + 1.596 E, G = 1.164 C - 0.391 D - 0.813 E, B = 1.164 C + 2.018 D, rounded, clipped to 0..255.
_YUV_SHIFT = 20
_YUV_CY, _YUV_CVR, _YUV_CUG, _YUV_CVG, _YUV_CUB = 1220542, 1673527, -409993, -852492, 2116026


def _yuv422_to_rgb(msg: Image) -> np.ndarray:
    """yuv422 (UYVY) / yuv422_yuy2 (YUYV) Image -> (H, W, 3) uint8 RGB. Each pair of pixels shares one U
    and one V sample, so the width must be even."""
    if int(msg.width) % 2:
        raise MessageError(f"'{msg.encoding}' image has odd width {msg.width} (pixels come in U/V-sharing pairs)")
    px = _pixels(msg, np.dtype(np.uint8), 2)  # (H, W, 2): per pixel (chroma, luma) or (luma, chroma)
    luma, chroma = (1, 0) if msg.encoding == "yuv422" else (0, 1)
    y = np.maximum(px[..., luma].astype(np.int32) - 16, 0) * _YUV_CY
    u = np.repeat(px[:, 0::2, chroma].astype(np.int32) - 128, 2, axis=1)
    v = np.repeat(px[:, 1::2, chroma].astype(np.int32) - 128, 2, axis=1)
    half = 1 << (_YUV_SHIFT - 1)
    out = np.empty(y.shape + (3,), np.uint8)
    for i, c in enumerate((_YUV_CVR * v, _YUV_CUG * u + _YUV_CVG * v, _YUV_CUB * u)):
        out[..., i] = np.clip((y + c + half) >> _YUV_SHIFT, 0, 255)
    return out


def image_to_rgb(msg: Image) -> np.ndarray:
    """Colour image -> (H, W, 3) uint8 RGB: rgb8/bgr8/rgba8/bgra8 (alpha dropped), mono8 and mono16 as
    grey (mono16: the high byte, value >> 8), yuv422 (UYVY) and yuv422_yuy2 (YUYV) through BT.601
    studio-range YCbCr (see ``_YUV_CY`` ...). Raises :class:`MessageError` (only) for any other encoding
    and for malformed images."""
    enc = msg.encoding
    if enc not in COLOR_ENCODINGS:
        raise MessageError(f"image encoding '{enc}' is not a colour encoding (supported: "
                           f"{', '.join(COLOR_ENCODINGS)})")
    if enc in YUV422_ENCODINGS:
        return _yuv422_to_rgb(msg)
    a = image_to_array(msg)
    if enc == "mono16":
        a = (a >> 8).astype(np.uint8)
    if a.ndim == 2:
        return np.repeat(a[..., None], 3, axis=2)
    if enc.startswith("bgr"):
        a = a[..., 2::-1]
    return np.ascontiguousarray(a[..., :3])


def array_to_image(arr: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """(H, W) or (H, W, C) array -> Image with ``encoding`` (little endian, no row padding). The array
    must fit the encoding's channel count; values are cast to its type."""
    if encoding not in ENCODINGS:
        raise MessageError(f"unsupported image encoding '{encoding}'")
    base, ch = ENCODINGS[encoding]
    a = np.asarray(arr)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] != ch:
        raise MessageError(f"array of shape {np.shape(arr)} does not fit encoding '{encoding}' ({ch} channels)")
    a = np.ascontiguousarray(a.astype(np.dtype(base).newbyteorder("<")))
    msg = Image()
    msg.header = header if header is not None else Header()
    msg.height, msg.width = int(a.shape[0]), int(a.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(a.shape[1] * a.shape[2] * a.dtype.itemsize)
    msg.data = array.array("B", a.tobytes())
    return msg


# ---------------------------------------------------------------- CameraInfo

def camera_info(camera: PinholeCamera, header: Header | None = None) -> CameraInfo:
    """CameraInfo of an undistorted pinhole camera (plumb_bob, zero distortion)."""
    msg = CameraInfo()
    msg.header = header if header is not None else Header()
    msg.width, msg.height = int(camera.width), int(camera.height)
    msg.distortion_model = "plumb_bob"
    msg.d = [0.0] * 5
    msg.k = camera.matrix().reshape(-1).tolist()
    msg.r = np.eye(3).reshape(-1).tolist()
    msg.p = np.hstack([camera.matrix(), np.zeros((3, 1))]).reshape(-1).tolist()
    return msg


_K_NAMES = ("k[0] (fx)", "k[1] (skew)", "k[2] (cx)", "k[3]", "k[4] (fy)", "k[5] (cy)", "k[6]", "k[7]", "k[8]")


def camera_info_to_intrinsics(msg: CameraInfo) -> PinholeCamera:
    """CameraInfo -> the pinhole camera of K (row-major 3x3, pixels: fx = k[0], cx = k[2], fy = k[4],
    cy = k[5]; skew and the last row are not used) and the image size (pixels). Raises
    :class:`MessageError` (only), naming the field, when K is not 9 finite values, fx or fy <= 0, or
    width or height is 0."""
    try:
        k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise MessageError(f"camera_info field 'k' is not numeric: {e}") from e
    if k.size != 9:
        raise MessageError(f"camera_info field 'k' has {k.size} values, expected 9 (row-major 3x3)")
    bad = [_K_NAMES[i] for i in np.flatnonzero(~np.isfinite(k))]
    if bad:
        raise MessageError(f"camera_info field 'k' has non-finite {', '.join(bad)}: {k.tolist()}")
    if k[0] <= 0 or k[4] <= 0:
        raise MessageError(f"camera_info field 'k' has no valid focal lengths: k[0] (fx) = {k[0]} and "
                           f"k[4] (fy) = {k[4]} must be > 0")
    for name in ("width", "height"):
        if int(getattr(msg, name)) <= 0:
            raise MessageError(f"camera_info field '{name}' is {getattr(msg, name)} (image size "
                               f"{msg.width}x{msg.height} is empty)")
    cam = PinholeCamera(width=int(msg.width), height=int(msg.height), fx=float(k[0]), fy=float(k[4]),
                        cx=float(k[2]), cy=float(k[5]))
    try:
        cam.validate()
    except ValueError as e:  # the checks above cover PinholeCamera.validate; kept as a safety net
        raise MessageError(f"camera_info: {e}") from e
    return cam


# ---------------------------------------------------------------- geometry

def points_to_msgs(points: np.ndarray) -> list[Point]:
    """(N, 3) -> list of geometry_msgs/Point (one comprehension over ``tolist()`` floats)."""
    return [Point(x=x, y=y, z=z) for x, y, z in np.asarray(points, np.float64).reshape(-1, 3).tolist()]


def triangles_to_msgs(faces: np.ndarray) -> list[MeshTriangle]:
    """(F, 3) vertex indices -> list of shape_msgs/MeshTriangle (each from a row of one uint32 array)."""
    rows = np.ascontiguousarray(np.asarray(faces).reshape(-1, 3), dtype=np.uint32)
    return [MeshTriangle(vertex_indices=r) for r in rows]


def colors_to_msgs(rgb: np.ndarray, alpha: float = 1.0) -> list[ColorRGBA]:
    """(N, 3) uint8 -> list of std_msgs/ColorRGBA with components in [0, 1]. One message object per
    distinct colour, shared by the entries of that colour (treat the list as read-only)."""
    c = np.asarray(rgb).reshape(-1, 3).astype(np.uint32)
    packed = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    uniq, inverse = np.unique(packed, return_inverse=True)
    a = float(alpha)
    msgs = [ColorRGBA(r=((u >> 16) & 255) / 255.0, g=((u >> 8) & 255) / 255.0, b=(u & 255) / 255.0, a=a)
            for u in uniq.tolist()]
    return list(map(msgs.__getitem__, inverse.reshape(-1).tolist()))


def mesh_to_msg(vertices: np.ndarray, faces: np.ndarray, vertex_points: list[Point] | None = None) -> Mesh:
    """vertices (V, 3) metres, faces (F, 3) vertex indices -> shape_msgs/Mesh. ``vertex_points``: the
    vertices already as Points (``points_to_msgs(vertices)``, e.g. shared with a marker), else built here."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    v = np.asarray(vertices).reshape(-1, 3)
    if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
        raise ValueError(f"face indices must be in [0, {v.shape[0]})")
    if vertex_points is not None and len(vertex_points) != v.shape[0]:
        raise ValueError(f"vertex_points has {len(vertex_points)} entries for {v.shape[0]} vertices")
    msg = Mesh()
    msg.vertices = vertex_points if vertex_points is not None else points_to_msgs(v)
    msg.triangles = triangles_to_msgs(f)
    return msg


def mesh_msg_to_arrays(msg: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """shape_msgs/Mesh -> (vertices (V, 3) float64, faces (F, 3) int64)."""
    v = np.array([(p.x, p.y, p.z) for p in msg.vertices], dtype=np.float64).reshape(-1, 3)
    f = np.array([np.asarray(t.vertex_indices) for t in msg.triangles], dtype=np.int64).reshape(-1, 3)
    return v, f


def quaternion_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (4,) unit quaternion (x, y, z, w), w >= 0."""
    m = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
    # The eigenvector of the symmetric 4x4 matrix K of largest eigenvalue (Bar-Itzhack), robust for
    # slightly non-orthogonal input.
    k = np.array([
        [m[0, 0] - m[1, 1] - m[2, 2], m[1, 0] + m[0, 1], m[2, 0] + m[0, 2], m[2, 1] - m[1, 2]],
        [m[1, 0] + m[0, 1], m[1, 1] - m[0, 0] - m[2, 2], m[2, 1] + m[1, 2], m[0, 2] - m[2, 0]],
        [m[2, 0] + m[0, 2], m[2, 1] + m[1, 2], m[2, 2] - m[0, 0] - m[1, 1], m[1, 0] - m[0, 1]],
        [m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], m[0, 0] + m[1, 1] + m[2, 2]],
    ]) / 3.0
    w, v = np.linalg.eigh(k)
    q = v[:, int(np.argmax(w))]
    return -q if q[3] < 0 else q


def pose_from_rt(rotation: np.ndarray, translation: np.ndarray) -> Pose:
    """rotation (3, 3) whose columns are the pose frame's axes in the parent frame, translation (3,)
    metres -> geometry_msgs/Pose."""
    q = quaternion_from_matrix(rotation)
    t = np.asarray(translation, dtype=np.float64).reshape(3)
    return Pose(position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))


def _rigid(q, t, what: str) -> RigidTransform:
    try:
        return RigidTransform.from_quaternion((q.x, q.y, q.z, q.w), (t.x, t.y, t.z))
    except ValueError as e:
        raise MessageError(f"{what}: {e}") from e


def pose_to_transform(pose: Pose) -> RigidTransform:
    """geometry_msgs/Pose -> the transform from the pose frame to its parent frame. Raises
    :class:`MessageError` for a zero or non-finite quaternion or a non-finite position."""
    return _rigid(pose.orientation, pose.position, "pose")


def transform_msg_to_rigid(transform) -> RigidTransform:
    """geometry_msgs/Transform -> the transform from the child frame to the parent frame. Raises
    :class:`MessageError` for a zero or non-finite quaternion or a non-finite translation."""
    return _rigid(transform.rotation, transform.translation, "transform")


def vector3(v) -> Vector3:
    """(3,) -> geometry_msgs/Vector3."""
    x, y, z = (float(c) for c in np.asarray(v, dtype=np.float64).reshape(3))
    return Vector3(x=x, y=y, z=z)
