"""Compare the two quadric decimations of :mod:`occnet_ros.perception.mesh_ops` on realistic meshes.

Meshes: marching cubes (:func:`occnet_ros.reconstruction.mise.mesh_from_values`) at 64^3 and 128^3 of
(a) analytic signed-distance shapes (sphere, box, torus, a mug: a hollow cylinder with a bottom and a
handle), placed like an object the node sees (0.2 m canonical unit, 0.8 m in front of the camera, metres);
(b) with ``--network``, the shipped network's meshes (:meth:`Reconstructor.from_config`, default config
at 64^3 and its 128^3 variant) from a cloud sampled on the camera-facing half of each shape.

Each mesh is reduced to 20000 and 5000 faces by :func:`quadric_decimation` (``open3d``),
:func:`fast_quadric_decimation` (``fast``, fast-simplification) and :func:`fast_or_open3d_decimation`
(``default``: fast, Open3D where fast opens a closed mesh) and
:func:`~occnet_ros.perception.mesh_parts.parted_decimation` (``slabs``: two slabs decimated with their cut kept,
here one after the other; the node's worker processes decimate them at once). Per case: time (median of ``--repeats`` calls),
faces, surface error against the undecimated mesh, whether the result is a closed surface
(:func:`is_closed_surface`) and whether :func:`simplify_mesh` (keep_closed) would reject it.

Surface error: ``--samples`` points sampled uniformly on each surface (seeded), exact point-to-triangle
distances to the other surface by ``trimesh.proximity.closest_point``; ``mean`` is the mean of the two
directions' means, ``max`` the larger of the two maxima (a sampled symmetric Hausdorff distance). The
distances are computed with both meshes scaled so that the reference's bounding box has a longest edge
of 1 and reported in millimetres: trimesh's point-triangle test compares products of squared edge lengths
with an absolute tolerance (``tol.zero``) and misplaces points over triangles with sub-millimetre edges
when the coordinates are metres.

GIL (:func:`gil_probe`): a pure-Python thread counts while the main thread decimates the largest mesh
(repeated for at least 1 s); its rate is compared with its rate while the main thread sleeps (near 0: the
decimation holds the GIL; near 1: it releases it), and its longest stall with one call's duration. Probed:
Open3D, ``fast_simplification.simplify`` alone (load, simplify and read back: three C++ calls with Python
in between) and :func:`fast_quadric_decimation` (that plus numpy work, which releases the GIL in places).

Writes ``out/decimation/decimation.md`` (tables) and ``out/decimation/decimation.png`` (time and error
per case). Run: ``.venv/bin/python tools/compare_decimators.py [--network] [--repeats 5]``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from occnet_ros.perception.mesh_ops import (FAST_AGGRESSIVENESS, fast_or_open3d_decimation,  # noqa: E402
                                            fast_quadric_decimation, is_closed_surface, quadric_decimation,
                                            simplify_mesh)
from occnet_ros.perception.mesh_parts import parted_decimation  # noqa: E402

UNIT_M = 0.2  # metres per canonical unit (an object about 20 cm across)
OFFSET_M = np.array([0.05, 0.02, 0.8])  # object centre in the camera optical frame, metres
UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # canonical z (up) -> camera -y
BOX_HALF = 0.55  # canonical grid half edge (the network's box)
TARGETS = (20000, 5000)
METHODS: dict[str, Callable] = {"open3d": quadric_decimation, "fast": fast_quadric_decimation,
                                "default": fast_or_open3d_decimation, "slabs": parted_decimation}


# ------------------------------------------------------------------ shapes (canonical units, negative inside)

def sdf_sphere(p: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p, axis=-1) - 0.4


def sdf_box(p: np.ndarray) -> np.ndarray:
    q = np.abs(p) - np.array([0.4, 0.3, 0.2])
    return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)


def sdf_torus(p: np.ndarray, major: float = 0.3, minor: float = 0.12) -> np.ndarray:
    return np.hypot(np.hypot(p[..., 0], p[..., 1]) - major, p[..., 2]) - minor


def sdf_mug(p: np.ndarray) -> np.ndarray:
    """Hollow cylinder (outer radius 0.3, wall 0.04, height 0.8, bottom 0.06) with a ring handle at +x."""
    r = np.hypot(p[..., 0], p[..., 1])
    z = p[..., 2]
    outer = np.maximum(r - 0.3, np.abs(z) - 0.4)
    inner = np.maximum(r - 0.26, np.maximum(-0.34 - z, z - 0.45))  # cavity open at the top
    cup = np.maximum(outer, -inner)
    h = p - np.array([0.3, 0.0, 0.0])  # handle: torus in the x-z plane around (0.3, 0, 0)
    handle = np.hypot(np.hypot(h[..., 0], h[..., 2]) - 0.17, h[..., 1]) - 0.04
    handle = np.maximum(handle, 0.28 - p[..., 0])  # only its outer part
    return np.minimum(cup, handle)


SHAPES = {"sphere": sdf_sphere, "box": sdf_box, "torus": sdf_torus, "mug": sdf_mug}


def _yawed(sdf: Callable, yaw: float) -> Callable:
    """``sdf`` turned by ``yaw`` radians about the canonical z (up) axis."""
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return lambda p: sdf(p @ rot)


def analytic_mesh(sdf: Callable, resolution: int, yaw: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of ``sdf`` (turned by ``yaw`` radians about its up axis) on a (resolution+1)^3
    corner grid over the network's box -> vertices (V, 3) float64 metres in the camera optical frame
    (shape upright: its z along the camera's -y), faces (F, 3) int64."""
    from occnet_ros.reconstruction.mise import mesh_from_values

    g = np.linspace(-BOX_HALF, BOX_HALF, resolution + 1)
    grid = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1)
    v, f = mesh_from_values((-_yawed(sdf, yaw)(grid)).astype(np.float32), 0.0, BOX_HALF)
    return v.astype(np.float64) @ UP.T * UNIT_M + OFFSET_M, f


