"""Section "latency": one object, stage by stage, as ``reconstruction_node`` processes it, for clouds of
1k, 5k and 20k observed points.

The object's points sit in a 640x480 organized cloud with an instance mask (background points around
them) and a colour image, as the node receives them. The node's parameters are the shipped ones
(``config/reconstruct.yaml``, else the defaults of :class:`~occnet_ros.ros.node_params.NodeParams`);
only the network and the MISE resolution are the benchmark's (``reconstruction.mirror_average`` and
``reconstruction.input_subsamples`` are the node's). Stages, each a median over the repeats, in the order of :meth:`FramePipeline.process <occnet_ros.perception.frame_pipeline.FramePipeline.process>` and the
node's ``_process``:

- crop: the mask's segments of the frame (:meth:`FramePipeline.segment`, size limits included);
- clean: the node's per-object filter (parameters ``filter.*``);
- known_empty: building the object's empty-space test (``known_empty.*``: the depth bound of the view
  the points came from and the table plane; the node builds it once per frame); testing the MISE
  points against it is part of ``mise``;
- normalize, encode, mise, marching_cubes, simplify, anchor: :meth:`Reconstructor.reconstruct`'s own stages, with
  the node's mesh reduction passed as its ``simplify`` (:attr:`FramePipeline.simplify
  <occnet_ros.perception.frame_pipeline.FramePipeline.simplify>`: ``mesh.max_faces``, face counts before and after
  are reported), so the anchoring works on the reduced mesh as in the node; where the decimation workers mesh the MISE
  grid in slabs (:meth:`ParallelDecimation.mesh_grid <occnet_ros.perception.parallel_decimation.ParallelDecimation.mesh_grid>`,
  the node's default for a large surface), marching cubes runs there and its time is part of simplify
  (marching_cubes 0);
- colour: each published vertex takes the colour of the nearest observed point (``color_from_image``);
- message: :func:`~occnet_ros.ros.object_msgs.frame_messages` with markers (the node builds markers only
  while ``markers`` has subscribers; this measures that case), for a frame holding this one object: it
  writes the CDR bytes of the ReconstructedObjectArray and the MarkerArray, which the node publishes as
  they are;
- serialize: what is left between those bytes and the publisher, nothing (``frame_messages`` already
  serialized; the stage stays so that reports compare with those of message objects serialized by
  ``rclpy.serialization.serialize_message``).

message and serialize are measured only when the ROS packages and the generated interfaces are
installed (NaN otherwise). ``longest_gil_hold_s``: the longest time, over the repeats, that the object's
processing kept another Python thread waiting (:class:`~occnet_ros.benchmark.common.GilStallMeter`): how
long the node's query service could be held up by it. The decimation runs as the node runs it
(``mesh.decimate_in_worker``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from occnet_ros.benchmark.common import BenchContext, GilStallMeter, resample, summary
from occnet_ros.benchmark.mise_vs_dense import reconstructor
from occnet_ros.perception.cloud_filter import clean_cloud, nearest_colours
from occnet_ros.config_io import flatten
from occnet_ros.perception.parallel_decimation import ParallelDecimation
from occnet_ros.reconstruction.known_empty import KnownEmpty
from occnet_ros.ros.launch_spec import default_params_file
from occnet_ros.perception.mesh_ops import fast_or_open3d_decimation
from occnet_ros.ros.node_params import NODE_NAME, NodeParams, ParamError, params_from_values
from occnet_ros.perception.frame_pipeline import FrameInput, FramePipeline
from occnet_ros.perception.processed_frame import ProcessedObject

RECONSTRUCT_STAGES = ("normalize", "encode", "mise", "marching_cubes", "simplify", "anchor")
STAGES = ("crop", "clean", "known_empty", *RECONSTRUCT_STAGES, "colour", "message", "serialize", "total")
"""Keys of each size's ``stages`` (``total``: crop to serialize)."""


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


