"""``occnet_soak`` (``make soak``): a soak test of ``reconstruction_node`` under a steady load.

Starts ``sim_camera`` and ``reconstruction_node`` as ``occnet_launch --use-sim-camera`` does (shipped parameter
files, plus ``-p`` overrides), on a fresh ROS_DOMAIN_ID, in their own namespace and sessions. For ``--minutes``
the camera publishes its static 5-object tabletop at ``--rate`` Hz (``--orbit``: it circles the table; ``--map``:
the node keeps its object map); a thread calls ``query_occupancy`` ``--query-rate`` times a second, one call at
a time, ``--query-points`` points uniform in the box around the objects' bounding boxes, each with a deadline;
every ``--sample-s`` s psutil samples the node (RSS, fds, threads, CPU, child processes) and the camera; frames
processed are the ``objects`` messages, read raw (header and object count only: this process stays light).

Outputs in ``--out`` (:mod:`occnet_ros.benchmark.soak_report`): soak.csv, queries.csv, soak_report.md, soak.png,
logs/; then the per-minute table and PASS/MISS lines, like ``make bench``. Exit code 0 when the run completed
(whatever the checks say), 1 when the run failed (a process died, the node never came up), 130 when interrupted
(Ctrl-C, SIGTERM), 2 for bad arguments. The processes are stopped as Ctrl-C would (SIGINT, then SIGTERM,
SIGKILL) in every case, and the report says what was measured.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from occnet_ros.benchmark.soak_client import NAMESPACE, QueryLoop, SoakClient
from occnet_ros.benchmark.soak_report import SoakRun, check_lines, status_line, table, write_all
from occnet_ros.benchmark.soak_sampling import ProcessSampler, machine_info, query_region, sample_row
from occnet_ros.cli.processes import ros_environment, stop_processes
from occnet_ros.ros.launch_spec import dds_transports

REFERENCE_WIDTH, REFERENCE_FX = 640, 615.0
"""The shipped camera's width and focal length: the focal length scales with --width (same view)."""
QUERY_SETS = 16
"""Distinct random query point sets, used in turn."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="occnet_soak", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="soak duration after start-up, minutes")
    ap.add_argument("--out", type=Path, default=Path("out/soak"), help="output folder")
    ap.add_argument("--checkpoint", type=Path, default=None, help="model checkpoint (default: the shipped weights)")
    ap.add_argument("--rate", type=float, default=0.5,
                    help="camera frame rate, Hz (the node needs ~2.5 s per 5-object frame on 2 cores)")
    ap.add_argument("--width", type=int, default=640, help="camera image width, pixels")
    ap.add_argument("--height", type=int, default=480, help="camera image height, pixels")
    ap.add_argument("--objects", nargs="+", default=None, help="scene objects (default: config/sim_camera.yaml's)")
    ap.add_argument("--orbit", type=float, default=0.0, help="camera orbit speed, deg/s (0 = static camera)")
    ap.add_argument("--map", action="store_true", help="object-map mode (world_frame:=world, poses on camera_pose)")
    ap.add_argument("--query-rate", type=float, default=10.0, help="query_occupancy calls per second")
    ap.add_argument("--query-points", type=int, default=1000, help="points per call")
    ap.add_argument("--query-deadline", type=float, default=2.0, help="a call unanswered after this many s fails")
    ap.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples of the node process")
    ap.add_argument("--warmup-minutes", type=float, default=None,
                    help="warm-up excluded from the growth checks (default: 2 min or 20%% of the run, the less)")
    ap.add_argument("--startup-timeout", type=float, default=180.0,
                    help="seconds to wait for the node's first objects")
    ap.add_argument("--node-param", action="append", default=[], metavar="NAME:=VALUE",
                    help="extra reconstruction_node parameter (repeatable)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the query points")
    a = ap.parse_args(argv)
    for bad, what in ((not (a.minutes > 0 and a.sample_s > 0 and a.query_deadline > 0 and a.query_points >= 1),
                       "--minutes, --sample-s, --query-deadline and --query-points must be > 0"),
                      (not (0.01 <= a.rate <= 100 and 0 < a.query_rate <= 1000), "--rate must be within 0.01..100 "
                                                                                 "Hz, --query-rate (0, 1000]"),
                      (not (8 <= a.width <= 4096 and 8 <= a.height <= 4096), "--width, --height: 8..4096"),
                      (a.warmup_minutes is not None and not 0 <= a.warmup_minutes < a.minutes,
                       "--warmup-minutes must be within [0, --minutes)"),
                      (any(":=" not in p for p in a.node_param), "--node-param takes NAME:=VALUE")):
        if bad:
            ap.error(what)
    return a


def _param(name: str, value) -> list[str]:
    if isinstance(value, (list, tuple)):
        value = "[" + ", ".join(str(v) for v in value) + "]"
    return ["-p", f"{name}:={value}"]


def node_commands(args: argparse.Namespace, checkpoint: Path) -> dict[str, list[str]]:
    """The two programs' command lines: what ``occnet_launch --use-sim-camera`` starts (shipped parameter
    files), in :data:`NAMESPACE`, with the soak's overrides."""
    from occnet_ros.cli.launch import command
    from occnet_ros.ros.launch_spec import LaunchSpecError, launch_nodes

    f = REFERENCE_FX * args.width / REFERENCE_WIDTH
    overrides = {"sim_camera": [("rate_hz", float(args.rate)), ("max_frames", 0), ("camera.width", args.width),
                                ("camera.height", args.height), ("camera.fx", f), ("camera.fy", f),
                                ("camera.orbit_deg_per_s", float(args.orbit))],
                 "reconstruction_node": [("checkpoint", str(checkpoint))]}
    if args.objects:
        overrides["sim_camera"].append(("scene.objects", list(args.objects)))
    if args.map:
        overrides["reconstruction_node"] += [("world_frame", "world"), ("pose_source", "topic")]
    out = {}
    for spec in launch_nodes(namespace=NAMESPACE, use_sim_camera=True):
        try:
            cmd = command(spec)
        except LaunchSpecError:  # a ROS workspace installs the programs off PATH
            module = {"sim_camera": "occnet_ros.ros.sim_camera_node",
                      "reconstruction_node": "occnet_ros.ros.reconstruction_node"}[spec.executable]
            cmd = [sys.executable, "-m", module] + spec.ros_args()
        for name, value in overrides[spec.executable]:
            cmd += _param(name, value)
        if spec.executable == "reconstruction_node":  # debug: the node logs each query request it receives
            cmd += [x for p in args.node_param for x in ("-p", p)]
            cmd += ["--log-level", f"{NAMESPACE.strip('/')}.{spec.name}:=debug"]
        out[spec.executable] = cmd
    return out


