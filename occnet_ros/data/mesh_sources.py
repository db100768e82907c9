"""Meshes from ``pybullet_data``: the training meshes (``random_urdfs``) and the EVALUATION set.

The named real objects (duck, bunny, teddy, mug, torus, lego, soccer ball, sphere, the toys) are the
evaluation set: :func:`training_mesh_paths` never lists them and :func:`load_training_mesh` refuses them.

Scales: the URDF scale where pybullet_data has a URDF for the object; otherwise (bunny, torus, toys
without URDF) and where the URDF scale gives a size that is not a tabletop object (soccer ball and
sphere2 are 1 m balls), a scale chosen so the object is tabletop-sized; each entry says which.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import trimesh

from occnet_ros.data.solid_inside import solid_inside


def data_root() -> Path:
    """The ``pybullet_data`` folder (ships with the pybullet wheel; no download)."""
    import pybullet_data

    return Path(pybullet_data.getDataPath())


EVALUATION_OBJECTS: dict[str, tuple[str, float]] = {
    # name: (path relative to pybullet_data, scale)            size at that scale
    "duck": ("duck.obj", 0.05),                   # duck_vhacd.urdf scale; ~8 cm
    "bunny": ("bunny.obj", 0.1),                  # no URDF; ~20 cm tall
    "teddy": ("teddy2_VHACD_CHs.obj", 0.1),       # teddy_vhacd.urdf scale; ~9 cm
    "mug": ("objects/mug.obj", 1.0),              # objects/mug.urdf (no scale); 10 cm
    "torus": ("torus/torus_textured.obj", 0.1),   # no URDF for the rigid mesh; 15 cm ring
    "lego": ("lego/lego.obj", 0.1),               # lego/lego.urdf scale; ~3 cm
    "soccer_ball": ("soccerball.obj", 0.2),       # URDF scale 1 is a 1 m ball; 20 cm here
    "sphere": ("sphere_smooth.obj", 0.05),        # unit-radius mesh; 10 cm ball
    "toy_cylinder": ("toys/cylinder.obj", 1.0),   # ~8 x 11 cm
    "toy_prism": ("toys/prism.obj", 1.0),         # ~12 cm
    "toy_concave_box": ("toys/concave_box.obj", 0.1),  # toys/concave_box.urdf scale 1 is 2 m; 20 cm
    "toy_shape_sorter": ("toys/shape_sorter.obj", 0.5),  # 20 cm
}
"""Evaluation objects: name -> (mesh path relative to ``data_root()``, scale). Never train on these."""

_RX90 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])

UPRIGHT_ROTATIONS: dict[str, np.ndarray] = {
    "duck": _RX90, "bunny": _RX90, "teddy": _RX90, "torus": _RX90, "lego": _RX90,
    "toy_cylinder": _RX90,
}
"""(3, 3) rotation applied to an evaluation mesh (after its scale) so that it stands upright with z up;
these meshes are modelled y-up. Objects not listed are upright as stored."""

_EVALUATION_STEMS = ("duck", "bunny", "teddy", "mug", "torus", "lego", "soccerball", "sphere", "toys/")


class EvaluationMeshError(ValueError):
    """Training code was asked to use an evaluation mesh."""


def is_evaluation_mesh(path: str | Path) -> bool:
    """True if ``path`` is one of the evaluation objects (or any file of theirs, e.g. a VHACD hull)."""
    p = Path(path).resolve()
    root = data_root().resolve()
    eval_paths = {(root / rel).resolve() for rel, _ in EVALUATION_OBJECTS.values()}
    if p in eval_paths:
        return True
    try:
        rel = p.relative_to(root).as_posix().lower()
    except ValueError:
        return False
    if rel.startswith("random_urdfs/"):
        return False
    return any(stem in rel for stem in _EVALUATION_STEMS)


def _check_training(path: str | Path) -> None:
    if is_evaluation_mesh(path):
        raise EvaluationMeshError(f"{path} is an evaluation mesh; training data must not use it")


def training_mesh_paths() -> list[tuple[Path, float]]:
    """(mesh path, URDF scale) of every ``random_urdfs/*/*.urdf`` visual mesh, sorted by path."""
    out = []
    for urdf in sorted((data_root() / "random_urdfs").glob("*/*.urdf")):
        mesh_el = ET.parse(urdf).getroot().find("./link/visual/geometry/mesh")
        if mesh_el is None:
            continue
        scale = [float(v) for v in mesh_el.get("scale", "1 1 1").split()]
        path = urdf.parent / mesh_el.get("filename")
        if path.exists() and not is_evaluation_mesh(path):
            out.append((path, float(np.mean(scale))))
    return out


