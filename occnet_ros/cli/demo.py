"""``occnet_demo`` (``make demo``): the whole pipeline on a simulated tabletop, with pictures and a report.

Starts the simulated RGB-D camera (``sim_camera``) and ``reconstruction_node`` as two processes talking
over ROS 2 topics, collects ``--frames`` reconstructed frames, and writes to ``--out``: the meshes (PLY,
camera optical frame), a PNG per object, ``overview.png`` and ``report.md`` / ``report.json`` with each
object's IoU against the simulator's ground truth and the time spent in each stage. Then (unless
``--map-views 0``) the object map: the camera orbits the table, the node maps the objects in the simulator's
world frame, and ``map_report.md`` / ``map_views.png`` give each object's IoU after 1, 2, 4 and all its views
(:mod:`occnet_ros.demo.map_demo`).

Default weights: the shipped checkpoint ``occnet_ros/weights/occnet_default.pt``. Without it the demo
stops and says so; it never falls back to an untrained network. ``--weights`` selects another file.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from occnet_ros.network.checkpoint import DEFAULT_WEIGHTS

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="occnet_demo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output directory")
    p.add_argument("--weights", type=Path, default=None,
                   help=f"model checkpoint (default: the shipped weights {DEFAULT_WEIGHTS})")
    p.add_argument("--frames", type=int, default=3, help="reconstructed frames to collect")
    p.add_argument("--width", type=int, default=640, help="camera image width, pixels")
    p.add_argument("--height", type=int, default=480, help="camera image height, pixels")
    p.add_argument("--rate", type=float, default=0.5,
                   help="camera frame rate, Hz (rendering competes with the node for the CPU)")
    p.add_argument("--objects", nargs="+", default=["duck", "mug", "bunny", "torus", "teddy"],
                   help="evaluation objects on the table (mask ids 1.. in this order)")
    p.add_argument("--seed", type=int, default=2, help="scene seed (placement, noise)")
    p.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    p.add_argument("--namespace", default="occnet_demo", help="ROS namespace of both nodes")
    p.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                   help="extra reconstruction_node parameter, e.g. reconstruction.resolution0:=16 (repeatable)")
    p.add_argument("--map-views", type=int, default=4,
                   help="object-map part: stop once every object is fused from this many views (0 = skip it)")
    p.add_argument("--orbit", type=float, default=20.0, help="object-map part: camera orbit speed, deg/s")
    p.add_argument("--iou-points", type=int, default=100_000, help="points for the volumetric IoU")
    p.add_argument("--surface-points", type=int, default=30_000, help="surface samples for Chamfer/F-score")
    p.add_argument("--record", type=Path, default=None, metavar="BAG",
                   help="the simulated camera also records what it publishes into this new rosbag2 (MCAP) folder, "
                        "for occnet_replay (the first part of the demo: the static camera)")
    p.add_argument("--viewer", action="store_true",
                   help="also run viewer_node: a live 3D view of the cloud, meshes and queries in a web browser")
    args = p.parse_args(argv)
    if args.frames < 1:
        p.error("--frames must be >= 1")
    if args.map_views < 0 or not 0 < args.orbit <= 180:
        p.error("--map-views must be >= 0 and --orbit within (0, 180] deg/s")
    if not (8 <= args.width <= 4096 and 8 <= args.height <= 4096):
        p.error("--width and --height must be within 8..4096")
    if not 0.01 <= args.rate <= 100:
        p.error("--rate must be within 0.01..100 Hz")
    for np_ in args.node_param:
        if ":=" not in np_:
            p.error(f"--node-param {np_!r} is not NAME:=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the demo; exit code 0 on success, 1 when a stage fails, 2 for bad arguments or no weights."""
    args = parse_args(argv)
    weights = args.weights if args.weights is not None else DEFAULT_WEIGHTS
    if not Path(weights).is_file():
        if args.weights is None:
            print(f"occnet_demo: the shipped model weights are missing: {DEFAULT_WEIGHTS}\n"
                  "  They are produced by training (make train) and exported to that path. The demo does not "
                  "run an untrained network; pass --weights PATH to use another checkpoint.", file=sys.stderr)
        else:
            print(f"occnet_demo: --weights file not found: {weights}", file=sys.stderr)
        return 2
    from occnet_ros.demo.report import write_report
    from occnet_ros.demo.runner import DemoError, DemoSettings, run_demo
    from occnet_ros.evaluation.metrics import MetricsConfig
    from occnet_ros.sim.scene import SceneError

    out = args.out.resolve()
    t0 = time.monotonic()
    settings = DemoSettings(weights=Path(weights).resolve(), log_dir=out / "logs",
                            ground_truth_dir=out / "ground_truth", frames=args.frames, width=args.width,
                            height=args.height, rate_hz=args.rate, objects=list(args.objects), seed=args.seed,
                            timeout_s=args.timeout, namespace=args.namespace, node_params=list(args.node_param),
                            viewer=args.viewer, record_bag=str(args.record.resolve()) if args.record else "")
    if args.viewer:
        from occnet_ros.demo.runner import viewer_url

        print(f"live view (viewer_node, log in {out / 'logs'}): open {viewer_url()}")
    try:
        run = run_demo(settings)
    except (DemoError, SceneError, ValueError) as e:
        print(f"occnet_demo: {e}", file=sys.stderr)
        return 1
    print("scoring against the ground truth and drawing pictures ...")
    metrics = MetricsConfig(n_points_iou=args.iou_points, n_points_surface=args.surface_points)
    outputs = write_report(run, out, metrics, started=t0)
    total = time.monotonic() - t0
    rep = outputs.report
    print(f"\nmean IoU over {len(rep['objects'])} objects (last frame): {rep['mean_iou']:.3f}")
    for o in rep["objects"]:
        print(f"  {o['id']} {o['name']:<16} IoU {o['iou']:.3f}")
    print(f"\nwritten to {out}/ in {total:.0f} s:\n"
          f"  overview     {outputs.overview}\n"
          f"  per object   {out / 'objects'}/<id>_<name>.png\n"
          f"  meshes       {out / 'meshes'}/<id>_<name>.ply (reconstructions), gt_<id>_<name>.ply "
          "(ground truth), camera optical frame\n"
          f"  report       {outputs.report_md}\n"
          f"               {outputs.report_json}\n"
          f"  logs         {out / 'logs'}")
    if args.map_views == 0:
        return 0
    from occnet_ros.demo.map_demo import settings_for, run_map_demo

    print(f"\nobject map: the camera orbits at {args.orbit} deg/s until every object is fused from "
          f"{args.map_views} views ...")
    try:
        rep = run_map_demo(settings_for(settings, orbit_deg_per_s=args.orbit, views=args.map_views), out, metrics)
    except (DemoError, SceneError, ValueError) as e:
        print(f"occnet_demo: object map: {e}", file=sys.stderr)
        return 1
    m = rep["mean"]

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    print(f"object map, mean IoU: 1 view {fmt(m['iou_1_views'])}, 2 views {fmt(m['iou_2_views'])}, "
          f"4 views {fmt(m['iou_4_views'])}, all views {fmt(m['iou_all_views'])}\n"
          f"  report       {out / 'map_report.md'}\n  curves       {out / 'map_views.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
