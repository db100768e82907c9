"""RViz markers of the reconstructed objects: one TRIANGLE_LIST marker per object (marker id = object
id), DELETE for objects that disappeared. Geometry in the objects' frame, metres. The MarkerArray is
written as CDR bytes straight from the mesh arrays (:mod:`occnet_ros.ros.cdr`): three float64 points and,
with colours, three float32 RGBA colours per face, no Python object per point."""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from occnet_ros.ros.cdr import CdrWriter, Fragment, FragmentWriter, rgba_array, write_header, write_pose

NAMESPACE = "occnet_objects"


def marker_id(object_id: int) -> int:
    """uint32 object id -> int32 marker id (a bijection: ids >= 2**31 wrap to negative numbers)."""
    i = int(object_id) & 0xFFFFFFFF
    return i - (1 << 32) if i >= (1 << 31) else i


def id_color(object_id: int) -> tuple[float, float, float]:
    """A distinct, stable RGB colour in [0, 1] per object id (golden-ratio hue steps)."""
    h = (int(object_id) * 0.618033988749895) % 1.0
    return colorsys.hsv_to_rgb(h, 0.65, 0.95)


@dataclass
class MeshView:
    """What a marker shows of one object: ``vertices`` (V, 3) metres, ``faces`` (F, 3) indices,
    ``colors`` (V, 3) uint8 or None (then one colour per object from :func:`id_color`)."""

    object_id: int
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None


def _marker_tail() -> Fragment:
    """The fields after ``colors`` of every marker here, all empty: texture_resource, texture
    (CompressedImage: header, format, data), uv_coordinates, text, mesh_resource, mesh_file (filename,
    data), mesh_use_embedded_materials."""
    w = FragmentWriter()
    w.chunk(4)
    w.string("")
    write_header(w, Header())
    w.string("")
    w.u32(0)  # texture.data
    w.u32(0)  # uv_coordinates
    w.string("")
    w.string("")
    w.string("")
    w.u32(0)  # mesh_file.data
    w.boolean(False)
    return w.getvalue()


_TAIL = _marker_tail()


def _write_marker(w: CdrWriter, header: Header, object_id: int, type_: int, action: int,
                  scale: float, color: tuple, points: np.ndarray | None = None,
                  colors: np.ndarray | None = None) -> None:
    """One visualization_msgs/Marker in namespace :data:`NAMESPACE` at the identity pose: ``points``
    (N, 3) metres, ``colors`` (N, 4) RGBA in [0, 1] or None."""
    write_header(w, header)
    w.string(NAMESPACE)
    w.pack("i", marker_id(object_id), type_, action)
    write_pose(w, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    w.f64(scale, scale, scale)
    w.pack("f", *color)
    w.pack("i", 0)  # lifetime.sec: forever
    w.u32(0)  # lifetime.nanosec
    w.boolean(False)  # frame_locked
    for values, dtype in ((points, np.float64), (colors, np.float32)):
        w.u32(0 if values is None else len(values))
        if values is not None:
            w.array(values, dtype)
    w.fragment(_TAIL)


def write_mesh_marker(w: CdrWriter, view: MeshView, header: Header, alpha: float = 1.0) -> None:
    """A TRIANGLE_LIST marker: three points per face (the face's vertices in order); per-vertex colours
    (alpha ``alpha``) when the view has them, else one colour for the object (:func:`id_color`)."""
    corners = np.asarray(view.faces, dtype=np.int64).reshape(-1)
    points = np.asarray(view.vertices, dtype=np.float64).reshape(-1, 3)[corners]
    colors = None
    if view.colors is not None:
        colors = rgba_array(view.colors, alpha)[corners]
    r, g, b = id_color(view.object_id)
    _write_marker(w, header, view.object_id, Marker.TRIANGLE_LIST, Marker.ADD, 1.0, (r, g, b, float(alpha)),
                  points, colors)


def write_delete_marker(w: CdrWriter, object_id: int, header: Header) -> None:
    """DELETE of the marker of ``object_id`` (the other fields as a default Marker has them)."""
    _write_marker(w, header, object_id, Marker.ARROW, Marker.DELETE, 0.0, (0.0, 0.0, 0.0, 0.0))


def marker_array(views: list[MeshView], previous_ids: set[int], header: Header,
                 alpha: float = 1.0, unchanged: set[int] = frozenset()) -> tuple[bytes, set[int]]:
    """Markers for the current objects plus DELETEs for ``previous_ids`` that are gone -> (the serialized
    visualization_msgs/MarkerArray, ids now shown). Objects whose mesh has no faces are not shown (and
    deleted if they were). ``unchanged``: ids of current objects whose mesh did not change; those already
    shown are not sent again. Markers come in the order of ``views``, then the DELETEs by increasing id."""
    shown = {v.object_id for v in views if len(v.faces)}
    resend = shown - (set(unchanged) & set(previous_ids))
    adds = [v for v in views if v.object_id in resend]
    deletes = sorted(set(previous_ids) - shown)
    w = CdrWriter()
    w.u32(len(adds) + len(deletes))
    for v in adds:
        write_mesh_marker(w, v, header, alpha)
    for i in deletes:
        write_delete_marker(w, i, header)
    return w.getvalue(), shown