def surface_cloud(sdf: Callable, yaw: float = 0.0, n: int = 3000, seed: int = 0) -> np.ndarray:
    """(n, 3) float32 points, metres (camera frame), on the camera-facing half of the shape's surface."""
    import trimesh

    v, f = analytic_mesh(sdf, 64, yaw)
    mesh = trimesh.Trimesh(v, f, process=False)
    pts, idx = trimesh.sample.sample_surface(mesh, 4 * n, seed=seed)
    facing = np.einsum("ij,ij->i", mesh.face_normals[idx], pts) < 0.0  # normal towards the camera at 0
    return pts[facing][:n].astype(np.float32)


def network_meshes(resolutions: tuple[int, ...], views: int = 1) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"net-<shape>-<R>[-v<k>]": (vertices metres, faces)} from the shipped network, default config
    (64^3) and ``upsampling_steps`` raised for 128^3; ``views`` clouds per shape (view k: the shape turned
    by 0.7 k rad about its up axis, cloud seed k)."""
    from dataclasses import replace

    from occnet_ros.reconstruction.reconstructor import Reconstructor, ReconstructorConfig

    out = {}
    base = ReconstructorConfig(device="cpu")
    for res in resolutions:
        steps = int(round(np.log2(res / base.resolution0)))
        rec = Reconstructor.from_config(replace(base, upsampling_steps=steps))
        for name, sdf in SHAPES.items():
            for k in range(views):
                obj = rec.reconstruct(surface_cloud(sdf, 0.7 * k, seed=k), up=(0.0, -1.0, 0.0))
                out[f"net-{name}-{res}" + (f"-v{k}" if k else "")] = (np.asarray(obj.mesh.vertices, np.float64),
                                                                     np.asarray(obj.mesh.faces, np.int64))
    return out


def closed_sweep(meshes: dict) -> dict:
    """{method: (cases whose closed input came out open, cases)} over ``meshes`` x :data:`TARGETS`
    (no timing, no error)."""
    counts = {m: [0, 0] for m in METHODS}
    for v, f in meshes.values():
        if not is_closed_surface(f):
            continue
        for target in TARGETS:
            if len(f) <= target:
                continue
            for m, fn in METHODS.items():
                counts[m][0] += not is_closed_surface(fn(v, f, target)[1])
                counts[m][1] += 1
    return {m: tuple(c) for m, c in counts.items()}


# ------------------------------------------------------------------ measurements

def timed(fn: Callable, repeats: int):
    """(median seconds over ``repeats`` calls, last result)."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def surface_error_mm(ref_v, ref_f, v, f, samples: int, seed: int = 0) -> tuple[float, float]:
    """(symmetric mean, sampled symmetric Hausdorff) distance between two meshes, millimetres; see the
    module docstring for the method."""
    import trimesh

    lo, hi = ref_v.min(axis=0), ref_v.max(axis=0)
    center, scale = 0.5 * (lo + hi), float(np.max(hi - lo))
    a = trimesh.Trimesh((ref_v - center) / scale, ref_f, process=False)
    b = trimesh.Trimesh((v - center) / scale, f, process=False)
    pa, _ = trimesh.sample.sample_surface(a, samples, seed=seed)
    pb, _ = trimesh.sample.sample_surface(b, samples, seed=seed + 1)
    dab = trimesh.proximity.closest_point(b, pa)[1]
    dba = trimesh.proximity.closest_point(a, pb)[1]
    k = scale * 1000.0
    return 0.5 * (dab.mean() + dba.mean()) * k, max(dab.max(), dba.max()) * k


