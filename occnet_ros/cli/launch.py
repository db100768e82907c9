"""``occnet_launch``: the pip-route counterpart of ``ros2 launch occnet_ros reconstruct.launch.py``.

    occnet_launch [--params-file F] [--namespace NS] [--remap FROM:=TO ...] [--use-sim-camera]
                  [--sim-params-file F] [--dry-run]

Starts the processes described by :func:`occnet_ros.ros.launch_spec.launch_nodes` (the same source the
launch file uses) with their ``--ros-args``, forwards SIGINT/SIGTERM to them, and exits when they have
exited. When one process ends, the others are stopped too (SIGINT, then SIGTERM after a grace period,
then SIGKILL); the exit code is the first non-zero code of the processes, else 0.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from occnet_ros.cli.processes import stop_processes
from occnet_ros.ros.launch_spec import NODE_NAMES, LaunchSpecError, NodeSpec, dds_environment, launch_nodes

STOP_GRACE_S = 5.0
"""Seconds a process gets after SIGINT before SIGTERM, and again before SIGKILL."""


def find_executable(name: str) -> str:
    """The program ``name``: next to this Python interpreter (the venv's bin/) first, else on PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise LaunchSpecError(f"executable '{name}' not found next to {sys.executable} nor on PATH "
                              "(is occnet_ros installed into this environment?)")
    return found


def command(spec: NodeSpec) -> list[str]:
    """The command line of one node."""
    return [find_executable(spec.executable)] + spec.ros_args()


def stop_all(procs: list[subprocess.Popen], grace: float = STOP_GRACE_S) -> None:
    """SIGINT every running process, then SIGTERM and SIGKILL to those that do not exit in time
    (:func:`~occnet_ros.cli.processes.stop_processes`)."""
    stop_processes(procs, grace)


def child_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the started nodes: ours, plus the package's Fast DDS settings where unset
    (:func:`~occnet_ros.ros.launch_spec.dds_environment`: the shipped profile).

    Organized 640x480 clouds are 5-10 MB; a writer with Fast DDS's default transports (a 512 KiB shared-memory
    segment) delivered none of them to a best-effort subscriber here, one with the profile's 32 MiB segment all."""
    env = dict(os.environ if environ is None else environ)
    env.update(dds_environment(env))
    return env


def run(specs: list[NodeSpec], poll_s: float = 0.1) -> int:
    """Start ``specs``, supervise them until one exits or a signal arrives; returns the exit code."""
    cmds = [command(s) for s in specs]
    env = child_environment()
    stop_requested = []

    def on_signal(signum, _frame):
        stop_requested.append(signum)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    procs: list[subprocess.Popen] = []
    try:
        for cmd in cmds:
            print(f"[occnet_launch] starting: {shlex.join(cmd)}", flush=True)
            # own session: a terminal's Ctrl-C reaches only this supervisor, which forwards it once
            procs.append(subprocess.Popen(cmd, start_new_session=True, env=env))
        while not stop_requested and all(p.poll() is None for p in procs):
            time.sleep(poll_s)
        if stop_requested:
            print("[occnet_launch] stopping on signal", flush=True)
        else:
            ended = [(s.name, p.returncode) for s, p in zip(specs, procs) if p.poll() is not None]
            print(f"[occnet_launch] process ended: {ended}; stopping the others", flush=True)
    finally:
        stop_all(procs)
        for s, handler in old.items():
            signal.signal(s, handler)
    codes = [p.returncode for p in procs]
    for spec, code in zip(specs, codes):
        if code not in (0, None):
            print(f"[occnet_launch] {spec.name} exited with code {code}", flush=True)
    return next((c for c in codes if c not in (0, None) and c != -signal.SIGINT), 0)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="occnet_launch", description=__doc__.split("\n\n")[0])
    ap.add_argument("--params-file", help="parameter file of reconstruction_node (default: config/reconstruct.yaml)")
    ap.add_argument("--namespace", default="", help="namespace of the started nodes")
    ap.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                    help=f"rename one of the node's topics ({', '.join(NODE_NAMES)}); repeatable")
    ap.add_argument("--use-sim-camera", action="store_true", help="also start the simulated RGB-D camera")
    ap.add_argument("--sim-params-file", help="parameter file of sim_camera (default: config/sim_camera.yaml)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        specs = launch_nodes(args.params_file, args.namespace, args.remap, args.use_sim_camera,
                             args.sim_params_file)
        for spec in specs:
            missing = [f for f in spec.parameters if not Path(f).is_file()]
            if missing:
                raise LaunchSpecError(f"parameter file(s) of {spec.name} not found: {missing}")
        if args.dry_run:
            for spec in specs:
                print(shlex.join(command(spec)))
            return 0
    except LaunchSpecError as e:
        print(f"occnet_launch: {e}", file=sys.stderr)
        return 2
    return run(specs)


if __name__ == "__main__":
    sys.exit(main())
