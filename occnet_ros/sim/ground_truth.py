"""Ground truth of a simulated scene: each object's mesh and pose, in memory and as files.

Files written by :func:`write_ground_truth` into a directory ``DIR``:

* ``DIR/<id>_<name>.ply``: the object's mesh in its *object frame* (z up, resting on z = 0), metres.
* ``DIR/poses.json``::

    {"frame_id": "camera_color_optical_frame", "stamp": 12.5, "frame_index": 3,
     "camera_pose_world": [[4x4]],            # optical-to-world
     "objects": [{"id": 1, "name": "duck", "mesh": "1_duck.ply",
                  "pose_world": [[4x4]],       # object-to-world
                  "pose_camera": [[4x4]]}]}    # object-to-optical-frame at that stamp

:func:`read_ground_truth` loads them back with meshes transformed into the camera optical frame.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh

from occnet_ros.geometry import RigidTransform
from occnet_ros.sim.scene import TabletopScene

__all__ = ["GroundTruthObject", "GroundTruthError", "ground_truth", "read_ground_truth",
           "write_ground_truth", "POSES_FILE"]

POSES_FILE = "poses.json"


class GroundTruthError(ValueError):
    """A ground-truth directory that is missing, incomplete or malformed."""


@dataclass
class GroundTruthObject:
    """One object's ground truth. ``mesh``: object frame, metres; ``pose_world``: (4, 4) object-to-world;
    ``pose_camera``: (4, 4) object-to-camera-optical-frame."""

    id: int
    name: str
    mesh: trimesh.Trimesh
    pose_world: np.ndarray
    pose_camera: np.ndarray

    def mesh_in_camera(self) -> trimesh.Trimesh:
        """The mesh with vertices in the camera optical frame, metres (a copy)."""
        return self.mesh.copy().apply_transform(self.pose_camera)

    def mesh_in_world(self) -> trimesh.Trimesh:
        """The mesh with vertices in the world frame, metres (a copy)."""
        return self.mesh.copy().apply_transform(self.pose_world)


def ground_truth(scene: TabletopScene, camera_pose: np.ndarray) -> list[GroundTruthObject]:
    """Every object of ``scene`` with its current pose; ``camera_pose``: (4, 4) optical-to-world."""
    world_to_cam = RigidTransform.from_matrix(camera_pose).inverse().matrix()
    out = []
    for o in scene.objects:
        pw = scene.object_pose(o.id)
        out.append(GroundTruthObject(id=o.id, name=o.name, mesh=o.mesh, pose_world=pw,
                                     pose_camera=world_to_cam @ pw))
    return out


def _mesh_file(obj: GroundTruthObject) -> str:
    return f"{obj.id}_{obj.name}.ply"


def write_ground_truth(directory: str | Path, objects: list[GroundTruthObject], camera_pose: np.ndarray,
                       stamp: float, frame_id: str, frame_index: int = 0, meshes: bool = True,
                       extra: dict | None = None) -> Path:
    """Write ``objects`` to ``directory`` (created if needed); see the module docstring for the layout.
    ``meshes=False`` rewrites only ``poses.json`` (atomically), e.g. each frame of an orbiting camera.
    ``extra``: more JSON-serialisable entries for poses.json (e.g. ``render_time_s``).
    Returns the path of ``poses.json``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    if meshes:
        for o in objects:
            o.mesh.export(d / _mesh_file(o))
    doc = {
        "frame_id": frame_id, "stamp": float(stamp), "frame_index": int(frame_index),
        "camera_pose_world": np.asarray(camera_pose, dtype=np.float64).tolist(),
        "objects": [{"id": o.id, "name": o.name, "mesh": _mesh_file(o), "pose_world": o.pose_world.tolist(),
                     "pose_camera": o.pose_camera.tolist()} for o in objects],
        **(extra or {}),
    }
    path = d / POSES_FILE
    tmp = path.with_name(f".{POSES_FILE}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return path


def _matrix(value, where: str) -> np.ndarray:
    m = np.asarray(value, dtype=np.float64)
    if m.shape != (4, 4) or not np.all(np.isfinite(m)):
        raise GroundTruthError(f"{where} is not a finite 4x4 matrix")
    return m


def read_ground_truth(directory: str | Path) -> tuple[dict, list[GroundTruthObject]]:
    """Load what :func:`write_ground_truth` wrote -> (the poses.json document, objects sorted by id)."""
    d = Path(directory)
    path = d / POSES_FILE
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise GroundTruthError(f"cannot read {path}: {e.strerror}") from e
    except json.JSONDecodeError as e:
        raise GroundTruthError(f"{path} is not valid JSON: {e}") from e
    objects = []
    try:
        for i, entry in enumerate(doc["objects"]):
            where = f"{path}: objects[{i}]"
            mesh_path = d / entry["mesh"]
            if not mesh_path.is_file():
                raise GroundTruthError(f"{where}: mesh file {mesh_path} is missing")
            mesh = trimesh.load(str(mesh_path), force="mesh", process=False)
            objects.append(GroundTruthObject(
                id=int(entry["id"]), name=str(entry["name"]), mesh=mesh,
                pose_world=_matrix(entry["pose_world"], f"{where}.pose_world"),
                pose_camera=_matrix(entry["pose_camera"], f"{where}.pose_camera")))
        _matrix(doc["camera_pose_world"], f"{path}: camera_pose_world")
    except (KeyError, TypeError) as e:
        raise GroundTruthError(f"{path}: missing or malformed entry: {e}") from e
    return doc, sorted(objects, key=lambda o: o.id)
