"""What ``occnet_replay`` writes next to its output bag (no rclpy): every object's last published mesh
(``meshes/<label>_<id>.ply`` and ``.glb``, vertices in the frame the node published them in, metres, with the
vertex colours when it had them), a picture of the last reconstructed frame, a per-frame timing plot and
``report.md``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from occnet_ros.replay.replay import FrameRecord, ReplayResult

PICTURE_SIZE = (480, 360)
"""(width, height) of the last-frame picture, pixels."""


def _mesh(verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None) -> trimesh.Trimesh:
    kw = {}
    if colors is not None and len(colors) == len(verts):
        kw["vertex_colors"] = np.hstack([np.asarray(colors, np.uint8), np.full((len(verts), 1), 255, np.uint8)])
    return trimesh.Trimesh(np.asarray(verts, np.float64), np.asarray(faces, np.int64), process=False, **kw)


def last_meshes(frames: list[FrameRecord]) -> dict[int, tuple[str, str, trimesh.Trimesh, float]]:
    """{object id: (label, frame id, its last published mesh, stamp of that frame)} over all frames."""
    out = {}
    for f in frames:
        for oid, label, verts, faces, colors in f.objects:
            if len(faces):
                out[oid] = (label, f.frame_id, _mesh(verts, faces, colors), f.stamp)
    return out


def write_meshes(frames: list[FrameRecord], folder: Path) -> list[Path]:
    """Each object's last mesh as PLY and GLB in ``folder``; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for oid, (label, _, mesh, _) in sorted(last_meshes(frames).items()):
        stem = "".join(c if c.isalnum() or c in "_-" else "_" for c in f"{label}_{oid}")
        for ext in ("ply", "glb"):
            path = folder / f"{stem}.{ext}"
            mesh.export(path)
            paths.append(path)
    return paths


OPTICAL_TO_Z_UP = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""Rotation of an optical frame (x right, y down, z forward) into a frame with z up and x forward, for drawing."""


def frame_picture(frame: FrameRecord, path: Path, world: bool) -> bool:
    """Shaded picture of ``frame``'s meshes (object-id colours); False when it has none. ``world``: meshes in
    a z-up world frame, else in the camera's optical frame (drawn as seen from behind the camera)."""
    from occnet_ros.demo.pictures import orbit_view, panel_figure, render_meshes
    from occnet_ros.ros.markers import id_color

    rot = np.eye(3) if world else OPTICAL_TO_Z_UP
    meshes = [(oid, _mesh(np.asarray(v) @ rot.T, f, None)) for oid, _, v, f, _ in frame.objects if len(f)]
    if not meshes:
        return False
    pts = np.vstack([m.vertices for _, m in meshes])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    # world: from an oblique corner; optical frame: from behind the camera, a little above it
    view = orbit_view((lo + hi) / 2, 2.0 * max(float(np.linalg.norm(hi - lo)), 0.05), 200.0 if world else 180.0,
                      35.0 if world else 20.0, *PICTURE_SIZE)
    img = render_meshes([m for _, m in meshes], [id_color(oid) for oid, _ in meshes], view)
    names = ", ".join(f"{label} ({oid})" for oid, label, _, f, _ in frame.objects if len(f))
    panel_figure(path, [[(names, img)]], f"frame {frame.index} at {frame.stamp:.3f} s in '{frame.frame_id}'")
    return True


def timing_plot(frames: list[FrameRecord], path: Path) -> None:
    """Seconds per reconstructed frame and objects per frame against the frame's stamp; dropped clouds marked."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    t0 = frames[0].stamp if frames else 0.0
    done = [f for f in frames if not f.dropped]
    dropped = [f for f in frames if f.dropped]
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=100)
    ax.plot([f.stamp - t0 for f in done], [f.seconds for f in done], "o-", label="processing time")
    if dropped:
        ax.plot([f.stamp - t0 for f in dropped], [0.0] * len(dropped), "rx", label="dropped cloud")
    ax.set_xlabel("cloud stamp - first stamp, s")
    ax.set_ylabel("seconds per frame")
    ax2 = ax.twinx()
    ax2.step([f.stamp - t0 for f in done], [len(f.objects) for f in done], "g", where="mid", alpha=0.6,
             label="objects")
    ax2.set_ylabel("objects")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("occnet_replay: per-frame timing")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(result: ReplayResult, out: Path, bag: Path, rate: str, world: bool) -> Path:
    """Meshes, pictures and ``report.md`` into ``out``; returns the report's path."""
    frames = result.frames
    meshes = write_meshes(frames, out / "meshes")
    timing_plot(frames, out / "timing.png")
    done = [f for f in frames if not f.dropped]
    last = next((f for f in reversed(done) if any(len(o[3]) for o in f.objects)), None)
    has_picture = last is not None and frame_picture(last, out / "last_frame.png", world)
    secs = np.array([f.seconds for f in done]) if done else np.zeros(0)
    lines = [f"# occnet_replay of `{bag}`", "",
             f"- rate: {rate}; wall time {result.wall_s:.2f} s (paced waiting {result.waited_s:.2f} s)",
             f"- clouds: {len(frames)}, reconstructed {len(done)}, dropped {len(frames) - len(done)}",
             f"- output bag: `{result.out_bag}` ({', '.join(f'{t}: {n}' for t, n in result.output_counts.items())})",
             "- topics used: " + ", ".join(f"{s} = `{t}`" for s, t in result.topics.items()), ""]
    if len(secs):
        lines += [f"Seconds per reconstructed frame: median {np.median(secs):.3f}, max {secs.max():.3f}, "
                  f"total {secs.sum():.2f}.", ""]
    lines += ["## Topics in the input bag", "", "```", result.bag_topics, "```", "",
              "## Frames", "", "| # | stamp (s) | result | objects (reused) | seconds |", "|---|---|---|---|---|"]
    for f in frames:
        what = f"dropped: {f.dropped}" if f.dropped else f.method
        lines.append(f"| {f.index} | {f.stamp:.3f} | {what.replace('|', '/')} | {len(f.objects)} ({f.reused}) | "
                     f"{f.seconds:.3f} |")
    lines += ["", "![per-frame timing](timing.png)", ""]
    if has_picture:
        lines += [f"## Last reconstructed frame ({last.index})", "", "![last frame](last_frame.png)", ""]
    if meshes:
        lines += ["## Meshes (each object's last one)", ""] + [f"- `{p.relative_to(out)}`" for p in meshes] + [""]
    if result.notes:
        lines += ["## Problems reported", ""] + [f"- {t} (x{n})" for t, n in result.notes.items()] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