MESH_SUFFIXES = (".obj", ".stl", ".ply")


def user_mesh_paths(dirs: list[str] | tuple[str, ...]) -> list[tuple[Path, float]]:
    """(mesh path, 1.0) of every OBJ/STL/PLY file under each folder of ``dirs`` (recursive, sorted),
    evaluation meshes left out. Raises ValueError naming a folder that is missing or has no mesh."""
    out = []
    for d in dirs:
        folder = Path(d).expanduser()
        if not folder.is_dir():
            raise ValueError(f"mesh_dirs: {folder} is not a folder")
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in MESH_SUFFIXES and p.is_file())
        found = [p for p in found if not is_evaluation_mesh(p)]
        if not found:
            raise ValueError(f"mesh_dirs: {folder} holds no OBJ/STL/PLY mesh (evaluation meshes excluded)")
        out += [(p, 1.0) for p in found]
    return out


def load_mesh(path: str | Path, scale: float = 1.0, rotation: np.ndarray | None = None) -> trimesh.Trimesh:
    """Load a mesh file as one trimesh in metres: scaled, optionally rotated (3x3, applied after the
    scale), centred in x/y on its bounding box and resting on z = 0 (object frame, z up).

    Raises ValueError for an empty or unreadable mesh.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"mesh file {path} does not exist")
    m = trimesh.load(str(path), force="mesh", process=True)
    if not isinstance(m, trimesh.Trimesh) or len(m.faces) == 0:
        raise ValueError(f"{path} holds no triangles")
    m = trimesh.Trimesh(m.vertices * float(scale), m.faces, process=True)
    if rotation is not None:
        m.vertices = m.vertices @ np.asarray(rotation, dtype=np.float64).T
    lo, hi = m.bounds
    m.apply_translation([-0.5 * (lo[0] + hi[0]), -0.5 * (lo[1] + hi[1]), -lo[2]])
    return m


def load_training_mesh(path: str | Path, scale: float = 1.0, rotation: np.ndarray | None = None
                       ) -> trimesh.Trimesh:
    """:func:`load_mesh` for training: refuses evaluation meshes (:class:`EvaluationMeshError`)."""
    _check_training(path)
    return load_mesh(path, scale, rotation)


def make_watertight(mesh: trimesh.Trimesh) -> trimesh.Trimesh | None:
    """The mesh if it is watertight, a repaired copy if simple repairs make it so, else None."""
    if mesh.is_watertight:
        return mesh
    m = mesh.copy()
    m.merge_vertices()
    m.update_faces(m.nondegenerate_faces())
    m.update_faces(m.unique_faces())
    trimesh.repair.fill_holes(m)
    trimesh.repair.fix_normals(m)
    return m if m.is_watertight else None


def mesh_contains(mesh: trimesh.Trimesh, points: np.ndarray, nsamples: int = 3) -> np.ndarray:
    """points: (N, 3) metres -> (N,) bool inside the solid of ``mesh`` (closed parts; overlapping
    parts are united, see :mod:`occnet_ros.data.solid_inside`), ``nsamples`` parity rays voting per part.

    Until data format 3 this was open3d's ``compute_occupancy`` on the whole mesh, which calls the
    overlap of two parts outside: most ``random_urdfs`` meshes are 4-8 overlapping parts."""
    p = np.asarray(points, dtype=np.float32)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {p.shape}")
    return solid_inside(mesh, p, n_rays=nsamples, rng=np.random.default_rng(0))
