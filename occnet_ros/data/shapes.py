"""Procedural tabletop shapes with exact inside/outside labels.

Every family builds a :class:`~occnet_ros.data.shapes_sdf.Shape` in metres, object frame z-up, resting
on the table plane z = 0, sized like a tabletop object (largest extent about 4-30 cm). Labels come from
the analytic signed distance (``shape.contains``), never from a mesh; ``shape.mesh(resolution)`` is only
for rendering and for sampling near-surface points.

    rng = np.random.default_rng(0)
    shape = sample_shape(rng)                 # random family, random parameters
    shape = sample_shape(rng, family="mug")   # one family
    shape = sample_shape(rng, weights={"hollow_box": 1.0, "box": 1.0})  # other family weights
"""
from __future__ import annotations

import numpy as np
from scipy.interpolate import PchipInterpolator

from occnet_ros.data.shapes_sdf import (
    Box, Difference, Ellipsoid, Extrusion, Revolution, Shape, Sphere, Torus, Transformed, Union,
    rotation_x, rotation_z,
)
from occnet_ros.data.shapes_household import HOUSEHOLD_FAMILIES

__all__ = ["FAMILIES", "FAMILY_WEIGHTS", "Shape", "check_family_weights", "sample_shape"]


# ---------------------------------------------------------------- profiles for solids of revolution
def _smooth_profile(rng: np.random.Generator, height: float, radius: float, n_ctrl: int,
                    min_ratio: float, n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A random smooth radius function r(z) on [0, height]: (z (n,), r (n,)), r in [min_ratio*R, R]."""
    zc = np.linspace(0.0, height, n_ctrl)
    rc = radius * rng.uniform(min_ratio, 1.0, size=n_ctrl)
    rc[int(rng.integers(n_ctrl))] = radius
    z = np.linspace(0.0, height, n)
    return z, PchipInterpolator(zc, rc)(z)


def _solid_profile(z: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Closed solid: axis bottom -> outer wall up -> axis top."""
    return np.concatenate([[[0.0, z[0]]], np.stack([r, z], axis=1), [[0.0, z[-1]]]])


def _hollow_profile(z: np.ndarray, r: np.ndarray, wall: float, bottom: float) -> np.ndarray:
    """Open-top vessel: outer wall up, over the rim, inner wall (r - wall) down to the floor z=bottom."""
    zi = z[z > bottom]
    ri = np.interp(zi, z, r) - wall
    r_floor = float(np.interp(bottom, z, r)) - wall
    inner = np.concatenate([np.stack([ri, zi], axis=1)[::-1], [[r_floor, bottom]]])
    return np.concatenate([[[0.0, z[0]]], np.stack([r, z], axis=1), inner, [[0.0, bottom]]])


def _arc(center_z: float, radius: float, a0: float, a1: float, n: int) -> np.ndarray:
    a = np.linspace(a0, a1, n)
    return np.stack([radius * np.cos(a), center_z + radius * np.sin(a)], axis=1)


# ---------------------------------------------------------------- families
def _box(rng):
    half = rng.uniform([0.02, 0.02, 0.015], [0.12, 0.12, 0.14]) if rng.random() < 0.5 else \
        rng.uniform([0.02, 0.01, 0.03], [0.08, 0.05, 0.13])  # carton-like: thin and tall
    rounding = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, 0.4) * half.min()
    return Box([0.0, 0.0, half[2]], half, rounding)


def _gable_carton(rng):
    """Milk-carton-like: a house-shaped pentagon extruded horizontally."""
    w, h, roof, length = rng.uniform(0.03, 0.05), rng.uniform(0.06, 0.2), rng.uniform(0.01, 0.04), \
        rng.uniform(0.04, 0.1)
    poly = np.array([[-w, 0.0], [w, 0.0], [w, h], [0.0, h + roof], [-w, h]])
    return Transformed(Extrusion(poly, -0.5 * length, 0.5 * length), rotation_x(np.pi / 2), np.zeros(3))


def _sphere(rng):
    r = rng.uniform(0.025, 0.12)
    return Sphere([0.0, 0.0, r], r)


