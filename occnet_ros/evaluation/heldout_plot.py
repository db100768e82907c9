"""Pictures of held-out comparisons (:func:`occnet_ros.evaluation.heldout.compare_variants` results): one bar
chart of the mean IoU per held-out group (a household family, or all meshes / all shapes) for every variant, one
panel per fused-view setting. Pure matplotlib (Agg); no torch."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
