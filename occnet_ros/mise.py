"""Multiresolution IsoSurface Extraction (MISE) and the dense-grid reference.

``eval_fn`` maps (M, 3) float32 canonical points to (M,) float32 occupancy probabilities (or any field
that is inside where ``>= threshold``). The grid spans ``[-box_half, box_half]^3`` with ``R + 1`` corners
per axis, ``R = resolution0 * 2**upsampling_steps``.

MISE: evaluate a coarse corner grid; a cell is active where its 8 corners disagree about inside/outside;
split active cells in 8 and evaluate only their new corners; repeat; fill never-evaluated values by
trilinear interpolation from the coarser level, pad the grid with "outside" and run marching cubes, so
the mesh is closed (watertight).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
from skimage.measure import marching_cubes

from occnet_ros.normalization import BOX_HALF

EvalFn = Callable[[np.ndarray], np.ndarray]
PAD_VALUE = -1e6
"""Value of the padding layer around the grid: far outside, so the surface closes on the box face."""


def grid_coords(index: np.ndarray, resolution: int, box_half: float) -> np.ndarray:
    """index (..., 3) integer corner indices in [0, R] -> (..., 3) float32 canonical coordinates."""
    return (index * (2.0 * box_half / resolution) - box_half).astype(np.float32)


def _evaluate(eval_fn: EvalFn, points: np.ndarray, batch_size: int) -> tuple[np.ndarray, int]:
    """Evaluate in chunks of at most ``batch_size`` points -> (values (M,) float32, number of calls)."""
    out = np.empty(points.shape[0], dtype=np.float32)
    calls = 0
    for s in range(0, points.shape[0], batch_size):
        chunk = points[s:s + batch_size]
        v = np.asarray(eval_fn(chunk), dtype=np.float32).reshape(-1)
        if v.shape[0] != chunk.shape[0]:
            raise ValueError(f"eval_fn returned {v.shape[0]} values for {chunk.shape[0]} points")
        out[s:s + batch_size] = v
        calls += 1
    return out, calls


def _corner_views(a: np.ndarray) -> list[np.ndarray]:
    """The 8 corner arrays of the cells of a (n+1)^3 corner grid, each (n, n, n)."""
    return [a[i:a.shape[0] - 1 + i, j:a.shape[1] - 1 + j, k:a.shape[2] - 1 + k]
            for i in (0, 1) for j in (0, 1) for k in (0, 1)]


def _upsample2(a: np.ndarray) -> np.ndarray:
    """Trilinear 2x upsampling of a corner grid: (n+1)^3 -> (2n+1)^3."""
    for axis in range(3):
        a = np.moveaxis(a, axis, 0)
        out = np.empty((2 * a.shape[0] - 1,) + a.shape[1:], dtype=a.dtype)
        out[0::2] = a
        out[1::2] = 0.5 * (a[:-1] + a[1:])
        a = np.moveaxis(out, 0, axis)
    return a


def mise_values(eval_fn: EvalFn, resolution0: int = 32, upsampling_steps: int = 2,
                threshold: float = 0.5, box_half: float = BOX_HALF, batch_size: int = 100_000
                ) -> tuple[np.ndarray, dict]:
    """MISE on the corner grid -> (values (R+1, R+1, R+1) float32, all filled; stats).

    stats: ``evals_per_level`` (list of int), ``eval_calls``, ``n_evals``, ``n_dense`` ((R+1)^3),
    ``time_eval_s``, ``time_total_s``, ``resolution``."""
    if resolution0 < 1 or upsampling_steps < 0 or batch_size < 1:
        raise ValueError("need resolution0 >= 1, upsampling_steps >= 0, batch_size >= 1")
    t0 = time.perf_counter()
    res = resolution0 * 2 ** upsampling_steps
    n = res + 1
    values = np.zeros((n, n, n), dtype=np.float32)
    evaluated = np.zeros((n, n, n), dtype=bool)
    evals, calls, t_eval = [], 0, 0.0
    for level in range(upsampling_steps + 1):
        s = 2 ** (upsampling_steps - level)
        if level == 0:
            mark = np.zeros((n, n, n), dtype=bool)
            mark[::s, ::s, ::s] = True
        else:
            # active cells of the previous (stride 2s) grid: all 8 corners evaluated, not all agreeing
            v, e = values[::2 * s, ::2 * s, ::2 * s], evaluated[::2 * s, ::2 * s, ::2 * s]
            inside = [c >= threshold for c in _corner_views(v)]
            known = np.logical_and.reduce(_corner_views(e))
            active = known & np.logical_or.reduce(inside) & ~np.logical_and.reduce(inside)
            cells = np.argwhere(active) * (2 * s)  # (K, 3) lowest corner, full-resolution index
            mark = np.zeros((n, n, n), dtype=bool)
            for di in range(3):
                for dj in range(3):
                    for dk in range(3):
                        mark[cells[:, 0] + di * s, cells[:, 1] + dj * s, cells[:, 2] + dk * s] = True
        new = np.argwhere(mark & ~evaluated)
        if new.shape[0]:
            te = time.perf_counter()
            vals, c = _evaluate(eval_fn, grid_coords(new, res, box_half), batch_size)
            t_eval += time.perf_counter() - te
            calls += c
            values[new[:, 0], new[:, 1], new[:, 2]] = vals
            evaluated[new[:, 0], new[:, 1], new[:, 2]] = True
        evals.append(int(new.shape[0]))
    # fill never-evaluated values coarse-to-fine by trilinear interpolation
    for level in range(1, upsampling_steps + 1):
        s = 2 ** (upsampling_steps - level)
        coarse = values[::2 * s, ::2 * s, ::2 * s]
        fine_view = values[::s, ::s, ::s]
        unknown = ~evaluated[::s, ::s, ::s]
        fine_view[unknown] = _upsample2(coarse)[unknown]
        evaluated[::s, ::s, ::s] = True
    stats = {
        "resolution": res,
        "evals_per_level": evals,
        "n_evals": int(sum(evals)),
        "n_dense": int(n ** 3),
        "eval_calls": calls,
        "time_eval_s": t_eval,
        "time_total_s": time.perf_counter() - t0,
    }
    return values, stats


def dense_values(eval_fn: EvalFn, resolution: int, box_half: float = BOX_HALF,
                 batch_size: int = 100_000) -> np.ndarray:
    """Slow reference: evaluate every corner -> (R+1, R+1, R+1) float32."""
    n = resolution + 1
    idx = np.stack(np.meshgrid(*(np.arange(n),) * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    vals, _ = _evaluate(eval_fn, grid_coords(idx, resolution, box_half), batch_size)
    return vals.reshape(n, n, n)


def occupied_bounds(values: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Index bounds (lo (3,), hi (3,), inclusive) of the corners with ``values >= threshold``; None if
    there are none. Found from per-axis projections (no index arrays over the grid)."""
    inside = values >= threshold
    lo, hi = [], []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        nz = np.flatnonzero(inside.any(axis=other))
        if nz.size == 0:
            return None
        lo.append(nz[0])
        hi.append(nz[-1])
    return np.array(lo), np.array(hi)