def _ellipsoid(rng):
    radii = rng.uniform([0.02, 0.02, 0.015], [0.12, 0.08, 0.1])
    return Ellipsoid([0.0, 0.0, radii[2]], radii)


def _cylinder(rng):
    r, h = rng.uniform(0.02, 0.1), rng.uniform(0.03, 0.25)
    bevel = rng.uniform(0.0, 0.3) * min(r, h / 2)
    prof = np.array([[0, 0], [r - bevel, 0], [r, bevel], [r, h - bevel], [r - bevel, h], [0, h]])
    return _maybe_lying(rng, Revolution(prof), r, h)


def _frustum(rng):
    r0, h = rng.uniform(0.02, 0.1), rng.uniform(0.03, 0.22)
    r1 = r0 * rng.choice([0.0, rng.uniform(0.1, 1.6)])
    return Revolution(np.array([[0, 0], [r0, 0], [r1, h], [0, h]]))


def _capsule(rng):
    r, body = rng.uniform(0.015, 0.06), rng.uniform(0.02, 0.18)
    bottom = _arc(r, r, -np.pi / 2, 0.0, 8)
    top = _arc(r + body, r, 0.0, np.pi / 2, 8)
    prof = np.concatenate([bottom, top])
    prof[:, 0] = np.abs(prof[:, 0])
    prof[0, 0] = prof[-1, 0] = 0.0
    return _maybe_lying(rng, Revolution(prof), r, body + 2 * r)


def _maybe_lying(rng, shape: Shape, radius: float, height: float, p: float = 0.3) -> Shape:
    """Upright solid of revolution, or with probability p lying on its side (axis along y)."""
    if rng.random() >= p:
        return shape
    return Transformed(shape, rotation_x(np.pi / 2), [0.0, 0.5 * height, radius])


def _torus(rng):
    major = rng.uniform(0.03, 0.1)
    minor = major * rng.uniform(0.15, 0.6)
    return Torus([0.0, 0.0, minor], major, minor)


def _bottle(rng):
    r, h = rng.uniform(0.02, 0.05), rng.uniform(0.12, 0.3)
    neck_r = r * rng.uniform(0.25, 0.5)
    shoulder = h * rng.uniform(0.5, 0.75)
    neck = h * rng.uniform(0.8, 0.92)
    zc = np.array([0.0, shoulder, 0.5 * (shoulder + neck), neck, h])
    rc = np.array([r, r, 0.5 * (r + neck_r), neck_r, neck_r * rng.uniform(0.9, 1.1)])
    rc[1] *= rng.uniform(0.9, 1.1)
    z = np.linspace(0.0, h, 24)
    return _maybe_lying(rng, Revolution(_solid_profile(z, PchipInterpolator(zc, rc)(z))), max(rc), h, 0.2)


def _can(rng):
    r, h = rng.uniform(0.025, 0.06), rng.uniform(0.05, 0.2)
    rim = rng.uniform(0.002, 0.006)
    prof = np.array([[0, 0], [r - rim, 0], [r, rim], [r, h - rim], [r - rim, h], [0, h]])
    return _maybe_lying(rng, Revolution(prof), r, h)


def _vessel(rng, kind: str):
    """Hollow open-top vessel: 'cup' (tall), 'bowl' (wide, shallow, flaring) or 'vase'."""
    wall_max = 0.12  # of the narrowest radius; cups up to 0.2 (ceramic cups have thick walls)
    if kind == "cup":
        wall_max = 0.2
        h, r = rng.uniform(0.06, 0.14), rng.uniform(0.03, 0.055)
        z, rr = _smooth_profile(rng, h, r, 3, 0.75)
    elif kind == "bowl":
        h, r = rng.uniform(0.04, 0.09), rng.uniform(0.06, 0.13)
        z = np.linspace(0.0, h, 16)
        base = r * rng.uniform(0.35, 0.6)
        rr = base + (r - base) * np.sqrt(z / h) ** rng.uniform(0.7, 1.3)
    else:
        h, r = rng.uniform(0.12, 0.3), rng.uniform(0.035, 0.08)
        z, rr = _smooth_profile(rng, h, r, 5, 0.4)
    wall = max(0.004, 0.02 * max(h, 2 * r), rng.uniform(0.05, wall_max) * rr.min())
    bottom = rng.uniform(0.006, 0.015)
    if kind == "vase" and rng.random() < 0.5:
        return Revolution(_solid_profile(z, rr))
    return Revolution(_hollow_profile(z, rr, wall, bottom))


