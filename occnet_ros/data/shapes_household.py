"""Procedural families of what kitchens and desks hold: thin-walled open containers, flat boxes and slabs,
and large objects (up to 0.45 m), with exact labels and a held-out split per family.

Every builder makes a :class:`~occnet_ros.data.shapes_fine.FineShape` (metres, object frame z up, resting
on z = 0, random yaw) from the analytic pieces of :mod:`occnet_ros.data.shapes_sdf`; labels are its exact
``contains``. Largest extent (metres) of each family, asserted by the tests:

* ``thin_bowl`` 0.08-0.30: bowls of revolution, elliptic, conical or steep profiles, wall 1.5-5 mm,
  maybe a foot ring;
* ``plate`` 0.10-0.32: plates and saucers, a flat well, a raised rim, a foot ring, 1.5-6 mm thick;
* ``pan`` 0.20-0.45: pans and pots (wall 1.5-4 mm) with a long straight or upward-angled handle at the rim;
* ``tray`` 0.15-0.45: rectangular, rounded corners, rim 1-4 cm high, wall 2-6 mm;
* ``basket`` 0.10-0.40: round or rectangular open baskets whose walls carry rows of slots or holes;
* ``compartment_bin`` 0.08-0.40: open-top bins and desk organisers with internal divider walls;
* ``flat_box`` 0.05-0.30: boxes and slabs lying on their largest face, 1-5 cm tall (butter packs,
  books, pudding boxes, cutting boards), sometimes with rounded edges;
* ``large`` 0.25-0.45 (:data:`LARGE_SIZE_RANGE`): a shape of :data:`LARGE_BASE_WEIGHTS` scaled up.

Held-out split: a shape of family F is fully determined by its *design id* ``d`` (its parameters come from
``default_rng([HOUSEHOLD_SEED, code(F), d])``). The training sampler (``sample_shape``) only draws ids
``d >= HELDOUT_RESERVED``; :func:`heldout_shapes` returns the shapes with ids ``0 .. n-1``, which training
can never produce.
"""
from __future__ import annotations

import numpy as np

from occnet_ros.data.shapes_fine import FineShape, RoundedPrism, Scaled, shell_profile
from occnet_ros.data.shapes_sdf import Box, Difference, Revolution, Shape, Transformed, Union, rotation_z

__all__ = ["HOUSEHOLD_FAMILIES", "HOUSEHOLD_WEIGHTS", "SIZE_RANGES", "LARGE_SIZE_RANGE", "LARGE_BASE_WEIGHTS",
           "HELDOUT_RESERVED", "build_household", "heldout_shapes"]

HOUSEHOLD_SEED = 0x484F5553  # the parameter streams of these families: [HOUSEHOLD_SEED, code, design id]
HELDOUT_RESERVED = 1000
"""Design ids 0 .. HELDOUT_RESERVED - 1 are held out (never drawn by the training sampler)."""
_TRAIN_ID_MAX = 2**62
LARGE_SIZE_RANGE = (0.25, 0.45)
"""Largest extent, metres, of the ``large`` family."""
SIZE_RANGES = {"thin_bowl": (0.08, 0.30), "plate": (0.10, 0.32), "pan": (0.20, 0.45), "tray": (0.15, 0.45),
               "basket": (0.10, 0.40), "compartment_bin": (0.08, 0.40), "flat_box": (0.05, 0.30),
               "large": LARGE_SIZE_RANGE}
"""family -> (min, max) largest extent, metres."""
LARGE_BASE_WEIGHTS = {"thin_bowl": 1.0, "plate": 0.5, "tray": 1.0, "basket": 1.0, "compartment_bin": 1.0,
                      "flat_box": 1.5, "box": 1.0, "hollow_box": 1.0, "cylinder": 0.5, "extrusion": 0.5,
                      "csg_union": 0.5}
"""Families the ``large`` family scales up (household ones keep their own split of design ids)."""


def _rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)


