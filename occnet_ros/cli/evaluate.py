"""``occnet_eval``: the network against convex hull and Poisson on the evaluation set or your meshes.

    occnet_eval                                   # all named objects, 1 and 4 views, all methods
    occnet_eval --objects duck bunny --views 1 --methods ours hull
    occnet_eval --meshes my_part.stl cup.obj --mesh-scale 0.001 --weights runs/default/best.pt
    occnet_eval --config config/eval/default.yaml --out out/eval

Writes ``results.json``, ``results.md``, one PNG per object and ``overview.png`` into ``--out``.
Methods: ours (the network, the space the sensor shows empty removed, its mesh anchored to the observed
points), ours_raw (the network alone), mise0, mise1, mise2 (as ours at each MISE level), hull, poisson, gt
(sanity check: the ground truth itself). Meshes: OBJ/STL/PLY in metres (times --mesh-scale), z up.
"""
from __future__ import annotations

import argparse
import sys

from occnet_ros.config_io import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="occnet_eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="evaluation YAML (EvalConfig); default: built-in defaults, which "
                   "equal config/eval/default.yaml")
    p.add_argument("--objects", nargs="+", metavar="NAME", help="named evaluation objects "
                   "(default: all, or none when --meshes is given)")
    p.add_argument("--meshes", nargs="+", metavar="FILE", help="mesh files to evaluate (OBJ/STL/PLY)")
    p.add_argument("--mesh-scale", type=float, help="scale of --meshes to metres (default 1)")
    p.add_argument("--views", nargs="+", type=int, metavar="N", help="view settings, e.g. 1 4")
    p.add_argument("--methods", nargs="+", metavar="M",
                   help="any of: ours ours_raw mise0 mise1 mise2 hull poisson gt")
    p.add_argument("--weights", help="checkpoint (default: the shipped weights)")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument("--out", help="output folder (default out/eval)")
    p.add_argument("--seed", type=int, help="seed of the view protocol and the metrics")
    p.add_argument("--save-meshes", action="store_true", help="also write every predicted mesh (PLY)")
    p.add_argument("--no-render", action="store_true", help="no PNGs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace):
    """EvalConfig from ``--config`` (or defaults) with the command-line overrides; raises ConfigError."""
    from occnet_ros.config_io import load_config
    from occnet_ros.evaluation.runner import EvalConfig

    cfg = load_config(EvalConfig, args.config) if args.config else EvalConfig()
    if args.meshes is not None:
        cfg.meshes = list(args.meshes)
        if args.objects is None:
            cfg.objects = []
    if args.objects is not None:
        cfg.objects = list(args.objects)
    for name in ("views", "methods", "weights", "out"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.mesh_scale is not None:
        cfg.mesh_scale = args.mesh_scale
    if args.device is not None:
        cfg.reconstructor.device = args.device
    if args.seed is not None:
        cfg.protocol.seed = cfg.metrics.seed = args.seed
    if args.save_meshes:
        cfg.save_meshes = True
    if args.no_render:
        cfg.render = False
    try:
        cfg.validate()
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        print(f"occnet_eval: {e}", file=sys.stderr)
        return 2
    from occnet_ros.network.checkpoint import CheckpointError
    from occnet_ros.evaluation.protocol import ProtocolError
    from occnet_ros.evaluation.runner import run_evaluation

    try:
        results = run_evaluation(cfg, progress=not args.no_progress)
    except (FileNotFoundError, CheckpointError, ProtocolError) as e:
        print(f"occnet_eval: {e}", file=sys.stderr)
        return 2
    for s in results["summary"]:
        iou = "—" if s["iou"] is None else f"{s['iou']:.3f}"
        f = "—" if s["fscore"] is None else f"{s['fscore']:.3f}"
        print(f"{s['views']} view(s)  {s['method']:8s} IoU {iou}  F {f}  ok {s['n_ok']}/{s['n_objects']}")
    print(f"wrote {cfg.out}/results.md, results.json" + (" and PNGs" if cfg.render else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