def _mug(rng):
    h, r = rng.uniform(0.07, 0.12), rng.uniform(0.03, 0.05)
    z = np.linspace(0.0, h, 12)
    rr = r * (1.0 + rng.uniform(-0.15, 0.15) * z / h)
    wall = max(0.004, rng.uniform(0.06, 0.25) * r)  # 4-12 mm: thin porcelain to thick stoneware
    cup = Revolution(_hollow_profile(z, rr, wall, rng.uniform(0.006, 0.012)))
    solid = Revolution(_solid_profile(z, rr))
    major = h * rng.uniform(0.22, 0.35)
    minor = rng.uniform(0.005, 0.01)
    cz = h * rng.uniform(0.45, 0.55)
    r_mid = float(np.interp(cz, z, rr))
    handle = Torus([r_mid + 0.4 * major, 0.0, cz], major, minor, axis=1)
    return Union(cup, Difference(handle, solid))


def _random_polygon(rng, radius: float) -> np.ndarray:
    """Star-shaped random simple polygon around the origin, (M, 2) metres, counter-clockwise."""
    n = int(rng.integers(3, 9))
    angles = np.sort(rng.uniform(0.0, 2 * np.pi, n))
    gaps = np.diff(np.concatenate([angles, [angles[0] + 2 * np.pi]]))
    if gaps.max() > 0.8 * np.pi:  # avoid degenerate slivers: fall back to evenly spread angles
        angles = np.linspace(0.0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, 2 * np.pi)
    radii = radius * rng.uniform(0.45, 1.0, n)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


def _extrusion(rng):
    radius = rng.uniform(0.03, 0.12)
    h = rng.uniform(0.02, 0.2)
    shape = Extrusion(_random_polygon(rng, radius), 0.0, h)
    if rng.random() < 0.25:  # lying on its side: the polygon stands vertically, extruded along y
        poly = _random_polygon(rng, radius)
        poly[:, 1] -= poly[:, 1].min()
        shape = Transformed(Extrusion(poly, -0.5 * h, 0.5 * h), rotation_x(np.pi / 2), np.zeros(3))
    return shape


def _primitive_part(rng, base_z: float, scale: float, kind: str | None = None) -> tuple[Shape, float]:
    """A random part whose bottom is at base_z; returns (shape, top z)."""
    kind = kind or str(rng.choice(["box", "cylinder", "sphere", "ellipsoid"]))
    xy = rng.uniform(-0.4, 0.4, 2) * scale
    if kind == "box":
        half = rng.uniform(0.25, 0.6, 3) * scale
        return Transformed(Box([0, 0, half[2]], half), rotation_z(rng.uniform(0, np.pi)),
                           [xy[0], xy[1], base_z]), base_z + 2 * half[2]
    if kind == "cylinder":
        r, h = rng.uniform(0.2, 0.5) * scale, rng.uniform(0.4, 1.2) * scale
        prof = np.array([[0, base_z], [r, base_z], [r, base_z + h], [0, base_z + h]])
        return Revolution(prof, xy[0], xy[1]), base_z + h
    if kind == "sphere":
        r = rng.uniform(0.2, 0.5) * scale
        return Sphere([xy[0], xy[1], base_z + r], r), base_z + 2 * r
    radii = rng.uniform(0.2, 0.6, 3) * scale
    return Ellipsoid([xy[0], xy[1], base_z + radii[2]], radii), base_z + 2 * radii[2]


