"""Picture grids of procedural shape families: one PNG per family with sample meshes drawn by matplotlib.

    .venv/bin/python tools/render_families.py                       # the household families -> out/families/
    .venv/bin/python tools/render_families.py --families pan tray --n 6 --split heldout

Each shape's marching-cubes mesh is ray cast from two viewpoints (40 and 10 degrees above the table), its
axis-aligned size in the title; training draws use seeds 0..n-1 of the training sampler, ``--split heldout``
the held-out shapes (written as ``<family>_heldout.png``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _shaded_view(mesh, elevation_deg: float, azimuth_deg: float, size: int = 320) -> np.ndarray:
    """(size, size) float image of ``mesh`` ray cast by open3d from a camera looking at its centre from
    ``elevation_deg`` above the table plane: grey levels from the surface normal (head light), 1 = background."""
    import open3d as o3d

    from occnet_ros.data.virtual_camera import look_at_pose

    lo, hi = mesh.bounds
    centre, radius = 0.5 * (lo + hi), 0.5 * float(np.linalg.norm(hi - lo))
    el, az = np.radians(elevation_deg), np.radians(azimuth_deg)
    eye = centre + 3.2 * radius * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    pose = look_at_pose(eye, centre)
    f = size * 1.4
    v, u = np.mgrid[0:size, 0:size]
    dirs = np.stack([(u - size / 2) / f, (v - size / 2) / f, np.ones_like(u, dtype=float)], -1).reshape(-1, 3)
    dirs = dirs @ pose[:3, :3].T
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                        o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
    rays = np.concatenate([np.broadcast_to(pose[:3, 3], dirs.shape), dirs], axis=1).astype(np.float32)
    ans = scene.cast_rays(o3d.core.Tensor(rays))
    hit = np.isfinite(ans["t_hit"].numpy())
    normals = ans["primitive_normals"].numpy()
    shade = 0.2 + 0.75 * np.abs(np.einsum("ij,ij->i", normals, dirs))
    return np.where(hit, shade, 1.0).reshape(size, size)


def render_family(family: str, n: int, split: str, out_dir: Path, resolution: int = 48) -> Path:
    """Write ``<out_dir>/<family>.png`` (a grid of ``n`` sample meshes of ``family``, each seen from above
    at 40 degrees and from the side at 10 degrees) and return its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from occnet_ros.data.shapes import sample_shape
    from occnet_ros.data.shapes_household import heldout_shapes

    if split == "heldout":
        shapes = heldout_shapes(family, n)
    else:
        shapes = [sample_shape(np.random.default_rng(seed), family) for seed in range(n)]
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(4.4 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, shape in enumerate(shapes):
        mesh = shape.mesh(resolution)
        ext = 100 * mesh.extents
        for j, (el, az) in enumerate([(40.0, -60.0), (10.0, 30.0)]):
            ax = axes[k // cols, 2 * (k % cols) + j]
            ax.imshow(_shaded_view(mesh, el, az), cmap="gray", vmin=0, vmax=1)
            if j == 0:
                label = f"#{getattr(shape, 'design', k)}" if split == "heldout" else f"seed {k}"
                ax.set_title(f"{family} {label}: {ext[0]:.0f}x{ext[1]:.0f}x{ext[2]:.0f} cm", fontsize=8, loc="left")
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{family}{'_heldout' if split == 'heldout' else ''}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    from occnet_ros.data.shapes import FAMILIES
    from occnet_ros.data.shapes_household import HOUSEHOLD_FAMILIES

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=list(HOUSEHOLD_FAMILIES), help="families (default: household)")
    p.add_argument("--n", type=int, default=8, help="shapes per family (default 8)")
    p.add_argument("--split", choices=["train", "heldout"], default="train")
    p.add_argument("--out", default="out/families", help="output folder (default out/families)")
    args = p.parse_args(argv)
    unknown = [f for f in args.families if f not in FAMILIES]
    if unknown or args.n < 1 or (args.split == "heldout" and set(args.families) - set(HOUSEHOLD_FAMILIES)):
        print(f"render_families: unknown families {unknown} or --n < 1 (held-out: household families only: "
              f"{list(HOUSEHOLD_FAMILIES)})", file=sys.stderr)
        return 2
    for family in args.families:
        print(render_family(family, args.n, args.split, Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
