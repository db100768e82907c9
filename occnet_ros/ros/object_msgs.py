"""Outgoing messages of one frame, from pipeline results, as the CDR bytes a publisher sends
(``Publisher.publish`` takes them as they are): occnet_ros/ReconstructedObjectArray and the marker views
(visualization_msgs/MarkerArray). Each object's published mesh (``ProcessedObject.vertices/faces``, already
simplified) is written from its numpy arrays (:mod:`occnet_ros.ros.cdr`), never as one message object per
vertex or face."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from std_msgs.msg import Header

from occnet_ros.perception.processed_frame import ProcessedObject
from occnet_ros.ros.cdr import CdrWriter, Fragment, FragmentWriter, rgba_array, write_header, write_pose
from occnet_ros.ros.conversions import quaternion_from_matrix
from occnet_ros.ros.markers import MeshView, marker_array


def mesh_arrays(result: ProcessedObject) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64 metres, faces (F, 3) int64) of the mesh to publish: the result's
    simplified mesh when it has one, else ``result.obj.mesh`` (empty if none)."""
    if result.vertices is not None and result.faces is not None:
        return np.asarray(result.vertices, np.float64), np.asarray(result.faces, np.int64)
    mesh = result.obj.mesh
    if mesh is None:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


def oriented_box(points: np.ndarray, rotation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box of points (N, 3) in the axes given by the rows of ``rotation`` (3, 3) ->
    (centre (3,) in the points' frame, edge lengths (3,)), metres."""
    q = np.asarray(points, np.float64).reshape(-1, 3) @ rotation.T
    lo, hi = q.min(axis=0), q.max(axis=0)
    return ((lo + hi) / 2.0) @ rotation, hi - lo


def object_body(result: ProcessedObject) -> Fragment:
    """The fields of ``result``'s ReconstructedObject from ``id`` to ``num_views`` (all but ``header`` and
    ``reconstruction_time``, which change from frame to frame), encoded: geometry in the frame of the
    result's points, metres; ``pose``: the canonical frame; ``mesh``: :func:`mesh_arrays`;
    ``vertex_colors``: one per vertex when the result has exactly that many, else none; ``bbox_*``: the
    mesh's box in the canonical axes (the observed points' when the mesh has no faces). Raises
    ValueError for face indices outside the vertices."""
    frame = result.obj.frame
    verts, faces = mesh_arrays(result)
    faces = faces.reshape(-1, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= verts.shape[0]):
        raise ValueError(f"face indices must be in [0, {verts.shape[0]})")
    axes = np.asarray(frame.rotation, np.float64)  # rows: canonical axes in the cloud frame
    quaternion = quaternion_from_matrix(axes.T)
    w = FragmentWriter()
    w.chunk(4)
    w.u32(int(result.segment.id) & 0xFFFFFFFF)
    w.string(result.segment.label)
    w.chunk(8)
    write_pose(w, frame.center, quaternion)
    w.f64(float(frame.scale))
    w.chunk(4)
    w.u32(len(faces))  # mesh.triangles: uint32[3] each
    w.array(faces, np.uint32)
    w.u32(len(verts))  # mesh.vertices: Points, float64 x, y, z
    w.chunk(8)
    w.array(verts, np.float64)
    w.chunk(4)
    colors = result.vertex_colors
    if colors is not None and len(colors) == len(verts):
        w.u32(len(verts))
        w.array(rgba_array(colors), np.float32)
    else:
        w.u32(0)
    box_points = verts if len(faces) else result.segment.points
    centre, size = oriented_box(box_points, axes)
    w.chunk(8)
    write_pose(w, centre, quaternion)
    w.f64(*np.asarray(size, np.float64).tolist())
    w.chunk(4)
    w.u32(int(result.n_observed))
    w.u32(int(result.n_views))
    return w.getvalue()


def write_object(w: CdrWriter, header: Header, body: Fragment, seconds: float) -> None:
    """One ReconstructedObject: ``header``, its :func:`object_body`, ``reconstruction_time`` (seconds)."""
    write_header(w, header)
    w.fragment(body)
    w.f32(float(seconds))


def object_array(results: list[ProcessedObject], header: Header,
                 cache: ObjectMessageCache | None = None) -> bytes:
    """The serialized occnet_ros/ReconstructedObjectArray of ``results`` (geometry in ``header.frame_id``, the
    results' frame); ``cache``: reuse the encoded objects of results seen before."""
    w = CdrWriter()
    write_header(w, header)
    w.u32(len(results))
    for r in results:
        write_object(w, header, cache.get(r) if cache is not None else object_body(r), r.seconds)
    return w.getvalue()


def mesh_view(result: ProcessedObject) -> MeshView:
    """What the marker of ``result`` shows (its published mesh and vertex colours)."""
    verts, faces = mesh_arrays(result)
    return MeshView(int(result.segment.id), verts, faces, result.vertex_colors)


@dataclass
class FrameMessages:
    """``objects``: the frame's serialized occnet_ros/ReconstructedObjectArray; ``markers``: its serialized
    visualization_msgs/MarkerArray, None when not asked for (both CDR bytes to publish as they are; to read
    them, ``rclpy.serialization.deserialize_message``); ``marker_ids``: the object ids whose markers are
    shown after publishing ``markers`` (the previous ids unchanged when ``markers`` is None)."""

    objects: bytes
    markers: bytes | None
    marker_ids: set[int]


class ObjectMessageCache:
    """The encoded :func:`object_body` of each object whose result did not change (the same
    :class:`ProcessedObject`, as the object map hands out for an object it kept), so a static object's
    mesh is not encoded again every frame: only its header and ``reconstruction_time`` are written anew.
    The body's chunks hold wherever they land in the message (see :class:`~occnet_ros.ros.cdr.Fragment`),
    so one encoding serves every offset; an entry keeps about 40 bytes per vertex (with colours) and 12 per
    face. Entries of objects not in the last frame are dropped."""

    def __init__(self):
        self._entries: dict[int, tuple[ProcessedObject, Fragment]] = {}

    def get(self, result: ProcessedObject) -> Fragment:
        """The encoded body of ``result``, made or reused."""
        key = int(result.segment.id)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is result:
            return hit[1]
        body = object_body(result)
        self._entries[key] = (result, body)
        return body

    def keep_only(self, ids: set[int]) -> None:
        """Drop the entries of objects whose id is not in ``ids``."""
        for i in [i for i in self._entries if i not in ids]:
            del self._entries[i]


def frame_messages(results: list[ProcessedObject], header: Header, previous_marker_ids: set[int],
                   with_markers: bool, marker_alpha: float = 1.0, unchanged: set[int] = frozenset(),
                   cache: ObjectMessageCache | None = None) -> FrameMessages:
    """All outgoing messages of one frame, as bytes to publish. Markers (TRIANGLE_LIST per object, DELETE
    for objects gone since ``previous_marker_ids``) only ``with_markers``, and not again for the
    ``unchanged`` objects already shown. ``cache``: reuse the encoded objects of results seen before (see
    :class:`ObjectMessageCache`)."""
    objects = object_array(results, header, cache)
    if cache is not None:
        cache.keep_only({int(r.segment.id) for r in results})
    if not with_markers:
        return FrameMessages(objects, None, set(previous_marker_ids))
    markers, shown = marker_array([mesh_view(r) for r in results], previous_marker_ids, header, marker_alpha,
                                  unchanged)
    return FrameMessages(objects, markers, shown)
