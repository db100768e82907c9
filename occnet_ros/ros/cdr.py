"""A small CDR writer (XCDR1, little endian) for the node's outgoing messages, built on numpy: the big arrays
of a message (mesh vertices, triangles, colours, marker points) are written as whole arrays, never as one
Python object per element.

The bytes are those that ``rclpy.serialization.serialize_message`` produces for the equivalent message
objects (and that a publisher sends): the encapsulation header ``00 01 00 00`` (CDR, little endian, no
options), then the fields in declaration order, each primitive aligned to its own size (1, 2, 4 or 8 bytes)
counted from the first byte after the header; a string is a uint32 length (bytes, terminating NUL included),
its UTF-8 bytes and a NUL, not padded after; a sequence is a uint32 count and its elements, an empty one
adds no padding. The one difference: padding bytes are zeros here, while rclpy leaves whatever was in its
buffer.

A part of a message that repeats unchanged between messages (an object's mesh) can be encoded once as a
:class:`Fragment`: chunks that each start at the alignment of their first field and hold no field whose
alignment is larger, so a chunk's bytes are the same wherever it lands; :meth:`CdrWriter.fragment` pads
before each chunk as the serializer would.

Every big array goes into the message as bytes objects of at most :data:`PIECE_BYTES` each: copying one
holds the GIL for a fraction of a millisecond, and the final ``bytes.join`` of bytes
objects copies the message with the GIL released (CPython releases it for joins of over 1 MiB).
"""
from __future__ import annotations

import struct

import numpy as np

ENCAPSULATION = b"\x00\x01\x00\x00"
"""CDR_LE encapsulation header: representation id 0x0001, options 0."""

_ZEROS = bytes(8)
_PACK = {c: struct.Struct("<" + c) for c in "?BbHhIiQqfd"}


Fragment = tuple
"""A piece of a message encoded once: a tuple of chunks ``(alignment, parts)``, each the CDR bytes
``b"".join(parts)`` that hold at any offset that is a multiple of ``alignment`` (bytes after the
encapsulation header). Made by :class:`FragmentWriter`, placed by :meth:`CdrWriter.fragment`."""

PIECE_BYTES = 1 << 18
"""Largest bytes object an array is copied into at a time (256 KiB: well under a millisecond)."""


class CdrWriter:
    """Appends CDR-encoded fields; :meth:`getvalue` returns the message (encapsulation header included).

    Scalars: :meth:`u32` and friends; several scalars of one type: :meth:`pack`; strings: :meth:`string`;
    numpy arrays: :meth:`array` (C order, cast to the given dtype, aligned to its item size); sequences:
    :meth:`u32` of the count, then the elements."""

    def __init__(self):
        self._parts: list[bytes] = []
        self._pos = 0  # bytes written after the encapsulation header

    def _align(self, size: int) -> None:
        pad = -self._pos % size
        if pad:
            self._parts.append(_ZEROS[:pad])
            self._pos += pad

    def _put(self, data) -> None:
        self._parts.append(data)
        self._pos += len(data)

    def pack(self, code: str, *values) -> None:
        """``values`` of one struct type ``code`` ("I": uint32, "i": int32, "f": float32, "d": float64,
        "?": bool, "B": uint8, ...), aligned to its size. Out-of-range values raise ``struct.error``."""
        size = _PACK[code].size
        self._align(size)
        self._put(struct.pack("<%d%s" % (len(values), code), *values))

    def u32(self, value: int) -> None:
        self.pack("I", value)

    def i32(self, value: int) -> None:
        self.pack("i", value)

    def f32(self, value: float) -> None:
        self.pack("f", value)

    def f64(self, *values: float) -> None:
        """float64 values, one after the other (e.g. a Point: x, y, z)."""
        self.pack("d", *values)

    def boolean(self, value: bool) -> None:
        self.pack("?", bool(value))

    def string(self, text: str) -> None:
        """uint32 length (UTF-8 bytes + 1), the bytes, a NUL."""
        data = text.encode("utf-8")
        self.u32(len(data) + 1)
        self._put(data + b"\x00")

    def array(self, values: np.ndarray, dtype) -> None:
        """All elements of ``values`` in C order as ``dtype`` (little endian), aligned to its item size;
        nothing at all (no padding) when empty. The bytes are copied: later changes to ``values`` do
        not reach the message."""
        a = np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<"))
        if a.size:
            self._align(a.dtype.itemsize)
            flat = a.reshape(-1).view(np.uint8)
            for i in range(0, flat.size, PIECE_BYTES):
                self._put(flat[i:i + PIECE_BYTES].tobytes())

    def fragment(self, fragment: Fragment) -> None:
        """Append an encoded :class:`Fragment` (see :class:`FragmentWriter`), padding before each chunk."""
        for align, parts in fragment:
            self._align(align)
            for p in parts:
                self._put(p)

    def getvalue(self) -> bytes:
        """The message: encapsulation header and everything written (one join of bytes objects, without
        the GIL for a message over 1 MiB)."""
        return b"".join([ENCAPSULATION, *self._parts])


class FragmentWriter(CdrWriter):
    """Writes a :class:`Fragment`. :meth:`chunk` starts a chunk at an alignment (the largest alignment of
    any field in it); its positions count from the chunk's start, so its bytes hold at any offset that is
    a multiple of that alignment. A field that needs more alignment than its chunk raises ValueError."""

    def __init__(self):
        super().__init__()
        self._chunks: list[tuple[int, tuple]] = []
        self._chunk_align = 0

    def chunk(self, align: int) -> None:
        """Start a new chunk aligned to ``align`` (1, 2, 4 or 8 bytes)."""
        self._close()
        self._chunk_align, self._pos = int(align), 0

    def _close(self) -> None:
        if self._parts:
            self._chunks.append((self._chunk_align, tuple(self._parts)))
        self._parts = []

    def _align(self, size: int) -> None:
        if size > self._chunk_align:
            raise ValueError(f"a {size}-byte field in a chunk aligned to {self._chunk_align} bytes: "
                             "its padding would depend on where the chunk lands")
        super()._align(size)

    def fragment(self, fragment: Fragment) -> None:
        raise TypeError("fragments are placed by CdrWriter.fragment, not nested")

    def getvalue(self) -> Fragment:
        """The chunks written (a :class:`Fragment`)."""
        self._close()
        return tuple(self._chunks)


# ---------------------------------------------------------------- common ROS types

def write_header(w: CdrWriter, header) -> None:
    """std_msgs/Header (``stamp.sec`` int32, ``stamp.nanosec`` uint32, ``frame_id`` string)."""
    w.i32(int(header.stamp.sec))
    w.u32(int(header.stamp.nanosec))
    w.string(header.frame_id)


def write_pose(w: CdrWriter, position, quaternion) -> None:
    """geometry_msgs/Pose: position (3,) metres, orientation (4,) quaternion (x, y, z, w)."""
    w.f64(*np.asarray(position, np.float64).reshape(3).tolist(),
          *np.asarray(quaternion, np.float64).reshape(4).tolist())


def rgba_array(rgb: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """(N, 3) 0..255 integer colours -> (N, 4) float32 std_msgs/ColorRGBA components in [0, 1]: each
    channel / 255 in float64, rounded to float32, as rclpy stores a Python float in a float32 field."""
    c = np.asarray(rgb).reshape(-1, 3).astype(np.uint32)
    packed = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]  # channels above 255 spill over as packing does
    out = np.empty((c.shape[0], 4), np.float32)
    for i, shift in enumerate((16, 8, 0)):
        out[:, i] = ((packed >> shift) & 255) / 255.0
    out[:, 3] = float(alpha)
    return out
