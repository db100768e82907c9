"""Section "queries": occupancy queries through the Python API, points per second.

* one object, points inside its padded box (every point reaches the network): exact
  (:meth:`ReconstructedObject.query`) and from the cached MISE grid (``mode="grid"``), with the grid's
  error against the exact answers;
* the object store (:class:`occnet_ros.perception.object_store.ObjectStore`) with several objects: points spread
  over the scene (uniform in the axis-aligned box around all objects' boxes, enlarged by
  ``SCENE_MARGIN_M`` on every side; the box tests reject most without the network), and points inside
  one object.
"""
from __future__ import annotations

import numpy as np

from occnet_ros.benchmark.common import BenchContext, timed
from occnet_ros.benchmark.mise_vs_dense import reconstructor
from occnet_ros.reconstruction.normalization import BOX_HALF
from occnet_ros.perception.object_store import ObjectStore, StoredObject

SCENE_MARGIN_M = 0.2
FAMILIES = ("mug", "bottle", "box", "bowl")
OFFSETS_M = ((-0.3, 0.0, 0.0), (-0.1, 0.02, 0.05), (0.1, -0.02, 0.0), (0.3, 0.0, 0.08))
"""Where the scene's objects are moved to in the camera frame (x right, y down, z forward), metres."""


def scene_objects(ctx: BenchContext, n_objects: int = 4):
    """``n_objects`` reconstructions of procedural shapes side by side, camera optical frame."""
    objs = []
    with reconstructor(ctx, keep_grid=True) as rec:  # the grid-mode rows need each object's MISE grid
        for i in range(n_objects):
            view = ctx.views.get(ctx.seed + i, FAMILIES[i % len(FAMILIES)])
            pts = view.points + np.asarray(OFFSETS_M[i % len(OFFSETS_M)], np.float32)
            objs.append(rec.reconstruct(pts, up=view.up))
    return objs


def box_points_source(obj, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniform in the object's padded box, source frame, float32."""
    return obj.frame.from_canonical(rng.uniform(-BOX_HALF, BOX_HALF, (n, 3)))


def spread_points(store: ObjectStore, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniform in the box around all objects' boxes, enlarged by ``SCENE_MARGIN_M``."""
    snap = store.snapshot()
    lo = np.min([o.box_min for o in snap.objects], axis=0) - SCENE_MARGIN_M
    hi = np.max([o.box_max for o in snap.objects], axis=0) + SCENE_MARGIN_M
    return rng.uniform(lo, hi, (n, 3)).astype(np.float32)


def in_any_box(objs, pts: np.ndarray) -> np.ndarray:
    """(M,) bool: the point lies in at least one object's padded (oriented) box."""
    hit = np.zeros(pts.shape[0], bool)
    for o in objs:
        hit |= (np.abs(o.frame.to_canonical(pts)) <= BOX_HALF).all(axis=1)
    return hit


def grid_error(obj, pts: np.ndarray, threshold: float) -> dict:
    """The cached grid against the network on ``pts`` (source frame)."""
    exact, grid = obj.query(pts), obj.query(pts, mode="grid")
    d = np.abs(exact - grid)
    near = np.abs(exact - threshold) < 0.1  # points close to the surface
    agree = (exact >= threshold) == (grid >= threshold)
    return {"max_abs_prob_diff": float(d.max()), "mean_abs_prob_diff": float(d.mean()),
            "occupancy_agreement": float(agree.mean()),
            "occupancy_agreement_near_surface": float(agree[near].mean()) if near.any() else float("nan"),
            "points": int(pts.shape[0])}


def rate(n: int, t: dict) -> float:
    return n / t["median_s"]


def run(ctx: BenchContext) -> dict:
    rng = np.random.default_rng(ctx.seed)
    objs = scene_objects(ctx)
    store = ObjectStore()
    store.replace([StoredObject(i + 1, f"object_{i + 1}", o) for i, o in enumerate(objs)], "camera", 0.0)
    one = objs[0]
    rows = []
    for n in ctx.sizes.query_sizes:
        inside = box_points_source(one, n, rng)
        spread = spread_points(store, n, rng)
        t_exact, _ = timed(lambda: one.query(inside), ctx.repeats)
        t_grid, _ = timed(lambda: one.query(inside, mode="grid"), ctx.repeats)
        t_spread, _ = timed(lambda: store.query(spread), ctx.repeats)
        t_store_in, _ = timed(lambda: store.query(inside), ctx.repeats)
        in_box = int(in_any_box(objs, spread).sum())
        rows.append({
            "points": n,
            "object_exact_inside": {"points_per_s": rate(n, t_exact), "time": t_exact,
                                    "floor_points_per_s": n / ctx.decoder_floor_s(n)},
            "object_grid_inside": {"points_per_s": rate(n, t_grid), "time": t_grid},
            "store_spread": {"points_per_s": rate(n, t_spread), "time": t_spread,
                             "points_reaching_network": in_box,
                             "floor_points_per_s": n / ctx.decoder_floor_s(max(in_box, 1))},
            "store_inside_one": {"points_per_s": rate(n, t_store_in), "time": t_store_in,
                                 "floor_points_per_s": n / ctx.decoder_floor_s(n)},
        })
    big = max(ctx.sizes.query_sizes)
    return {"n_objects": len(objs), "scene_margin_m": SCENE_MARGIN_M, "sizes": rows,
            "grid_vs_exact": grid_error(one, box_points_source(one, big, rng), ctx.threshold),
            "grid_bytes_per_object": one.grid.nbytes if one.grid is not None else 0}