def _raw_fast(v: np.ndarray, f: np.ndarray, target: int):
    """The library call alone (first pass of :func:`fast_quadric_decimation`) on contiguous float64 (V, 3)
    and int64 (F, 3) arrays."""
    import fast_simplification

    return fast_simplification.simplify(v, f, target_count=target, agg=FAST_AGGRESSIVENESS[0])


def gil_probe(fn: Callable, min_s: float = 1.0) -> dict:
    """Whether ``fn`` holds the GIL, seen from a pure-Python thread that counts (and notes the longest gap
    between two of its iterations) while this thread calls ``fn`` repeatedly for ``min_s`` seconds, and
    while this thread sleeps as long. -> {"ratio": counting rate during back-to-back calls / while sleeping
    (~0 = held, ~1 = released), "stall_s": the longest gap while calls run 20 ms apart (~ one call: held
    for the whole call), "idle_stall_s": the longest gap while sleeping,
    "call_s": median duration of one call}; medians of 3 runs."""
    def run(work: Callable) -> tuple[float, float]:
        state = {"count": 0, "gap": 0.0}
        stop = threading.Event()

        def counter():
            last = time.perf_counter()
            while not stop.is_set():
                now = time.perf_counter()
                state["gap"] = max(state["gap"], now - last)
                last = now
                state["count"] += 1
        t = threading.Thread(target=counter, daemon=True)
        t.start()
        time.sleep(0.05)
        c0, t0 = state["count"], time.perf_counter()
        state["gap"] = 0.0
        work()
        c1, t1 = state["count"], time.perf_counter()
        gap = state["gap"]
        stop.set()
        t.join()
        return (c1 - c0) / (t1 - t0), gap

    calls: list[float] = []

    def busy(pause: float = 0.0):
        t_end = time.perf_counter() + min_s
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            fn()
            calls.append(time.perf_counter() - t0)
            time.sleep(pause)
    idle = [run(lambda: time.sleep(min_s)) for _ in range(3)]
    during = [run(busy) for _ in range(3)]  # back to back: the rate
    spaced = [run(lambda: busy(0.02)) for _ in range(3)]  # 20 ms apart: a stall is one call's
    return {"ratio": statistics.median(d[0] for d in during) / statistics.median(i[0] for i in idle),
            "stall_s": statistics.median(d[1] for d in spaced),
            "idle_stall_s": statistics.median(i[1] for i in idle), "call_s": statistics.median(calls)}


