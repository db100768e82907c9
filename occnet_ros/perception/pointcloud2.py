"""The sensor_msgs/PointCloud2 byte layout <-> numpy arrays, vectorised, with no ROS types.

A cloud is ``height`` rows of ``width`` points (``height == 1``: unorganized); each point occupies
``point_step`` bytes holding the named ``fields`` at their byte ``offset``; each row occupies ``row_step``
bytes (``>= width * point_step``, the rest is padding). Each field that is read is viewed through one
strided numpy array over the whole buffer (strides ``row_step``, ``point_step``), so no Python code runs
per point and fields may overlap or share bytes.

Coordinates: fields ``x``, ``y``, ``z``, each one FLOAT32 or FLOAT64 value in metres.

Colour follows the PCL convention: a 4-byte field ``rgb`` or ``rgba`` (datatype FLOAT32, UINT32 or INT32)
whose bits, read as an unsigned 32-bit integer in the cloud's byte order, are ``0xAARRGGBB``. Separate
UINT8 fields ``r``, ``g``, ``b`` are accepted as well. Colour is optional: a colour field that cannot be
used leaves the cloud without colour (:attr:`CloudArrays.rgb_problem` says why), it never fails the cloud.

Every size in a layout may be anything from 0 to 2**32 - 1 (the message's uint32 fields): all sizes are
checked with Python integers against the data's length before any array is built, and any inconsistency
is a :class:`CloudFormatError` naming it.
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
DATATYPE_NAMES: dict[int, str] = {INT8: "INT8", UINT8: "UINT8", INT16: "INT16", UINT16: "UINT16",
                                  INT32: "INT32", UINT32: "UINT32", FLOAT32: "FLOAT32", FLOAT64: "FLOAT64"}
COORDINATE_DATATYPES = (FLOAT32, FLOAT64)
PACKED_COLOUR_DATATYPES = (FLOAT32, UINT32, INT32)


def datatype_name(datatype: int) -> str:
    """Readable name of a PointField datatype constant, e.g. ``"FLOAT32"``, or ``"unknown (42)"``."""
    return DATATYPE_NAMES.get(datatype, f"unknown ({datatype})")


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
    in the message's frame, metres, NaN where the sensor had no return (FLOAT64 values beyond the float32
    range become +-inf). ``rgb``: same leading shape with 3 uint8 channels, or None when the cloud has no
    usable colour. ``rgb_problem``: None, or (when the cloud declares colour fields that cannot be used,
    so ``rgb`` is None) a sentence naming the field and why."""

    xyz: np.ndarray
    rgb: np.ndarray | None
    rgb_problem: str | None = None

    @property
    def organized(self) -> bool:
        return self.xyz.ndim == 3


def _unknown_datatype(field: Field) -> str:
    known = ", ".join(f"{n}={d}" for d, n in DATATYPE_NAMES.items())
    return f"field '{field.name}' has unknown datatype {field.datatype} (known: {known})"


def _field_dtype(field: Field, bigendian: bool, point_step: int | None = None) -> np.dtype:
    """numpy dtype of one field (a subarray dtype when ``count > 1``). With ``point_step``, the field must
    fit in the point; everything is checked before the dtype is built, so no huge count allocates."""
    if field.datatype not in DATATYPES:
        raise CloudFormatError(_unknown_datatype(field))
    if field.count < 1:
        raise CloudFormatError(f"field '{field.name}' has count {field.count} (must be >= 1)")
    if field.offset < 0:
        raise CloudFormatError(f"field '{field.name}' has negative offset {field.offset}")
    base = DATATYPES[field.datatype]
    size = base.itemsize * field.count
    if point_step is not None and field.offset + size > point_step:
        raise CloudFormatError(
            f"field '{field.name}' (offset {field.offset}, {field.count} x {datatype_name(field.datatype)} = "
            f"{size} bytes) does not fit in point_step {point_step}")
    base = base.newbyteorder(">" if bigendian else "<")
    return base if field.count == 1 else np.dtype((base, (field.count,)))


def structured_dtype(fields: tuple[Field, ...] | list[Field], point_step: int,
                     bigendian: bool = False) -> np.dtype:
    """numpy structured dtype of one point: the named fields at their offsets, itemsize ``point_step``.
    Fields with an empty name (padding written by some drivers) are left out.

    Raises :class:`CloudFormatError` when a field is duplicated, unknown or does not fit in the point.
    """
    if point_step <= 0:
        raise CloudFormatError(f"point_step is {point_step} (must be > 0)")
    names, formats, offsets = [], [], []
    for f in fields:
        if not f.name:
            continue
        if f.name in names:
            raise CloudFormatError(f"field '{f.name}' appears twice")
        formats.append(_field_dtype(f, bigendian, point_step))
        names.append(f.name)
        offsets.append(f.offset)
    try:
        return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": point_step})
    except (ValueError, TypeError, OverflowError, MemoryError) as e:
        raise CloudFormatError(f"cannot build a dtype for the fields: {e}") from e


