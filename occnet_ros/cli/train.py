"""``occnet_train``: train the Occupancy Network.

    occnet_train --config config/train/default.yaml [--resume] [--out-dir DIR] [--max-minutes M]
    occnet_train --export RUN_DIR/best.pt OUT.pt     # strip optimiser state -> small weights file
"""
from __future__ import annotations

import argparse
import sys

from occnet_ros.config_io import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="occnet_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config/train/default.yaml", help="training YAML (TrainConfig)")
    p.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt")
    p.add_argument("--out-dir", help="run folder (overrides out_dir of the config)")
    p.add_argument("--max-minutes", type=float, help="total training time budget in minutes (counted across resumes; overrides max_minutes); "
                   "stops cleanly with a checkpoint")
    p.add_argument("--device", help="auto, cpu or cuda (overrides the config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--export", nargs=2, metavar=("CHECKPOINT", "WEIGHTS"),
                   help="only export CHECKPOINT (e.g. best.pt) to a small WEIGHTS file and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.export:
        from occnet_ros.checkpoint import CheckpointError, export_weights

        try:
            out = export_weights(*args.export)
        except (FileNotFoundError, CheckpointError) as e:
            print(f"occnet_train: {e}", file=sys.stderr)
            return 2
        print(f"exported {args.export[0]} -> {out}")
        return 0
    from occnet_ros.config_io import load_config
    from occnet_ros.training.config import TrainConfig
    from occnet_ros.training.trainer import train

    try:
        cfg = load_config(TrainConfig, args.config)
        if args.out_dir:
            cfg.out_dir = args.out_dir
        if args.device:
            cfg.device = args.device
            cfg.validate()
    except (ConfigError, ValueError) as e:
        print(f"occnet_train: {e}", file=sys.stderr)
        return 2
    if args.max_minutes is not None:
        cfg.max_minutes = args.max_minutes
    try:
        summary = train(cfg, resume=args.resume, progress=not args.no_progress)
    except (FileNotFoundError, ConfigError, ValueError) as e:
        print(f"occnet_train: {e}", file=sys.stderr)
        return 2
    print(f"done: step {summary['step']}, best val IoU {summary['best_val_iou']:.4f} at threshold "
          f"{summary['best_threshold']}, run folder {summary['out_dir']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
