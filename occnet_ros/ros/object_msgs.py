"""Outgoing messages of one frame: occnet_ros/ReconstructedObject(Array) and the marker views, from
pipeline results. Each object's published mesh (``ProcessedObject.vertices/faces``, already simplified) is
turned into Point messages once and shared by its Mesh message and its marker."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from occnet_ros.msg import ReconstructedObject as ReconstructedObjectMsg
from occnet_ros.msg import ReconstructedObjectArray
from occnet_ros.ros.conversions import colors_to_msgs, mesh_to_msg, points_to_msgs, pose_from_rt, vector3
from occnet_ros.ros.markers import MeshView, marker_array
from occnet_ros.perception.frame_pipeline import ProcessedObject


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


def object_msg(result: ProcessedObject, header: Header, vertex_points: list | None = None) -> ReconstructedObjectMsg:
    """One ReconstructedObject message (geometry in ``header.frame_id``, the cloud's frame).
    ``vertex_points``: the published mesh's vertices as Points (shared with the marker), or None."""
    frame = result.obj.frame
    verts, faces = mesh_arrays(result)
    msg = ReconstructedObjectMsg()
    msg.header = header
    msg.id = int(result.segment.id) & 0xFFFFFFFF
    msg.label = result.segment.label
    axes = np.asarray(frame.rotation, np.float64)  # rows: canonical axes in the cloud frame
    msg.pose = pose_from_rt(axes.T, frame.center)
    msg.scale = float(frame.scale)
    msg.mesh = mesh_to_msg(verts, faces, vertex_points)
    if result.vertex_colors is not None and len(result.vertex_colors) == len(verts):
        msg.vertex_colors = colors_to_msgs(result.vertex_colors)
    box_points = verts if len(faces) else result.segment.points
    centre, size = oriented_box(box_points, axes)
    msg.bbox_pose = pose_from_rt(axes.T, centre)
    msg.bbox_size = vector3(size)
    msg.num_observed_points = int(result.n_observed)
    msg.num_views = int(result.n_views)
    msg.reconstruction_time = float(result.seconds)
    return msg


def object_array_msg(results: list[ProcessedObject], header: Header) -> ReconstructedObjectArray:
    """ReconstructedObjectArray of ``results``."""
    arr = ReconstructedObjectArray()
    arr.header = header
    arr.objects = [object_msg(r, header) for r in results]
    return arr


def mesh_view(result: ProcessedObject, vertex_points: list | None = None) -> MeshView:
    """What the marker of ``result`` shows (its published mesh)."""
    verts, faces = mesh_arrays(result)
    return MeshView(int(result.segment.id), verts, faces, result.vertex_colors, vertex_points)


@dataclass
class FrameMessages:
    """``objects``: the frame's ReconstructedObjectArray; ``markers``: its MarkerArray, None when not
    asked for; ``marker_ids``: the object ids whose markers are shown after publishing ``markers`` (the
    previous ids unchanged when ``markers`` is None)."""

    objects: ReconstructedObjectArray
    markers: MarkerArray | None
    marker_ids: set[int]


class ObjectMessageCache:
    """The message of each object whose result did not change (the same :class:`ProcessedObject`, as the
    object map hands out for an object it kept), so a static object's mesh is not turned into messages again
    every frame: only its header and ``reconstruction_time`` are refreshed. Entries of objects not in the
    last frame are dropped."""

    def __init__(self):
        self._entries: dict[int, tuple[ProcessedObject, ReconstructedObjectMsg, list]] = {}

    def get(self, result: ProcessedObject, header: Header) -> tuple[ReconstructedObjectMsg, list]:
        """(message, vertex Points) of ``result``, made or reused."""
        hit = self._entries.get(int(result.segment.id))
        if hit is not None and hit[0] is result:
            msg, points = hit[1], hit[2]
            msg.header = header
            msg.reconstruction_time = float(result.seconds)
            return msg, points
        points = points_to_msgs(mesh_arrays(result)[0])
        msg = object_msg(result, header, points)
        self._entries[int(result.segment.id)] = (result, msg, points)
        return msg, points

    def keep_only(self, ids: set[int]) -> None:
        for i in [i for i in self._entries if i not in ids]:
            del self._entries[i]


def frame_messages(results: list[ProcessedObject], header: Header, previous_marker_ids: set[int],
                   with_markers: bool, marker_alpha: float = 1.0, unchanged: set[int] = frozenset(),
                   cache: ObjectMessageCache | None = None) -> FrameMessages:
    """All outgoing messages of one frame. Markers (TRIANGLE_LIST per object, DELETE for objects gone
    since ``previous_marker_ids``) only ``with_markers``, and not again for the ``unchanged`` objects
    already shown; each vertex becomes one Point shared by the object's Mesh message and its marker.
    ``cache``: reuse the messages of results seen before (see :class:`ObjectMessageCache`)."""
    objects = ReconstructedObjectArray()
    objects.header = header
    views = []
    for r in results:
        if cache is not None:
            msg, points = cache.get(r, header)
        else:
            points = points_to_msgs(mesh_arrays(r)[0])
            msg = object_msg(r, header, points)
        objects.objects.append(msg)
        if with_markers:
            views.append(mesh_view(r, points))
    if cache is not None:
        cache.keep_only({int(r.segment.id) for r in results})
    if not with_markers:
        return FrameMessages(objects, None, set(previous_marker_ids))
    markers, shown = marker_array(views, previous_marker_ids, header, marker_alpha, unchanged)
    return FrameMessages(objects, markers, shown)
