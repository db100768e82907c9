"""Evaluation reports: ``results.json``, ``results.md`` (mean and per-object tables per view setting)
and PNGs (matplotlib Agg): per object, rows = view settings, columns = input points / ours / hull /
Poisson / ground truth; an overview of all objects with the mean IoU and F-score per method.

Pictures are z-buffered point splats in the world frame (metres): surface samples shaded by
``|n . light|`` (input points coloured by depth), in an orthographic view from camera 0's direction.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from occnet_ros.evaluation.metrics import sample_surface  # noqa: E402

PICTURE_METHODS = ("ours", "hull", "poisson")
"""Methods drawn in the pictures (the MISE levels look like ``ours``; ``gt`` is the last column)."""

METRIC_TABLES = (("iou", "IoU", 3), ("fscore", "F-score", 3), ("chamfer_l1", "Chamfer-L1", 4),
                 ("normal_consistency", "normal consistency", 3))


def _json_default(o):
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def write_json(results: dict, path: Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(results, indent=1, default=_json_default) + "\n")
    return path


def _fmt(v, digits: int) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _cell(rec: dict | None, key: str, digits: int) -> str:
    if rec is None:
        return ""
    if not rec["ok"]:
        return "fail"
    s = _fmt(rec["metrics"][key], digits)
    if key == "iou":
        s += ("*" if not rec["metrics"]["pred_watertight"] else "") + \
             ("†" if not rec["metrics"]["gt_watertight"] else "")
    return s


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(results: dict) -> str:
    """The markdown report of :func:`occnet_ros.evaluation.runner.run_evaluation` results."""
    cfg, net, recs = results["config"], results["network"], results["records"]
    pc, mc = cfg["protocol"], cfg["metrics"]
    lines = ["# occnet_eval results", ""]
    if net:
        per_view = "".join(f", {t:.2f} from {n} fused views" for n, t in
                           sorted((int(n), t) for n, t in net.get("view_thresholds", {}).items()))
        lines.append(f"Network: `{net['weights']}` (step {net['checkpoint_step']}), threshold "
                     f"{net['threshold']:.2f}{per_view}, MISE resolution0 {net['reconstructor']['resolution0']}, "
                     f"`ours` = {net['reconstructor']['upsampling_steps']} upsampling steps, device "
                     f"{net['device']}.")
    lines += [
        f"Protocol: tabletop camera {pc['distance_m']} m from the object centre (more if needed to fit), "
        f"elevation {pc['elevation_deg']} deg, azimuth {pc['azimuth_deg']} deg; fused views "
        f"{pc['fused_step_deg']} deg apart, fused in camera 0's frame; sensor noise "
        f"{'on' if pc['noise'] else 'off'}, table {'on' if pc['table'] else 'off'}, per-view cleaning "
        f"{'on' if pc['clean_enabled'] else 'off'}; seed {pc['seed']}.",
        f"Metrics in the normalised frame (ground-truth bounding box longest edge = 1): IoU on "
        f"{mc['n_points_iou']} points uniform in the box padded by {mc['box_padding']}; Chamfer-L1 "
        f"(mean of accuracy and completeness, same units; the papers print it x10), normal "
        f"consistency and F-score at {mc['fscore_threshold']} from {mc['n_points_surface']} surface "
        f"samples each; time = wall time of the method alone (s). Inside test: the union of the mesh's "
        f"closed parts (overlapping parts united; `occnet_ros/data/solid_inside.py`), surface samples on "
        f"faces buried in another part dropped.",
        "Marks: `*` prediction has an open part (its inside from a ray-parity vote, not exact); `†` ground "
        "truth has an open part; `fail` = no mesh (scored IoU 0 and F-score 0 in the means; Chamfer and normal "
        "consistency averaged over the successful objects, `ok` says how many).", ""]
    views = sorted({r["views"] for r in recs})
    methods = list(dict.fromkeys(r["method"] for r in recs))
    objects = list(dict.fromkeys(r["object"] for r in recs))
    by_key = {(r["views"], r["object"], r["method"]): r for r in recs}
    for v in views:
        lines += [f"## {v} view{'s' if v > 1 else ''}", "", f"### Mean over {len(objects)} objects", ""]
        rows = []
        for s in results["summary"]:
            if s["views"] == v:
                rows.append([s["method"], _fmt(s["iou"], 3), _fmt(s["fscore"], 3),
                             _fmt(s["chamfer_l1"], 4), _fmt(s["normal_consistency"], 3),
                             _fmt(s["time_s"], 2), f"{s['n_ok']}/{s['n_objects']}"])
        lines += _table(["method", "IoU", "F-score", "Chamfer-L1", "normal cons.", "time (s)", "ok"], rows)
        for key, title, digits in METRIC_TABLES:
            lines += ["", f"### {title} per object", ""]
            rows = [[o] + [_cell(by_key.get((v, o, m)), key, digits) for m in methods] for o in objects]
            lines += _table(["object"] + methods, rows)
        lines += ["", "### Time per object (s)", ""]
        rows = [[o] + [_fmt((by_key.get((v, o, m)) or {}).get("time_s"), 2) for m in methods]
                for o in objects]
        lines += _table(["object"] + methods, rows)
        fails = [r for r in recs if r["views"] == v and not r["ok"]]
        if fails:
            lines += ["", "### Failures", ""]
            lines += [f"- {r['object']} / {r['method']}: {r['error']}" for r in fails]
        lines.append("")
    return "\n".join(lines)


def write_markdown(results: dict, path: Path) -> Path:
    path = Path(path)
    path.write_text(markdown(results))
    return path


# ---------------------------------------------------------------- pictures

def view_axes(azimuth_deg: float, elevation_deg: float = 25.0) -> np.ndarray:
    """(3, 3) rows: screen right, screen up, viewing direction (towards the scene), world frame, for
    an orthographic camera at ``azimuth_deg`` around world z looking down by ``elevation_deg``."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    fwd = -np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(right, fwd), fwd])


