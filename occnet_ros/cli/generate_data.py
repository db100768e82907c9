"""``occnet_generate_data``: generate (or load from the cache) the training or validation data set.

    occnet_generate_data --config config/data/default.yaml --split train --cache-dir data_cache
"""
from __future__ import annotations

import argparse
import sys
import time

from occnet_ros.config_io import ConfigError, load_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="occnet_generate_data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config/data/default.yaml", help="data YAML (DataConfig)")
    p.add_argument("--split", choices=["train", "val", "both"], default="both")
    p.add_argument("--cache-dir", default="data_cache", help="folder of the cached shards")
    p.add_argument("--n-objects", type=int, help="override the object count of the split(s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from occnet_ros.data.dataset import DataConfig, load_or_generate

    try:
        cfg = load_config(DataConfig, args.config)
        if args.n_objects is not None:
            cfg.n_objects = cfg.n_val_objects = args.n_objects
            cfg.validate()
    except (ConfigError, ValueError) as e:
        print(f"occnet_generate_data: {e}", file=sys.stderr)
        return 2
    for split in (["train", "val"] if args.split == "both" else [args.split]):
        t0 = time.monotonic()
        ds = load_or_generate(cfg, split, args.cache_dir, progress=not args.no_progress)
        dt = time.monotonic() - t0
        print(f"{split}: {len(ds)} samples ({ds.stats.objects} objects; {ds.stats.mesh_objects} from meshes, "
              f"{ds.stats.meshes_repaired} repaired, {ds.stats.meshes_skipped} skipped; "
              f"{ds.stats.views_failed} views re-drawn; {ds.stats.fused_views} fused samples) in {dt:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
