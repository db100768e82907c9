"""``occnet_heldout``: weights files and reconstruction settings compared on held-out objects.

    occnet_heldout --variant shipped --variant "one_frame:max_view_frames=1" --views 4
    occnet_heldout --variant new:weights=runs/walls/best.pt --variant shipped --views 1 4 --out out/heldout
    occnet_heldout --variant "t04:threshold=0.4" --variant "t05:threshold=0.5" --upsampling-steps 2
    occnet_heldout --variant shipped --objects 0 16 --shape-families hollow_box=1   # one family only
    occnet_heldout --variant shipped --objects 0 0 --groups household --per-group 8  # per-family groups

The held-out objects are the first ``--objects MESHES SHAPES`` (default 32 24) of the random_urdfs
validation split of ``--data-config`` (scaled to 12 cm) and seeded procedural shapes, reconstructed as
``occnet_eval``'s ``ours`` does, every variant on the same observations; never the evaluation set. A
variant is ``NAME`` or ``NAME:key=value,...`` with ``weights=PATH``, ReconstructorConfig fields and
``anchor.<field>`` (see :mod:`occnet_ros.evaluation.heldout`). Prints a markdown table; with ``--out``
also writes ``heldout.json`` (per-object scores), ``heldout.md`` and ``heldout_groups.png`` (IoU per group and
variant, one panel per view setting); ``--render`` adds ``heldout_renders_<views>v.png``: the input, each variant's
mesh and the ground truth of the first object of each group, the first mesh and the first shape. Exit code 2 for a bad variant,
config or weights file.

``--groups FAMILY ...`` (``household``: all of them) adds the fixed held-out shapes of the household
families (occnet_ros/data/shapes_household.py; never drawn by the training sampler), ``--per-group`` each,
and prints a second table with each family's IoU / F-score.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="occnet_heldout", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", action="append", required=True, metavar="NAME[:key=value,...]",
                   help="a weights file and settings to score (repeat the option for each)")
    p.add_argument("--views", nargs="+", type=int, default=[4], metavar="N", help="fused views (default 4)")
    p.add_argument("--upsampling-steps", type=int, default=1,
                   help="MISE steps from 32^3 (default 1 = 64^3; a variant's upsampling_steps wins)")
    p.add_argument("--objects", nargs=2, type=int, default=[32, 24], metavar=("MESHES", "SHAPES"),
                   help="validation meshes and procedural shapes (default 32 24)")
    p.add_argument("--shape-families", nargs="+", metavar="FAMILY=WEIGHT",
                   help="draw the procedural shapes from these families (default: the training weights)")
    p.add_argument("--groups", nargs="+", metavar="FAMILY",
                   help="named held-out groups: household families, or 'household' for all of them")
    p.add_argument("--per-group", type=int, default=8, help="held-out objects per group (default 8)")
    p.add_argument("--data-config", default="config/data/multiview.yaml",
                   help="data config whose validation split gives the meshes (default config/data/multiview.yaml)")
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda (default cpu)")
    p.add_argument("--out", help="folder for heldout.json, heldout.md and heldout_groups.png")
    p.add_argument("--render", action="store_true", help="with --out: also draw the first object of each group, "
                   "the first mesh and the first shape (heldout_renders_<views>v.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_families(items: list[str]) -> dict[str, float]:
    """["hollow_box=1", "box=0.5"] -> {"hollow_box": 1.0, "box": 0.5}; ValueError naming a bad item."""
    out = {}
    for item in items:
        name, _, weight = item.partition("=")
        try:
            out[name] = float(weight)
        except ValueError:
            out[name] = float("nan")  # no "=" or not a number: refused below
        if not out[name] >= 0:
            raise ValueError(f"--shape-families: {item!r} is not FAMILY=WEIGHT with a weight >= 0")
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from occnet_ros.network.checkpoint import CheckpointError
    from occnet_ros.config_io import ConfigError, load_config
    from occnet_ros.data.dataset import DataConfig, split_meshes
    from occnet_ros.evaluation.calibration import CalibrationConfig, calibration_objects
    from occnet_ros.evaluation.heldout import (compare_variants, group_table, household_objects, markdown_table,
                                               parse_variant)
    from occnet_ros.evaluation.heldout_plot import representatives

    try:
        variants = [parse_variant(v) for v in args.variant]
        data = load_config(DataConfig, args.data_config)
        cal = CalibrationConfig(n_meshes=args.objects[0], n_shapes=args.objects[1],
                                shape_families=parse_families(args.shape_families or []))
        if any(v < 1 for v in args.views) or args.upsampling_steps < 0 or min(args.objects) < 0:
            raise ValueError("--views must be >= 1, --upsampling-steps >= 0 and --objects >= 0")
        groups = household_objects(args.groups, args.per_group, cal.shape_mesh_resolution) if args.groups else []
        if sum(args.objects) > 0 or not groups:
            cal.validate()
            objects = calibration_objects(cal, split_meshes(data, "val") if data.mesh_fraction > 0 and cal.n_meshes
                                          else [])
        else:  # only the named groups: the config counts what is scored
            cal.n_shapes = len(groups)
            cal.validate()
            objects = []
        objects += groups
        if args.render and not args.out:
            raise ValueError("--render needs --out")
        render = set(representatives(objects)) if args.render else None
        results = []
        for views in args.views:
            cal.views = views
            results.append(compare_variants(variants, objects, cal, args.device, args.upsampling_steps,
                                            progress=not args.no_progress, render=render))
    except (ValueError, ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"occnet_heldout: {e}", file=sys.stderr)
        return 2
    table = markdown_table(results)
    groups_md = group_table(results)
    families = f" of {', '.join(args.shape_families)}" if args.shape_families else ""
    in_groups = f", {len(groups)} in named groups" if groups else ""
    print(f"{results[0]['n_objects']} held-out objects ({args.objects[0]} meshes, {args.objects[1]} shapes{families}"
          f"{in_groups}); MISE 32 x 2^{args.upsampling_steps} unless a variant sets its own")
    print(table, end="")
    if groups_md:
        print(groups_md, end="")
        table += "\n" + groups_md
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        from occnet_ros.evaluation.heldout_plot import plot_groups, render_panels

        for png in render_panels(results, out):
            print(f"wrote {png}")
        for res in results:
            res.pop("panels", None)  # drawing data, not results
        (out / "heldout.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
        (out / "heldout.md").write_text(table)
        png = plot_groups(results, out / "heldout_groups.png")
        print(f"wrote {out / 'heldout.json'}, {out / 'heldout.md'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
