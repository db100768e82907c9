"""RViz markers of the reconstructed objects: one TRIANGLE_LIST marker per object (marker id = object
id), DELETE for objects that disappeared. Geometry in the objects' frame, metres."""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from occnet_ros.ros.conversions import colors_to_msgs, points_to_msgs

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
    ``colors`` (V, 3) uint8 or None (then one colour per object from :func:`id_color`).
    ``vertex_points``: the vertices already as Points (shared with the object's mesh message), or None
    to build them here."""

    object_id: int
    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None
    vertex_points: list | None = None


def mesh_marker(view: MeshView, header: Header, alpha: float = 1.0) -> Marker:
    """A TRIANGLE_LIST marker: three points per face; per-vertex colours when the view has them."""
    m = Marker()
    m.header = header
    m.ns = NAMESPACE
    m.id = marker_id(view.object_id)
    m.type = Marker.TRIANGLE_LIST
    m.action = Marker.ADD
    m.pose.orientation.w = 1.0
    m.scale.x = m.scale.y = m.scale.z = 1.0
    r, g, b = id_color(view.object_id)
    m.color = ColorRGBA(r=r, g=g, b=b, a=float(alpha))
    corners = np.asarray(view.faces, dtype=np.int64).reshape(-1).tolist()
    # one Point per vertex, shared by the triangle corners that use it (3 corners per face, ~6 per vertex);
    # the corner lists are gathered by map in C, no Python loop per corner
    vertex_points = view.vertex_points
    if vertex_points is None:
        vertex_points = points_to_msgs(np.asarray(view.vertices).reshape(-1, 3))
    m.points = list(map(vertex_points.__getitem__, corners))
    if view.colors is not None:
        vertex_colors = colors_to_msgs(np.asarray(view.colors).reshape(-1, 3), alpha)
        m.colors = list(map(vertex_colors.__getitem__, corners))
    return m


def delete_marker(object_id: int, header: Header) -> Marker:
    """DELETE of the marker of ``object_id``."""
    m = Marker()
    m.header = header
    m.ns = NAMESPACE
    m.id = marker_id(object_id)
    m.action = Marker.DELETE
    return m


def marker_array(views: list[MeshView], previous_ids: set[int], header: Header,
                 alpha: float = 1.0, unchanged: set[int] = frozenset()) -> tuple[MarkerArray, set[int]]:
    """Markers for the current objects plus DELETEs for ``previous_ids`` that are gone -> (array, ids
    now shown). Objects whose mesh has no faces are not shown (and deleted if they were). ``unchanged``:
    ids of current objects whose mesh did not change; those already shown are not sent again."""
    shown = {v.object_id for v in views if len(v.faces)}
    resend = shown - (set(unchanged) & set(previous_ids))
    arr = MarkerArray()
    arr.markers = [mesh_marker(v, header, alpha) for v in views if v.object_id in resend]
    arr.markers += [delete_marker(i, header) for i in sorted(set(previous_ids) - shown)]
    return arr, shown
