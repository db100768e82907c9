"""A PyBullet (DIRECT mode, no GUI) tabletop scene with evaluation objects from ``pybullet_data``.

World frame: z up, metres, origin on the floor under the table centre. The table (``table/table.urdf``,
1.5 m x 1.0 m, long side along world x) has its top at :attr:`TabletopScene.table_top_z`. Objects are
placed resting upright on the table top at seeded random, non-overlapping positions and yaws (a few
optional physics steps may then settle them).

Each object's *object frame* is the frame of its mesh as :func:`occnet_ros.data.mesh_sources.load_mesh`
returns it: z up, bottom-centre of the bounding box at the origin, metres. The very same trimesh is
handed to PyBullet for rendering and kept as the ground truth, so rendered pixels and scoring agree.

Instance ids: object ``i`` (0-based, in :attr:`TabletopScene.objects` order) has id ``i + 1`` in the
mask; 0 is the table, floor and background. Ids never change while the scene exists.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pybullet
import pybullet_data
import trimesh

from occnet_ros.data.mesh_sources import EVALUATION_OBJECTS, UPRIGHT_ROTATIONS, data_root, load_mesh
from occnet_ros.geometry import RigidTransform

__all__ = ["SceneConfig", "SceneError", "SceneObject", "TabletopScene", "UPRIGHT_ROTATIONS",
           "object_mesh", "pose_matrix"]


TABLE_TOP_Z = 0.625
"""Height of the top of ``table/table.urdf`` (placed at the origin), metres."""

TABLE_HALF_EXTENT = (0.75, 0.5)
"""Half of the table top's size along world x and y, metres."""

PALETTE = (
    (0.90, 0.62, 0.15), (0.25, 0.55, 0.85), (0.85, 0.30, 0.30), (0.35, 0.70, 0.40),
    (0.65, 0.45, 0.80), (0.20, 0.75, 0.75), (0.90, 0.85, 0.30), (0.60, 0.60, 0.60),
)
"""Object colours (RGB, 0..1), by object index modulo the palette length."""


class SceneError(ValueError):
    """A scene that cannot be built: unknown object name, objects that do not fit on the table..."""


@dataclass
class SceneConfig:
    """What is on the table.

    ``objects``: names from :data:`EVALUATION_OBJECTS` in instance-id order; empty = ``num_objects``
    distinct objects drawn with ``seed``. ``area``: (x, y) size in metres of the rectangle, centred on
    the table top, in which object centres and footprints must lie. ``min_gap``: smallest clearance
    between two objects' footprint circles, metres. ``settle_steps``: physics steps (240 Hz) run after
    placing; 0 keeps the exact resting poses.
    """

    seed: int = 0
    objects: list[str] = field(default_factory=list)
    num_objects: int = 4
    area: tuple[float, float] = (0.5, 0.3)
    min_gap: float = 0.02
    settle_steps: int = 0

    def validate(self) -> None:
        unknown = [n for n in self.objects if n not in EVALUATION_OBJECTS]
        if unknown:
            raise ValueError(f"unknown object name(s) {unknown}; known: {sorted(EVALUATION_OBJECTS)}")
        if len(set(self.objects)) != len(self.objects):
            raise ValueError(f"objects lists a name twice: {self.objects}")
        if not self.objects and not 1 <= self.num_objects <= len(EVALUATION_OBJECTS):
            raise ValueError(f"num_objects must be in [1, {len(EVALUATION_OBJECTS)}], got {self.num_objects}")
        ax, ay = self.area
        if not (0 < ax <= 2 * TABLE_HALF_EXTENT[0] and 0 < ay <= 2 * TABLE_HALF_EXTENT[1]):
            raise ValueError(f"area must be positive and fit on the 1.5 x 1.0 m table, got {self.area}")
        if self.min_gap < 0:
            raise ValueError(f"min_gap must be >= 0, got {self.min_gap}")
        if self.settle_steps < 0:
            raise ValueError(f"settle_steps must be >= 0, got {self.settle_steps}")

    def object_names(self) -> list[str]:
        """The objects in instance-id order (drawn from ``seed`` when ``objects`` is empty)."""
        if self.objects:
            return list(self.objects)
        rng = np.random.default_rng([self.seed, 0])
        pool = sorted(EVALUATION_OBJECTS)
        return [pool[i] for i in rng.choice(len(pool), size=self.num_objects, replace=False)]


def object_mesh(name: str) -> trimesh.Trimesh:
    """The evaluation object ``name`` in its upright object frame (z up, resting on z = 0), metres."""
    if name not in EVALUATION_OBJECTS:
        raise SceneError(f"unknown object {name!r}; known: {sorted(EVALUATION_OBJECTS)}")
    rel, scale = EVALUATION_OBJECTS[name]
    return load_mesh(data_root() / rel, scale, UPRIGHT_ROTATIONS.get(name))


def pose_matrix(position, quaternion_xyzw) -> np.ndarray:
    """(4, 4) float64 homogeneous transform from a position (3,) and a quaternion (x, y, z, w)."""
    return RigidTransform.from_quaternion(quaternion_xyzw, position).matrix()


@dataclass
class SceneObject:
    """One object on the table. ``id``: instance id (index + 1); ``mesh``: object frame, metres;
    ``body``: PyBullet body unique id; ``color``: RGBA 0..1."""

    id: int
    name: str
    mesh: trimesh.Trimesh
    body: int
    color: tuple[float, float, float, float]


