"""Shared test helpers: a generated tabletop scene seen by a pinhole camera (numpy only), a random-weight
test-double checkpoint, and helpers to run the ROS node in a separate process.

Nothing here imports rclpy at module level, so pure-numpy tests can use the scene generator.
"""
from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from occnet_ros.cli.processes import stop_process
from occnet_ros.geometry import PinholeCamera

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

BOX_LABEL = 1
SPHERE_LABEL = 2


@dataclass
class Scene:
    """A rendered frame. ``xyz`` (H, W, 3) float32 camera optical frame, metres, NaN without a return;
    ``mask`` (H, W) uint16 instance labels (0 table/background, 1 box, 2 sphere); ``rgb`` (H, W, 3) uint8;
    ``camera``: the pinhole camera of the image (pixel centres at integer coordinates); ``up`` (3,)
    gravity-up in the optical frame; ``sphere_center`` / ``box_center`` (3,) in the optical frame."""

    xyz: np.ndarray
    mask: np.ndarray
    rgb: np.ndarray
    camera: PinholeCamera
    up: np.ndarray
    sphere_center: np.ndarray
    box_center: np.ndarray
    sphere_radius: float


def render_scene(width: int = 160, height: int = 120, noise: float = 0.0, seed: int = 0) -> Scene:
    """A 10 cm box and a 6 cm-radius sphere standing on the plane z = 0 of a z-up world, seen by a camera
    0.5 m above the plane looking down at about 35 degrees. Ray-cast analytically, vectorised."""
    eye = np.array([-0.7, 0.0, 0.5])
    target = np.array([0.0, 0.0, 0.05])
    fwd = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(fwd, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    r_wc = np.stack([right, down, fwd], axis=1)  # columns: optical axes in world
    fx = fy = 0.9 * width
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    d_cam = np.stack([(u - cx) / fx, (v - cy) / fy, np.ones_like(u)], axis=-1)
    d = d_cam @ r_wc.T  # world directions, not normalised (t scales the optical z)
    t = np.full(u.shape, np.inf)
    label = np.zeros(u.shape, np.uint16)
    # plane z = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        tp = -eye[2] / d[..., 2]
    hit = (tp > 0) & np.isfinite(tp)
    t[hit] = tp[hit]
    # sphere
    sc, sr = np.array([0.1, 0.12, 0.06]), 0.06
    oc = eye - sc
    a = (d * d).sum(-1)
    b = 2 * (d * oc).sum(-1)
    c = (oc * oc).sum() - sr * sr
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        ts = (-b - np.sqrt(disc)) / (2 * a)
    hit = (disc > 0) & (ts > 0) & (ts < t)
    t[hit], label[hit] = ts[hit], SPHERE_LABEL
    # axis-aligned box
    bc, bh = np.array([0.05, -0.12, 0.05]), np.array([0.05, 0.05, 0.05])
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (bc - bh - eye) / d
        t2 = (bc + bh - eye) / d
    tnear = np.nanmax(np.minimum(t1, t2), axis=-1)
    tfar = np.nanmin(np.maximum(t1, t2), axis=-1)
    hit = (tnear <= tfar) & (tnear > 0) & (tnear < t)
    t[hit], label[hit] = tnear[hit], BOX_LABEL
    xyz = (d_cam * t[..., None]).astype(np.float32)
    xyz[~np.isfinite(t) | (t > 5)] = np.nan
    if noise > 0:
        xyz += np.random.default_rng(seed).normal(scale=noise, size=xyz.shape).astype(np.float32)
    label[~np.isfinite(xyz).all(-1)] = 0
    colours = np.array([[90, 90, 90], [200, 30, 30], [30, 30, 200]], np.uint8)
    rgb = colours[label]
    up_cam = r_wc.T @ np.array([0, 0, 1.0])
    camera = PinholeCamera(width=width, height=height, fx=fx, fy=fy, cx=cx, cy=cy)
    return Scene(xyz, label, rgb, camera, up_cam, r_wc.T @ (sc - eye), r_wc.T @ (bc - eye), sr)


def write_random_checkpoint(path: Path, seed: int = 0) -> Path:
    """A TEST DOUBLE: a randomly initialised (untrained) network saved as a checkpoint, for plumbing tests."""
    import torch

    from occnet_ros.network.checkpoint import CheckpointMeta, save_checkpoint
    from occnet_ros.network.model import ModelConfig, OccupancyNetwork

    torch.manual_seed(seed)
    model = OccupancyNetwork(ModelConfig(c_dim=32, encoder_hidden=32, encoder_blocks=2, decoder_hidden=32,
                                         decoder_blocks=2))
    return save_checkpoint(path, model, CheckpointMeta(extra={"test_double": "random weights, untrained"}))


def random_domain_id() -> int:
    """A ROS_DOMAIN_ID for one test module (0..101 are the valid Fast DDS domain ids on Linux)."""
    return random.SystemRandom().randint(20, 99)


def node_env(domain_id: int) -> dict:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("ROS_LOCALHOST_ONLY", None)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    return env


def start_program(name: str, ros_args: list[str], domain_id: int, log_path: Path) -> subprocess.Popen:
    """Start ``.venv/bin/<name> --ros-args ...`` with its output in ``log_path``."""
    exe = VENV_BIN / name
    cmd = [str(exe)] + (["--ros-args"] + ros_args if ros_args else [])
    log = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=node_env(domain_id), cwd=str(REPO))


