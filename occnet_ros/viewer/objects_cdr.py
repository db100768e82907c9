"""Serialized ``occnet_ros/ReconstructedObjectArray`` (CDR bytes, as a raw subscription delivers them) ->
numpy arrays, without one Python object per mesh vertex (rclpy's deserializer makes one
``geometry_msgs/Point`` per vertex and one ``MeshTriangle`` per face, which can take seconds per message).

Layout (XCDR1, see :mod:`occnet_ros.ros.cdr`): the 4-byte encapsulation header (``00 01``: little endian,
``00 00``: big endian), then the fields in declaration order, each primitive aligned to its size counted
from the first byte after the header. Fields read here are those of ``msg/ReconstructedObject.msg``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ObjectsDecodeError(ValueError):
    """Bytes that are not a ReconstructedObjectArray (the message names the field and the offset)."""


@dataclass
class ObjectView:
    """One reconstructed object as the viewer shows it. Geometry in ``frame_id``, metres.

    ``vertices`` (V, 3) float32; ``faces`` (F, 3) uint32 indices into ``vertices``; ``vertex_rgba`` (V, 4)
    float32 in [0, 1] or None (the message has no vertex colours); ``bbox_center`` (3,), ``bbox_quaternion``
    (4,) x, y, z, w, ``bbox_size`` (3,) edge lengths, float64."""

    object_id: int
    label: str
    frame_id: str
    vertices: np.ndarray
    faces: np.ndarray
    vertex_rgba: np.ndarray | None
    bbox_center: np.ndarray
    bbox_quaternion: np.ndarray
    bbox_size: np.ndarray
    num_views: int


@dataclass
class ObjectArrayView:
    """A decoded array: ``stamp`` (s), ``frame_id`` of its header, ``objects``."""

    stamp: float
    frame_id: str
    objects: list[ObjectView]


class _Reader:
    def __init__(self, data: bytes):
        self.buf = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
        if len(self.buf) < 4:
            raise ObjectsDecodeError(f"{len(self.buf)} bytes: shorter than the 4-byte CDR encapsulation header")
        kind = bytes(self.buf[:2])
        if kind == b"\x00\x01":
            self.order = "<"
        elif kind == b"\x00\x00":
            self.order = ">"
        else:
            raise ObjectsDecodeError(f"encapsulation {kind.hex()} is not plain CDR (0000 or 0001)")
        self.pos = 0  # counted after the header
        self.end = len(self.buf) - 4

    def _take(self, n: int, align: int, what: str) -> memoryview:
        self.pos += -self.pos % align
        if n < 0 or self.pos + n > self.end:
            raise ObjectsDecodeError(f"{what}: needs {n} bytes at offset {self.pos}, the message has {self.end}")
        out = self.buf[4 + self.pos:4 + self.pos + n]
        self.pos += n
        return out

    def scalars(self, code: str, count: int, what: str) -> np.ndarray:
        dt = np.dtype(self.order + code)
        return np.frombuffer(self._take(dt.itemsize * count, dt.itemsize, what), dtype=dt)

    def u32(self, what: str) -> int:
        return int(self.scalars("u4", 1, what)[0])

    def count(self, what: str, item_bytes: int) -> int:
        n = self.u32(what)
        if n * item_bytes > self.end - self.pos:  # checked before any allocation
            raise ObjectsDecodeError(f"{what}: {n} elements of {item_bytes} bytes do not fit in the "
                                     f"{self.end - self.pos} bytes left at offset {self.pos}")
        return n

    def string(self, what: str) -> str:
        n = self.u32(what + " length")
        raw = bytes(self._take(n, 1, what))
        if n == 0 or raw[-1] != 0:
            raise ObjectsDecodeError(f"{what}: string of {n} bytes without its terminating NUL")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as e:
            raise ObjectsDecodeError(f"{what}: not UTF-8 ({e})") from e

    def header(self, what: str) -> tuple[float, str]:
        sec = int(self.scalars("i4", 1, what + ".stamp.sec")[0])
        nanosec = self.u32(what + ".stamp.nanosec")
        return sec + 1e-9 * nanosec, self.string(what + ".frame_id")


def decode_object_array(data) -> ObjectArrayView:
    """Serialized ReconstructedObjectArray (bytes-like) -> :class:`ObjectArrayView`. Arrays are copies
    (native byte order). Raises :class:`ObjectsDecodeError` for bytes that do not hold one, and ValueError
    for a face index outside its mesh's vertices."""
    r = _Reader(data)
    stamp, frame_id = r.header("header")
    n = r.count("objects", 4)
    objects = []
    for i in range(n):
        where = f"objects[{i}]"
        _, obj_frame = r.header(where + ".header")
        object_id = r.u32(where + ".id")
        label = r.string(where + ".label")
        r.scalars("f8", 8, where + ".pose, scale")
        nf = r.count(where + ".mesh.triangles", 12)
        faces = r.scalars("u4", 3 * nf, where + ".mesh.triangles").reshape(-1, 3).astype(np.uint32)
        nv = r.count(where + ".mesh.vertices", 24)
        vertices = r.scalars("f8", 3 * nv, where + ".mesh.vertices").reshape(-1, 3).astype(np.float32)
        nc = r.count(where + ".vertex_colors", 16)
        rgba = r.scalars("f4", 4 * nc, where + ".vertex_colors").reshape(-1, 4).astype(np.float32)
        box = r.scalars("f8", 10, where + ".bbox_pose, bbox_size").astype(np.float64)
        r.u32(where + ".num_observed_points")
        num_views = r.u32(where + ".num_views")
        r.scalars("f4", 1, where + ".reconstruction_time")
        if faces.size and int(faces.max()) >= nv:
            raise ValueError(f"{where} (id {object_id}): face index {int(faces.max())} >= {nv} vertices")
        if nc not in (0, nv):
            raise ObjectsDecodeError(f"{where} (id {object_id}): {nc} vertex colours for {nv} vertices")
        objects.append(ObjectView(object_id, label, obj_frame or frame_id, vertices, faces, rgba if nc else None,
                                  box[:3].copy(), box[3:7].copy(), box[7:10].copy(), num_views))
    return ObjectArrayView(stamp, frame_id, objects)
