"""Comparing weights files and reconstruction settings on the held-out objects (never the evaluation set).

Every choice around the network (thresholds, input subsampling, anchoring, frame averaging, a new
training stage) is made on held-out objects of the training distribution: the random_urdfs validation
meshes and seeded procedural shapes of :func:`~occnet_ros.evaluation.calibration.calibration_objects`,
reconstructed as ``occnet_eval``'s ``ours`` does. :func:`compare_variants` scores several *variants*
(a weights file plus :class:`~occnet_ros.reconstruction.reconstructor.ReconstructorConfig` overrides) on the very same
observations; ``occnet_heldout`` is its command.

A variant is written ``NAME`` or ``NAME:key=value,key=value`` (values in YAML syntax): ``weights=PATH``
(default: the shipped weights), any ``ReconstructorConfig`` field (``threshold=0.4``,
``max_view_frames=1``, ``upsampling_steps=2``) or an anchoring field as ``anchor.radius=0.12``.

Named held-out groups: :func:`household_objects` adds the held-out shapes of household families
(:func:`~occnet_ros.data.shapes_household.heldout_shapes`: fixed design ids that the training sampler never
draws), named ``group_<family>_<k>``; :func:`compare_variants` then reports each group's mean too.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields

import yaml

from occnet_ros.evaluation.calibration import CalibrationConfig, mean_scores, score_objects

__all__ = ["Variant", "parse_variant", "compare_variants", "markdown_table", "household_objects", "group_table",
           "GROUP_PREFIX"]

GROUP_PREFIX = "group_"
"""Name prefix of the objects of a named held-out group: ``group_<family>_<k>``."""


@dataclass
class Variant:
    """``name``; ``weights``: checkpoint path (None = the shipped weights); ``overrides``:
    ReconstructorConfig fields; ``anchor``: AnchorConfig fields."""

    name: str
    weights: str | None = None
    overrides: dict = field(default_factory=dict)
    anchor: dict = field(default_factory=dict)


def parse_variant(text: str) -> Variant:
    """``NAME[:key=value,...]`` -> :class:`Variant`; ValueError naming an unknown key or a bad value."""
    from occnet_ros.reconstruction.reconstructor import ReconstructorConfig
    from occnet_ros.reconstruction.surface_anchor import AnchorConfig

    name, _, spec = text.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"variant {text!r}: empty name (write NAME or NAME:key=value,...)")
    v = Variant(name)
    rec_fields = {f.name for f in fields(ReconstructorConfig)} - {"anchor", "device"}
    anchor_fields = {f.name for f in fields(AnchorConfig)}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if not eq:
            raise ValueError(f"variant {name!r}: {item!r} is not key=value")
        if key == "weights":
            v.weights = raw.strip()
            continue
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ValueError(f"variant {name!r}: {key}={raw!r} is not a YAML value ({e})") from e
        if key.startswith("anchor.") and key[7:] in anchor_fields:
            v.anchor[key[7:]] = value
        elif key in rec_fields:
            v.overrides[key] = value
        else:
            raise ValueError(f"variant {name!r}: unknown key {key!r}; known: weights, "
                             f"{', '.join(sorted(rec_fields))}, anchor.<{'|'.join(sorted(anchor_fields))}>")
    return v


def household_objects(families: list[str], n_per_family: int, mesh_resolution: int = 96) -> list:
    """EvalObjects of the first ``n_per_family`` held-out shapes of each household family in ``families``
    ("household" stands for all of them), named ``group_<family>_<k>``; their meshes resolve the thinnest
    wall (at least ``mesh_resolution`` cells along the longest side). ValueError naming an unknown family."""
    from occnet_ros.data.shapes_household import HOUSEHOLD_FAMILIES, heldout_shapes
    from occnet_ros.evaluation.protocol import EvalObject

    names = list(HOUSEHOLD_FAMILIES) if "household" in families else list(dict.fromkeys(families))
    unknown = [f for f in names if f not in HOUSEHOLD_FAMILIES]
    if unknown:
        raise ValueError(f"unknown held-out group(s) {unknown}; known: household, {', '.join(HOUSEHOLD_FAMILIES)}")
    if n_per_family < 1:
        raise ValueError(f"objects per held-out group must be >= 1, got {n_per_family}")
    return [EvalObject(name=f"{GROUP_PREFIX}{family}_{k}", mesh=shape.mesh(mesh_resolution), source="procedural",
                       scale=1.0)
            for family in names for k, shape in enumerate(heldout_shapes(family, n_per_family))]


def group_of(name: str) -> str | None:
    """The named held-out group (household family) of a held-out object's name, None for other objects."""
    return name[len(GROUP_PREFIX):].rsplit("_", 1)[0] if name.startswith(GROUP_PREFIX) else None


