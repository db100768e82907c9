"""Running the demo: the simulated camera and the reconstruction node as two processes, and a collector.

Why separate processes (not one process with a MultiThreadedExecutor): they are the very programs a user
starts with ``occnet_launch --use-sim-camera`` (the same :mod:`occnet_ros.ros.launch_spec` description and
shipped parameter files, plus command-line overrides), talking over real DDS topics; and rendering and
reconstruction hold the GIL for long stretches, so two processes use both CPU cores where one process
would run them in turn. This process only collects: it subscribes to the camera's ``points``,
``image`` and ``mask`` (kept by stamp, bounded) and to the node's ``objects``, and stops after
``frames`` reconstructed frames. Ground truth comes from the files the camera node writes
(``ground_truth_dir``), read with :func:`occnet_ros.sim.ground_truth.read_ground_truth`.

Transport: the demo runs itself and both nodes with the package's Fast DDS profile
(:func:`~occnet_ros.ros.launch_spec.dds_environment`) unless ``FASTDDS_DEFAULT_PROFILES_FILE`` is set
(``DemoSettings.dds_profile``): its 32 MiB shared-memory segment lets a 640x480 cloud (~5 MB) reach a best-effort
reader whole, which Fast DDS's default 512 KiB segment does not (``config/fastdds_profile.xml`` holds the
measurements); other RMW implementations ignore it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from occnet_ros.cli.processes import stop_processes
from occnet_ros.ros.launch_spec import dds_environment, dds_transports
from occnet_ros.demo.collector import Collector
from occnet_ros.demo.results import DemoRun
from occnet_ros.sim.ground_truth import GroundTruthError, read_ground_truth
from occnet_ros.sim.node_config import SimCameraNodeConfig, up_in_camera

__all__ = ["DemoError", "DemoSettings", "run_demo"]

REFERENCE_WIDTH = 640
REFERENCE_FX = 615.0


class DemoError(RuntimeError):
    """The demo could not run or did not finish (the message says which stage and why)."""


@dataclass
class DemoSettings:
    """``frames``: reconstructed frames to collect; ``width`` x ``height``: camera image (the focal length
    scales with the width, so the view stays the same); ``rate_hz``: camera frame rate; ``objects``,
    ``seed``: the scene; ``timeout_s``: give up after this many seconds; ``namespace``: ROS namespace
    of both nodes (keeps the demo's topics apart from others'); ``node_params``: extra
    ``name:=value`` parameters for reconstruction_node; ``log_dir``: the nodes' output; ``dds_profile``:
    set ``FASTDDS_DEFAULT_PROFILES_FILE`` to the package's profile (see the module docstring) when it is unset; ``viewer``: run
    ``viewer_node`` beside the nodes (live view in a browser, :func:`viewer_url`); ``record_bag``: the camera
    also records what it publishes into this new rosbag2 (MCAP) folder ("" = no recording), which
    ``occnet_replay`` replays."""

    weights: Path
    log_dir: Path
    ground_truth_dir: Path
    frames: int = 3
    width: int = 640
    height: int = 480
    rate_hz: float = 0.5
    objects: list[str] = field(default_factory=lambda: ["duck", "mug", "bunny", "torus", "teddy"])
    seed: int = 2
    timeout_s: float = 300.0
    namespace: str = "occnet_demo"
    node_params: list[str] = field(default_factory=list)
    dds_profile: bool = True
    viewer: bool = False
    record_bag: str = ""


def sim_camera_config(s: DemoSettings) -> SimCameraNodeConfig:
    """The camera node's configuration for these settings (defaults otherwise)."""
    cfg = SimCameraNodeConfig(rate_hz=s.rate_hz, ground_truth_dir=str(s.ground_truth_dir))
    cfg.scene.objects = list(s.objects)
    cfg.scene.seed = s.seed
    f = REFERENCE_FX * s.width / REFERENCE_WIDTH
    cfg.camera.width, cfg.camera.height, cfg.camera.fx, cfg.camera.fy = s.width, s.height, f, f
    cfg.validate()
    cfg.camera.validate()
    return cfg


