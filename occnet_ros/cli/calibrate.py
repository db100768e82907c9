"""``occnet_calibrate``: fit the occupancy-probability calibration of a weights file and report how well the
probabilities are calibrated before and after, on held-out objects.

    occnet_calibrate occnet_ros/weights/occnet_default.pt --write out/calibration/occnet_calibrated.pt --out out/calibration
    occnet_calibrate out/calibration/occnet_calibrated.pt --report-only --out out/calibration/check

For each of ``--fit-views`` (default 1 2 4) a calibration
(:class:`~occnet_ros.network.probability_calibration.ProbabilityCalibration`) is fitted on
the *fit* split of held-out objects (:mod:`occnet_ros.evaluation.probability_samples`: random_urdfs validation
meshes and seeded procedural shapes, never the evaluation objects), on points uniform in the padded box and
within 1 % of the object size of the true surface together: ``--method map`` (the default) a monotone
piecewise-linear map of the logit by isotonic regression, ``--method temperature`` a temperature and bias by
minimum cross-entropy (:mod:`occnet_ros.evaluation.reliability`). The ECE (15 equal-width bins,
:mod:`occnet_ros.evaluation.reliability`) is then measured on the disjoint *report* split at ``--report-views``
(default 1 4), in the box and near the surface, with the file's own calibration ("before") and the fitted one
("after"), and reliability diagrams are drawn (``--out``: ``reliability_<views>v_<region>.png``,
``calibration.json``, ``calibration.md``). ``--write PATH`` stores the fitted calibrations in a copy of the
weights (weights and surface thresholds unchanged). ``--report-only`` measures the file's own calibration.
``--samples-dir DIR`` keeps the sampled probabilities there, so a second run on the same network (another
``--method``, a calibrated copy's ``--report-only``) does not reconstruct the objects again.
Exit code 2 for a bad argument or weights file.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="occnet_calibrate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("weights", help="checkpoint whose probabilities are calibrated")
    p.add_argument("--write", metavar="PATH", help="write the weights with the fitted calibration here")
    p.add_argument("--out", metavar="DIR", help="folder for calibration.json, calibration.md and the PNGs")
    p.add_argument("--report-only", action="store_true", help="measure the file's own calibration, fit nothing")
    p.add_argument("--fit-views", nargs="+", type=int, default=[1, 2, 4], metavar="N")
    p.add_argument("--report-views", nargs="+", type=int, default=[1, 4], metavar="N")
    p.add_argument("--fit-objects", nargs=2, type=int, default=[24, 16], metavar=("MESHES", "SHAPES"))
    p.add_argument("--report-objects", nargs=2, type=int, default=[24, 16], metavar=("MESHES", "SHAPES"))
    p.add_argument("--points", nargs=2, type=int, default=[20000, 20000], metavar=("BOX", "NEAR"),
                   help="points per object uniform in the box and near the surface (default 20000 20000)")
    p.add_argument("--method", choices=["map", "temperature"], default="map",
                   help="map: monotone logit map (isotonic regression); temperature: temperature and bias")
    p.add_argument("--no-bias", action="store_true", help="--method temperature: fit the temperature alone (bias 0)")
    p.add_argument("--samples-dir", metavar="DIR", help="cache of the sampled probabilities (reused by later runs)")
    p.add_argument("--data-config", default="config/data/multiview.yaml",
                   help="data config whose validation split gives the meshes")
    p.add_argument("--no-progress", action="store_true")
    return p


def _ece_rows(samples: dict, before, after) -> dict:
    """{region: {"n", "before", "after", bins...}} of one view count's report samples."""
    from occnet_ros.evaluation.reliability import reliability_bins

    out = {}
    for region, s in samples.items():
        b, a = reliability_bins(before.apply(s["p"]), s["y"]), reliability_bins(after.apply(s["p"]), s["y"])
        out[region] = {"n": int(len(s["p"])), "before": b.ece, "after": a.ece, "bins_before": b.to_dict(),
                       "bins_after": a.to_dict(), "_bins": (b, a)}
    return out


