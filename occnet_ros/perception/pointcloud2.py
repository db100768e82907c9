"""The sensor_msgs/PointCloud2 byte layout <-> numpy arrays, vectorised, with no ROS types.

A cloud is ``height`` rows of ``width`` points (``height == 1``: unorganized); each point occupies
``point_step`` bytes holding the named ``fields`` at their byte ``offset``; each row occupies ``row_step``
bytes (``>= width * point_step``, the rest is padding). The whole buffer is read at once through a numpy
structured dtype with explicit offsets and strides, so no Python code runs per point.

Colour follows the PCL convention: a 4-byte field ``rgb`` or ``rgba`` (datatype FLOAT32, UINT32 or INT32)
whose bits, read as an unsigned 32-bit integer in the cloud's byte order, are ``0xAARRGGBB``. Separate
UINT8 fields ``r``, ``g``, ``b`` are accepted as well.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# sensor_msgs/PointField datatype constants -> numpy base type (byte order applied separately).
INT8, UINT8, INT16, UINT16, INT32, UINT32, FLOAT32, FLOAT64 = range(1, 9)
DATATYPES: dict[int, np.dtype] = {
    INT8: np.dtype(np.int8),
    UINT8: np.dtype(np.uint8),
    INT16: np.dtype(np.int16),
    UINT16: np.dtype(np.uint16),
    INT32: np.dtype(np.int32),
    UINT32: np.dtype(np.uint32),
    FLOAT32: np.dtype(np.float32),
    FLOAT64: np.dtype(np.float64),
}


class CloudFormatError(ValueError):
    """A PointCloud2 layout that is inconsistent or lacks what is asked for (message names the problem)."""


@dataclass(frozen=True)
class Field:
    """One sensor_msgs/PointField: ``offset`` bytes from the start of the point, ``count`` elements of
    ``datatype`` (one of the constants above)."""

    name: str
    offset: int
    datatype: int
    count: int = 1


@dataclass(frozen=True)
class CloudLayout:
    """Everything but the data of a PointCloud2 message."""

    fields: tuple[Field, ...]
    height: int
    width: int
    point_step: int
    row_step: int
    is_bigendian: bool = False


@dataclass
class CloudArrays:
    """Decoded cloud. ``xyz``: (H, W, 3) float32 when organized (``height > 1``) else (N, 3) float32,
    in the message's frame, metres, NaN where the sensor had no return. ``rgb``: same leading shape
    with 3 uint8 channels, or None when the cloud has no colour."""

    xyz: np.ndarray
    rgb: np.ndarray | None

    @property
    def organized(self) -> bool:
        return self.xyz.ndim == 3


def _field_dtype(field: Field, bigendian: bool) -> np.dtype:
    if field.datatype not in DATATYPES:
        raise CloudFormatError(f"field '{field.name}' has unknown datatype {field.datatype}")
    if field.count < 1:
        raise CloudFormatError(f"field '{field.name}' has count {field.count} (must be >= 1)")
    base = DATATYPES[field.datatype].newbyteorder(">" if bigendian else "<")
    return base if field.count == 1 else np.dtype((base, (field.count,)))


def structured_dtype(fields: tuple[Field, ...] | list[Field], point_step: int,
                     bigendian: bool = False) -> np.dtype:
    """numpy structured dtype of one point: the named fields at their offsets, itemsize ``point_step``.

    Raises :class:`CloudFormatError` when a field is duplicated, unknown or does not fit in the point.
    """
    if point_step <= 0:
        raise CloudFormatError(f"point_step is {point_step} (must be > 0)")
    names, formats, offsets = [], [], []
    for f in fields:
        if not f.name:
            continue  # unnamed padding fields written by some drivers
        if f.name in names:
            raise CloudFormatError(f"field '{f.name}' appears twice")
        dt = _field_dtype(f, bigendian)
        if f.offset < 0 or f.offset + dt.itemsize > point_step:
            raise CloudFormatError(
                f"field '{f.name}' (offset {f.offset}, {dt.itemsize} bytes) does not fit in point_step "
                f"{point_step}")
        names.append(f.name)
        formats.append(dt)
        offsets.append(f.offset)
    try:
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    except (ValueError, TypeError) as e:  # pragma: no cover - the checks above should catch everything
        raise CloudFormatError(f"cannot build a dtype for the fields: {e}") from e


def structured_view(data, layout: CloudLayout) -> np.ndarray:
    """Zero-copy (height, width) structured array over ``data`` (bytes-like), honouring ``row_step``
    padding. Raises :class:`CloudFormatError` when the buffer is too short or the steps disagree."""
    h, w = int(layout.height), int(layout.width)
    if h < 0 or w < 0:
        raise CloudFormatError(f"negative size {h}x{w}")
    dtype = structured_dtype(layout.fields, layout.point_step, layout.is_bigendian)
    buf = np.frombuffer(data, dtype=np.uint8) if len(data) else np.zeros(0, np.uint8)
    if h == 0 or w == 0:
        return np.zeros((h, w), dtype=dtype)
    if layout.row_step < w * layout.point_step:
        raise CloudFormatError(
            f"row_step {layout.row_step} is smaller than width*point_step = {w}*{layout.point_step}")
    need = (h - 1) * layout.row_step + w * layout.point_step
    if buf.size < need:
        raise CloudFormatError(
            f"data has {buf.size} bytes, a {h}x{w} cloud with row_step {layout.row_step} and point_step "
            f"{layout.point_step} needs {need}")
    return np.ndarray(shape=(h, w), dtype=dtype, buffer=buf, offset=0,
                      strides=(layout.row_step, layout.point_step))


def _find(layout: CloudLayout, name: str) -> Field | None:
    for f in layout.fields:
        if f.name == name:
            return f
    return None


def parse_cloud(data, layout: CloudLayout, want_rgb: bool = True) -> CloudArrays:
    """Decode ``data`` (the PointCloud2 ``data`` bytes) -> :class:`CloudArrays`.

    Needs fields ``x``, ``y``, ``z`` (any numeric datatype, count 1). Organized clouds (``height > 1``)
    keep their (H, W) shape; unorganized ones are returned as (N, 3). Raises :class:`CloudFormatError`.
    """
    view = structured_view(data, layout)
    for axis in "xyz":
        f = _find(layout, axis)
        if f is None:
            raise CloudFormatError(f"cloud has no '{axis}' field (fields: {[f.name for f in layout.fields]})")
        if f.count != 1:
            raise CloudFormatError(f"field '{axis}' has count {f.count}, expected 1")
    xyz = np.empty(view.shape + (3,), dtype=np.float32)
    for i, axis in enumerate("xyz"):
        xyz[..., i] = view[axis]
    rgb = _parse_rgb(view, layout) if want_rgb else None
    if layout.height <= 1:
        xyz = xyz.reshape(-1, 3)
        rgb = rgb.reshape(-1, 3) if rgb is not None else None
    return CloudArrays(xyz=xyz, rgb=rgb)


def _parse_rgb(view: np.ndarray, layout: CloudLayout) -> np.ndarray | None:
    for name in ("rgb", "rgba"):
        f = _find(layout, name)
        if f is None:
            continue
        if f.datatype not in (FLOAT32, UINT32, INT32) or f.count != 1:
            raise CloudFormatError(f"field '{name}' must be one 4-byte FLOAT32/UINT32/INT32 value")
        # Reinterpret the 4 bytes (never convert the float: that could alter NaN payload bits).
        raw = np.ascontiguousarray(view[name])
        order = ">" if layout.is_bigendian else "<"
        packed = raw.view(order + "u4").astype(np.uint32)
        out = np.empty(view.shape + (3,), dtype=np.uint8)
        out[..., 0] = (packed >> 16) & 0xFF
        out[..., 1] = (packed >> 8) & 0xFF
        out[..., 2] = packed & 0xFF
        return out
    channels = [_find(layout, c) for c in "rgb"]
    if all(c is not None for c in channels):
        out = np.empty(view.shape + (3,), dtype=np.uint8)
        for i, c in enumerate(channels):
            if c.datatype != UINT8 or c.count != 1:
                raise CloudFormatError(f"field '{c.name}' must be one UINT8 value")
            out[..., i] = view[c.name]
        return out
    return None


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """rgb (..., 3) uint8 -> (...,) uint32 ``0x00RRGGBB``."""
    rgb = np.asarray(rgb)
    if rgb.shape[-1:] != (3,):
        raise ValueError(f"rgb must have shape (..., 3), got {rgb.shape}")
    c = rgb.astype(np.uint32)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def build_cloud(xyz: np.ndarray, rgb: np.ndarray | None = None,
                is_bigendian: bool = False) -> tuple[CloudLayout, bytes]:
    """Encode points (and colours) -> (layout, data bytes).

    xyz: (H, W, 3) organized or (N, 3) unorganized, metres (stored as FLOAT32 ``x``, ``y``, ``z`` at
    offsets 0, 4, 8). rgb: same leading shape, 3 channels uint8, stored as a FLOAT32 ``rgb`` field at
    offset 12 (PCL convention); then ``point_step`` is 16, else 12. No row padding.
    """
    xyz = np.asarray(xyz)
    if xyz.ndim not in (2, 3) or xyz.shape[-1] != 3:
        raise ValueError(f"xyz must have shape (N, 3) or (H, W, 3), got {xyz.shape}")
    h, w = (xyz.shape[0], xyz.shape[1]) if xyz.ndim == 3 else (1, xyz.shape[0])
    order = ">" if is_bigendian else "<"
    fields = [Field("x", 0, FLOAT32), Field("y", 4, FLOAT32), Field("z", 8, FLOAT32)]
    point_step = 12
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != xyz.shape:
            raise ValueError(f"rgb shape {rgb.shape} does not match xyz shape {xyz.shape}")
        fields.append(Field("rgb", 12, FLOAT32))
        point_step = 16
    layout = CloudLayout(tuple(fields), h, w, point_step, point_step * w, is_bigendian)
    arr = np.zeros((h, w), dtype=structured_dtype(fields, point_step, is_bigendian))
    flat = xyz.reshape(h, w, 3)
    for i, axis in enumerate("xyz"):
        arr[axis] = flat[..., i]
    if rgb is not None:
        packed = pack_rgb(rgb.reshape(h, w, 3)).astype(order + "u4")
        arr["rgb"] = packed.view(order + "f4")
    return layout, arr.tobytes()