def _yawed(rng, shape: Shape, min_feature: float, probes: list) -> FineShape:
    """``shape`` turned by a random yaw about the z axis, as a FineShape with ``.yaw`` (radians), ``.size``
    (largest extent before the turn, metres, from its bounds) and ``.wall_probes``: [(point (3,), unit
    normal (3,), thickness m)] at the middle of walls, turned with it (for checks across the walls)."""
    yaw = rng.uniform(0, 2 * np.pi)
    rot = rotation_z(yaw)
    out = FineShape(Transformed(shape, rot, np.zeros(3)), min_feature)
    out.yaw, out.size = float(yaw), float(np.max(np.diff(shape.bounds, axis=0)))  # type: ignore[attr-defined]
    out.wall_probes = [(rot @ np.asarray(p, float), rot @ np.asarray(n, float), float(t))  # type: ignore[attr-defined]
                       for p, n, t in probes]
    return out


def _shell_probes(rng, centre: np.ndarray, thickness: float, k: int = 6) -> list:
    """Probes at k points of the wall part of a shell centre line (rho, z), at random azimuths."""
    out = []
    for i in rng.choice(np.arange(3, len(centre) - 2), size=k):
        t = centre[i + 1] - centre[i - 1]
        n = np.array([t[1], -t[0]]) / np.linalg.norm(t)  # right of the direction of travel: outwards
        az = rng.uniform(0, 2 * np.pi)
        c, sn = np.cos(az), np.sin(az)
        out.append(([centre[i, 0] * c, centre[i, 0] * sn, centre[i, 1]], [n[0] * c, n[0] * sn, n[1]], thickness))
    return out


def _box_wall_probes(half_xy, wall: float, z: float) -> list:
    """Probes at the middle of the four side walls of an open box centred on the z axis, at height z."""
    hx, hy = half_xy
    return [([sx * (hx - 0.5 * wall), 0.0, z], [sx, 0.0, 0.0], wall) for sx in (-1.0, 1.0)] + \
        [([0.0, sy * (hy - 0.5 * wall), z], [0.0, sy, 0.0], wall) for sy in (-1.0, 1.0)]


def _curve_wall(rng, r_floor: float, r_rim: float, height: float, kind: str, n: int = 14) -> np.ndarray:
    """(k, 2) wall centre line (rho, z) from (r_floor, 0) up to the rim at ``height``: 'round' an elliptic
    quarter to (r_rim, height); 'cone' and 'steep' a corner arc (large or small) tangent to the floor, then
    straight to (r_rim, height)."""
    if kind == "round":  # quarter ellipse, tangent to the floor at the start, vertical at the rim
        a = np.linspace(0.0, 0.5 * np.pi, n)
        return np.stack([r_floor + (r_rim - r_floor) * np.sin(a), height * (1 - np.cos(a))], axis=1)
    k = rng.uniform(0.15, 0.4) if kind == "cone" else rng.uniform(0.03, 0.12)
    rc = k * height
    phi = np.arctan2(height, r_rim - r_floor)  # wall angle from the horizontal, (0, pi)
    for _ in range(8):  # the angle at which the arc's end points at the rim; the arc stays inside r_rim
        r_floor = min(r_floor, r_rim - rc * np.sin(phi) - 1e-4)
        phi = np.arctan2(height - rc * (1 - np.cos(phi)), r_rim - r_floor - rc * np.sin(phi))
    a = np.linspace(0.0, phi, 7)
    arc = np.stack([r_floor + rc * np.sin(a), rc * (1 - np.cos(a))], axis=1)
    t = np.linspace(0.0, 1.0, 6)[1:, None]
    end = np.array([r_rim, height])
    return np.concatenate([arc, arc[-1] + t * (end - arc[-1])])


def _vessel_centre(r_floor: float, wall: np.ndarray, z0: float) -> np.ndarray:
    """Centre line from the axis along the floor at height z0 to the wall, then up the wall."""
    floor = np.array([[0.0, 0.0], [0.5 * r_floor, 0.0]])
    return np.concatenate([floor, wall]) + np.array([0.0, z0])