@contextlib.contextmanager
def node_process(tmp_dir: Path, domain_id: int, node_args: list[str], checkpoint: Path | None = None):
    """``reconstruction_node`` in its own process on ``domain_id`` with ``node_args`` (``-p name:=value`` ...)
    and a random-weight checkpoint (TEST DOUBLE) written into ``tmp_dir`` unless ``checkpoint`` is given; its
    output in ``tmp_dir/node.log`` (the Popen's ``log_path``). Stopped (SIGINT, then SIGKILL) on exit."""
    ckpt = checkpoint if checkpoint is not None else write_random_checkpoint(tmp_dir / "random_test_double.pt")
    log = tmp_dir / "node.log"
    proc = start_program("reconstruction_node", list(node_args) + ["-p", f"checkpoint:={ckpt}"], domain_id, log)
    proc.log_path = log
    try:
        yield proc
    finally:
        stop_program(proc)


def stop_program(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """SIGINT, then SIGKILL after ``timeout`` seconds; returns the exit code."""
    return stop_process(proc, timeout)


def wait_until(predicate, timeout: float, step: float = 0.05, spin=None) -> bool:
    """Call ``spin()`` (if given) and ``predicate()`` until it is true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if spin is not None:
            spin()
        if predicate():
            return True
        if spin is None:
            time.sleep(step)
    return bool(predicate())


@contextlib.contextmanager
def node_in_process(tmp_path: Path, ros_args: tuple[str, ...] = (), **params):
    """A reconstruction node in this process, in its own rclpy context on a random domain, with a random
    checkpoint (TEST DOUBLE), on the CPU at 16^3 and ``params`` (dotted name = value; ``__`` stands for a
    dot, e.g. ``segmentation__min_points=20``); ``ros_args``: the context's global ROS arguments (remaps);
    stopped and shut down on exit."""
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    from occnet_ros.ros.reconstruction_node import ReconstructionNode

    ckpt = write_random_checkpoint(tmp_path / "random_test_double.pt")
    values = {"reconstruction.device": "cpu", "checkpoint": str(ckpt), "reconstruction.resolution0": 8,
              "reconstruction.upsampling_steps": 1, **{k.replace("__", "."): v for k, v in params.items()}}
    ctx = Context()
    rclpy.init(args=["--ros-args", *ros_args] if ros_args else None, context=ctx, domain_id=random_domain_id(),
               signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = ReconstructionNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
        try:
            yield node
        finally:
            node.stop()
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