def splat_mesh(mesh, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(points (n, 3), normals (n, 3)) surface samples of a world-frame mesh for drawing."""
    return sample_surface(mesh, n, np.random.default_rng(seed))


def rasterize(q: np.ndarray, rgb: np.ndarray, half: float, res: int, footprint: int = 3) -> np.ndarray:
    """Z-buffer splat: screen points q (M, 3) (x right, y up, z depth away from the viewer; in
    ``[-half, half]``), colours (M, 3) -> (res, res, 3) float image, white background; each point
    covers a ``footprint`` x ``footprint`` pixel block and the nearest point wins each pixel."""
    img = np.ones((res * res, 3))
    px = (q[:, :2] + half) / (2 * half) * res
    idx, depth, col = [], [], []
    for du in range(footprint):
        for dv in range(footprint):
            u = np.floor(px[:, 0] - 0.5 * (footprint - 1) + du).astype(np.int64)
            v = np.floor(px[:, 1] - 0.5 * (footprint - 1) + dv).astype(np.int64)
            ok = (u >= 0) & (u < res) & (v >= 0) & (v < res)
            idx.append((res - 1 - v[ok]) * res + u[ok])
            depth.append(q[ok, 2])
            col.append(rgb[ok])
    idx, depth, col = np.concatenate(idx), np.concatenate(depth), np.concatenate(col)
    if idx.size:
        order = np.lexsort((depth, idx))
        first = order[np.r_[True, idx[order][1:] != idx[order][:-1]]]
        img[idx[first]] = col[first]
    return img.reshape(res, res, 3)


def _draw(ax, pts: np.ndarray | None, normals: np.ndarray | None, axes: np.ndarray,
          centre: np.ndarray, half: float, color: tuple, title: str, res: int = 160) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    if pts is None or len(pts) == 0:
        ax.set_xlim(-1, 1)
        ax.set_ylim(-1, 1)
        ax.text(0, 0, "no mesh", ha="center", va="center", fontsize=8, color="0.4")
        return
    q = (np.asarray(pts, dtype=np.float64) - centre) @ axes.T
    if normals is not None:
        light = -axes[2] + 0.6 * axes[1] + 0.3 * axes[0]  # from the viewer, above, right
        light /= np.linalg.norm(light)
        shade = 0.2 + 0.8 * np.abs(normals @ light)
        rgb = np.clip(shade[:, None] * np.asarray(color, dtype=np.float64)[None], 0, 1)
    else:
        depth = (q[:, 2] - q[:, 2].min()) / max(np.ptp(q[:, 2]), 1e-9)
        rgb = plt.get_cmap("viridis")(1.0 - depth)[:, :3]
    ax.imshow(rasterize(q, rgb, half, res), extent=(-half, half, -half, half), interpolation="nearest")


def object_panels(obj, obs, meshes: dict, recs: list[dict], n_points: int, azimuth_deg: float) -> dict:
    """Drawing data of one object and view setting: {"views", "centre", "half", "azimuth",
    "columns": [(title, points | None, normals | None, colour)]}, all world frame, metres."""
    lo, hi = obj.mesh.bounds
    by_method = {r["method"]: r for r in recs}
    n_views = recs[0]["views"] if recs else 0
    cols = []
    if obs is not None:
        p = obs.to_world(obs.points)
        sel = np.random.default_rng(0).permutation(len(p))[:n_points]
        cols.append((f"input ({n_views} view{'s' if n_views > 1 else ''}, {len(p)} pts)", p[sel], None,
                     (0, 0, 0)))
    else:
        cols.append(("input: view failed", None, None, (0, 0, 0)))
    colours = {"ours": (0.85, 0.45, 0.1), "hull": (0.3, 0.5, 0.85), "poisson": (0.35, 0.7, 0.4)}
    for m in PICTURE_METHODS:
        if m not in by_method:
            continue
        r = by_method[m]
        if m in meshes:
            pts, nrm = splat_mesh(meshes[m], n_points)
            title = f"{m}  IoU {r['metrics']['iou']:.2f}  F {r['metrics']['fscore']:.2f}"
        else:
            pts, nrm, title = None, None, f"{m}: failed"
        cols.append((title, pts, nrm, colours[m]))
    pts, nrm = splat_mesh(obj.mesh, n_points)
    cols.append(("ground truth", pts, nrm, (0.6, 0.6, 0.6)))
    return {"views": n_views, "centre": 0.5 * (lo + hi), "half": 0.55 * float(np.linalg.norm(hi - lo)),
            "azimuth": azimuth_deg, "columns": cols}


def _draw_row(axs, panel: dict) -> None:
    axes = view_axes(panel["azimuth"])
    for ax, (title, pts, nrm, col) in zip(axs, panel["columns"]):
        _draw(ax, pts, nrm, axes, panel["centre"], panel["half"], col, title)
    for ax in axs[len(panel["columns"]):]:
        ax.axis("off")


def render_object_png(name: str, panels: list[dict], path: Path, size: float = 2.3) -> Path:
    """One PNG per object: a row per view setting."""
    ncol = max(len(p["columns"]) for p in panels)
    fig, axs = plt.subplots(len(panels), ncol, figsize=(size * ncol, size * len(panels) + 0.4),
                            squeeze=False)
    for row, panel in zip(axs, panels):
        _draw_row(row, panel)
    fig.suptitle(name, fontsize=10)
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 1.0 - 0.4 / fig.get_figheight()))  # keep the title's strip free
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def render_overview_png(thumbs: list[tuple[str, dict]], summary: list[dict], path: Path,
                        size: float = 1.7) -> Path:
    """All objects (first view setting: input / methods / ground truth) under bar charts of the mean
    IoU and F-score per method and view setting."""
    ncol = max(len(p["columns"]) for _, p in thumbs)
    fig = plt.figure(figsize=(size * ncol + 0.8, size * len(thumbs) + 2.6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.4, size * len(thumbs)])
    bars = top.subplots(1, 2)
    methods = list(dict.fromkeys(s["method"] for s in summary))
    views = sorted({s["views"] for s in summary})
    width = 0.8 / max(len(views), 1)
    for ax, key in zip(bars, ("iou", "fscore")):
        for i, v in enumerate(views):
            vals = {s["method"]: s[key] or 0.0 for s in summary if s["views"] == v}
            ax.bar(np.arange(len(methods)) + i * width, [vals.get(m, 0.0) for m in methods], width,
                   label=f"{v} view{'s' if v > 1 else ''}")
        ax.set_xticks(np.arange(len(methods)) + 0.4 - width / 2, methods, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(f"mean {'IoU' if key == 'iou' else 'F-score'}", fontsize=9)
        ax.legend(fontsize=7)
    axs = bottom.subplots(len(thumbs), ncol, squeeze=False)
    for row, (name, panel) in zip(axs, thumbs):
        _draw_row(row, panel)
        row[0].set_ylabel(name, fontsize=8)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return Path(path)