def _foot_ring(r_out: float, width: float, height: float, overlap: float) -> Revolution:
    """A ring r in [r_out - width, r_out], z in [0, height], plus the disc r < r_out, z in
    [height, height + overlap] (inside the floor resting on it, so the two stay one solid)."""
    r_in = r_out - min(width, 0.5 * r_out)
    return Revolution(np.array([[0.0, height], [r_in, height], [r_in, 0.0], [r_out, 0.0],
                                [r_out, height + overlap], [0.0, height + overlap]]))


def _thin_bowl(rng):
    radius = rng.uniform(0.04, 0.147)  # rim radius (centre of the wall)
    height = radius * rng.uniform(0.35, 0.9)
    wall = rng.uniform(0.0015, 0.005)
    kind = str(rng.choice(["round", "cone", "steep"]))
    foot = rng.random() < 0.5
    r_floor = radius * (rng.uniform(0.25, 0.55) if kind != "round" else rng.uniform(0.3 if foot else 0.05, 0.45))
    foot_h = rng.uniform(0.003, 0.01) if foot else 0.0
    centre = _vessel_centre(r_floor, _curve_wall(rng, r_floor, radius, height, kind), foot_h + 0.5 * wall)
    body: Shape = Revolution(shell_profile(centre, wall))
    if foot:  # a ring under the flat floor
        body = Union(body, _foot_ring(r_floor * rng.uniform(0.6, 1.0), rng.uniform(0.003, 0.008), foot_h, wall))
    return _yawed(rng, body, min(wall, foot_h) if foot else wall, _shell_probes(rng, centre, wall))


def _plate(rng):
    radius = rng.uniform(0.05, 0.157)  # radius of the rim's centre line
    thick = rng.uniform(0.0015, 0.006)
    r_well = radius * rng.uniform(0.45, 0.7)
    depth = rng.uniform(0.004, 0.02) * (radius / 0.1) ** 0.5
    width = max(radius * rng.uniform(0.08, 0.2), 2.5 * depth)  # the well's side: a half cosine, gentle
    width = min(width, 0.85 * (radius - r_well))
    rise = rng.uniform(0.0, 0.4) * depth
    u = np.linspace(0.0, 1.0, 9)
    side = np.stack([r_well + width * u, 0.5 * depth * (1 - np.cos(np.pi * u))], axis=1)
    rim_r = np.linspace(side[-1, 0], radius, 6)[1:]
    rim_z = depth + rise * ((rim_r - side[-1, 0]) / (radius - side[-1, 0])) ** 2
    foot_h = rng.uniform(0.002, 0.008) if rng.random() < 0.7 else 0.0
    centre = np.concatenate([[[0.0, 0.0], [0.5 * r_well, 0.0]], side, np.stack([rim_r, rim_z], 1)])
    centre = centre + [0.0, foot_h + 0.5 * thick]
    body: Shape = Revolution(shell_profile(centre, thick))
    if foot_h > 0:
        body = Union(body, _foot_ring(r_well * rng.uniform(0.6, 1.0), rng.uniform(0.003, 0.008), foot_h, thick))
    return _yawed(rng, body, min(thick, foot_h) if foot_h > 0 else thick, _shell_probes(rng, centre, thick))


def _pan(rng):
    pot = rng.random() < 0.35
    radius = rng.uniform(0.08, 0.12) if pot else rng.uniform(0.07, 0.14)
    height = radius * (rng.uniform(0.7, 1.4) if pot else rng.uniform(0.25, 0.5))
    wall = rng.uniform(0.0015, 0.004)
    r_floor = radius * (1.0 - rng.uniform(0.0, 0.1 if pot else 0.25))
    centre = _vessel_centre(r_floor, _curve_wall(rng, r_floor, radius, height, "steep"), 0.5 * wall)
    prof = shell_profile(centre, wall)
    body = Revolution(prof)
    inner = prof[-len(centre):]  # the inner side of the shell, rim -> axis
    cavity = Revolution(np.concatenate([[[0.0, 1.0], [inner[0, 0], 1.0]], inner]))
    top = float(prof[:, 1].max())
    # the handle: a rounded bar from inside the wall at the rim outwards, straight or tilted up
    r_out = float(prof[:, 0].max())
    length = min(rng.uniform(0.12, 0.22), SIZE_RANGES["pan"][1] - 2 * r_out - 0.005)
    width, thick = rng.uniform(0.015, 0.035), rng.uniform(0.006, 0.015)
    tilt = 0.0 if rng.random() < 0.4 else rng.uniform(0.05, 0.45)
    z_att = top - 0.5 * thick - rng.uniform(0.0, 0.25) * height
    bar = Box([0.5 * (length - wall), 0.0, 0.0], [0.5 * (length + wall), 0.5 * width, 0.5 * thick],
              rounding=0.45 * thick)
    wall_line = centre[2:]
    r_att = float(np.interp(z_att, wall_line[:, 1], wall_line[:, 0]))
    handle = Transformed(bar, _rot_y(-tilt), [r_att, 0.0, z_att])
    shape = _yawed(rng, Union(body, Difference(handle, cavity)), wall, _shell_probes(rng, centre, wall))
    shape.size = float(np.max(np.diff(Union(body, handle).bounds, axis=0)))  # type: ignore[attr-defined]
    return shape