def _param(name: str, value) -> list[str]:
    if isinstance(value, (list, tuple)):
        text = "[" + ", ".join(str(v) for v in value) + "]"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str(value)
    return ["-p", f"{name}:={text}"]


def _command(spec) -> list[str]:
    """A launch-spec node's command line: its installed program, else ``python -m`` its module (a ROS
    workspace installs the programs under lib/occnet_ros/, off PATH)."""
    from occnet_ros.cli.launch import command
    from occnet_ros.ros.launch_spec import LaunchSpecError

    try:
        return command(spec)
    except LaunchSpecError:
        module = {"sim_camera": "occnet_ros.ros.sim_camera_node",
                  "reconstruction_node": "occnet_ros.ros.reconstruction_node"}[spec.executable]
        return [sys.executable, "-m", module] + spec.ros_args()


def commands(s: DemoSettings) -> dict[str, list[str]]:
    """The two programs' command lines: what ``occnet_launch --use-sim-camera --namespace NS`` starts
    (:func:`occnet_ros.ros.launch_spec.launch_nodes`, shipped parameter files), plus ``-p`` overrides for
    the demo's settings (they take precedence over the files)."""
    from occnet_ros.ros.launch_spec import launch_nodes

    cam = sim_camera_config(s)
    overrides = {
        "sim_camera": [("rate_hz", cam.rate_hz), ("ground_truth_dir", cam.ground_truth_dir),
                       ("max_frames", 0), ("scene.objects", cam.scene.objects), ("scene.seed", cam.scene.seed),
                       ("camera.width", cam.camera.width), ("camera.height", cam.camera.height),
                       ("camera.fx", cam.camera.fx), ("camera.fy", cam.camera.fy),
                       ("camera.orbit_deg_per_s", 0.0)] + ([("record_bag", s.record_bag)] if s.record_bag else []),
        "reconstruction_node": [("checkpoint", str(s.weights)), ("up", up_in_camera(cam)), ("reconstruction.device", "cpu"),
                                ("segmentation.mode", "mask")],
    }
    out = {}
    for spec in launch_nodes(namespace=s.namespace, use_sim_camera=True):
        cmd = _command(spec)
        for name, value in overrides[spec.executable]:
            cmd += _param(name, value)
        if spec.executable == "reconstruction_node":
            for p in s.node_params:
                cmd += ["-p", p]
        out[spec.executable] = cmd
    if s.viewer:
        out["viewer_node"] = viewer_command(s)
    return out


def viewer_command(s: DemoSettings) -> list[str]:
    """``viewer_node`` in the demo's namespace (default ports, fixed frame from the first objects)."""
    from occnet_ros.cli.launch import command
    from occnet_ros.ros.launch_spec import LaunchSpecError, NodeSpec, normalize_namespace

    spec = NodeSpec(package="occnet_ros", executable="viewer_node", name="viewer_node",
                    namespace=normalize_namespace(s.namespace))
    try:
        return command(spec)
    except LaunchSpecError:
        return [sys.executable, "-m", "occnet_ros.ros.viewer_node"] + spec.ros_args()


def viewer_url() -> str:
    """The page address of the demo's viewer (the viewer's default host and ports)."""
    from occnet_ros.viewer.config import ViewerConfig
    from occnet_ros.viewer.rerun_sink import page_url

    c = ViewerConfig()
    return page_url(c.host, c.web_port, c.grpc_port)


