"""Mesh operations on plain arrays (no ROS): simplification before meshes become messages, and a closed-
surface check.

Why: ``shape_msgs/Mesh`` and a TRIANGLE_LIST marker need one Python object per vertex / face corner, so
the cost of publishing grows with the face count; a 128^3 marching-cubes mesh of the shipped network has
80k-180k faces, far more than a planner or RViz needs. :func:`simplify_mesh` reduces it with quadric
edge-collapse decimation (Garland and Heckbert). Its default, :func:`fast_or_open3d_decimation`, runs
:func:`fast_quadric_decimation` (the ``fast-simplification`` package, the one trimesh uses), about 10x
faster than :func:`quadric_decimation` (Open3D's ``simplify_quadric_decimation``) at a comparable surface
error, and falls back to Open3D where it would open a closed mesh, which Open3D did not do on the same
meshes (``tools/compare_decimators.py`` measures both).

Topology: edge collapses can in principle open or pinch a closed surface. :func:`simplify_mesh` checks
its output with :func:`is_closed_surface`; when the input was closed and the output is not, the output is
discarded and the input is returned unchanged (``SimplifiedMesh.note`` says so), so a watertight mesh
stays watertight. Both decimations hold the Python GIL while they run.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

MIN_CLOSED_FACES = 4
"""The fewest triangles of a closed surface (a tetrahedron): the smallest useful face budget."""


@dataclass(frozen=True)
class SimplifiedMesh:
    """``vertices`` (V, 3) float64 and ``faces`` (F, 3) int64 vertex indices, same frame and units as the
    input; ``simplified``: True when the decimated mesh is returned, False when the input is returned
    as is; ``note``: why the input came back unchanged ("" when simplified or when it was small enough)."""

    vertices: np.ndarray
    faces: np.ndarray
    simplified: bool
    note: str = ""


def _as_mesh_arrays(vertices, faces) -> tuple[np.ndarray, np.ndarray]:
    """Checked (V, 3) float64 and (F, 3) int64 copies-or-views; ValueError naming what is wrong."""
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {v.shape}")
    if f.size == 0:
        return v, np.zeros((0, 3), np.int64)
    if f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {f.shape}")
    if not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces must hold integer vertex indices, got dtype {f.dtype}")
    f = f.astype(np.int64, copy=False)
    if f.min() < 0 or f.max() >= v.shape[0]:
        raise ValueError(f"face indices must be in [0, {v.shape[0]}), got [{f.min()}, {f.max()}]")
    if not np.isfinite(v).all():
        raise ValueError("vertices contain NaN or inf")
    return v, f


def is_closed_surface(faces: np.ndarray) -> bool:
    """Whether triangles ``faces`` (F, 3) int form closed, consistently oriented surfaces: every directed
    edge (a, b) occurs exactly once and its reverse (b, a) exactly once (watertight and
    winding-consistent, as trimesh's ``is_watertight`` and ``is_winding_consistent`` together). A face
    that repeats a vertex makes the answer False; no faces -> False.

    One sort: each directed edge becomes its undirected key times two plus its direction (1 where it runs
    from the larger vertex to the smaller), so a closed surface sorts into pairs (key, 0), (key, 1) of
    strictly increasing keys; int32 keys where they fit (tested against the two-sort reference)."""
    f = np.asarray(faces).reshape(-1, 3)
    if f.shape[0] == 0:
        return False
    n = int(f.max()) + 1
    if int(f.min()) < 0:
        return False
    f = f.astype(np.int32 if 2 * n * n < 2 ** 31 else np.int64, copy=False)
    src = f.reshape(-1)
    dst = f[:, [1, 2, 0]].reshape(-1)
    if np.any(src == dst):
        return False
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    key = (lo * n + hi) * 2 + (src > dst)
    key.sort()
    first, second = key[0::2], key[1::2]
    return bool(np.all(first & 1 == 0) and np.array_equal(first + 1, second)
                and np.all(second[:-1] >> 1 < first[1:] >> 1))


def split_pinched_edges(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Undo the pinches of a decimation: where two sheets of a surface were collapsed onto one edge (an edge with
    four faces), each end vertex of such an edge gets one copy per fan of faces around it (faces joined across
    the vertex's other, two-face edges), so each sheet has its own vertices again. vertices (V, 3), faces (F, 3)
    int -> (vertices (V + copies, 3), faces) with the copies at the same places, or None when an edge has a face
    count other than 2 or 4 (nothing this repairs). Returns the inputs unchanged when no edge is pinched."""
    v = np.asarray(vertices)
    f = np.array(faces, dtype=np.int64).reshape(-1, 3)
    n = max(int(f.max()) + 1, v.shape[0]) if f.size else v.shape[0]
    a, b = f.reshape(-1), f[:, [1, 2, 0]].reshape(-1)
    keys = np.minimum(a, b) * n + np.maximum(a, b)
    uniq, counts = np.unique(keys, return_counts=True)
    if np.any((counts != 2) & (counts != 4)):
        return None
    bad = set(uniq[counts == 4].tolist())
    if not bad:
        return v, f
    pinched = sorted({k // n for k in bad} | {k % n for k in bad})
    extra = []
    for p in pinched:
        rows = np.flatnonzero((f == p).any(axis=1))
        parent = {int(r): int(r) for r in rows}

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        by_edge: dict[int, list[int]] = {}
        for r in rows:
            for x in f[r]:
                if x != p:
                    key = min(p, int(x)) * n + max(p, int(x))
                    if key not in bad:
                        by_edge.setdefault(key, []).append(int(r))
        for pair in by_edge.values():
            if len(pair) == 2:
                parent[find(pair[0])] = find(pair[1])
        fans: dict[int, list[int]] = {}
        for r in rows:
            fans.setdefault(find(int(r)), []).append(int(r))
        for fan in list(fans.values())[1:]:  # the first fan keeps the vertex, each other one gets a copy
            copy = n + len(extra)
            extra.append(p)
            sel = np.asarray(fan)
            f[sel] = np.where(f[sel] == p, copy, f[sel])
    return np.concatenate([v, v[np.asarray(extra, dtype=np.int64)]]), f


def drop_fins(faces: np.ndarray) -> np.ndarray:
    """Remove the fins of a decimation: pairs of faces on the same three vertices with opposite windings (a sheet
    collapsed to zero volume, which leaves each of its edges with four faces where it meets the surface).
    faces (F, 3) int -> (F', 3) int64, the other faces in their order. Such a pair holds each of its three
    directed edges once in each direction, so removing it keeps every other edge's count and pairing: a closed
    surface with fins is closed without them. Faces repeated with the same winding, or more than twice, stay
    (nothing this repairs)."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if f.shape[0] < 2:
        return f
    key = np.sort(f, axis=1)
    n = int(f.max()) + 1
    if n <= 2 ** 20:  # the sorted triple packed into one int64: a 1-D unique, 5x faster than rows (axis=0)
        key = (key[:, 0] * n + key[:, 1]) * n + key[:, 2]
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    else:
        _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    rows = np.flatnonzero(counts[inverse] == 2)
    if rows.size == 0:
        return f
    # a face's winding: even (+1) or odd (-1) permutation of its sorted vertices
    first = np.argmin(f[rows], axis=1)
    rolled = np.take_along_axis(f[rows], (first[:, None] + np.arange(3)) % 3, axis=1)  # smallest vertex first
    winding = np.where(rolled[:, 1] < rolled[:, 2], 1, -1)
    group_sum = np.zeros(counts.shape[0], np.int64)
    np.add.at(group_sum, inverse[rows], winding)
    drop = np.zeros(f.shape[0], bool)
    drop[rows[group_sum[inverse[rows]] == 0]] = True
    return f[~drop]


def closed_after_repairs(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """A decimated mesh as a closed surface: as it is when it is one, else after :func:`drop_fins`, else after
    :func:`split_pinched_edges` of that -> (vertices, faces), or None when it is still open."""
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if is_closed_surface(f):
        return vertices, f
    f = drop_fins(f)
    if f.shape[0] == 0:
        return None
    if is_closed_surface(f):
        return vertices, f
    repaired = split_pinched_edges(vertices, f)
    return repaired if repaired is not None and is_closed_surface(repaired[1]) else None


def unit_frame(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, float]:
    """A box's corners (3,) -> (centre (3,), scale): the frame ``(p - centre) / scale`` in which the box is centred
    and its longest edge is 1 (scale 1 for an empty or degenerate box)."""
    centre = 0.5 * (np.asarray(lo, np.float64) + np.asarray(hi, np.float64))
    scale = float(np.max(np.asarray(hi, np.float64) - np.asarray(lo, np.float64)))
    return centre, (scale if np.isfinite(scale) and scale > 0.0 else 1.0)


def decimation_input(vertices, faces, target_faces) -> tuple[np.ndarray, np.ndarray, int]:
    """A decimation's arguments as (V, 3) float64, (F, 3) int64 contiguous arrays and an int budget; ValueError
    for a negative budget."""
    v = np.ascontiguousarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.ascontiguousarray(faces, dtype=np.int64).reshape(-1, 3)
    target = int(target_faces)
    if target < 0:
        raise ValueError(f"target_faces must be >= 0, got {target_faces}")
    return v, f, target


def _drop_unreferenced(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used, inverse = np.unique(f.reshape(-1), return_inverse=True)
    return np.ascontiguousarray(v[used]), inverse.reshape(-1, 3).astype(np.int64)


def quadric_decimation(vertices: np.ndarray, faces: np.ndarray, target_faces: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Open3D's quadric edge-collapse decimation: (V, 3) float64, (F, 3) int64, target face count ->
    (vertices (V', 3) float64, faces (F', 3) int64), same frame and units; may keep unreferenced
    vertices. Holds the GIL while it runs."""
    import open3d as o3d  # heavy import, only when a mesh needs it

    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.ascontiguousarray(vertices, np.float64)),
                                     o3d.utility.Vector3iVector(np.ascontiguousarray(faces, dtype=np.int32)))
    out = mesh.simplify_quadric_decimation(target_number_of_triangles=int(target_faces))
    return np.asarray(out.vertices, dtype=np.float64), np.asarray(out.triangles, dtype=np.int64).reshape(-1, 3)


FAST_AGGRESSIVENESS = (3.0, 7.0, 10.0)
"""``agg`` of the passes of :func:`fast_quadric_decimation`: the first pass is the accurate one; a later pass
runs, on the previous pass's output, only when that one stopped above the face budget. 3 rather than the
library's default 7: on the 22 marching-cubes decimations it was chosen on (unit-size frame), 3 gave 0.75x
Open3D's mean surface error and opened 1 closed mesh; 7 gave 1.8x and opened 8, at about the same speed."""

FAST_RETRIES = ((3.0, 1.0), (2.0, 1.0), (4.0, 1.0), (2.0, 0.95), (3.0, 0.9))
"""(first-pass ``agg``, fraction of the face budget) of the fast decimations :func:`fast_or_open3d_decimation` tries,
in order, before Open3D, each result first repaired by :func:`drop_fins` and :func:`split_pinched_edges` where it
opened (about 10 ms;
on the benchmark's 128^3 and 64^3 meshes that fast-simplification pinched at every aggressiveness and budget
tried, the repaired result was closed). Where a pass pinches two sheets of a closed mesh together (one edge with four faces, at
one spot), another aggressiveness or budget usually does not: on a 49k-face 64^3 network mesh reduced to 20000
faces, agg 3 pinched it and agg 2 and 4 did not; budgets of 19000 and 18000 at agg 3 did not either. A retry costs
one fast pass (about 0.05 s at 64^3, 0.2 s at 128^3) against about 2.4 s for Open3D at 128^3."""

_FAST_LOCK = threading.Lock()  # fast_simplification keeps the mesh in module globals between its C++ calls


def fast_quadric_decimation(vertices: np.ndarray, faces: np.ndarray, target_faces: int, first_agg: float = 3.0
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Quadric edge-collapse decimation by ``fast_simplification.simplify``: (V, 3) float, (F, 3) int
    vertex indices, target face count -> (vertices (V', 3) float64, faces (F', 3) int64), same frame and
    units; no unreferenced vertices. The result usually has at most ``target_faces`` faces (a budget below
    about 4 faces per closed piece is reached by removing whole small pieces; a tiny budget can open a closed
    surface, e.g. a torus at 30 faces), but the library's fixed schedule can stop above a small budget (a
    3192-face box-like mesh ended at 648 faces for 100): callers check; a mesh with at most ``target_faces``
    faces comes back as is.

    The library's collapse threshold is an absolute squared distance (``1e-9 * (iteration + 3) ** agg``),
    so the mesh is decimated in a frame where its bounding box's longest edge is 1 (the same result for a
    mug in metres or in millimetres) and mapped back. It stops after 100 iterations wherever it is, so
    a pass that ends above ``target_faces`` is followed by a more aggressive one (:data:`FAST_AGGRESSIVENESS`,
    from ``first_agg`` on: the first pass's ``agg``).
    Holds the GIL while it runs; calls from several threads are serialised (the library keeps its mesh in
    module globals). ValueError for a negative ``target_faces``."""
    import fast_simplification  # only when a mesh needs it

    v, f, target = decimation_input(vertices, faces, target_faces)
    if f.shape[0] <= target or v.shape[0] == 0:
        return v, f
    center, scale = unit_frame(v.min(axis=0), v.max(axis=0))
    sv, sf = (v - center) / scale, f
    with _FAST_LOCK:
        for agg in (first_agg, *(a for a in FAST_AGGRESSIVENESS if a > first_agg)):
            if sf.shape[0] <= target:
                break
            sv, sf = fast_simplification.simplify(sv, sf, target_count=target, agg=agg)
            sf = np.asarray(sf, dtype=np.int64).reshape(-1, 3)
    return np.asarray(sv, dtype=np.float64) * scale + center, sf


Decimation = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def fast_or_open3d_decimation(vertices: np.ndarray, faces: np.ndarray, target_faces: int
                              ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fast_quadric_decimation` at the first (aggressiveness, budget) of :data:`FAST_RETRIES`, then at the next
    where that result has more than ``target_faces`` faces or the input is a closed surface and that result is not
    (:func:`is_closed_surface`) even after :func:`drop_fins` and :func:`split_pinched_edges`; when none does,
    :func:`quadric_decimation` (Open3D) instead. Same arrays, units and
    contract as both. fast-simplification has no check against collapses that pinch two sheets together
    or fold a thin sheet onto itself (an edge then has four faces): on the shipped network's 64^3 and 128^3 meshes
    of four shapes in
    three views, reduced to 20000 and 5000 faces, 8 of 48 decimations came out open (6 of them mugs,
    thin walls and a handle; none of 14 on analytic shapes, none by Open3D), which
    :func:`simplify_mesh` would otherwise answer with the whole undecimated mesh. A fallback costs the fast
    passes tried and Open3D's. Without the ``fast-simplification`` package (a ROS workspace that did not pip-install
    it), Open3D alone. Holds the GIL while it runs."""
    closed = None  # whether the input is a closed surface, computed once if needed
    for first_agg, fraction in FAST_RETRIES:
        try:
            sv, sf = fast_quadric_decimation(vertices, faces, max(1, int(target_faces * fraction)), first_agg)
        except ImportError:
            return quadric_decimation(vertices, faces, target_faces)
        if sf.shape[0] <= int(target_faces) and is_closed_surface(sf):
            return sv, sf
        if closed is None:
            closed = is_closed_surface(faces)
        if sf.shape[0] <= int(target_faces) and not closed:
            return sv, sf
        if sf.shape[0] <= int(target_faces):  # fins and pinches: remove the fins, give each pinched sheet its own
            repaired = closed_after_repairs(sv, sf)
            if repaired is not None:
                return repaired
    return quadric_decimation(vertices, faces, target_faces)


def simplify_mesh(vertices: np.ndarray, faces: np.ndarray, max_faces: int, keep_closed: bool = True,
                  decimate: Decimation = fast_or_open3d_decimation) -> SimplifiedMesh:
    """Reduce a triangle mesh to at most ``max_faces`` faces by quadric edge-collapse decimation.

    vertices: (V, 3) float, any frame, any unit (returned in the same); faces: (F, 3) integer indices.
    max_faces: 0 = no simplification; otherwise >= :data:`MIN_CLOSED_FACES`. A mesh with at most
    ``max_faces`` faces is returned unchanged. The result has at most ``max_faces`` faces where the
    decimation reaches that: both here reach a budget below about 4 faces per closed piece by removing
    whole small pieces; Open3D stops above a tiny budget it cannot reach (a torus at 16-18 faces).
    keep_closed: if the input is a closed surface
    (:func:`is_closed_surface`) and the decimated mesh is not, return the input unchanged (``note``
    says so). Unreferenced vertices are dropped from the result. decimate: the method
    (:func:`fast_or_open3d_decimation`; :func:`fast_quadric_decimation`, :func:`quadric_decimation` or
    another of the same signature). ValueError for malformed input.
    """
    if isinstance(max_faces, bool) or not isinstance(max_faces, (int, np.integer)):
        raise ValueError(f"max_faces must be an integer, got {max_faces!r}")
    if max_faces < 0 or 0 < max_faces < MIN_CLOSED_FACES:
        raise ValueError(f"max_faces must be 0 (off) or >= {MIN_CLOSED_FACES}, got {max_faces}")
    v, f = _as_mesh_arrays(vertices, faces)
    if max_faces == 0 or f.shape[0] <= max_faces:
        return SimplifiedMesh(v, f, False)
    sv, sf = decimate(v, f, int(max_faces))
    sv, sf = _as_mesh_arrays(sv, sf)
    if sf.shape[0] == 0:
        return SimplifiedMesh(v, f, False, "decimation removed every face; mesh left unsimplified")
    sv, sf = _drop_unreferenced(sv, sf)
    if keep_closed and not is_closed_surface(sf) and is_closed_surface(f):
        return SimplifiedMesh(v, f, False, "decimation would open the closed mesh; mesh left unsimplified")
    return SimplifiedMesh(sv, sf, True)


class MeshReduction:
    """The pipeline's mesh reduction to ``max_faces`` by ``decimate``, passed to the reconstructor as its ``simplify``
    (:data:`~occnet_ros.reconstruction.reconstructor.MeshSimplify`), so meshes are reduced before they are anchored.

    Called with (vertices (V, 3), faces (F, 3)), any frame: :func:`~occnet_ros.perception.mesh_ops.simplify_mesh`
    -> (vertices, faces, note). :meth:`from_grid`: where ``decimate`` can also mesh a MISE grid in slabs
    (:meth:`ParallelDecimation.mesh_grid <occnet_ros.perception.parallel_decimation.ParallelDecimation.mesh_grid>`),
    the reconstructor hands it the grid instead of a marching-cubes mesh; :meth:`mesh_whole`: where ``decimate`` can
    mesh a whole grid in a worker process (:meth:`ParallelDecimation.mesh_whole_grid
    <occnet_ros.perception.parallel_decimation.ParallelDecimation.mesh_whole_grid>`), the grids it declines are
    meshed there."""

    def __init__(self, max_faces: int, decimate: Decimation):
        self.max_faces = int(max_faces)
        self.decimate = decimate

    def __call__(self, vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        s = simplify_mesh(vertices, faces, self.max_faces, decimate=self.decimate)
        return s.vertices, s.faces, s.note

    def from_grid(self, values: np.ndarray, threshold: float, box_half: float
                  ) -> tuple[np.ndarray, np.ndarray, str, int] | None:
        """A MISE corner grid (R+1)^3 -> (vertices (V, 3) canonical, faces (F, 3), note "", faces marching cubes
        made), meshed and reduced in slabs by ``decimate``; None where it cannot (no ``mesh_grid``, reduction off,
        a surface too small to cut, or a slab result that failed its checks): the caller then meshes the whole grid
        (:meth:`mesh_whole`) and reduces that mesh by calling this object."""
        mesh_grid = getattr(self.decimate, "mesh_grid", None)
        if mesh_grid is None or self.max_faces == 0:
            return None
        done = mesh_grid(values, threshold, box_half, self.max_faces)
        return None if done is None else (done[0], done[1], "", done[2])

    def mesh_whole(self, values: np.ndarray, threshold: float, box_half: float
                   ) -> tuple[np.ndarray, np.ndarray] | None:
        """A MISE corner grid (R+1)^3 -> :func:`~occnet_ros.reconstruction.mise.mesh_from_values` of it, made by
        ``decimate``'s ``mesh_whole_grid`` (in a worker process); None where ``decimate`` has none or it failed: the
        caller then runs marching cubes itself."""
        mesh_whole_grid = getattr(self.decimate, "mesh_whole_grid", None)
        return None if mesh_whole_grid is None else mesh_whole_grid(values, threshold, box_half)