def _open_box(rng, half_xy, height: float, wall: float, floor: float, corner: float) -> Shape:
    """An open-top box: outer rounded prism [0, height] minus the cavity above the floor."""
    outer = RoundedPrism([0.0, 0.0], half_xy, corner, 0.0, height)
    inner_half = np.asarray(half_xy) - wall
    cavity = RoundedPrism([0.0, 0.0], inner_half, max(0.0, corner - wall), floor, height + 0.05)
    return Difference(outer, cavity)


def _tray(rng):
    half = np.sort(rng.uniform(0.075, 0.225, 2))[::-1] * [1.0, rng.uniform(0.6, 1.0)]
    half[1] = max(half[1], 0.05)
    wall = rng.uniform(0.002, 0.006)
    height = rng.uniform(0.01, 0.04)
    corner = rng.uniform(0.0, min(0.05, float(half.min())))
    floor = min(wall, 0.5 * height)
    probes = _box_wall_probes(half, wall, 0.5 * (floor + height)) + [([0.0, 0.0, 0.5 * floor], [0, 0, 1.0], floor)]
    return _yawed(rng, _open_box(rng, half, height, wall, floor, corner), floor, probes)


def _slots(rng, span: float, z_lo: float, z_hi: float, margin: float):
    """Centres (s, z) and half sizes (hs, hz) of a brick pattern of slots or holes on a wall whose free
    span is [-span, span] and free height [z_lo, z_hi]."""
    rows = int(rng.integers(1, 5))
    pitch_z = (z_hi - z_lo) / rows
    hz = rng.uniform(0.2, 0.35) * pitch_z
    cols = int(rng.integers(3, 9))
    pitch_s = 2 * (span - margin) / cols
    hs = rng.uniform(0.2, 0.38) * pitch_s
    out = []
    for r in range(rows):
        z = z_lo + (r + 0.5) * pitch_z
        shift = 0.25 * pitch_s if r % 2 else -0.25 * pitch_s
        for c in range(cols):
            s = -span + margin + (c + 0.5) * pitch_s + shift
            if abs(s) + hs <= span - margin:
                out.append((s, z))
    return out, hs, hz


