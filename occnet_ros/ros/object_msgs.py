"""occnet_ros/ReconstructedObject messages from pipeline results."""
from __future__ import annotations

import numpy as np
from std_msgs.msg import Header

from occnet_ros.msg import ReconstructedObject as ReconstructedObjectMsg
from occnet_ros.msg import ReconstructedObjectArray
from occnet_ros.ros.conversions import colors_to_msgs, mesh_to_msg, pose_from_rt, vector3
from occnet_ros.ros.markers import MeshView
from occnet_ros.ros.pipeline import ObjectResult


def mesh_arrays(result: ObjectResult) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64 metres, faces (F, 3) int64) of the result's mesh (empty if none)."""
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


def object_msg(result: ObjectResult, header: Header) -> ReconstructedObjectMsg:
    """One ReconstructedObject message (geometry in ``header.frame_id``, the cloud's frame)."""
    frame = result.obj.frame
    verts, faces = mesh_arrays(result)
    msg = ReconstructedObjectMsg()
    msg.header = header
    msg.id = int(result.segment.id) & 0xFFFFFFFF
    msg.label = result.segment.label
    axes = np.asarray(frame.rotation, np.float64)  # rows: canonical axes in the cloud frame
    msg.pose = pose_from_rt(axes.T, frame.center)
    msg.scale = float(frame.scale)
    msg.mesh = mesh_to_msg(verts, faces)
    if result.vertex_colors is not None and len(result.vertex_colors) == len(verts):
        msg.vertex_colors = colors_to_msgs(result.vertex_colors)
    box_points = verts if len(faces) else result.segment.points
    centre, size = oriented_box(box_points, axes)
    msg.bbox_pose = pose_from_rt(axes.T, centre)
    msg.bbox_size = vector3(size)
    msg.num_observed_points = int(result.n_observed)
    msg.reconstruction_time = float(result.seconds)
    return msg


def object_array_msg(results: list[ObjectResult], header: Header) -> ReconstructedObjectArray:
    """ReconstructedObjectArray of ``results``."""
    arr = ReconstructedObjectArray()
    arr.header = header
    arr.objects = [object_msg(r, header) for r in results]
    return arr


def mesh_view(result: ObjectResult) -> MeshView:
    """What the marker of ``result`` shows."""
    verts, faces = mesh_arrays(result)
    return MeshView(int(result.segment.id), verts, faces, result.vertex_colors)
