"""``occnet_replay``: reconstruct the objects of a rosbag2 recording (MCAP or sqlite3) with the node's own frame
path, no ROS installation or running node needed. Writes into ``--out``: each object's mesh (PLY, GLB), a
report (``report.md``, ``timing.png``, ``last_frame.png``) and an MCAP bag (``bag/``) with the input topics plus
the node's ``objects`` and ``markers`` (open it in Foxglove, or ``ros2 bag play`` it into RViz).

numpy's BLAS runs on one thread, as in the node's processes (:mod:`occnet_ros.blas_threads`).

Exit codes: 0 replayed (single frames or messages may have been dropped, see the report), 1 the bag has no
usable points topic or could not be read, 2 a bad argument, file or parameter."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from occnet_ros.bag.reader import BagError
from occnet_ros.blas_threads import NODE_BLAS_THREADS, limit_blas_threads
from occnet_ros.replay.replay import OUTPUT_BAG, ReplayError, ReplayOptions, load_params, replay


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="occnet_replay", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("bag", type=Path, help="rosbag2 directory, or a .mcap / .db3 file")
    p.add_argument("--out", type=Path, required=True, help="output directory (its bag/ must not exist yet)")
    for name, default, what in (("points", "points", "sensor_msgs/PointCloud2"),
                                ("mask", "mask", "sensor_msgs/Image, instance labels"),
                                ("image", "image", "sensor_msgs/Image, colour"),
                                ("camera-info", "camera_info", "sensor_msgs/CameraInfo"),
                                ("pose", "camera_pose", "geometry_msgs/PoseStamped, for world_frame")):
        p.add_argument(f"--{name}", default=default, metavar="TOPIC",
                       help=f"{what} topic; a relative name also matches one namespaced topic ending in it")
    p.add_argument("--rate", choices=("recorded", "max"), default="max",
                   help="recorded: messages at the pace of the bag's timestamps; max: as fast as possible")
    p.add_argument("--params", type=Path, default=None,
                   help="the node's ROS 2 parameter file (default: the shipped config/reconstruct.yaml)")
    p.add_argument("--weights", type=Path, default=None, help="model checkpoint (.pt); overrides 'checkpoint'")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run a replay; see the module docstring for the exit codes."""
    args = parse_args(argv)
    limit_blas_threads(NODE_BLAS_THREADS)  # numpy's BLAS as in the node's processes (occnet_ros.blas_threads)
    from occnet_ros.bag.reader import resolve_bag_path

    try:
        resolve_bag_path(args.bag)
        params = load_params(args.params, args.weights)
        if args.out.exists() and not args.out.is_dir():
            raise ReplayError(f"--out {args.out} is a file, not a directory")
        if (args.out / OUTPUT_BAG).exists():
            raise ReplayError(f"output bag {args.out / OUTPUT_BAG} exists already; remove it or choose another --out")
        from occnet_ros.ros.frame_processor import load_reconstructor  # torch + the model: after the checks

        reconstructor = load_reconstructor(params)
    except (BagError, ReplayError, ValueError) as e:
        print(f"occnet_replay: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from occnet_ros.network.checkpoint import CheckpointError

        if not isinstance(e, CheckpointError):
            raise
        print(f"occnet_replay: --weights / checkpoint: {e}", file=sys.stderr)
        return 2
    topics = {"points": args.points, "mask": args.mask, "image": args.image, "camera_info": args.camera_info,
              "pose": args.pose}
    opts = ReplayOptions(bag=args.bag, out=args.out, params=params, topics=topics, rate=args.rate,
                         progress=not args.no_progress)
    try:
        result = replay(opts, reconstructor)
    except (BagError, ReplayError) as e:
        print(f"occnet_replay: {e}", file=sys.stderr)
        return 1
    from occnet_ros.replay.report import write_report

    report = write_report(result, args.out, args.bag, args.rate, bool(params.world_frame))
    done = sum(1 for f in result.frames if not f.dropped)
    print(f"occnet_replay: {done} of {len(result.frames)} cloud(s) reconstructed in {result.wall_s:.1f} s; "
          f"report {report}, bag {result.out_bag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
