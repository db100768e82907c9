"""Training labels that thicken thin walls to a thickness the network can represent.

The network's feature planes have ``plane_resolution`` cells across the canonical box: at 32 cells one
cell is about 12 mm on a 0.35 m pan. A 1.5-6 mm wall is a fraction of a cell, and the best the decoder
can do there is the fraction of occupied queries around it, which stays below one half: the wall is
predicted below the threshold and the extracted mesh falls apart. Labelling the empty points just beside
a thin wall as occupied gives the network a wall it can draw, at the price of a wall that is ``2 *
dilation`` thicker than the true one (conservative for a planner: the extra occupancy hugs the surface).

A query ``p`` outside the object is relabelled occupied when

* it lies within ``dilation`` of the surface (its closest surface point ``s``, distance ``d``), and
* the wall behind ``s`` is thinner than ``max_thickness``: the point ``s + max_thickness * u``, ``u`` the
  unit vector from ``p`` to ``s`` (the inward normal where ``d`` is 0), is outside the object.

So a thick part (a bottle's body, a box) keeps its exact labels, the rim of a bowl is not raised (going
down from above the rim stays inside the wall), and both sides of a thin wall grow by ``dilation``.
Lengths are given as fractions of the object's largest extent, so a scaled object gets scaled labels.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import open3d as o3d
import trimesh

Contains = Callable[[np.ndarray], np.ndarray]
"""(N, 3) float64 points, metres -> (N,) bool inside"""


def closest_surface_points(mesh: trimesh.Trimesh, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closest point on ``mesh`` of each of ``points`` ((N, 3), metres) and the unit normal of its
    triangle (from the face winding), both (N, 3) float64. Open3D's ``RaycastingScene`` (BVH)."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    ans = scene.compute_closest_points(o3d.core.Tensor(np.asarray(points, np.float32)))
    return ans["points"].numpy().astype(np.float64), ans["primitive_normals"].numpy().astype(np.float64)


def thin_wall_labels(points: np.ndarray, inside: np.ndarray, mesh: trimesh.Trimesh, contains: Contains,
                     dilation: float, max_thickness: float) -> np.ndarray:
    """Occupancy labels of ``points`` with thin walls thickened (module docstring).

    points: (N, 3) float64, metres, the frame of ``mesh``; inside: (N,) bool, their exact labels;
    mesh: the object's closed surface (outward winding; used for closest points and, where a point lies
    on the surface, its inward direction); contains: the exact inside test; dilation, max_thickness:
    fractions of the mesh's largest extent (dilation > 0, max_thickness > 0).
    Returns (N,) bool: ``inside`` or'ed with the thickened walls.
    """
    if dilation <= 0 or max_thickness <= 0:
        raise ValueError(f"dilation and max_thickness must be > 0, got {dilation}, {max_thickness}")
    points = np.asarray(points, np.float64)
    out = np.asarray(inside, bool).copy()
    extent = float(np.max(mesh.extents))
    r, t = dilation * extent, max_thickness * extent
    idx = np.flatnonzero(~out)
    if len(idx) == 0:
        return out
    s, normals = closest_surface_points(mesh, points[idx])
    delta = s - points[idx]
    d = np.linalg.norm(delta, axis=1)
    near = d < r
    if not near.any():
        return out
    idx, s, delta, d, normals = idx[near], s[near], delta[near], d[near], normals[near]
    on_surface = d < 1e-9
    u = np.where(on_surface[:, None], -normals, delta / np.maximum(d, 1e-12)[:, None])
    behind = s + t * u
    out[idx[~contains(behind)]] = True
    return out


def thin_wall_labels_reference(points: np.ndarray, inside: np.ndarray, mesh: trimesh.Trimesh,
                               contains: Contains, dilation: float, max_thickness: float) -> np.ndarray:
    """Slow reference of :func:`thin_wall_labels`: trimesh's exact closest points, one point at a time."""
    out = np.asarray(inside, bool).copy()
    extent = float(np.max(mesh.extents))
    r, t = dilation * extent, max_thickness * extent
    for i, p in enumerate(np.asarray(points, np.float64)):
        if out[i]:
            continue
        s, d, tri = trimesh.proximity.closest_point(mesh, p[None])
        if d[0] >= r:
            continue
        u = -mesh.face_normals[tri[0]] if d[0] < 1e-9 else (s[0] - p) / d[0]
        out[i] = not bool(contains((s[0] + t * u)[None])[0])
    return out
