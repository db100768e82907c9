"""Decimation of a large mesh in parts (pure Python, no ROS): the mesh is cut into slabs, each slab is
decimated on its own with its cut edges kept exactly, and the slabs are joined again at those edges. The same for
a MISE grid (:func:`parted_grid_decimation`): the grid is cut into blocks that share their cut planes, and
marching cubes runs per block too, so a worker process can mesh and decimate its block on its own; marching cubes
gives bit-identical vertices on a shared plane (:func:`~occnet_ros.reconstruction.mise.marching_cubes_at`), so the
blocks' meshes join there exactly, into the mesh of the whole grid.

Why: fast-simplification's time grows faster than the face count (a 213k-face 128^3 network mesh of a mug to
20000 faces: 271 ms whole, 194 ms as two slabs one after the other, 159 ms as three), and slabs can be decimated
in several processes at once (:class:`~occnet_ros.perception.decimation_worker.ParallelDecimation`: two slabs in
two worker processes take about as long as the larger one, 105 ms there). Measured with
``tools/compare_decimators.py`` on a 2-core AMD EPYC, which also gives the surface error against decimating
the mesh whole.

Cut edges: a slab's faces are the mesh's faces whose centroids fall in it, so the slabs share the vertices
of the cut; fast-simplification's ``preserve_border`` never moves or removes a vertex on an open edge, so
those vertices come back bit for bit and are joined by their coordinates. The cut keeps its original
(marching-cubes) edge length, a strip of small faces. The joined mesh goes through the same checks as a
whole decimation (:func:`~occnet_ros.perception.mesh_ops.fast_or_open3d_decimation`): at most the face budget,
and a closed surface stays closed after :func:`~occnet_ros.perception.mesh_ops.drop_fins` and
:func:`~occnet_ros.perception.mesh_ops.split_pinched_edges`; where it does not, the mesh is decimated whole.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from occnet_ros.perception.mesh_ops import (FAST_RETRIES, Decimation, closed_after_repairs, decimation_input,
                                            fast_or_open3d_decimation, unit_frame)

__all__ = ["PartJob", "split_into_slabs", "decimate_parts", "join_parts", "parted_decimation", "MIN_PART_FACES"]

MIN_PART_FACES = 20000
"""A mesh is cut into no more slabs than it has this many faces per slab (below that, cutting saves little and
the strips of the cuts weigh more)."""

PartJob = tuple[np.ndarray, np.ndarray, int]
"""One slab: vertices (V, 3) float64 in the joint normalised frame, faces (F, 3) int64, its face budget."""

RunParts = Callable[[Sequence[PartJob]], "list[tuple[np.ndarray, np.ndarray]] | None"]
"""Decimates every job (:func:`decimate_parts` of them, possibly in other processes) -> results in order, or None
when that failed (the caller then decimates the mesh whole)."""


def split_into_slabs(vertices: np.ndarray, faces: np.ndarray, parts: int, target_faces: int
                     ) -> tuple[list[PartJob], np.ndarray, float]:
    """Cut a mesh into ``parts`` slabs along the longest edge of its bounding box, at quantiles of the face
    centroids, in a frame where that edge is 1 long and centred on the box (the same result in metres or
    millimetres, as :func:`~occnet_ros.perception.mesh_ops.fast_quadric_decimation`).

    vertices (V, 3) float, faces (F, 3) int -> (jobs, centre (3,), scale): each job the slab's own vertices
    (normalised) and faces and its share of ``target_faces`` (in proportion to its faces, at least 4); empty
    slabs are left out. ``vertices = normalised * scale + centre`` maps back."""
    v = np.asarray(vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    lo, hi = v.min(axis=0), v.max(axis=0)
    centre, scale = unit_frame(lo, hi)
    vn = (v - centre) / scale
    axis = int(np.argmax(hi - lo))
    centroid = vn[f, axis].mean(axis=1)
    cuts = np.quantile(centroid, np.arange(1, parts) / parts) if parts > 1 else np.zeros(0)
    label = np.searchsorted(cuts, centroid)
    jobs = []
    remap = np.empty(v.shape[0], np.int64)
    for k in range(parts):
        fk = f[label == k]
        if fk.shape[0] == 0:
            continue
        mark = np.zeros(v.shape[0], bool)
        mark[fk.reshape(-1)] = True
        used = np.flatnonzero(mark)
        remap[used] = np.arange(used.size)
        budget = max(4, int(target_faces * fk.shape[0] / f.shape[0]))
        jobs.append((vn[used], remap[fk], budget))
    return jobs, centre, scale


def decimate_parts(jobs: Sequence[PartJob], first_agg: float = FAST_RETRIES[0][0]
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each slab decimated by fast-simplification with its open edges kept (``preserve_border``), at
    aggressiveness ``first_agg`` -> [(vertices (V', 3) float64, faces (F', 3) int64)] in order. Runs in the
    calling process and holds its GIL (the worker processes call it)."""
    import fast_simplification  # only when a mesh needs it

    from occnet_ros.perception.mesh_ops import _FAST_LOCK

    out = []
    with _FAST_LOCK:
        for v, f, budget in jobs:
            if f.shape[0] <= budget:
                out.append((np.asarray(v, np.float64), np.asarray(f, np.int64)))
                continue
            sv, sf = fast_simplification.simplify(np.ascontiguousarray(v, np.float64),
                                                  np.ascontiguousarray(f, np.int64), target_count=int(budget),
                                                  agg=first_agg, preserve_border=True)
            out.append((np.asarray(sv, np.float64), np.asarray(sf, np.int64).reshape(-1, 3)))
    return out