def mesh_from_values(values: np.ndarray, threshold: float = 0.5, box_half: float = BOX_HALF
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes on a padded corner grid -> (vertices (V, 3) float32 canonical, faces (F, 3) int64).

    Faces are oriented with outward normals (inside = ``values >= threshold``). A grid with no surface
    gives empty arrays. Marching cubes runs only on the sub-grid around the inside corners (plus one
    layer): every cell outside it has all corners outside, so the mesh is the same as on the full grid."""
    res = values.shape[0] - 1
    bounds = occupied_bounds(values, threshold)
    if bounds is None:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    lo, hi = bounds
    # the sub-grid of grid indices lo-1 .. hi+1; indices -1 and R+1 are the outside padding layer
    start = lo - 1
    sub = np.full(tuple(hi - lo + 3), PAD_VALUE, dtype=np.float32)
    a0, a1 = np.maximum(start, 0), np.minimum(hi + 1, res)
    sub[tuple(slice(a0[i] - start[i], a1[i] - start[i] + 1) for i in range(3))] = \
        values[tuple(slice(a0[i], a1[i] + 1) for i in range(3))]
    verts, faces, _, _ = marching_cubes(sub, level=threshold, gradient_direction="ascent")
    verts = ((verts + start) * (2.0 * box_half / res) - box_half).astype(np.float32)
    return verts, faces.astype(np.int64)


def extract_mesh(eval_fn: EvalFn, resolution0: int = 32, upsampling_steps: int = 2,
                 threshold: float = 0.5, box_half: float = BOX_HALF, batch_size: int = 100_000
                 ) -> tuple[np.ndarray, np.ndarray, dict]:
    """MISE mesh -> (vertices (V, 3) float32 canonical, faces (F, 3) int64, stats).

    stats as :func:`mise_values` plus ``time_marching_cubes_s``."""
    values, stats = mise_values(eval_fn, resolution0, upsampling_steps, threshold, box_half, batch_size)
    t0 = time.perf_counter()
    verts, faces = mesh_from_values(values, threshold, box_half)
    stats["time_marching_cubes_s"] = time.perf_counter() - t0
    return verts, faces, stats


def extract_mesh_dense(eval_fn: EvalFn, resolution: int = 128, threshold: float = 0.5,
                       box_half: float = BOX_HALF, batch_size: int = 100_000
                       ) -> tuple[np.ndarray, np.ndarray, dict]:
    """Slow reference: dense grid + marching cubes -> (vertices, faces, stats with ``n_evals``)."""
    t0 = time.perf_counter()
    values = dense_values(eval_fn, resolution, box_half, batch_size)
    verts, faces = mesh_from_values(values, threshold, box_half)
    return verts, faces, {"resolution": resolution, "n_evals": int(values.size),
                          "time_total_s": time.perf_counter() - t0}
