"""``occnet_reconstruct``: reconstruct a watertight mesh from one object's point cloud file.

    occnet_reconstruct CLOUD -o MESH [--up X Y Z] [--viewpoint X Y Z] [--weights PATH] [--device D]
                       [--depth DEPTH --intrinsics FX FY CX CY] [--support-plane A B C D]
                       [--point-viewpoints CENTRES.npy]

CLOUD: .ply / .pcd (open3d), .xyz / .txt (numpy, first 3 columns), .npy ((N, 3) array); points in the
camera optical frame (or any frame given ``--up`` and ``--viewpoint``), metres.
Gravity-up: ``--up`` as given (with a warning when the cloud's support plane disagrees with it by more than
the segmentation accepts); without it, estimated from the support plane in the cloud (a table around the
object), else a level camera's ``0 -1 0``; the choice is printed (:mod:`occnet_ros.perception.gravity`).
MESH: .ply / .obj / .stl / .glb, written in the same frame and units.

A cloud fused from several cameras: ``--point-viewpoints CENTRES.npy``, an (N, 3) array with the centre of
the camera that saw each point of CLOUD (same order, same frame, metres). The cloud is then also encoded
in each camera's canonical frame and the probabilities averaged, the mesh is anchored towards the right
camera, and ``--views`` defaults to the number of distinct centres (as ``occnet_eval`` does with fused views).

Known-empty space (:mod:`occnet_ros.reconstruction.known_empty`), as the node and the evaluation use it; without these
options the mesh is the network's alone:

* ``--depth DEPTH --intrinsics FX FY CX CY``: the depth image the cloud came from (.npy (h, w) float
  metres, or a 16-bit .png in millimetres, ``--depth-scale`` metres per unit), whose camera's optical
  frame is the cloud's frame; space in front of its depth is empty. The camera is the pinhole
  :class:`~occnet_ros.geometry.PinholeCamera` of these focal lengths and principal point (pixels, pixel
  centres at integer coordinates) and of the depth image's size.
* ``--support-plane A B C D``: the table, ``A x + B y + C z + D = 0`` in the cloud's frame, metres;
  nothing lies below it (its side is the one most of the cloud is on).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

CLOUD_EXTS = (".ply", ".pcd", ".xyz", ".txt", ".npy")
MESH_EXTS = (".ply", ".obj", ".stl", ".glb")
DEPTH_EXTS = (".npy", ".png")


class InputError(ValueError):
    """A cloud or mesh path that cannot be used; the message names the file."""


def read_cloud(path: str | Path) -> np.ndarray:
    """Read a point cloud file -> (N, 3) float32 (source frame, metres, as stored)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in CLOUD_EXTS:
        raise InputError(f"{path}: unknown point cloud extension {ext!r}; use one of {list(CLOUD_EXTS)}")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if ext == ".npy":
            pts = np.load(path, allow_pickle=False)
        elif ext in (".xyz", ".txt"):
            pts = np.loadtxt(path, ndmin=2)[:, :3]
        else:
            import open3d as o3d

            pts = np.asarray(o3d.io.read_point_cloud(str(path)).points)
    except Exception as e:  # unreadable / malformed
        raise InputError(f"{path}: cannot read point cloud: {e}") from e
    pts = np.asarray(pts)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"{path}: expected an (N, 3) point array, got shape {pts.shape}")
    if pts.shape[0] < 3:
        raise InputError(f"{path}: holds {pts.shape[0]} points, need at least 3")
    return pts.astype(np.float32)