def _byte_array(data) -> np.ndarray:
    """``data`` (bytes-like, or a sequence of ints 0..255) -> (n,) uint8, without a copy for buffers."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        pass
    try:
        a = np.asarray(data)
        if a.ndim == 1 and a.size == 0:
            return np.zeros(0, np.uint8)
        if a.ndim == 1 and a.dtype.kind in "iu" and a.min() >= 0 and a.max() <= 255:
            return a.astype(np.uint8)
    except (TypeError, ValueError, OverflowError):
        pass
    raise CloudFormatError(f"cloud data is not a byte buffer (got {type(data).__name__})")


def _check_extent(nbytes: int, layout: CloudLayout) -> tuple[int, int, int, int]:
    """Check that a cloud with at least one point fits ``nbytes`` bytes -> (height, width, point_step,
    row_step) as Python ints."""
    h, w, ps, rs = (int(v) for v in (layout.height, layout.width, layout.point_step, layout.row_step))
    if ps <= 0:
        raise CloudFormatError(f"point_step is {ps} (must be > 0)")
    if rs < w * ps:
        raise CloudFormatError(f"row_step {rs} is smaller than width*point_step = {w}*{ps} = {w * ps}")
    need = (h - 1) * rs + w * ps
    if nbytes < need:
        raise CloudFormatError(f"data has {nbytes} bytes, a {h}x{w} cloud with row_step {rs} and point_step "
                               f"{ps} needs {need}")
    return h, w, ps, rs


def _check_size(layout: CloudLayout) -> tuple[int, int]:
    h, w = int(layout.height), int(layout.width)
    if h < 0 or w < 0:
        raise CloudFormatError(f"negative size {h}x{w}")
    return h, w


def structured_view(data, layout: CloudLayout) -> np.ndarray:
    """Zero-copy (height, width) structured array over ``data`` (bytes-like), honouring ``row_step``
    padding. Raises :class:`CloudFormatError` when the buffer is too short or the steps disagree."""
    h, w = _check_size(layout)
    dtype = structured_dtype(layout.fields, layout.point_step, layout.is_bigendian)
    buf = _byte_array(data)
    if h == 0 or w == 0:
        return np.zeros((h, w), dtype=dtype)
    h, w, ps, rs = _check_extent(buf.size, layout)
    return np.ndarray(shape=(h, w), dtype=dtype, buffer=buf, offset=0, strides=(rs, ps))


def _named(layout: CloudLayout, name: str) -> list[Field]:
    return [f for f in layout.fields if f.name == name]


def _once(layout: CloudLayout, name: str) -> Field | None:
    """The field called ``name``, None if absent; :class:`CloudFormatError` if it appears more than once."""
    found = _named(layout, name)
    if len(found) > 1:
        raise CloudFormatError(f"field '{name}' appears {'twice' if len(found) == 2 else f'{len(found)} times'}"
                               " (ambiguous)")
    return found[0] if found else None


def _coordinate_field(layout: CloudLayout, axis: str, point_step: int) -> tuple[Field, np.dtype]:
    f = _once(layout, axis)
    if f is None:
        names = [g.name for g in layout.fields[:20]]
        more = f" and {len(layout.fields) - 20} more" if len(layout.fields) > 20 else ""
        raise CloudFormatError(f"cloud has no '{axis}' field (fields: {names}{more})")
    if f.datatype not in DATATYPES:
        raise CloudFormatError(_unknown_datatype(f))
    if f.datatype not in COORDINATE_DATATYPES:
        raise CloudFormatError(f"field '{axis}' has datatype {datatype_name(f.datatype)}; coordinates must be "
                               "FLOAT32 or FLOAT64 metres")
    if f.count != 1:
        raise CloudFormatError(f"field '{axis}' has count {f.count}, expected 1")
    return f, _field_dtype(f, layout.is_bigendian, point_step)


def _colour_fields(layout: CloudLayout, point_step: int) -> tuple[str, list[Field]] | str | None:
    """Which colour to read: ("packed", [field]) or ("channels", [r, g, b]); a sentence when colour fields
    exist but none can be used; None when the cloud declares no colour. Candidates in order: ``rgb``,
    ``rgba``, then ``r``, ``g``, ``b``; the first usable one wins."""
    problems = []
    for name in ("rgb", "rgba"):
        try:
            f = _once(layout, name)
            if f is None:
                continue
            if f.datatype not in PACKED_COLOUR_DATATYPES or f.count != 1:
                raise CloudFormatError(
                    f"field '{name}' is {f.count} x {datatype_name(f.datatype)}; packed colour must be one "
                    "FLOAT32, UINT32 or INT32 value")
            _field_dtype(f, layout.is_bigendian, point_step)
            return "packed", [f]
        except CloudFormatError as e:
            problems.append(str(e))
    if any(_named(layout, c) for c in "rgb"):
        try:
            channels = []
            for c in "rgb":
                f = _once(layout, c)
                if f is None:
                    raise CloudFormatError(f"colour channel field '{c}' is missing (the cloud has "
                                           f"{[n for n in 'rgb' if _named(layout, n)]})")
                if f.datatype != UINT8 or f.count != 1:
                    raise CloudFormatError(f"field '{c}' is {f.count} x {datatype_name(f.datatype)}; colour "
                                           "channels must be one UINT8 value each")
                _field_dtype(f, layout.is_bigendian, point_step)
                channels.append(f)
            return "channels", channels
        except CloudFormatError as e:
            problems.append(str(e))
    return "; ".join(problems) + "; the cloud is decoded without colour" if problems else None


def parse_cloud(data, layout: CloudLayout, want_rgb: bool = True) -> CloudArrays:
    """Decode ``data`` (the PointCloud2 ``data`` bytes) -> :class:`CloudArrays`.

    Needs fields ``x``, ``y``, ``z`` (each once, FLOAT32 or FLOAT64, count 1, metres); other fields are
    not read, so their content does not matter. Organized clouds (``height > 1``) keep their (H, W)
    shape; unorganized ones are returned as (N, 3). A cloud without points (``height * width == 0``)
    decodes to empty arrays whatever its fields say. Colour (``want_rgb``) never fails the cloud: see
    :class:`CloudArrays`. Raises :class:`CloudFormatError` (only) for anything else: missing, repeated,
    integer or misplaced coordinate fields, ``point_step`` 0, ``row_step < width * point_step``, or
    data shorter than ``(height - 1) * row_step + width * point_step`` bytes (longer data is accepted).
    """
    h, w = _check_size(layout)
    big = bool(layout.is_bigendian)
    if h == 0 or w == 0:
        rgb, problem = None, None
        if want_rgb:
            found = _colour_fields(layout, int(layout.point_step))
            if isinstance(found, tuple):
                rgb = np.zeros((h, w, 3), np.uint8)
            problem = found if isinstance(found, str) else None
        xyz = np.zeros((h, w, 3), np.float32)
        if h <= 1:
            xyz = xyz.reshape(-1, 3)
            rgb = rgb.reshape(-1, 3) if rgb is not None else None
        return CloudArrays(xyz=xyz, rgb=rgb, rgb_problem=problem)
    ps = int(layout.point_step)
    if ps <= 0:
        raise CloudFormatError(f"point_step is {ps} (must be > 0)")
    coords = [_coordinate_field(layout, axis, ps) for axis in "xyz"]
    buf = _byte_array(data)
    h, w, ps, rs = _check_extent(buf.size, layout)

    def view(f: Field, dt: np.dtype) -> np.ndarray:
        return np.ndarray((h, w), dtype=dt, buffer=buf, offset=int(f.offset), strides=(rs, ps))

    xyz = np.empty((h, w, 3), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # FLOAT64 beyond float32: inf
        for i, (f, dt) in enumerate(coords):
            xyz[..., i] = view(f, dt)
    rgb, problem = None, None
    if want_rgb:
        found = _colour_fields(layout, ps)
        if isinstance(found, str):
            problem = found
        elif found is not None:
            kind, fields = found
            rgb = np.empty((h, w, 3), dtype=np.uint8)
            if kind == "packed":
                # The 4 bytes as an unsigned integer (never convert the float: NaN payloads would change).
                packed = view(fields[0], np.dtype(">u4" if big else "<u4"))
                rgb[..., 0] = (packed >> 16) & 0xFF
                rgb[..., 1] = (packed >> 8) & 0xFF
                rgb[..., 2] = packed & 0xFF
            else:
                for i, f in enumerate(fields):
                    rgb[..., i] = view(f, np.dtype(np.uint8))
    if h <= 1:
        xyz = xyz.reshape(-1, 3)
        rgb = rgb.reshape(-1, 3) if rgb is not None else None
    return CloudArrays(xyz=xyz, rgb=rgb, rgb_problem=problem)


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