def _place(rng: np.random.Generator, radii: np.ndarray, cfg: SceneConfig, restarts: int = 50,
           tries: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping centres (K, 2) (table-top x, y, metres) and yaws (K,) for footprint circles of
    ``radii`` (K,): sequential random placement, largest first, restarted from scratch when an object
    finds no room; raises SceneError when no restart succeeds."""
    half = 0.5 * np.asarray(cfg.area, dtype=np.float64)
    for i in range(len(radii)):
        if np.any(radii[i] > half):
            raise SceneError(f"object {i} (footprint radius {radii[i]:.3f} m) does not fit in area {cfg.area}")
    order = np.argsort(-radii, kind="stable")
    for _ in range(restarts):
        centres = np.full((len(radii), 2), np.nan)
        for i in order:
            placed = ~np.isnan(centres[:, 0])
            cand = rng.uniform(-half + radii[i], half - radii[i], size=(tries, 2))
            gaps = (np.linalg.norm(cand[:, None, :] - centres[None, placed], axis=2)
                    - radii[placed][None] - radii[i])
            ok = np.flatnonzero(np.all(gaps >= cfg.min_gap, axis=1))
            if len(ok) == 0:
                break
            centres[i] = cand[ok[0]]
        else:
            return centres, rng.uniform(-np.pi, np.pi, size=len(radii))
    raise SceneError(f"cannot place {len(radii)} objects without overlap in area {cfg.area} "
                     f"(seed {cfg.seed}); use fewer or smaller objects or a larger area")


class TabletopScene:
    """The PyBullet scene. Owns one DIRECT physics client; call :meth:`close` (or use ``with``).

    Not thread-safe: use one scene from one thread at a time.
    """

    def __init__(self, config: SceneConfig | None = None):
        self.config = config or SceneConfig()
        self.config.validate()
        names = self.config.object_names()
        meshes = [object_mesh(n) for n in names]
        self.client = pybullet.connect(pybullet.DIRECT)
        try:
            self._build(names, meshes)
        except BaseException:
            self.close()
            raise

    def _build(self, names: list[str], meshes: list[trimesh.Trimesh]) -> None:
        c = self.client
        pybullet.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=c)
        pybullet.setGravity(0, 0, -9.81, physicsClientId=c)
        self.plane_body = pybullet.loadURDF("plane.urdf", physicsClientId=c)
        self.table_body = pybullet.loadURDF("table/table.urdf", useFixedBase=True, physicsClientId=c)
        self.table_top_z = TABLE_TOP_Z
        rng = np.random.default_rng([self.config.seed, 1])
        radii = np.array([np.linalg.norm(m.vertices[:, :2], axis=1).max() for m in meshes])
        centres, yaws = _place(rng, radii, self.config)
        self.objects: list[SceneObject] = []
        for i, (name, mesh) in enumerate(zip(names, meshes)):
            color = (*PALETTE[i % len(PALETTE)], 1.0)
            visual = pybullet.createVisualShape(
                pybullet.GEOM_MESH, vertices=mesh.vertices.tolist(),
                indices=mesh.faces.reshape(-1).astype(int).tolist(), rgbaColor=color, physicsClientId=c)
            hull = mesh.convex_hull
            collision = pybullet.createCollisionShape(
                pybullet.GEOM_MESH, vertices=hull.vertices.tolist(), physicsClientId=c)
            if visual < 0 or collision < 0:
                raise SceneError(f"PyBullet refused the mesh of {name!r}")
            position = [centres[i, 0], centres[i, 1], self.table_top_z + 1e-4]
            body = pybullet.createMultiBody(
                baseMass=0.1, baseCollisionShapeIndex=collision, baseVisualShapeIndex=visual,
                basePosition=position, baseOrientation=pybullet.getQuaternionFromEuler([0, 0, yaws[i]]),
                physicsClientId=c)
            self.objects.append(SceneObject(id=i + 1, name=name, mesh=mesh, body=body, color=color))
        for _ in range(self.config.settle_steps):
            pybullet.stepSimulation(physicsClientId=c)
        max_body = max(o.body for o in self.objects)
        self._body_to_id = np.zeros(max(max_body, self.table_body, self.plane_body) + 2, dtype=np.uint16)
        for o in self.objects:
            self._body_to_id[o.body + 1] = o.id

    def object(self, instance_id: int) -> SceneObject:
        """The object with mask id ``instance_id`` (1-based); KeyError if there is none."""
        if not 1 <= instance_id <= len(self.objects):
            raise KeyError(f"no object with instance id {instance_id} (ids 1..{len(self.objects)})")
        return self.objects[instance_id - 1]

    def object_pose(self, instance_id: int) -> np.ndarray:
        """(4, 4) float64 object-frame-to-world transform of object ``instance_id``, as PyBullet has it."""
        pos, quat = pybullet.getBasePositionAndOrientation(self.object(instance_id).body,
                                                           physicsClientId=self.client)
        return pose_matrix(pos, quat)

    def instance_mask(self, segmentation: np.ndarray) -> np.ndarray:
        """PyBullet segmentation buffer (H, W) int (body unique id, -1 = nothing) -> (H, W) uint16
        instance ids (object index + 1; 0 for table, floor and background)."""
        seg = np.asarray(segmentation).astype(np.int64)
        seg = np.clip(seg, -1, len(self._body_to_id) - 2)
        return self._body_to_id[seg + 1]

    def close(self) -> None:
        """Disconnect the physics client (idempotent)."""
        client, self.client = getattr(self, "client", -1), -1
        if client >= 0:
            try:
                pybullet.disconnect(physicsClientId=client)
            except pybullet.error:
                pass

    def __enter__(self) -> TabletopScene:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