def build_reconstructor(variant: Variant, device: str = "cpu", upsampling_steps: int = 1):
    """The variant's Reconstructor (``upsampling_steps`` unless the variant sets its own); ValueError
    for settings the config rejects."""
    from occnet_ros.reconstruction.reconstructor import Reconstructor

    overrides = {"upsampling_steps": upsampling_steps, **variant.overrides}
    rec = Reconstructor.from_pretrained(variant.weights, device=device)  # a missing or bad file raises here
    try:
        cfg = dataclasses.replace(rec.config, **overrides,
                                  anchor=dataclasses.replace(rec.config.anchor, **variant.anchor))
        return Reconstructor(rec.model, device=str(rec.device), config=cfg, default_threshold=rec.threshold,
                             default_view_thresholds=rec.view_thresholds, calibration_for=rec.calibration_for)
    except (TypeError, ValueError) as e:  # e.g. threshold=abc, max_view_frames=0
        raise ValueError(f"variant {variant.name!r}: {e}") from e


def compare_variants(variants: list[Variant], objects: list, config: CalibrationConfig, device: str = "cpu",
                     upsampling_steps: int = 1, progress: bool = False, render: set | None = None) -> dict:
    """Every variant on the same observations of ``objects`` (``config.views`` fused views).

    -> {"views", "n_objects", "skipped", "variants": {name: {"mean": {iou, fscore, chamfer_l1},
    "mean_meshes", "mean_shapes" (None without such objects), "groups": {family: mean} of the named
    held-out groups (:func:`household_objects`), "objects": per-object rows}}, "panels": drawing data
    (:func:`occnet_ros.evaluation.heldout_plot.variant_panel`) of the objects named in ``render``, in order}."""
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must differ, got {names}")
    recs = {v.name: build_reconstructor(v, device, upsampling_steps) for v in variants}
    panels = []

    def keep_panel(obj, obs, meshes, rows):
        if render and obj.name in render:
            from occnet_ros.evaluation.heldout_plot import variant_panel

            panels.append(variant_panel(obj, obs, meshes, rows))

    scores, skipped = score_objects(recs, objects, config, progress, desc=f"held-out {config.views}v",
                                    on_object=keep_panel)
    out = {}
    for name, rows in scores.items():
        meshes = [r for r in rows if r["object"].startswith("mesh_")]
        shapes = [r for r in rows if r["object"].startswith("shape_")]
        groups: dict[str, list[dict]] = {}
        for r in rows:
            if group_of(r["object"]) is not None:
                groups.setdefault(group_of(r["object"]), []).append(r)
        out[name] = {"mean": mean_scores(rows), "mean_meshes": mean_scores(meshes) if meshes else None,
                     "mean_shapes": mean_scores(shapes) if shapes else None, "objects": rows,
                     "groups": {g: {**mean_scores(v), "n": len(v)} for g, v in groups.items()},
                     "threshold": recs[name].threshold_for(config.views)}
    return {"views": config.views, "n_objects": len(objects) - len(skipped), "skipped": skipped, "variants": out,
            "panels": panels}


def markdown_table(results: list[dict]) -> str:
    """One row per (views, variant) of :func:`compare_variants` results: IoU / F-score over all objects,
    the meshes and the shapes, and the surface threshold used."""
    lines = ["| views | variant | threshold | IoU | F-score | Chamfer-L1 | IoU meshes | IoU shapes |",
             "|---|---|---|---|---|---|---|---|"]
    for res in results:
        for name, r in res["variants"].items():
            m = r["mean"]
            mm = f"{r['mean_meshes']['iou']:.4f}" if r["mean_meshes"] else "-"
            ms = f"{r['mean_shapes']['iou']:.4f}" if r["mean_shapes"] else "-"
            lines.append(f"| {res['views']} | {name} | {r['threshold']:.2f} | {m['iou']:.4f} | {m['fscore']:.4f} | "
                         f"{m['chamfer_l1']:.4f} | {mm} | {ms} |")
    return "\n".join(lines) + "\n"


def group_table(results: list[dict]) -> str:
    """One row per (views, variant, named held-out group) of :func:`compare_variants` results: the group's
    object count, mean IoU, F-score and Chamfer-L1; empty string when no result has groups."""
    lines = ["| views | variant | group | objects | IoU | F-score | Chamfer-L1 |", "|---|---|---|---|---|---|---|"]
    for res in results:
        for name, r in res["variants"].items():
            for g, m in r.get("groups", {}).items():
                lines.append(f"| {res['views']} | {name} | {g} | {m['n']} | {m['iou']:.4f} | {m['fscore']:.4f} | "
                             f"{m['chamfer_l1']:.4f} |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""