class _Processes:
    """Started child processes, each logging to ``log_dir/<name>.log``; stopped as Ctrl-C would
    (:func:`~occnet_ros.cli.processes.stop_processes`)."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str]) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.setdefault("OMP_NUM_THREADS", "1")
        with open(self.log_dir / f"{name}.log", "w") as log:
            self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    def check(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise DemoError(f"{name} exited early with code {p.returncode}:\n{self.tail(name)}")

    def tail(self, name: str, n: int = 15) -> str:
        try:
            lines = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in lines[-n:])

    def stop(self, timeout: float = 10.0) -> None:
        stop_processes(list(self.procs.values()), timeout)


def prepare_run(s: DemoSettings) -> None:
    """Before the nodes start: the weights exist, the log folder is there, the ground-truth folder is empty,
    and the package's Fast DDS profile is chosen (``s.dds_profile``, unless set) before rclpy.init and the
    children. Raises :class:`DemoError` for missing weights."""
    if not Path(s.weights).is_file():
        raise DemoError(f"checkpoint not found: {s.weights}")
    s.log_dir.mkdir(parents=True, exist_ok=True)
    s.ground_truth_dir.mkdir(parents=True, exist_ok=True)
    for old in s.ground_truth_dir.glob("*"):
        if old.is_file():
            old.unlink()
    if s.dds_profile:  # the shipped profile where unset (launch_spec.dds_environment)
        os.environ.update(dds_environment())


def run_demo(s: DemoSettings, log=print) -> DemoRun:
    """Start both nodes, collect ``s.frames`` reconstructed frames, stop the nodes, load the ground truth.
    Raises :class:`DemoError` naming the stage that failed (with the failing node's last log lines)."""
    prepare_run(s)
    t_start = time.monotonic()
    procs = _Processes(s.log_dir)
    collector = Collector(s.namespace, s.ground_truth_dir, period_s=1.0 / s.rate_hz)
    try:
        for name, cmd in commands(s).items():
            procs.start(name, cmd)
        log(f"started sim_camera and reconstruction_node (logs: {s.log_dir}); waiting for {s.frames} frames")
        deadline = t_start + s.timeout_s
        reported = 0
        while len(collector.frames) < s.frames:
            collector.spin_once(0.1)
            procs.check()
            n = len(collector.frames)
            if n > reported:
                reported = n
                log(f"  reconstructed frame {n}/{s.frames} ({time.monotonic() - t_start:.0f} s)")
            if time.monotonic() > deadline:
                stage = ("the camera published no frame" if collector.first_points is None
                         else "the reconstruction node published no objects" if collector.first_objects is None
                         else f"only {n} of {s.frames} frames were reconstructed ({collector.unmatched} "
                              f"results arrived after their input frame was dropped, "
                              f"{collector.non_mask_labels} were not segmented by mask)")
                raise DemoError(f"timed out after {s.timeout_s:.0f} s: {stage}.\nsim_camera log:\n"
                                f"{procs.tail('sim_camera')}\nreconstruction_node log:\n"
                                f"{procs.tail('reconstruction_node')}")
        t_done = time.monotonic()
        frames = collector.frames[:s.frames]
    finally:
        procs.stop()
        collector.close()
    try:
        doc, gt = read_ground_truth(s.ground_truth_dir)
    except GroundTruthError as e:
        raise DemoError(f"the camera's ground truth is unreadable: {e}") from e
    timings = {"startup_to_first_frame_s": collector.first_points - t_start,
               "startup_to_first_objects_s": collector.first_objects - t_start,
               "collection_total_s": t_done - t_start}
    return DemoRun(frames=frames, ground_truth=gt, camera_pose=np.asarray(doc["camera_pose_world"]),
                   timings=timings, render_times=list(collector.render_times.values()),
                   deserialize_times=list(collector.deserialize_s),
                   info={"weights": str(s.weights), "resolution": f"{s.width}x{s.height}",
                         "rate_hz": s.rate_hz, "objects": list(s.objects), "seed": s.seed,
                         "namespace": s.namespace, "node_params": list(s.node_params),
                         "fastdds_transports": dds_transports(os.environ),
                         "up_camera": up_in_camera(sim_camera_config(s)),
                         "processes": "sim_camera and reconstruction_node as separate processes",
                         "results_without_held_input": collector.unmatched,
                         "results_with_non_mask_ids": collector.non_mask_labels})