def _csg_union(rng):
    scale = rng.uniform(0.05, 0.12)
    base, top = _primitive_part(rng, 0.0, scale)
    parts = [base]
    for _ in range(int(rng.integers(1, 3))):
        # the next part either stands on the table next to the base or sits (sunk a little) on top
        z = 0.0 if rng.random() < 0.4 else 0.85 * top
        part, new_top = _primitive_part(rng, z, scale * rng.uniform(0.5, 0.9))
        parts.append(part)
        top = max(top, new_top)
    return Union(*parts)


def _csg_difference(rng):
    scale = rng.uniform(0.05, 0.12)
    base_kind = str(rng.choice(["box", "cylinder", "sphere", "ellipsoid"]))
    base, top = _primitive_part(rng, 0.0, scale, base_kind)
    lo, hi = base.bounds
    c = 0.5 * (lo + hi)
    # a through-hole only in flat-bottomed parts: a round one would lose its contact point with the table
    kind = rng.choice(["hole", "notch", "scoop"] if base_kind in ("box", "cylinder") else ["notch", "scoop"])
    if kind == "hole":  # vertical through-hole
        r = rng.uniform(0.1, 0.3) * float(np.min(hi[:2] - lo[:2]))
        cut: Shape = Revolution(np.array([[0, -1.0], [r, -1.0], [r, 1.0], [0, 1.0]]), c[0], c[1])
    elif kind == "notch":  # a box bitten out of a top edge
        half = rng.uniform(0.2, 0.45) * (hi - lo)
        corner = np.array([rng.choice([lo[0], hi[0]]), c[1], hi[2]])
        cut = Box(corner, half)
    else:  # a sphere scooped from the top
        r = rng.uniform(0.25, 0.45) * float(np.min(hi - lo))
        cut = Sphere([c[0], c[1], hi[2] + 0.3 * r], r)
    return Difference(base, cut)


# The cut-out's axes (u, v, normal) in the box frame for an opening in the face whose outward normal is
# +-x (0), +-y (1) or +z (2); each is a proper rotation (columns: where local x, y, z go).
_FACE_AXES = {0: np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
              1: np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),
              2: np.eye(3)}


def _opening(rng, half: np.ndarray, wall: float, axis: int, sign: float) -> Shape:
    """A cutter through the wall of the face (axis, sign) of the box centred at (0, 0, half[2]): a
    rectangle, a disc or a random polygon, 30-85 % of the face's free span, at least one wall thickness
    from the face's edges, reaching half a wall beyond the wall's inner side (into the cavity only)."""
    rot = _FACE_AXES[axis]
    u_ax, v_ax = int(np.argmax(np.abs(rot[:, 0]))), int(np.argmax(np.abs(rot[:, 1])))
    free = np.array([half[u_ax] - wall, half[v_ax] - wall])  # half spans of the face's cavity side
    size = rng.uniform(0.3, 0.85, 2) * free
    offset = rng.uniform(-1.0, 1.0, 2) * (free - size)
    kind = rng.choice(["rect", "disc", "polygon"])
    depth = wall  # half depth: from half a wall outside the face to half a wall into the cavity
    if kind == "rect":
        local: Shape = Box([offset[0], offset[1], 0.0], [size[0], size[1], depth])
    elif kind == "disc":
        r = float(size.min())
        local = Revolution(np.array([[0.0, -depth], [r, -depth], [r, depth], [0.0, depth]]), offset[0], offset[1])
    else:
        poly = _random_polygon(rng, float(size.min())) + offset
        local = Extrusion(poly, -depth, depth)
    centre = np.array([0.0, 0.0, half[2]])
    centre[axis] += sign * (half[axis] - 0.5 * wall)
    return Transformed(local, rot, centre)