def join_parts(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Decimated slabs -> one mesh (vertices (V, 3) float64, faces (F, 3) int64): vertices with bit-identical
    coordinates that lie on an open edge of their slab (the cut) become one vertex; all others stay as they are."""
    vs, fs, at = [], [], 0
    for v, f in parts:
        vs.append(np.asarray(v, np.float64).reshape(-1, 3))
        fs.append(np.asarray(f, np.int64).reshape(-1, 3) + at)
        at += vs[-1].shape[0]
    v, f = np.concatenate(vs), np.concatenate(fs)
    a, b = f.reshape(-1), f[:, [1, 2, 0]].reshape(-1)
    small = np.int32 if max(1, at) ** 2 < 2 ** 31 else np.int64  # a sort of int32 keys: about 2x faster
    keys = np.sort(np.minimum(a, b).astype(small) * max(1, at) + np.maximum(a, b).astype(small))
    once = np.ones(keys.shape[0], bool)  # edges of one face only: np.unique's counts == 1, without the counting
    same = keys[1:] == keys[:-1]
    once[1:] &= ~same
    once[:-1] &= ~same
    open_edges = keys[once].astype(np.int64)
    border = np.unique(np.concatenate([open_edges // max(1, at), open_edges % max(1, at)]))
    index = np.arange(at)
    if border.size:
        rows = np.ascontiguousarray(v[border]).view(np.dtype((np.void, 24))).reshape(-1)
        _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
        index[border] = border[first][inverse.reshape(-1)]
    f = index[f]
    used = np.zeros(at, bool)  # the vertices still in use, renumbered in order (np.unique's answer, without a sort)
    used[f.reshape(-1)] = True
    renumber = np.cumsum(used) - 1
    return v[used], renumber[f].astype(np.int64)


def parted_decimation(vertices: np.ndarray, faces: np.ndarray, target_faces: int, parts: int = 2,
                      run_parts: RunParts | None = None, whole: Decimation = fast_or_open3d_decimation
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Reduce a mesh to at most ``target_faces`` faces in up to ``parts`` slabs (module docstring): vertices (V, 3)
    float, faces (F, 3) int, any frame and unit -> (vertices (V', 3) float64, faces (F', 3) int64) in the same.
    ``run_parts`` decimates the slabs (None = :func:`decimate_parts` here, one after the other). The mesh is
    decimated by ``whole`` instead when it has fewer than :data:`MIN_PART_FACES` faces per slab for two slabs,
    when ``run_parts`` fails, or when the joined result has more than ``target_faces`` faces or is not a closed
    surface after the repairs (an open input mesh therefore always goes to ``whole``, which keeps its own
    contract for it). Same contract as ``whole``."""
    v, f, target = decimation_input(vertices, faces, target_faces)
    if f.shape[0] <= target or v.shape[0] == 0:
        return v, f
    n = min(int(parts), f.shape[0] // MIN_PART_FACES)
    if n < 2 or target < 4 * n:
        return whole(v, f, target)
    jobs, centre, scale = split_into_slabs(v, f, n, target)
    done = (run_parts or decimate_parts)(jobs)
    if done is None or len(done) != len(jobs):
        return whole(v, f, target)
    jv, jf = join_parts(done)
    closed = closed_after_repairs(jv, jf) if jf.shape[0] <= target else None
    if closed is not None:
        return closed[0] * scale + centre, closed[1]
    return whole(v, f, target)


# ------------------------------------------------------------------ marching cubes and decimation per slab of the grid

GridJob = tuple[np.ndarray, np.ndarray, float, int, float, np.ndarray, float, int]
"""One slab of the corner grid: (block float32, start (3,) int, threshold, resolution, box_half, centre (3,),
scale, face budget); see :func:`grid_slab_jobs`."""


def grid_slab_jobs(values: np.ndarray, threshold: float, box_half: float, parts: int, target_faces: int
                   ) -> list[GridJob] | None:
    """The MISE corner grid ``values`` (R+1)^3 cut into up to ``parts`` blocks along its first axis that share their
    cut planes, each with about the same number of surface cells (cells whose corners lie on both sides of
    ``threshold``) and that share of ``target_faces`` -> jobs for :func:`mesh_and_decimate_slabs`, or None when
    there is no surface or too little of it to cut (fewer than :data:`MIN_PART_FACES` / 2 surface cells per
    block: marching cubes gives about two faces per surface cell), or too little to need decimating (at most
    ``target_faces`` / 2 surface cells). All jobs carry the same normalisation
    (``centre``, ``scale``: the occupied corners' box, its longest edge to 1), so their vertices on a shared plane
    stay bit-identical through it."""
    from occnet_ros.reconstruction.mise import padded_subgrid

    padded = padded_subgrid(values, threshold)
    if padded is None:
        return None
    sub, start = padded
    inside = sub >= threshold
    any_in = inside[:-1] | inside[1:]
    all_in = inside[:-1] & inside[1:]
    any_in = any_in[:, :-1] | any_in[:, 1:]
    all_in = all_in[:, :-1] & all_in[:, 1:]
    any_in = any_in[:, :, :-1] | any_in[:, :, 1:]
    all_in = all_in[:, :, :-1] & all_in[:, :, 1:]
    per_layer = (any_in & ~all_in).sum(axis=(1, 2))  # surface cells between corner planes i and i + 1
    total = int(per_layer.sum())
    n = min(int(parts), total // (MIN_PART_FACES // 2))
    if n < 2 or target_faces < 4 * n or 2 * total <= target_faces:
        return None
    resolution = values.shape[0] - 1
    cell = 2.0 * box_half / resolution
    centre, scale = unit_frame((start + 1) * cell - box_half, (start + np.asarray(sub.shape) - 2) * cell - box_half)
    cum = np.cumsum(per_layer)
    cuts = [0] + [int(np.searchsorted(cum, total * k / n)) + 1 for k in range(1, n)] + [sub.shape[0] - 1]
    jobs = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        if b <= a:
            continue
        cells = int(cum[b - 1] - (cum[a - 1] if a else 0))
        budget = max(4, int(target_faces * cells / total))
        jobs.append((np.ascontiguousarray(sub[a:b + 1]), start + np.array([a, 0, 0]), float(threshold), resolution,
                     float(box_half), centre, scale, budget))
    return jobs


def mesh_and_decimate_slabs(jobs: Sequence[GridJob], first_agg: float = FAST_RETRIES[0][0]
                            ) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Marching cubes of each grid slab (:func:`~occnet_ros.reconstruction.mise.marching_cubes_at`), its vertices
    normalised by the job's centre and scale, then decimated to its budget with its open edges kept (as
    :func:`decimate_parts`) -> [(vertices (V, 3) float64 normalised, faces (F, 3) int64, marching-cubes faces)].
    Runs in the calling process and holds its GIL (the worker processes call it)."""
    from occnet_ros.reconstruction.mise import marching_cubes_at

    meshes, parts = [], []
    for block, start, threshold, resolution, box_half, centre, scale, budget in jobs:
        v, f = marching_cubes_at(block, start, threshold, resolution, box_half)
        meshes.append(len(f))
        parts.append(((v.astype(np.float64) - centre) / scale, f, budget))
    return [(v, f, n) for (v, f), n in zip(decimate_parts(parts, first_agg), meshes)]


def parted_grid_decimation(values: np.ndarray, threshold: float, box_half: float, target_faces: int,
                           parts: int = 2, run_slabs: Callable[[Sequence[GridJob]], list | None] | None = None
                           ) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The mesh of a MISE corner grid reduced to at most ``target_faces`` faces, with marching cubes and decimation
    done slab by slab (:func:`grid_slab_jobs`, :func:`mesh_and_decimate_slabs`, possibly in other processes:
    ``run_slabs``, None = here) and the slabs joined at their shared planes -> (vertices (V, 3) float64 canonical,
    faces (F, 3) int64, the faces marching cubes made), or None where this does not apply or fails (too little
    surface to cut, ``run_slabs`` failed, more than ``target_faces`` faces, or not a closed surface after
    :func:`~occnet_ros.perception.mesh_ops.drop_fins` and
    :func:`~occnet_ros.perception.mesh_ops.split_pinched_edges`): the caller then meshes the grid whole."""
    jobs = grid_slab_jobs(values, threshold, box_half, parts, int(target_faces))
    if jobs is None:
        return None
    done = (run_slabs or mesh_and_decimate_slabs)(jobs)
    if done is None or len(done) != len(jobs):
        return None
    n_mc = int(sum(n for _, _, n in done))
    if n_mc <= target_faces:
        return None  # small enough whole: nothing to decimate, the whole mesh is the answer
    jv, jf = join_parts([(v, f) for v, f, _ in done])
    if jf.shape[0] > target_faces:
        return None
    centre, scale = jobs[0][5], jobs[0][6]
    closed = closed_after_repairs(jv, jf)
    return None if closed is None else (closed[0] * scale + centre, closed[1], n_mc)