def node_params(path: str | Path | None = None) -> tuple[NodeParams, str]:
    """The parameters ``reconstruction_node`` starts with -> (params, where they came from).

    path: a ROS 2 parameter file (``<node or /**>: ros__parameters: ...``); the values for ``/**`` and
    then for the node's own name apply, as ROS applies them. None: the shipped file
    (:func:`~occnet_ros.ros.launch_spec.default_params_file`), or the :class:`NodeParams` defaults when it is
    not installed. ValueError naming the file for an unreadable file, a file without parameters for
    the node, or a bad value."""
    if path is None:
        path = default_params_file()
        if not Path(path).is_file():
            return NodeParams(), "NodeParams defaults"
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"node parameter file {path}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"node parameter file {path}: expected a mapping of node names, got {type(data).__name__}")
    values: dict[str, Any] = {}
    found = False
    for key in ("/**", NODE_NAME, "/" + NODE_NAME):
        entry = data.get(key)
        if entry is None:
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("ros__parameters"), dict):
            raise ValueError(f"node parameter file {path}: '{key}' has no 'ros__parameters' mapping")
        values.update(flatten(entry["ros__parameters"]))
        found = True
    if not found:
        raise ValueError(f"node parameter file {path}: no parameters for '/**' or '{NODE_NAME}' "
                         f"(keys: {sorted(map(str, data))})")
    try:
        return params_from_values(values), str(path)
    except ParamError as e:
        raise ValueError(f"node parameter file {path}: {e}") from e


@dataclass(frozen=True)
class NodeMessages:
    """The node's outgoing-message functions. ``build(results) -> FrameMessages``: objects and markers
    of one frame (:func:`~occnet_ros.ros.object_msgs.frame_messages`, no markers shown before);
    ``serialize(msg) -> bytes``: the CDR bytes rclpy publishes (``frame_messages`` makes them already)."""

    build: Callable[[list[ProcessedObject]], Any]
    serialize: Callable[[Any], bytes]


def node_messages(marker_alpha: float) -> NodeMessages | None:
    """:class:`NodeMessages` with markers of opacity ``marker_alpha``, or None when the ROS packages or
    the generated interfaces are not installed."""
    try:
        from std_msgs.msg import Header

        from occnet_ros.ros.object_msgs import frame_messages
    except ImportError:
        return None
    header = Header(frame_id="camera")
    return NodeMessages(lambda results: frame_messages(results, header, set(), True, marker_alpha),
                        lambda data: data)


def node_reconstruction(params: NodeParams) -> dict[str, Any]:
    """The node's ``reconstruction.*`` settings that shape a reconstruction's work and speed, as
    :func:`~occnet_ros.benchmark.mise_vs_dense.reconstructor` keywords (the grid and the network stay the benchmark's)."""
    r = params.reconstruction
    return {"mirror_average": r.mirror_average, "input_subsamples": r.input_subsamples, "precision": r.precision,
            "compute_threads": r.compute_threads}


def _encodings(rec) -> int:
    """Encoder passes per object: the input subsamples, twice with mirror averaging."""
    return rec.config.input_subsamples * (2 if rec.config.mirror_average else 1)