def measure(meshes: dict, repeats: int, samples: int) -> list[dict]:
    """One row per (mesh, target, method): see the module docstring."""
    v0, f0 = analytic_mesh(sdf_sphere, 16)
    for fn in METHODS.values():  # imports and first-call costs out of the timings
        fn(v0, f0, 100)
    rows = []
    for name, (v, f) in meshes.items():
        closed_in = is_closed_surface(f)
        for target in TARGETS:
            for method, fn in METHODS.items():
                row = {"mesh": name, "faces_in": len(f), "closed_in": closed_in, "target": target,
                       "method": method}
                if len(f) <= target:
                    rows.append({**row, "skipped": True})
                    continue
                dt, (sv, sf) = timed(lambda: fn(v, f, target), repeats)
                s = simplify_mesh(v, f, target, keep_closed=True, decimate=fn)
                used = np.unique(sf)
                mean_mm, max_mm = surface_error_mm(v, f, sv[used], np.searchsorted(used, sf), samples)
                rows.append({**row, "skipped": False, "time_s": dt, "faces_out": len(sf),
                             "closed_out": is_closed_surface(sf), "rejected": closed_in and not s.simplified,
                             "mean_mm": mean_mm, "max_mm": max_mm})
                print(f"{name:16s} {len(f):7d} -> {target:5d} {method:6s} {dt:7.3f} s  {len(sf):6d} faces  "
                      f"closed {rows[-1]['closed_out']!s:5s} err {mean_mm:.4f}/{max_mm:.3f} mm", flush=True)
    return rows


# ------------------------------------------------------------------ report

