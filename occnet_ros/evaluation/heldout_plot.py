"""Pictures of held-out comparisons (:func:`occnet_ros.evaluation.heldout.compare_variants` results): one bar
chart of the mean IoU per held-out group (a household family, or all meshes / all shapes) for every variant, one
panel per fused-view setting; and renders of chosen objects, a row each: the input points, every variant's mesh
and the ground truth (drawn as ``occnet_eval`` draws its objects). Pure matplotlib (Agg); no torch."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def representatives(objects: list) -> list[str]:
    """Names of the objects to draw: the first of each named held-out group, the first validation mesh and the
    first procedural shape (held-out object names: ``mesh_*``, ``shape_*``, ``<group>_*``)."""
    from occnet_ros.evaluation.heldout import group_of

    seen, out = set(), []
    for obj in objects:
        group = group_of(obj.name) or obj.name.split("_", 1)[0]
        if group not in seen:
            seen.add(group)
            out.append(obj.name)
    return out


VARIANT_COLOURS = [(0.85, 0.45, 0.1), (0.3, 0.5, 0.85), (0.35, 0.7, 0.4), (0.7, 0.3, 0.6)]


def variant_panel(obj, obs, meshes: dict, rows: dict, n_points: int = 6000, azimuth_deg: float = 35.0) -> dict:
    """Drawing data of one held-out object (the row format of :mod:`occnet_ros.evaluation.report`): the input
    points, each variant's mesh (``meshes``: {variant: world-frame mesh or None}) titled with its scores
    (``rows``: {variant: score row}), and the ground truth; world frame, metres."""
    from occnet_ros.evaluation.report import splat_mesh

    lo, hi = obj.mesh.bounds
    p = obs.to_world(obs.points)
    sel = np.random.default_rng(0).permutation(len(p))[:n_points]
    cols = [(f"{obj.name}: input ({obs.n_views} view{'s' if obs.n_views > 1 else ''})", p[sel], None, (0, 0, 0))]
    for k, (name, mesh) in enumerate(meshes.items()):
        r = rows[name]
        if mesh is None:
            cols.append((f"{name}: no mesh", None, None, (0, 0, 0)))
            continue
        pts, nrm = splat_mesh(mesh, n_points)
        cols.append((f"{name}  IoU {r['iou']:.2f}  F {r['fscore']:.2f}", pts, nrm,
                     VARIANT_COLOURS[k % len(VARIANT_COLOURS)]))
    pts, nrm = splat_mesh(obj.mesh, n_points)
    cols.append(("ground truth", pts, nrm, (0.6, 0.6, 0.6)))
    return {"views": obs.n_views, "centre": 0.5 * (lo + hi), "half": 0.55 * float(np.linalg.norm(hi - lo)),
            "azimuth": azimuth_deg, "columns": cols}


def render_panels(results: list[dict], out_dir: str | Path) -> list[Path]:
    """One PNG per view setting of ``results`` that kept panels: ``heldout_renders_<views>v.png``, a row per
    drawn object."""
    from occnet_ros.evaluation.report import render_object_png

    files = []
    for res in results:
        if res.get("panels"):
            path = Path(out_dir) / f"heldout_renders_{res['views']}v.png"
            files.append(render_object_png(f"held-out objects, {res['views']} view(s)", res["panels"], path))
    return files


def group_scores(result: dict, metric: str = "iou") -> dict[str, dict[str, float]]:
    """{variant: {group: mean ``metric``}} of one view setting's result: the named groups, plus "meshes" and
    "shapes" (the random_urdfs validation meshes and the training-family shapes) where the result has them."""
    out: dict[str, dict[str, float]] = {}
    for name, r in result["variants"].items():
        row = {g: float(m[metric]) for g, m in r.get("groups", {}).items()}
        for key, label in (("mean_meshes", "meshes"), ("mean_shapes", "shapes")):
            if r.get(key):
                row[label] = float(r[key][metric])
        out[name] = row
    return out


def plot_groups(results: list[dict], path: str | Path, metric: str = "iou") -> Path:
    """Grouped bars of ``metric`` per held-out group and variant, one panel per view setting of ``results``;
    written as a PNG to ``path``. ValueError when no result has any group to draw."""
    panels = [(res["views"], group_scores(res, metric)) for res in results]
    groups = sorted({g for _, s in panels for row in s.values() for g in row})
    if not groups:
        raise ValueError("no held-out groups to plot")
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(6.0, 0.9 * len(groups) + 2), 3.2 * len(panels)),
                             squeeze=False)
    for ax, (views, scores) in zip(axes[:, 0], panels):
        names = list(scores)
        width = 0.8 / max(1, len(names))
        x = np.arange(len(groups))
        for k, name in enumerate(names):
            vals = [scores[name].get(g, np.nan) for g in groups]
            bars = ax.bar(x + (k - (len(names) - 1) / 2) * width, vals, width, label=name)
            for b, v in zip(bars, vals):
                if np.isfinite(v):
                    ax.text(b.get_x() + b.get_width() / 2, v + 0.01, f"{v:.2f}", ha="center", va="bottom",
                            fontsize=6, rotation=90)
        ax.set_xticks(x, groups, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.15)
        ax.set_ylabel(metric)
        ax.set_title(f"held-out objects, {views} fused view{'s' if views != 1 else ''}", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
