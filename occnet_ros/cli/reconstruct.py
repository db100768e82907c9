"""``occnet_reconstruct``: reconstruct a watertight mesh from one object's point cloud file.

    occnet_reconstruct CLOUD -o MESH [--up X Y Z] [--viewpoint X Y Z] [--weights PATH] [--device D]

CLOUD: .ply / .pcd (open3d), .xyz / .txt (numpy, first 3 columns), .npy ((N, 3) array); points in the
camera optical frame (or any frame given ``--up`` and ``--viewpoint``), metres.
MESH: .ply / .obj / .stl / .glb, written in the same frame and units.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

CLOUD_EXTS = (".ply", ".pcd", ".xyz", ".txt", ".npy")
MESH_EXTS = (".ply", ".obj", ".stl", ".glb")


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="occnet_reconstruct", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cloud", help="input point cloud (.ply .pcd .xyz .txt .npy)")
    p.add_argument("-o", "--output", required=True, help="output mesh (.ply .obj .stl .glb)")
    p.add_argument("--up", type=float, nargs=3, default=(0.0, -1.0, 0.0), metavar=("X", "Y", "Z"),
                   help="gravity-up in the cloud's frame (default: level optical frame 0 -1 0)")
    p.add_argument("--viewpoint", type=float, nargs=3, default=(0.0, 0.0, 0.0), metavar=("X", "Y", "Z"),
                   help="camera centre in the cloud's frame, metres (default: origin)")
    p.add_argument("--weights", help="checkpoint/weights file (default: the shipped weights)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--resolution0", type=int, default=32, help="MISE coarse grid (default 32)")
    p.add_argument("--upsampling-steps", type=int, default=2, help="MISE levels (default 2 -> 128^3)")
    p.add_argument("--threshold", type=float, help="surface probability (default: the checkpoint's)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.output)
    try:
        if out.suffix.lower() not in MESH_EXTS:
            raise InputError(f"{out}: unknown mesh extension {out.suffix!r}; use one of {list(MESH_EXTS)}")
        points = read_cloud(args.cloud)
        from occnet_ros.checkpoint import CheckpointError
        from occnet_ros.normalization import NormalizationError
        from occnet_ros.reconstructor import Reconstructor

        try:
            rec = Reconstructor.from_pretrained(
                args.weights, device=args.device, resolution0=args.resolution0,
                upsampling_steps=args.upsampling_steps, threshold=args.threshold)
            obj = rec.reconstruct(points, up=args.up, viewpoint=args.viewpoint)
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