def markdown(report: dict, fitted: dict, fit_only: bool) -> str:
    lines = ["| views | region | points | ECE before | ECE after |", "|---|---|---|---|---|"]
    for views, regions in report.items():
        for region, r in regions.items():
            lines.append(f"| {views} | {region} | {r['n']} | {r['before']:.4f} | "
                         f"{'-' if fit_only else format(r['after'], '.4f')} |")
    if fitted:
        lines += ["", "| views | temperature | bias | logit-map knots |", "|---|---|---|---|"]
        lines += [f"| {v} | {c.temperature:.4f} | {c.bias:.4f} | {len(c.knots_in)} |" for v, c in sorted(fitted.items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np

    from occnet_ros.config_io import ConfigError, load_config
    from occnet_ros.data.dataset import DataConfig, split_meshes
    from occnet_ros.evaluation.probability_samples import SampleConfig, cached_samples, split_objects, weights_digest
    from occnet_ros.evaluation.reliability import fit_calibration, fit_logit_map, reliability_diagram
    from occnet_ros.network.checkpoint import CheckpointError, load_checkpoint, set_probability_calibration
    from occnet_ros.reconstruction.reconstructor import Reconstructor

    t0 = time.perf_counter()
    try:
        if any(v < 1 for v in args.fit_views + args.report_views):
            raise ValueError("--fit-views and --report-views must be >= 1")
        if args.write and args.report_only:
            raise ValueError("--write needs a fit; drop --report-only")
        if args.write and Path(args.write).resolve() == Path(args.weights).resolve():
            raise ValueError("--write must name a new file, not the weights read")
        cfg = SampleConfig(n_box=args.points[0], n_near=args.points[1], fit_objects=tuple(args.fit_objects),
                           report_objects=tuple(args.report_objects))
        cfg.validate()
        data = load_config(DataConfig, args.data_config)
        paths = split_meshes(data, "val") if data.mesh_fraction > 0 else []
        model, meta, _ = load_checkpoint(args.weights)
        digest = weights_digest(model.state_dict())
        rec = Reconstructor.from_pretrained(args.weights, device="cpu")
        report_objs = split_objects(cfg, paths, "report")
        fit_objs = [] if args.report_only else split_objects(cfg, paths, "fit")
    except (ValueError, ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"occnet_calibrate: {e}", file=sys.stderr)
        return 2
    progress = not args.no_progress
    fitted, fit_record = {}, {}
    for views in sorted(set(args.fit_views)) if not args.report_only else []:
        samples, skipped = cached_samples(rec, fit_objs, views, cfg, "fit", args.samples_dir, digest, progress)
        p = np.concatenate([s["p"] for s in samples.values()])
        y = np.concatenate([s["y"] for s in samples.values()])
        fitted[views] = (fit_logit_map(p, y) if args.method == "map"
                         else fit_calibration(p, y, with_bias=not args.no_bias))
        fit_record[views] = {"method": args.method, **fitted[views].to_record(), "n_points": int(len(p)),
                             "skipped": skipped}
        what = (f"logit map with {len(fitted[views].knots_in)} knots" if args.method == "map" else
                f"temperature {fitted[views].temperature:.4f}, bias {fitted[views].bias:.4f}")
        print(f"{views} view(s): {what} ({len(p)} points, {len(fit_objs) - len(skipped)} objects)")
    report = {}
    for views in sorted(set(args.report_views)):
        samples, _ = cached_samples(rec, report_objs, views, cfg, "report", args.samples_dir, digest, progress)
        before = meta.calibration_for(views)
        after = fitted_for(fitted, views) if fitted else before
        report[views] = _ece_rows(samples, before, after)
    seconds = time.perf_counter() - t0
    table = markdown(report, fitted, args.report_only)
    print(f"ECE ({len(report_objs)} report objects: {args.report_objects[0]} validation meshes, "
          f"{args.report_objects[1]} shapes; 15 bins); {seconds:.0f} s")
    print(table, end="")
    record = {"fit_objects": list(args.fit_objects), "report_objects": list(args.report_objects),
              "points_per_object": list(args.points), "fit": fit_record, "seconds": seconds,
              "ece": {v: {r: {"before": x["before"], "after": x["after"], "n": x["n"]} for r, x in regions.items()}
                      for v, regions in report.items()}}
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for views, regions in report.items():
            for region, r in regions.items():
                b, a = r.pop("_bins")
                curves = {"before": b} if args.report_only else {"before": b, "after": a}
                where = "uniform in the padded box" if region == "box" else "within 1 % of the surface"
                reliability_diagram(curves, out / f"reliability_{views}v_{region}.png",
                                    f"{Path(args.weights).name}: {views} view(s), points {where}")
        (out / "calibration.json").write_text(json.dumps({"args": vars(args), "record": record, "report": report},
                                                         indent=1, default=str))
        (out / "calibration.md").write_text(table)
        print(f"wrote {out}/calibration.json, calibration.md and reliability_*.png")
    if args.write:
        set_probability_calibration(args.weights, fitted, record, dst=args.write)
        print(f"wrote {args.write}")
    return 0


def fitted_for(fitted: dict, views: int):
    """The fitted calibration of the largest fitted view count <= ``views`` (else the smallest fitted)."""
    counts = [n for n in fitted if n <= views]
    return fitted[max(counts)] if counts else fitted[min(fitted)]


if __name__ == "__main__":
    sys.exit(main())
