"""``occnet_train``: train the Occupancy Network.

    occnet_train --config config/train/default.yaml [--resume] [--out-dir DIR] [--max-minutes M]
    occnet_train --config config/train/finetune.yaml  # fine-tune the shipped weights (make train)
    occnet_train --export RUN_DIR/best.pt OUT.pt     # strip optimiser state -> small weights file
    occnet_train --calibrate OUT.pt [--config ...]   # choose OUT.pt's surface threshold on held-out objects
    occnet_train --calibrate OUT.pt --calibration-views 4   # ... the threshold for clouds of 4 fused views
    occnet_train --calibrate OUT.pt --calibration-views 1 2 4   # ... each of them, one after the other

A config's ``init_from`` starts a new run from the weights of another checkpoint (the run folder of the
previous training stage, or exported weights such as the shipped ones) with a fresh step counter, optimiser
and schedule; ``--resume`` continues ``OUT_DIR/last.pt`` instead and ignores ``init_from``.

``--calibrate`` reconstructs held-out training-distribution objects (the validation meshes of the
config's data, and procedural shapes with their own seed; never the evaluation objects) with the
evaluation protocol at several thresholds (occnet_ros/evaluation/calibration.py), prints the table
and writes the threshold of the best mean IoU into the file: the single-view threshold, or with
``--calibration-views N`` the one used for clouds fused from N or more views (up to the next calibrated count);
several counts are calibrated one after the other, each written into the file as soon as it is chosen.
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
    p.add_argument("--max-minutes", type=float,
                   help="total training time budget in minutes (counted across resumes; overrides max_minutes); "
                        "stops cleanly with a checkpoint. The cosine schedule follows the budget, so raising it "
                        "on a resume raises the learning rate to where the longer schedule has it")
    p.add_argument("--device", help="auto, cpu or cuda (overrides the config)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--export", nargs=2, metavar=("CHECKPOINT", "WEIGHTS"),
                   help="only export CHECKPOINT (e.g. best.pt) to a small WEIGHTS file and exit")
    p.add_argument("--calibrate", metavar="WEIGHTS",
                   help="only choose the surface threshold of WEIGHTS (see above), write it into WEIGHTS and exit")
    p.add_argument("--calibration-views", type=int, nargs="+", default=[1], metavar="N",
                   help="with --calibrate: fuse N views per object and write the threshold for clouds of N views "
                        "(default 1: the single-view threshold); several counts: each in turn")
    p.add_argument("--calibration-objects", nargs=2, type=int, metavar=("MESHES", "SHAPES"),
                   help="with --calibrate: how many validation meshes and procedural shapes (default 32 24)")
    return p


def calibrate(args, cfg) -> int:
    """``--calibrate``: the threshold table on held-out objects, the best threshold written into the file."""
    from occnet_ros.network.checkpoint import set_threshold
    from occnet_ros.config_io import load_config
    from occnet_ros.data.dataset import DataConfig, split_meshes
    from occnet_ros.evaluation.calibration import CalibrationConfig, calibrate_threshold, calibration_objects
    from occnet_ros.reconstruction.reconstructor import Reconstructor

    data = load_config(DataConfig, cfg.data_file) if cfg.data_file else cfg.data
    cals = []
    for views in args.calibration_views:
        cal = CalibrationConfig()
        if args.calibration_objects:
            cal.n_meshes, cal.n_shapes = args.calibration_objects
        cal.views = views
        cal.validate()
        cals.append(cal)
    meshes = split_meshes(data, "val") if data.mesh_fraction > 0 else []
    for cal in cals:
        rec = Reconstructor.from_pretrained(args.calibrate, device=cfg.device)
        result = calibrate_threshold(rec, calibration_objects(cal, meshes), cal, progress=not args.no_progress)
        print(f"{args.calibrate}: {result['n_objects']} held-out objects, {cal.views} view(s); was threshold "
              f"{rec.threshold_for(cal.views)}")
        for row in result["table"]:
            print(f"  threshold {row['threshold']:.2f}: IoU {row['iou']:.4f}  F-score {row['fscore']:.4f}  "
                  f"Chamfer-L1 {row['chamfer_l1']:.4f}")
        set_threshold(args.calibrate, result["best_threshold"], {**result, "n_meshes": cal.n_meshes,
                                                                  "n_shapes": cal.n_shapes, "views": cal.views},
                      views=cal.views)
        print(f"wrote threshold {result['best_threshold']} for {cal.views} view(s) into {args.calibrate}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.export:
        from occnet_ros.network.checkpoint import CheckpointError, export_weights

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
    if args.calibrate:
        from occnet_ros.network.checkpoint import CheckpointError

        try:
            return calibrate(args, cfg)
        except (FileNotFoundError, CheckpointError, ConfigError, ValueError) as e:
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