def _hollow_box(rng):
    """A thin-walled box with openings: a bin, crate or tray (open top, maybe handle holes), or a closed
    box with 1-4 cut-outs in its top and sides (a tissue box, a shape sorter, a storage box). Walls
    3.5-9 % of the longest side, at least 3 mm."""
    half = rng.uniform([0.03, 0.03, 0.025], [0.12, 0.12, 0.12])
    wall = max(0.003, rng.uniform(0.035, 0.09) * 2.0 * float(half.max()))
    wall = min(wall, 0.3 * float(half.min()))
    shell = Box([0.0, 0.0, half[2]], half)
    faces = [(0, 1.0), (0, -1.0), (1, 1.0), (1, -1.0), (2, 1.0)]
    if rng.random() < 0.35:  # open top: the cavity box runs out through the top
        cavity = Box([0.0, 0.0, half[2] + wall], [half[0] - wall, half[1] - wall, half[2]])
        n_open, faces = int(rng.integers(0, 3)), faces[:4]
    else:
        cavity = Box([0.0, 0.0, half[2]], half - wall)
        n_open = int(rng.integers(1, 5))
    shape: Shape = Difference(shell, cavity)
    for k in rng.choice(len(faces), size=n_open, replace=False):
        shape = Difference(shape, _opening(rng, half, wall, *faces[int(k)]))
    return Transformed(shape, rotation_z(rng.uniform(0, np.pi)), np.zeros(3))


FAMILIES = {
    "box": _box, "gable_carton": _gable_carton, "sphere": _sphere, "ellipsoid": _ellipsoid,
    "cylinder": _cylinder, "frustum": _frustum, "capsule": _capsule, "torus": _torus,
    "bottle": _bottle, "can": _can, "cup": lambda rng: _vessel(rng, "cup"),
    "bowl": lambda rng: _vessel(rng, "bowl"), "vase": lambda rng: _vessel(rng, "vase"),
    "mug": _mug, "extrusion": _extrusion, "csg_union": _csg_union, "csg_difference": _csg_difference,
    "hollow_box": _hollow_box,
}
"""family name -> builder(rng) -> Shape."""
FAMILIES.update(HOUSEHOLD_FAMILIES)  # thin-walled containers, flat boxes, large objects (shapes_household.py)

FAMILY_WEIGHTS = {
    "box": 1.5, "gable_carton": 0.5, "sphere": 0.5, "ellipsoid": 0.7, "cylinder": 1.0, "frustum": 0.7,
    "capsule": 0.6, "torus": 0.5, "bottle": 1.0, "can": 0.7, "cup": 1.0, "bowl": 0.8, "vase": 0.8,
    "mug": 1.0, "extrusion": 1.2, "csg_union": 1.5, "csg_difference": 1.2,
}
"""Default relative sampling weights of :func:`sample_shape`. ``hollow_box`` is not among them, so a data
config without ``family_weights`` generates the same objects (and cache keys) as if the family did not
exist; a data config draws it with ``family_weights``. Nor are the household families
(:data:`~occnet_ros.data.shapes_household.HOUSEHOLD_FAMILIES`), for the same reason."""


def check_family_weights(weights: dict[str, float]) -> None:
    """Raise ValueError unless ``weights`` maps known family names to weights >= 0 with a positive sum."""
    unknown = sorted(set(weights) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown shape famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
                         f"known: {sorted(FAMILIES)}")
    bad = {k: v for k, v in weights.items() if not (isinstance(v, (int, float)) and v >= 0)}
    if bad:
        raise ValueError(f"family weights must be numbers >= 0, got {bad}")
    if not sum(weights.values()) > 0:
        raise ValueError("family weights must not all be 0")


def sample_shape(rng: np.random.Generator, family: str | None = None,
                 weights: dict[str, float] | None = None) -> Shape:
    """Draw a random tabletop shape (metres, object frame z-up, resting on z = 0).

    family: one of :data:`FAMILIES`, or None to draw one with ``weights`` (family name -> relative
    weight; None or empty: :data:`FAMILY_WEIGHTS`).
    """
    if family is None:
        weights = weights or FAMILY_WEIGHTS
        check_family_weights(weights)
        names = sorted(weights)
        w = np.array([weights[n] for n in names], dtype=np.float64)
        family = names[int(rng.choice(len(names), p=w / w.sum()))]
    if family not in FAMILIES:
        raise ValueError(f"unknown shape family {family!r}; known: {sorted(FAMILIES)}")
    shape = FAMILIES[family](rng)
    shape.family = family  # type: ignore[attr-defined]
    return shape