def _set_environ(values: dict[str, str | None]) -> None:
    """Set (or, for None, remove) these variables of this process."""
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def start_process(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start ``cmd`` in its own session (a terminal's Ctrl-C reaches only the soak, which stops it); on Linux it
    gets SIGTERM when the soak process dies (PR_SET_PDEATHSIG), so a killed soak leaves no node behind."""
    pre = None
    if sys.platform == "linux":
        import ctypes
        import functools

        # looked up here, so the child only calls it: PR_SET_PDEATHSIG = 1
        pre = functools.partial(ctypes.CDLL(None, use_errno=True).prctl, 1, int(signal.SIGTERM))
    with open(log_path, "w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                preexec_fn=pre)


def requests_logged(log: Path) -> int | None:
    """query_occupancy requests the node logged as received (debug lines), None when it logged none."""
    try:
        n = sum("query_occupancy request " in line for line in log.read_text(errors="replace").splitlines())
    except OSError:
        return None
    return n or None


class RunFailed(RuntimeError):
    """The run itself failed (a process died, the node never came up)."""


def _check_alive(procs: dict[str, subprocess.Popen], when: str) -> None:
    dead = [f"{name} exited with code {p.returncode} {when}" for name, p in procs.items() if p.poll() is not None]
    if dead:
        raise RunFailed("; ".join(dead))


def _soak(args, run: SoakRun, procs: dict, client: SoakClient, live: dict, bar) -> None:
    """Start-up, then the timed soak; fills ``run``; the query loop (still running at the end) goes to
    ``live["queries"]``."""
    t_start = time.monotonic()
    while client.first_objects is None or not client.client.service_is_ready():
        _check_alive(procs, "during start-up")
        if time.monotonic() - t_start > args.startup_timeout:
            raise RunFailed(f"no objects from reconstruction_node within {args.startup_timeout:.0f} s of the start")
        time.sleep(0.1)
    lo, hi = query_region(client.first_objects_msg())
    run.settings["query_region"] = f"{np.round(lo, 3).tolist()} - {np.round(hi, 3).tolist()} m"
    rng = np.random.default_rng(args.seed)
    sets = [rng.uniform(lo, hi, (args.query_points, 3)).astype(np.float32) for _ in range(QUERY_SETS)]
    queries = live["queries"] = QueryLoop(client, sets, args.query_rate, args.query_deadline)
    node, camera = ProcessSampler(procs["reconstruction_node"].pid), ProcessSampler(procs["sim_camera"].pid)
    t0 = time.monotonic()
    run.startup_s = t0 - t_start
    run.settings["t0"] = t0
    queries.thread.start()
    bar.write(f"[occnet_soak] start-up took {run.startup_s:.1f} s; soaking for {args.minutes:g} min")
    k, n_lat, minute, shown = 0, 0, 1, 0.0
    while True:
        now = time.monotonic() - t0
        _check_alive(procs, f"at t = {now:.0f} s")
        end = now >= run.duration_s
        if now >= k * args.sample_s or end:
            with client.lock:
                frames = sum(1 for f in client.frames if f[0] >= t0)
                cams = sum(1 for c in client.camera_frames if c >= t0)
            with queries.lock:
                recs = list(queries.records)
            run.samples.append(sample_row(now, node.sample(), camera.sample(), frames, cams, recs, n_lat))
            n_lat = len(recs)
            k = math.floor(now / args.sample_s) + 1
            s = run.samples[-1]
            text = (f"node RSS {s['node_rss_mb']:.1f} MB, fds {s['node_fds']}, threads {s['node_threads']}, "
                    f"children {s['children']}; {frames} frames, {s['queries_ok_total']} queries answered, "
                    f"{s['queries_failed_total'] + s['queries_timeout_total']} not")
            bar.set_postfix_str(text, refresh=False)
            if now >= 60.0 * minute - 1e-6:  # a line a minute, also where no bar is drawn (not a terminal)
                bar.write(f"[occnet_soak] {now / 60:.1f} min: {text}")
                minute = math.floor(now / 60.0) + 1
        bar.update(min(now, run.duration_s) - shown)
        shown = min(now, run.duration_s)
        run.elapsed_s = min(now, run.duration_s)
        if end:
            return
        time.sleep(max(0.0, min(0.25, min(k * args.sample_s, run.duration_s) - now)))


def run_soak(args: argparse.Namespace, command_line: str, checkpoint: Path) -> SoakRun:
    """Start the processes, soak, stop them (also on Ctrl-C / exceptions); the measurements in a SoakRun."""
    from tqdm import tqdm

    out = args.out.resolve()
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    duration = 60.0 * args.minutes
    warmup = 60.0 * args.warmup_minutes if args.warmup_minutes is not None else min(120.0, 0.2 * duration)
    domain_id = random.SystemRandom().randint(20, 99)
    env = ros_environment(domain_id)
    cmds = node_commands(args, checkpoint)
    mode = "object map (world_frame)" if args.map else "every frame reconstructed on its own (no map)"
    run = SoakRun(command=command_line, machine=machine_info(), started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                  duration_s=duration, warmup_s=warmup, sample_s=args.sample_s, logs=str(logs),
                  processes={k: shlex.join(v) for k, v in cmds.items()},
                  settings={"mode": mode, "width": args.width, "height": args.height, "rate_hz": args.rate,
                            "orbit_deg_per_s": args.orbit, "query_rate_hz": args.query_rate,
                            "query_points": args.query_points, "query_deadline_s": args.query_deadline,
                            "checkpoint": str(checkpoint), "domain_id": domain_id, "namespace": NAMESPACE,
                            "fastdds_transports": dds_transports(env),
                            "fastdds_profiles_file": env.get("FASTDDS_DEFAULT_PROFILES_FILE", "")})
    own = {k: env.get(k) for k in ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_BUILTIN_TRANSPORTS",
                                   "FASTDDS_DEFAULT_PROFILES_FILE", "ROS_LOCALHOST_ONLY")}  # this process's rclpy (read at init), restored after
    saved = {k: os.environ.get(k) for k in own}
    procs: dict[str, subprocess.Popen] = {}
    live: dict[str, QueryLoop] = {}
    client = bar = None
    try:
        _set_environ(own)
        for name in ("reconstruction_node", "sim_camera"):  # before any thread of ours (preexec_fn)
            procs[name] = start_process(cmds[name], env, logs / f"{name}.log")
        bar = tqdm(total=duration, unit="s", desc="soak", disable=None, file=sys.stderr,
                   bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s {postfix}")
        bar.write(f"[occnet_soak] started reconstruction_node and sim_camera (domain {domain_id}, logs in {logs}); "
                  "waiting for the first objects")
        client = SoakClient(domain_id)
        _soak(args, run, procs, client, live, bar)
    except RunFailed as e:
        run.status, run.reason = "failed", str(e)
    except KeyboardInterrupt:
        run.status, run.reason = "interrupted", "Ctrl-C or SIGTERM"
    except Exception as e:  # the report still says what was measured, and why it stopped
        import traceback

        traceback.print_exc()
        run.status, run.reason = "failed", f"{type(e).__name__}: {e}"
    finally:
        if bar is not None:
            bar.close()
        if "queries" in live:
            live["queries"].stop()
        codes = stop_processes(list(procs.values()), grace=10.0)
        run.exit_codes = dict(zip(procs, codes))
        if client is not None:
            client.close()
        _set_environ(saved)
    t0 = run.settings.pop("t0", None)
    if t0 is not None:
        run.frames = [(t - t0, age, n) for t, age, n in client.frames if 0 <= t - t0 <= run.elapsed_s]
        run.camera_frames = [t - t0 for t in client.camera_frames if 0 <= t - t0 <= run.elapsed_s]
        run.queries = [(t - t0, lat, s) for t, lat, s in live["queries"].records if t - t0 <= run.elapsed_s]
        run.failures = dict(live["queries"].failures)
        run.late = [(t - t0, lat) for t, lat in live["queries"].late]
        run.calls_sent = len(live["queries"].records)
        run.requests_received = requests_logged(logs / "reconstruction_node.log")
    run.ended = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command_line = shlex.join(["occnet_soak"] + list(sys.argv[1:] if argv is None else argv))
    if args.checkpoint is None:
        from occnet_ros.network.checkpoint import DEFAULT_WEIGHTS as checkpoint
    else:
        checkpoint = args.checkpoint.resolve()
    if not Path(checkpoint).is_file():
        print(f"occnet_soak: checkpoint not found: {checkpoint}", file=sys.stderr)
        return 2

    old = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops the run as Ctrl-C does
    try:
        run = run_soak(args, command_line, Path(checkpoint))
    finally:
        signal.signal(signal.SIGTERM, old)
    res = write_all(run, args.out)
    print("\n".join(["", *table(res["rows"]), "", *check_lines(res["checks"]), "", status_line(run)]))
    print(f"[occnet_soak] report {res['paths']['report']}, samples {res['paths']['csv']}, "
          f"plot {res['paths']['png']}, logs {run.logs}")
    return {"ok": 0, "failed": 1}.get(run.status, 130)


if __name__ == "__main__":
    sys.exit(main())