def read_depth(path: str | Path, scale: float) -> np.ndarray:
    """Read a depth image -> (h, w) float32 metres (0 / NaN = no return). ``.npy``: metres as stored;
    ``.png``: integer units times ``scale`` (metres per unit)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in DEPTH_EXTS:
        raise InputError(f"{path}: unknown depth image extension {ext!r}; use one of {list(DEPTH_EXTS)}")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if ext == ".npy":
            depth = np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
        else:
            import open3d as o3d

            depth = np.asarray(o3d.io.read_image(str(path)), dtype=np.float32) * np.float32(scale)
    except Exception as e:  # unreadable / malformed
        raise InputError(f"{path}: cannot read depth image: {e}") from e
    if depth.ndim != 2 or depth.size == 0:
        raise InputError(f"{path}: expected an (h, w) depth image, got shape {depth.shape}")
    return depth


def read_point_viewpoints(path: str | Path, n_points: int) -> np.ndarray:
    """``--point-viewpoints``: an (n_points, 3) .npy of finite camera centres -> float64 array."""
    path = Path(path)
    if path.suffix.lower() != ".npy":
        raise InputError(f"{path}: --point-viewpoints must be a .npy file")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        vps = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read: {e}") from e
    if vps.shape != (n_points, 3) or not np.issubdtype(vps.dtype, np.number):
        raise InputError(f"{path}: expected ({n_points}, 3) camera centres, one per point of the cloud; "
                         f"got {vps.shape} {vps.dtype}")
    if not np.all(np.isfinite(vps)):
        raise InputError(f"{path}: camera centres must be finite")
    return vps.astype(np.float64)


def known_empty_from_args(args, points: np.ndarray):
    """The :class:`~occnet_ros.reconstruction.known_empty.KnownEmpty` that ``--depth``/``--intrinsics`` and
    ``--support-plane`` describe (default sensor-noise settings), or None when neither is given.
    points: (N, 3) the cloud, source frame, metres (orients the plane). Raises InputError naming a bad
    option."""
    from occnet_ros.geometry import PinholeCamera, Plane
    from occnet_ros.reconstruction.known_empty import DepthView, KnownEmpty, KnownEmptyConfig

    if (args.depth is None) != (args.intrinsics is None):
        raise InputError("--depth and --intrinsics go together (the depth camera's pinhole model)")
    if args.depth is None and args.support_plane is None:
        return None
    views = []
    if args.depth is not None:
        if not np.isfinite(args.depth_scale) or args.depth_scale <= 0:
            raise InputError(f"--depth-scale must be > 0, got {args.depth_scale}")
        depth = read_depth(args.depth, args.depth_scale)
        focal_and_centre = dict(zip(("fx", "fy", "cx", "cy"), args.intrinsics))
        view = DepthView(depth, PinholeCamera(width=depth.shape[1], height=depth.shape[0], **focal_and_centre))
        try:
            view.validate()
        except ValueError as e:
            raise InputError(f"--intrinsics: {e}") from e
        views.append(view)
    plane = None
    if args.support_plane is not None:
        try:
            plane = Plane.from_coefficients(*args.support_plane)
        except ValueError as e:
            raise InputError(f"--support-plane: {e}") from e
        if np.median(plane.signed_distance(points)) < 0:  # the cloud's side is the objects' side
            plane = plane.flipped()
    config = KnownEmptyConfig(support_plane=plane is not None, free_space=bool(views))
    return KnownEmpty(config, plane, views)


def gravity_up(points: np.ndarray, up, viewpoint) -> np.ndarray:
    """The up to reconstruct with, by the node's rules (:class:`~occnet_ros.perception.gravity.GravityTracker`
    with the default ``gravity`` settings): ``--up`` as given (a warning when the cloud's support plane
    disagrees), else estimated from the cloud's support plane, else a level camera's up. points: (N, 3) cloud
    frame, metres; up: (3,) or None; viewpoint: (3,) camera centre, cloud frame. What was chosen is printed
    (stdout; warnings to stderr). Returns (3,) float64 unit vector; InputError for an up of zero length."""
    from occnet_ros.perception.gravity import GravityConfig, GravityTracker
    from occnet_ros.perception.segmentation import SegmentationConfig

    try:
        tracker = GravityTracker(GravityConfig(), up, SegmentationConfig().plane_max_tilt_deg, up_name="--up",
                                 node=False)
    except ValueError as e:
        raise InputError(str(e)) from e
    decision = tracker.decide(points, viewpoint, np.random.default_rng(0))
    if decision.message is not None:
        stream = sys.stderr if decision.level == "warning" else sys.stdout
        print(f"occnet_reconstruct: {decision.message}", file=stream)
    return decision.up


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="occnet_reconstruct", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cloud", help="input point cloud (.ply .pcd .xyz .txt .npy)")
    p.add_argument("-o", "--output", required=True, help="output mesh (.ply .obj .stl .glb)")
    p.add_argument("--up", type=float, nargs=3, default=None, metavar=("X", "Y", "Z"),
                   help="gravity-up in the cloud's frame (default: estimated from the support plane in the cloud, "
                        "else a level optical frame's 0 -1 0; what was used is printed)")
    p.add_argument("--viewpoint", type=float, nargs=3, default=(0.0, 0.0, 0.0), metavar=("X", "Y", "Z"),
                   help="camera centre in the cloud's frame, metres (default: origin)")
    p.add_argument("--weights", help="checkpoint/weights file (default: the shipped weights)")
    from occnet_ros.reconstruction.config import ReconstructorConfig

    d = ReconstructorConfig()  # one default per setting, shared with the node and the Python API
    p.add_argument("--device", default=d.device, help=f"auto, cpu or cuda (default {d.device})")
    p.add_argument("--resolution0", type=int, default=d.resolution0,
                   help=f"MISE coarse grid (default {d.resolution0})")
    p.add_argument("--upsampling-steps", type=int, default=d.upsampling_steps,
                   help=f"MISE levels (default {d.upsampling_steps} -> "
                        f"{d.resolution0 * 2 ** d.upsampling_steps}^3)")
    p.add_argument("--threshold", type=float, default=d.threshold,
                   help="surface probability (default 0: the checkpoint's for --views)")
    p.add_argument("--views", type=int,
                   help="number of camera views fused into the cloud; chooses the checkpoint's threshold "
                        "(default: the distinct centres of --point-viewpoints, else 1)")
    p.add_argument("--point-viewpoints", metavar="CENTRES.npy",
                   help="(N, 3) .npy: the camera centre that saw each point of a fused CLOUD, its frame, metres")
    p.add_argument("--depth", help="depth image of the cloud's camera (.npy metres, .png --depth-scale units): "
                                   "space in front of it is empty")
    p.add_argument("--depth-scale", type=float, default=0.001,
                   help="metres per unit of a .png depth image (default 0.001: millimetres)")
    p.add_argument("--intrinsics", type=float, nargs=4, metavar=("FX", "FY", "CX", "CY"),
                   help="pinhole intrinsics of --depth, pixels")
    p.add_argument("--support-plane", type=float, nargs=4, metavar=("A", "B", "C", "D"),
                   help="table plane A x + B y + C z + D = 0 in the cloud's frame, metres: nothing below it")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.output)
    try:
        if out.suffix.lower() not in MESH_EXTS:
            raise InputError(f"{out}: unknown mesh extension {out.suffix!r}; use one of {list(MESH_EXTS)}")
        points = read_cloud(args.cloud)
        up = gravity_up(points, args.up, args.viewpoint)
        known_empty = known_empty_from_args(args, points)
        vps = read_point_viewpoints(args.point_viewpoints, len(points)) if args.point_viewpoints else None
        views = args.views if args.views is not None else (len(np.unique(vps, axis=0)) if vps is not None else 1)
        if views < 1:
            raise InputError(f"--views must be >= 1, got {views}")
        from occnet_ros.network.checkpoint import CheckpointError
        from occnet_ros.reconstruction.normalization import NormalizationError
        from occnet_ros.reconstruction.reconstructor import Reconstructor

        try:
            rec = Reconstructor.from_pretrained(
                args.weights, device=args.device, resolution0=args.resolution0,
                upsampling_steps=args.upsampling_steps, threshold=args.threshold)
            obj = rec.reconstruct(points, up=up, viewpoint=args.viewpoint, known_empty=known_empty,
                                  n_views=views, point_viewpoints=vps)
        except (CheckpointError, NormalizationError, FileNotFoundError, ValueError) as e:
            raise InputError(str(e)) from e
        if obj.mesh is None or len(obj.mesh.faces) == 0:
            raise InputError(f"{args.cloud}: the network found no surface; nothing written")
        out.parent.mkdir(parents=True, exist_ok=True)
        obj.mesh.export(out)
    except InputError as e:
        print(f"occnet_reconstruct: {e}", file=sys.stderr)
        return 2
    t = obj.timings
    print(f"{out}: {len(obj.mesh.vertices)} vertices, {len(obj.mesh.faces)} faces, "
          f"watertight={obj.mesh.is_watertight}, {obj.mise_stats['n_evals']} network evaluations, "
          f"{t['total']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