def run(ctx: BenchContext, params: NodeParams | None = None) -> dict:
    """The section. params: the node's parameters (None = :func:`node_params`, the shipped file)."""
    s = ctx.sizes
    source = "given"
    if params is None:
        params, source = node_params()
    view = ctx.views.get(ctx.seed, min_points=max(s.cloud_sizes))
    max_faces = params.mesh.max_faces
    worker = ParallelDecimation(params.mesh.decimation_workers) if max_faces > 0 and params.mesh.decimate_in_worker else None
    try:
        if worker is not None:
            worker.start()
        decimate = worker or fast_or_open3d_decimation
        out = None
        # the benchmark's resolution for every cloud size, then one step coarser (the node's shipped 64^3 at
        # full size) for the middle cloud size
        for steps, sizes in ((s.upsampling_steps, s.cloud_sizes),
                             (s.upsampling_steps - 1, s.cloud_sizes[len(s.cloud_sizes) // 2:][:1])):
            if steps < 0:
                continue
            with reconstructor(ctx, upsampling_steps=steps, **node_reconstruction(params)) as rec:
                res = _run(ctx, params, source, view, rec, decimate, sizes)
            if out is None:
                out = res
            else:
                out["sizes"] += res["sizes"]
        return out
    finally:
        if worker is not None:
            worker.close()


def _run(ctx: BenchContext, params: NodeParams, source: str, view, rec, decimate, cloud_sizes) -> dict:
    resolution = rec.config.resolution0 * 2 ** rec.config.upsampling_steps
    pipeline = FramePipeline(rec, params, decimate=decimate)
    messages = node_messages(params.marker_alpha)
    max_faces = params.mesh.max_faces
    viewpoint = np.zeros(3)
    rows = []
    for n in cloud_sizes:
        pts = resample(view.points, n, ctx.seed)
        xyz, mask = organized_frame(pts, ctx.seed)
        image = np.random.default_rng(ctx.seed).integers(0, 256, (*xyz.shape[:2], 3), dtype=np.uint8)
        frame = FrameInput(xyz=xyz, mask=mask, image=image, up=np.asarray(view.up), viewpoint=viewpoint)
        times: dict[str, list[float]] = {k: [] for k in STAGES}
        last = None
        stalls = []
        for i in range(ctx.repeats + 1):  # the first run warms up
            with GilStallMeter() as meter:  # how long this object's processing held the GIL at a time
                t0 = time.perf_counter()
                segments, _, _ = pipeline.segment(frame)
                if len(segments) != 1:
                    raise RuntimeError(f"{n}-point object: the node's segmentation kept {len(segments)} segments, "
                                       "expected 1 (segmentation size limits?)")
                seg = segments[0]
                t1 = time.perf_counter()
                cleaned = clean_cloud(seg.points, params.filter, viewpoint)
                if cleaned.points.shape[0] < params.segmentation.min_points:
                    raise RuntimeError(f"{n}-point object: {cleaned.points.shape[0]} points left after cleaning, "
                                       f"the node skips objects with fewer than {params.segmentation.min_points}")
                t2 = time.perf_counter()
                empty = (KnownEmpty(params.known_empty, view.plane, [view.depth_view])
                         if params.known_empty.enabled else None)
                t2e = time.perf_counter()
                obj = rec.reconstruct(cleaned.points, up=view.up, viewpoint=viewpoint, known_empty=empty,
                                      simplify=pipeline.simplify)
                t4 = time.perf_counter()
                verts, faces, note = pipeline.published_mesh(obj)
                colors = (nearest_colours(verts, cleaned.points, image.reshape(-1, 3)[seg.pixels[cleaned.index]])
                          if params.color_from_image and len(verts) else None)
                t5 = time.perf_counter()
                result = ProcessedObject(seg, obj, int(cleaned.points.shape[0]), colors, t5 - t1, verts, faces)
                nbytes = (0, 0)
                t6 = t7 = t5
                if messages is not None:
                    out = messages.build([result])
                    t6 = time.perf_counter()
                    nbytes = (len(messages.serialize(out.objects)), len(messages.serialize(out.markers)))
                    t7 = time.perf_counter()
            if i == 0:
                continue
            stalls.append(meter.max_s)
            times["crop"].append(t1 - t0)
            times["clean"].append(t2 - t1)
            times["known_empty"].append(t2e - t2)
            for k in RECONSTRUCT_STAGES:
                times[k].append(obj.timings[k])
            times["colour"].append(t5 - t4)
            times["message"].append(t6 - t5 if messages is not None else float("nan"))
            times["serialize"].append(t7 - t6 if messages is not None else float("nan"))
            times["total"].append(t7 - t0)
            last = (obj, cleaned, (verts, faces, note), colors, nbytes)
        obj, cleaned, (verts, faces, note), colors, nbytes = last
        n_evals = obj.mise_stats["n_evals"]
        stages = {k: summary(v) for k, v in times.items()}
        rows.append({
            "resolution": resolution, "cloud_points": n, "points_after_clean": int(cleaned.points.shape[0]),
            "stages": stages,
            "reconstruct_median_s": sum(stages[k]["median_s"] for k in ("known_empty", *RECONSTRUCT_STAGES)),
            "mise_n_evals": n_evals,
            "faces_marching_cubes": int(obj.mise_stats["faces_marching_cubes"]), "faces_published": int(len(faces)),
            "vertices_published": int(len(verts)),
            "simplified": len(faces) < obj.mise_stats["faces_marching_cubes"], "simplify_note": note,
            "longest_gil_hold_s": float(max(stalls)),
            "colored_vertices": 0 if colors is None else int(len(colors)),
            "message_bytes": int(sum(nbytes)), "message_bytes_objects": int(nbytes[0]),
            "message_bytes_markers": int(nbytes[1]),
            "floor": {"encode_s": ctx.encode_floor_s(_encodings(rec), rec.dtype),
                      "mise_s": ctx.decoder_floor_s(n_evals)},
        })
    return {"resolution": resolution, "messages_measured": messages is not None,
            "decimation": "worker processes" if isinstance(decimate, ParallelDecimation) else "in process",
            "node_params": source, "max_faces": max_faces, "marker_alpha": params.marker_alpha,
            "clean_config": vars(params.filter), "sizes": rows}