def _basket(rng):
    wall = rng.uniform(0.002, 0.005)
    cutters: list[Shape] = []
    if rng.random() < 0.5:  # rectangular, slots through both walls of each pair
        half = rng.uniform([0.05, 0.05], [0.2, 0.15])
        height = rng.uniform(0.06, 0.25)
        floor = rng.uniform(wall, 0.008)
        body = _open_box(rng, half, height, wall, floor, rng.uniform(0.0, 0.3) * float(half.min()))
        probes = _box_wall_probes(half, wall, 0.5 * (floor + height)) + [([0.0, 0.0, 0.5 * floor], [0, 0, 1.0], floor)]
        for axis in (0, 1):
            other = 1 - axis
            centres, hs, hz = _slots(rng, half[other] - wall, floor + 0.01, height - 0.01, 0.01)
            for s, z in centres:
                c, h = np.zeros(3), np.zeros(3)
                c[other], c[2] = s, z
                h[axis], h[other], h[2] = half[axis] + 0.01, hs, hz
                cutters.append(Box(c, h))
    else:  # round (straight or flared), slots cut by bars through the axis
        radius = rng.uniform(0.05, 0.197)
        height = rng.uniform(0.06, 0.25)
        r_floor = radius * rng.uniform(0.7, 1.0)
        centre = _vessel_centre(r_floor, _curve_wall(rng, r_floor, radius, height, "steep"), 0.5 * wall)
        body = Revolution(shell_profile(centre, wall))
        probes = _shell_probes(rng, centre, wall, 10)
        rows = int(rng.integers(1, 5))
        pitch = (height - 0.02 - wall) / rows
        n_az = int(rng.integers(4, 10))
        hs = rng.uniform(0.2, 0.4) * np.pi * r_floor / n_az
        hz = rng.uniform(0.2, 0.35) * pitch
        for r in range(rows):
            z = 0.01 + wall + (r + 0.5) * pitch
            for k in range(n_az):
                az = (k + 0.5 * (r % 2)) * np.pi / n_az
                cutters.append(Transformed(Box([0.0, 0.0, z], [radius + 0.02, hs, hz]), rotation_z(az), np.zeros(3)))
    return _yawed(rng, Difference(body, Union(*cutters)), wall, probes)


def _compartment_bin(rng):
    half = rng.uniform([0.04, 0.03], [0.2, 0.15])
    height = rng.uniform(0.04, 0.2) if rng.random() < 0.5 else rng.uniform(0.04, 0.09)  # bins, organisers
    wall = rng.uniform(0.0015, 0.004)
    floor = max(wall, 0.002)
    corner = rng.uniform(0.0, 0.5) * float(half.min())
    parts: list[Shape] = [_open_box(rng, half, height, wall, floor, corner)]
    probes = _box_wall_probes(half, wall, 0.5 * (floor + height))
    for axis in (0, 1):  # dividers across the box, in the straight part of the walls they join
        n_div = int(rng.integers(0 if axis else 1, 4))
        free = max(0.0, half[axis] - corner - wall)
        for c in np.sort(rng.uniform(-0.9, 0.9, n_div)) * free:
            top = height * (1.0 if rng.random() < 0.6 else rng.uniform(0.5, 1.0))
            centre, hh = np.zeros(3), np.zeros(3)
            centre[axis], centre[2] = c, 0.5 * (floor - 0.001 + top)
            hh[axis], hh[1 - axis], hh[2] = 0.5 * wall, half[1 - axis] - 0.5 * wall, 0.5 * (top - floor + 0.001)
            parts.append(Box(centre, hh))
            at = np.zeros(3)
            at[axis], at[1 - axis], at[2] = c, rng.uniform(-0.9, 0.9) * (half[1 - axis] - wall), centre[2]
            probes.append((at, np.eye(3)[axis], wall))
    return _yawed(rng, Union(*parts), wall, probes)


def _flat_box(rng):
    half = np.array([rng.uniform(0.025, 0.15), 0.0, 0.5 * rng.uniform(0.01, 0.05)])
    half[1] = rng.uniform(0.4, 1.0) * half[0]
    half[1] = max(half[1], 0.025)
    half[2] = min(half[2], half[1])
    if rng.random() < 0.5:
        shape: Shape = Box([0.0, 0.0, half[2]], half, rounding=rng.uniform(0.0, 0.6) * half[2])
    else:  # plan-rounded corners: a cutting board, a soap box
        shape = RoundedPrism([0.0, 0.0], half[:2], rng.uniform(0.0, 0.5) * half[1], 0.0, 2 * half[2])
    return _yawed(rng, shape, 2 * half[2], [([0.0, 0.0, half[2]], [0.0, 0.0, 1.0], 2 * half[2])])


