"""``occnet_bench``: the speed benchmark (``make bench``). Prints the tables and the targets
with PASS/MISS, writes ``<out>/results.json`` and ``<out>/results.md``.

    occnet_bench [--out out/bench] [--weights P] [--quick] [--repeats N] [--threads N] [--device cpu|cuda]
                 [--sections floor mise latency frame queries ros map] [--save-views FILE] [--views FILE]

Timings are medians over ``--repeats`` runs on this machine; run it on an otherwise idle machine (the
load average at start is recorded). ``--quick``: tiny sizes, for the smoke test; its numbers mean
nothing. Without ``--weights`` the shipped weights are used, or, when there are none yet, a randomly
initialised network of the default architecture (a stand-in: MISE's work depends on the surface).
``--device cuda`` runs the network on the GPU in every section (the floor's rates, the in-process sections and the
node of the ros and map sections; ``make gpu-check`` runs it after the CUDA tests); the rest of the pipeline stays on
the CPU as in the node. Exit code 2 when CUDA is asked for and not available, or a ``--views`` file cannot be read.
``--save-views`` keeps the test objects the sections rendered (open3d ray casting) and ``--views`` benchmarks those
on a machine without open3d (``tools/gpu_check.sh``: a GPU machine given only the network's packages). The program
sets its process up as ``reconstruction_node`` sets up its own: numpy's BLAS on one thread
(:mod:`occnet_ros.blas_threads`), and once the network is loaded the objects made so far (torch, the network) out of
the cyclic garbage collector's reach (``gc.freeze()``), so a collection inside a timed section walks only what the
sections made (an unfrozen full collection took 137 ms in a latency run).
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
import traceback
from pathlib import Path

import torch

from occnet_ros.benchmark import (floor, frame_stages, latency, map_throughput, mise_vs_dense, node_throughput,
                                  queries, report)
from occnet_ros.benchmark.common import QUICK_SIZES, BenchSizes, ViewSet, machine_info, make_context
from occnet_ros.blas_threads import NODE_BLAS_THREADS, blas_thread_counts, limit_blas_threads

SECTIONS = {"mise": ("mise_vs_dense", mise_vs_dense.run), "latency": ("latency", latency.run),
            "frame": ("frame", frame_stages.run),
            "queries": ("queries", queries.run), "ros": ("ros", node_throughput.run),
            "map": ("map", map_throughput.run)}
"""Optional sections: name on the command line -> (key in results.json, function). The floor section
always runs: every other section's floor needs its matmul rate."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="occnet_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="out/bench", help="output folder (default out/bench)")
    ap.add_argument("--weights", default=None, help="checkpoint to benchmark (default: shipped weights, "
                                                    "else a random network of the default architecture)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke test); numbers mean nothing")
    ap.add_argument("--repeats", type=int, default=None, help="runs per median (default 5, quick 2)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: usable cores)")
    ap.add_argument("--sections", nargs="+", choices=["floor", *SECTIONS], default=None,
                    help="sections to run (default all; floor always runs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="where the network runs (default cpu; cuda: the first NVIDIA GPU)")
    ap.add_argument("--save-views", default=None, metavar="FILE",
                    help="also write the test objects the sections rendered to FILE (for --views)")
    ap.add_argument("--views", default=None, metavar="FILE",
                    help="take the test objects from FILE (written by --save-views with the same --seed, --quick "
                         "and sections) instead of rendering them: a machine without open3d benchmarks them")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device here (torch.cuda.is_available() is False)")
    if args.repeats is not None and args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads < 0:
        ap.error(f"--threads must be >= 0, got {args.threads}")
    if args.views is not None:
        try:
            args.views = ViewSet.load(args.views)
        except ValueError as e:
            ap.error(str(e))
    return args


def run(args: argparse.Namespace, node_setup: bool = False) -> dict:
    """Run the benchmark; returns the results dict (also written to ``args.out``). ``node_setup``: set the process up
    as the node's (BLAS threads, the collector's objects frozen once the network is loaded; the program does, module
    docstring)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = QUICK_SIZES if args.quick else BenchSizes()
    repeats = args.repeats or (2 if args.quick else 5)
    if node_setup:
        limit_blas_threads(NODE_BLAS_THREADS)  # before the decimation worker processes start: they inherit it
    info = machine_info()
    torch.set_num_threads(args.threads or info["usable_cores"])
    info["torch_threads"] = torch.get_num_threads()
    info["device"] = args.device if args.device == "cpu" else f"cuda ({torch.cuda.get_device_name(0)})"
    ctx = make_context(args.weights, out, sizes, repeats, args.seed, device=args.device)
    if args.views is not None:
        ctx.views = args.views
    if node_setup:
        gc.collect()
        gc.freeze()
    info["gc_frozen_objects"] = gc.get_freeze_count()
    info["blas_threads"] = blas_thread_counts()
    results: dict = {"quick": bool(args.quick), "repeats": repeats, "machine": info, "weights": ctx.weights,
                     "sizes": vars(sizes) | {"resolution": sizes.resolution},
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    wanted = [s for s in SECTIONS if args.sections is None or s in args.sections]
    for name, fn in [("floor", floor.run)] + [SECTIONS[s] for s in wanted]:
        t0 = time.perf_counter()
        print(f"[occnet_bench] {name} ...", flush=True)
        try:
            results[name] = fn(ctx)
        except Exception as e:  # one failing section must not hide the others
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}"}
        results[name]["section_wall_s"] = time.perf_counter() - t0
        if name == "floor" and "error" in results[name]:
            break  # no rate, no floors
    results["views"] = ctx.views.source or "rendered here"
    if args.save_views:
        results["views_saved"] = str(ctx.views.save(args.save_views))
    results["targets"] = report.check_targets(results)
    report.write(results, out)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(args, node_setup=True)
    print(report.markdown(results))
    print(f"[occnet_bench] results in {Path(args.out) / 'results.json'} and {Path(args.out) / 'results.md'}")
    failed = [k for k, v in results.items() if isinstance(v, dict) and "error" in v]
    if failed:
        print(f"[occnet_bench] sections that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
