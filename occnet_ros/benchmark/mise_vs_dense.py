"""Section "mise_vs_dense": MISE against the dense grid at the same final resolution (128^3 in the full
run), on a realistic object: a partial view of a procedural mug from the training data's virtual
camera, encoded by the network. Network evaluations and time of each, their ratios, and the IoU of
the two meshes (100k points uniform in the box, inside tests by ray parity on the closed meshes).
"""
from __future__ import annotations

import importlib.util

import numpy as np
import torch
import trimesh

from occnet_ros.benchmark.common import BenchContext, default_model_config, timed
from occnet_ros.network.checkpoint import DEFAULT_THRESHOLD
from occnet_ros.evaluation.metrics import box_points, inside_mesh, iou_from_occupancy
from occnet_ros.reconstruction.mise import dense_values, mesh_from_values, mise_values
from occnet_ros.network.model import OccupancyNetwork
from occnet_ros.reconstruction.normalization import BOX_HALF
from occnet_ros.reconstruction.reconstructor import Reconstructor, ReconstructorConfig


def reconstructor(ctx: BenchContext, model: OccupancyNetwork | None = None, **overrides) -> Reconstructor:
    """A reconstructor of ``ctx``'s network (or ``model``) on ``ctx.device`` at the benchmark's MISE resolution; the
    sections use it in a ``with`` block, so that its compute threads end with the section."""
    s = ctx.sizes
    settings = {"resolution0": s.resolution0, "upsampling_steps": s.upsampling_steps, **overrides}
    cfg = ReconstructorConfig(threshold=ctx.threshold, n_input_points=ctx.n_input_points, seed=ctx.seed,
                              device=ctx.device, **settings)
    return Reconstructor(model if model is not None else ctx.model, device=ctx.device, config=cfg,
                         default_threshold=ctx.threshold)


def mesh_iou(a: trimesh.Trimesh, b: trimesh.Trimesh, n: int, seed: int = 0) -> float | None:
    """Volumetric IoU of two closed meshes (same frame) on ``n`` points uniform in the canonical box; None where Open3D,
    whose ray caster tests inside, is not installed (the GPU benchmark's machine: the report says not measured)."""
    if importlib.util.find_spec("open3d") is None:
        return None
    rng = np.random.default_rng(seed)
    pts = box_points(n, BOX_HALF, rng)
    return iou_from_occupancy(inside_mesh(a, pts, 3, np.random.default_rng(seed + 1)),
                              inside_mesh(b, pts, 3, np.random.default_rng(seed + 1)))


def mise_counts(ctx: BenchContext, model: OccupancyNetwork, points: np.ndarray, up: np.ndarray,
                threshold: float) -> dict:
    """MISE evaluation counts only (no timing) for ``model`` on the view, at ``threshold``."""
    with reconstructor(ctx, model) as rec:
        obj = rec.reconstruct(points, up=up, extract_mesh=False)
    s = ctx.sizes
    _, st = mise_values(obj.occupancy.probabilities, s.resolution0, s.upsampling_steps, threshold, BOX_HALF,
                        batch_size=(s.resolution + 1) ** 3)
    return {"n_evals": st["n_evals"], "evals_per_level": st["evals_per_level"], "n_dense": st["n_dense"],
            "ratio_dense_over_mise": st["n_dense"] / max(1, st["n_evals"]), "threshold": threshold}


def run(ctx: BenchContext) -> dict:
    s = ctx.sizes
    view = ctx.views.get(ctx.seed)
    with reconstructor(ctx) as rec:  # the field's grid evaluation below runs in this thread
        obj = rec.reconstruct(view.points, up=view.up, extract_mesh=False)
    thr, res = ctx.threshold, s.resolution
    big = (res + 1) ** 3  # one call per level: the object chunks for the device
    # as the reconstructor evaluates a grid: through the field's table of the grid's plane features (built in each
    # timed run), where the network has one (OccupancyField.on_grid)
    on_grid = lambda: obj.occupancy.on_grid(res, BOX_HALF).probabilities  # noqa: E731

    t_mise, (mv, stats) = timed(lambda: mise_values(on_grid(), s.resolution0, s.upsampling_steps, thr, BOX_HALF,
                                                    batch_size=big), ctx.repeats)
    t_mc, (v1, f1) = timed(lambda: mesh_from_values(mv, thr, BOX_HALF), ctx.repeats)
    t_dense, dv = timed(lambda: dense_values(on_grid(), res, BOX_HALF, batch_size=big), s.dense_repeats, warmup=0)
    v2, f2 = mesh_from_values(dv, thr, BOX_HALF)
    m1, m2 = trimesh.Trimesh(v1, f1, process=False), trimesh.Trimesh(v2, f2, process=False)
    evaluated = mv == dv  # corners MISE evaluated hold the network value (same decoder, same points)
    n_mise, n_dense = stats["n_evals"], stats["n_dense"]
    result = {
        "object": {"family": view.family, "observed_points": int(view.points.shape[0]),
                   "mesh_faces": int(len(f1)), "surface_area_canonical": float(m1.area) if len(f1) else 0.0},
        "resolution": res,
        "threshold": thr,
        "mise": {"n_evals": n_mise, "evals_per_level": stats["evals_per_level"],
                 "time": t_mise, "time_network_s": stats["time_eval_s"],
                 "time_bookkeeping_s": stats["time_total_s"] - stats["time_eval_s"],
                 "floor_s": ctx.decoder_floor_s(n_mise)},
        "dense": {"n_evals": n_dense, "time": t_dense, "floor_s": ctx.decoder_floor_s(n_dense)},
        "marching_cubes": {"time": t_mc},
        "eval_ratio_dense_over_mise": n_dense / max(1, n_mise),
        "time_ratio_dense_over_mise": t_dense["median_s"] / t_mise["median_s"],
        "mesh_iou": mesh_iou(m1, m2, s.iou_points, ctx.seed) if len(f1) and len(f2) else float("nan"),
        "grid_occupancy_agreement": float(np.mean((mv >= thr) == (dv >= thr))),
        "corners_equal_to_dense": int(evaluated.sum()),
        "watertight": {"mise": bool(m1.is_watertight), "dense": bool(m2.is_watertight)},
        "network": ctx.weights["kind"],
    }
    if s.resolution0 % 2 == 0:  # the same final resolution from a coarser start: fewer evaluations?
        r0, st_alt = s.resolution0 // 2, s.upsampling_steps + 1
        t_alt, (av, astats) = timed(lambda: mise_values(on_grid(), r0, st_alt, thr, BOX_HALF, batch_size=big),
                                    ctx.repeats)
        va, fa = mesh_from_values(av, thr, BOX_HALF)
        ma = trimesh.Trimesh(va, fa, process=False)
        result["coarser_start"] = {
            "resolution0": r0, "upsampling_steps": st_alt, "n_evals": astats["n_evals"],
            "evals_per_level": astats["evals_per_level"], "time": t_alt,
            "eval_ratio_dense_over_mise": n_dense / max(1, astats["n_evals"]),
            "mesh_iou_vs_dense": mesh_iou(ma, m2, s.iou_points, ctx.seed) if len(fa) and len(f2) else float("nan")}
    if ctx.weights["kind"] != "random":  # the counts a random network of the same architecture gives
        torch.manual_seed(ctx.seed)
        result["random_network_counts"] = mise_counts(
            ctx, OccupancyNetwork(default_model_config()).eval(), view.points, view.up, DEFAULT_THRESHOLD)
    return result