def write_report(rows: list[dict], gil: dict, gil_mesh: str, out_dir: Path, repeats: int, samples: int,
                 sweep: tuple[int, dict] | None = None) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    done = [r for r in rows if not r["skipped"]]
    names = list(METHODS)
    by = {(r["mesh"], r["target"], r["method"]): r for r in rows}
    cases = list(dict.fromkeys((r["mesh"], r["target"]) for r in rows))
    lines = ["# Quadric decimation: Open3D vs fast-simplification\n",
             f"Time: median of {repeats} calls, seconds. Error: {samples} surface samples per mesh, exact "
             "point-to-triangle distances (trimesh.proximity, in a frame scaled to the mesh's size), symmetric "
             "mean / max, mm. closed: the output is a closed surface (a closed input that comes out open is "
             "rejected by simplify_mesh(keep_closed=True), which then returns the whole input). "
             "default = fast, Open3D where fast opens a closed mesh.\n",
             "| mesh | faces in | target | " + " | ".join(f"{m} s" for m in names) + " | speed-up open3d/default | "
             + " | ".join(f"{m} mean / max mm" for m in names[:2]) + " | closed " + "/".join(names) + " |",
             "|" + "---|" * (len(names) + 7)]
    for mesh, target in cases:
        r = [by[(mesh, target, m)] for m in names]
        if r[0]["skipped"]:
            lines.append(f"| {mesh} | {r[0]['faces_in']} | {target} | input within target |"
                         + " |" * (len(names) + 3))
            continue
        closed = "/".join("yes" if x["closed_out"] else "**NO**" for x in r)
        lines.append(f"| {mesh} | {r[0]['faces_in']} | {target} | " + " | ".join(f"{x['time_s']:.3f}" for x in r)
                     + f" | {r[0]['time_s'] / r[-1]['time_s']:.1f}x | "
                     + " | ".join(f"{x['mean_mm']:.4f} / {x['max_mm']:.3f}" for x in r[:2]) + f" | {closed} |")
    lines.append("\n| method | cases | faces over target | closed kept | rejected by keep_closed | "
                 "total time s | mean of mean errors mm | mean of max errors mm |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for method in names:
        rs = [r for r in done if r["method"] == method]
        closed_cases = [r for r in rs if r["closed_in"]]
        lines.append(f"| {method} | {len(rs)} | {sum(r['faces_out'] > r['target'] for r in rs)} | "
                     f"{sum(r['closed_out'] for r in closed_cases)}/{len(closed_cases)} | "
                     f"{sum(r['rejected'] for r in rs)} | {sum(r['time_s'] for r in rs):.2f} | "
                     f"{np.mean([r['mean_mm'] for r in rs]):.4f} | {np.mean([r['max_mm'] for r in rs]):.3f} |")
    if sweep is not None:
        n, counts = sweep
        lines.append(f"\nClosedness on {n} more network meshes (other views) x targets {TARGETS}: closed input "
                     "came out open in " + ", ".join(f"{m} {o}/{c}" for m, (o, c) in counts.items()) + ".")
    lines.append(f"\nGIL, on {gil_mesh}: a pure-Python thread's counting rate while the call runs / while the "
                 "caller sleeps (~0 = GIL held, ~1 = released), and its longest stall.\n")
    lines.append("| call | one call s | rate ratio | longest stall s | longest stall while idle s |")
    lines.append("|---|---|---|---|---|")
    for m, g in gil.items():
        lines.append(f"| {m} | {g['call_s']:.3f} | {g['ratio']:.2f} | {g['stall_s']:.3f} | {g['idle_stall_s']:.3f} |")
    (out_dir / "decimation.md").write_text("\n".join(lines) + "\n")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = sorted({(r["mesh"], r["target"]) for r in done}, key=lambda k: (k[0], -k[1]))
    x = np.arange(len(labels))
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.5 * len(labels) + 2), 7), sharex=True)
    w = 0.8 / len(names)
    for i, method in enumerate(names):
        t = [by[(m, tg, method)]["time_s"] for m, tg in labels]
        e = [by[(m, tg, method)]["mean_mm"] for m, tg in labels]
        axes[0].bar(x + (i - (len(names) - 1) / 2) * w, t, w, label=method)
        axes[1].bar(x + (i - (len(names) - 1) / 2) * w, e, w, label=method)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("time, s (median)")
    axes[1].set_ylabel("symmetric mean error, mm")
    axes[1].set_xticks(x, [f"{m}\n→{tg}" for m, tg in labels], rotation=90, fontsize=7)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "decimation.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--network", action="store_true", help="also the shipped network's meshes")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per case (median)")
    ap.add_argument("--samples", type=int, default=50000, help="surface samples per mesh for the error")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--sweep-views", type=int, default=0, help="closedness only, on the network's meshes "
                    "of this many more views per shape (0 = none)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "decimation")
    args = ap.parse_args(argv)

    meshes = {f"{name}-{res}": analytic_mesh(sdf, res) for res in args.resolutions for name, sdf in SHAPES.items()}
    if args.network:
        meshes.update(network_meshes(tuple(args.resolutions)))
    rows = measure(meshes, args.repeats, args.samples)
    big = max(meshes, key=lambda k: len(meshes[k][1]))
    v, f = meshes[big]
    lo, hi = v.min(axis=0), v.max(axis=0)
    unit_v = np.ascontiguousarray((v - 0.5 * (lo + hi)) / np.max(hi - lo))
    gil = {"open3d (quadric_decimation)": gil_probe(lambda: quadric_decimation(v, f, 5000)),
           "fast_simplification.simplify alone": gil_probe(lambda: _raw_fast(unit_v, f, 5000)),
           "fast_quadric_decimation": gil_probe(lambda: fast_quadric_decimation(v, f, 5000))}
    print("GIL:", gil, "on", big, f"({len(f)} faces)")
    sweep = None
    if args.sweep_views:
        extra = network_meshes(tuple(args.resolutions), views=args.sweep_views + 1)
        extra = {k: m for k, m in extra.items() if "-v" in k}  # view 0 is measured above
        sweep = (len(extra), closed_sweep(extra))
        print("closedness sweep:", sweep)
    write_report(rows, gil, f"{big}, {len(f)} faces -> 5000", args.out, args.repeats, args.samples, sweep)
    print(f"wrote {args.out / 'decimation.md'} and {args.out / 'decimation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