def _tight_extent(shape: Shape, n: int = 48) -> float:
    """Largest side, metres, of the axis-aligned box of ``shape``'s inside points on an n^3 grid over its
    bounds (within one grid cell of the true extent)."""
    lo, hi = shape.bounds
    axes = [np.linspace(lo[i], hi[i], n) for i in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    inside = grid[shape.contains(grid)]
    if len(inside) == 0:
        raise ValueError("shape has no inside points on its bounds grid")
    return float(np.max(inside.max(axis=0) - inside.min(axis=0) + (hi - lo) / (n - 1)))


def _large(rng, split: str, design: int):
    """A base shape of LARGE_BASE_WEIGHTS scaled so that its largest extent is uniform in
    LARGE_SIZE_RANGE (its walls scale with it)."""
    from occnet_ros.data.shapes import FAMILIES

    names = sorted(LARGE_BASE_WEIGHTS)
    w = np.array([LARGE_BASE_WEIGHTS[k] for k in names])
    name = names[int(rng.choice(len(names), p=w / w.sum()))]
    if name in _BUILDERS:  # a household family: a design id of the same split
        base = build_household(name, design if split == "heldout" else
                               int(rng.integers(HELDOUT_RESERVED, _TRAIN_ID_MAX)), split)
        inner, feature, probes, base_design = base.shape, base.min_feature, base.wall_probes, base.design
    else:
        inner, feature, probes, base_design = FAMILIES[name](rng), 0.003, [], None  # walls >= 3 mm
    extent = _tight_extent(inner)
    size = rng.uniform(*LARGE_SIZE_RANGE)
    factor = size / extent
    shape = FineShape(Scaled(inner, factor), feature * factor)
    shape.base_family, shape.base_design, shape.size = name, base_design, size  # type: ignore[attr-defined]
    shape.wall_probes = [(factor * p, n, factor * t) for p, n, t in probes]  # type: ignore[attr-defined]
    return shape


_BUILDERS = {"thin_bowl": _thin_bowl, "plate": _plate, "pan": _pan, "tray": _tray, "basket": _basket,
             "compartment_bin": _compartment_bin, "flat_box": _flat_box}
_ORDER = ("thin_bowl", "plate", "pan", "tray", "basket", "compartment_bin", "flat_box", "large")


def build_household(family: str, design: int, split: str = "train") -> FineShape:
    """The shape of ``family`` with design id ``design`` (an int >= 0); ``split`` 'train' needs
    ``design >= HELDOUT_RESERVED``, 'heldout' needs ``design < HELDOUT_RESERVED`` (ValueError otherwise)."""
    if family not in _ORDER:
        raise ValueError(f"unknown household family {family!r}; known: {list(_ORDER)}")
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    design = int(design)
    if design < 0 or (design < HELDOUT_RESERVED) != (split == "heldout"):
        raise ValueError(f"design id {design} is not in the {split} range (held out: 0..{HELDOUT_RESERVED - 1})")
    rng = np.random.default_rng([HOUSEHOLD_SEED, _ORDER.index(family), design])
    shape = _large(rng, split, design) if family == "large" else _BUILDERS[family](rng)
    shape.family, shape.design, shape.split = family, design, split  # type: ignore[attr-defined]
    return shape


def _train_builder(family: str):
    def build(rng: np.random.Generator) -> FineShape:
        return build_household(family, int(rng.integers(HELDOUT_RESERVED, _TRAIN_ID_MAX)), "train")
    build.__doc__ = f"Training draw of the {family!r} family (design id from rng, never a held-out one)."
    return build


HOUSEHOLD_FAMILIES = {name: _train_builder(name) for name in _ORDER}
"""family name -> builder(rng) of the training sampler, in the order their data codes are appended."""

HOUSEHOLD_WEIGHTS = {"thin_bowl": 1.5, "plate": 1.0, "pan": 1.2, "tray": 1.0, "basket": 1.0,
                     "compartment_bin": 1.2, "flat_box": 1.2, "large": 1.0}
"""Relative weights of these families in a household data config."""


def heldout_shapes(family: str, n: int) -> list[FineShape]:
    """The first ``n`` (<= HELDOUT_RESERVED) held-out shapes of ``family`` (design ids 0 .. n-1): fixed,
    and never produced by the training sampler."""
    if not 0 <= n <= HELDOUT_RESERVED:
        raise ValueError(f"n must be in [0, {HELDOUT_RESERVED}], got {n}")
    return [build_household(family, d, "heldout") for d in range(n)]
