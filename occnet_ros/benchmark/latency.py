"""Section "latency": one object, stage by stage, for clouds of 1k, 5k and 20k observed points.

The object's points sit in a 640x480 organized cloud with an instance mask (background points around
them), as the node receives them. Stages, each a median over the repeats: crop (the mask's segments of
the frame), clean (the node's default filter), then :meth:`Reconstructor.reconstruct`'s own stages
(normalise, encode, MISE, marching cubes), the vertex colours (nearest observed point, as the node
does), then the messages the node publishes for the object (its ReconstructedObject with the
shape_msgs/Mesh and vertex colours, and the TRIANGLE_LIST marker, built by the node's own functions)
and their serialisation, when the ROS packages are installed.
"""
from __future__ import annotations

import time

import numpy as np
from scipy.spatial import cKDTree

from occnet_ros.benchmark.common import BenchContext, realistic_object, resample, summary
from occnet_ros.benchmark.mise_vs_dense import reconstructor
from occnet_ros.cloud_filter import CleanConfig, clean_cloud
from occnet_ros.segmentation import segment_by_mask

RECONSTRUCT_STAGES = ("normalize", "encode", "mise", "marching_cubes")


def organized_frame(points: np.ndarray, seed: int, width: int = 640, height: int = 480
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) float32 cloud holding ``points`` (label 1, in random pixels) among background points
    behind them (label 0) -> (xyz, mask uint16)."""
    n = points.shape[0]
    if n > width * height:
        raise ValueError(f"{n} points do not fit a {width}x{height} frame")
    rng = np.random.default_rng(seed)
    xyz = np.empty((height * width, 3), np.float32)
    v, u = np.divmod(np.arange(height * width), width)
    depth = 1.5
    xyz[:, 0] = (u - width / 2) / 615.0 * depth
    xyz[:, 1] = (v - height / 2) / 615.0 * depth
    xyz[:, 2] = depth
    xyz[rng.random(height * width) < 0.05] = np.nan  # missing returns
    mask = np.zeros(height * width, np.uint16)
    pix = rng.choice(height * width, size=n, replace=False)
    xyz[pix] = points
    mask[pix] = 1
    return xyz.reshape(height, width, 3), mask.reshape(height, width)


def node_clean_config() -> CleanConfig:
    """The node's default per-object filter (its parameters file may change it)."""
    try:
        from occnet_ros.ros.node_params import NodeParams
        return NodeParams().filter
    except ImportError:
        return CleanConfig(min_range=0.1, max_range=5.0)


def message_builder():
    """A function (segment, obj, cleaned points, colours) -> serialised bytes of what the node publishes
    for one object (its ReconstructedObject message and its TRIANGLE_LIST marker, built by the node's
    own functions), or None when the ROS packages or the generated interfaces are not installed."""
    try:
        from rclpy.serialization import serialize_message
        from std_msgs.msg import Header

        from occnet_ros.ros.markers import marker_array
        from occnet_ros.ros.object_msgs import mesh_view, object_msg
        from occnet_ros.ros.pipeline import ObjectResult
    except ImportError:
        return None

    def build(seg, obj, n_observed: int, colors: np.ndarray | None) -> int:
        header = Header(frame_id="camera")
        result = ObjectResult(seg, obj, n_observed, colors, 0.0)
        msg = object_msg(result, header)
        markers, _ = marker_array([mesh_view(result)], set(), header, 1.0)
        return len(serialize_message(msg)) + len(serialize_message(markers))

    return build


def vertex_colors(cleaned_points: np.ndarray, observed_rgb: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """The node's vertex colouring: the colour of the nearest observed point, (V, 3) uint8."""
    _, nearest = cKDTree(cleaned_points).query(np.asarray(vertices), k=1)
    return observed_rgb[nearest]


def run(ctx: BenchContext) -> dict:
    s = ctx.sizes
    view = realistic_object(ctx.seed, min_points=max(s.cloud_sizes))
    rec = reconstructor(ctx)
    clean_cfg = node_clean_config()
    build = message_builder()
    rows = []
    for n in s.cloud_sizes:
        pts = resample(view.points, n, ctx.seed)
        xyz, mask = organized_frame(pts, ctx.seed)
        image = np.random.default_rng(ctx.seed).integers(0, 256, (xyz.shape[0] * xyz.shape[1], 3), dtype=np.uint8)
        times: dict[str, list[float]] = {k: [] for k in ("crop", "clean", *RECONSTRUCT_STAGES, "colour", "message",
                                                         "total")}
        last = None
        for i in range(ctx.repeats + 1):  # the first run warms up
            t0 = time.perf_counter()
            seg = segment_by_mask(xyz, mask)[0]
            t1 = time.perf_counter()
            cleaned = clean_cloud(seg.points, clean_cfg)
            t2 = time.perf_counter()
            obj = rec.reconstruct(cleaned.points, up=view.up)
            t3 = time.perf_counter()
            colors = vertex_colors(cleaned.points, image[seg.pixels[cleaned.index]], obj.mesh.vertices)
            t35 = time.perf_counter()
            nbytes = build(seg, obj, cleaned.points.shape[0], colors) if build is not None else 0
            t4 = time.perf_counter()
            if i == 0:
                continue
            times["crop"].append(t1 - t0)
            times["clean"].append(t2 - t1)
            for k in RECONSTRUCT_STAGES:
                times[k].append(obj.timings[k])
            times["colour"].append(t35 - t3)
            times["message"].append(t4 - t35 if build is not None else float("nan"))
            times["total"].append(t4 - t0)
            last = (obj, cleaned, nbytes)
        obj, cleaned, nbytes = last
        n_evals = obj.mise_stats["n_evals"]
        stages = {k: summary(v) for k, v in times.items()}
        reconstruct_s = sum(stages[k]["median_s"] for k in RECONSTRUCT_STAGES)
        rows.append({
            "cloud_points": n, "points_after_clean": int(cleaned.points.shape[0]),
            "stages": stages,
            "reconstruct_median_s": reconstruct_s,
            "mise_n_evals": n_evals,
            "mesh_faces": int(len(obj.mesh.faces)), "message_bytes": int(nbytes),
            "floor": {"encode_s": ctx.floor_s(ctx.costs["encoder_flops_per_input_point"] * ctx.n_input_points),
                      "mise_s": ctx.decoder_floor_s(n_evals)},
        })
    return {"resolution": s.resolution, "messages_measured": build is not None,
            "clean_config": vars(clean_cfg), "sizes": rows}
