"""Section "frame": one whole node frame, stage by stage, in this process, the way ``reconstruction_node``
processes it, so the next slow stage is always visible.

The frame is the simulated 640x480 tabletop of the ``ros`` section (4 objects, instance mask, colour
image, camera_info), as ROS messages. Each repeat runs, in the node's order:

- parse: the messages decoded by the node's converters (:func:`occnet_ros.ros.frame_input.decode_frame_messages`;
  gravity-up is the scene's, as the ``ros`` section gives the node its ``up`` parameter);
- the :class:`~occnet_ros.perception.frame_pipeline.FramePipeline` stages (its ``stage_seconds``): segmentation,
  clean, known_empty, normalize, encode, mise, marching_cubes, simplify (to ``mesh.max_faces``, in the node's
  decimation worker processes; where they mesh the MISE grid in slabs, marching cubes runs there too and its time
  is part of simplify; marching_cubes: a grid meshed whole, in a worker process, round trip included), anchor, colour;
- message: :func:`~occnet_ros.ros.object_msgs.frame_messages` with markers (CDR bytes);
- publish: both byte strings handed to rclpy publishers that have a subscriber in another ROS context.

The node's parameters are the shipped ones (``config/reconstruct.yaml``: MISE 64^3); ``--quick`` makes the
grid smaller. Each stage's median, its share of the median frame, and the floor where one exists (encode:
encoder FLOPs; mise: the decoder FLOPs of the points MISE evaluated) at the measured matmul rate. The same
is measured for a frame that holds only the first object (its mask alone), so ``four_over_one`` says what
4 objects cost against 1. ``objects_per_s``: objects reconstructed per second of frame time. ``unaccounted_s``:
the median frame minus the sum of the stages' medians (medians of parts need not add up to the median whole, so it
can be a few milliseconds either way). ``frame`` and ``one_object`` run the objects unbatched
(``reconstruction.batch_objects: off``), as the node does on a CPU: the frame's objects on the reconstructor's compute
threads at once (``object_threads`` of them); then a stage's time is summed over the objects, i.e. thread time, and
its share, ``unaccounted_s`` and the floors (FLOPs at the rate of all threads, times ``object_threads``) are of the
frame's thread time (``object_threads`` x the frame). ``batched``: the same 4-object frame with ``batch_objects: on``
(the objects' network work in shared calls), ``batched_over_one_by_one`` its frame time over ``frame``'s, and
``node_batches`` whether the node's setting (auto) batches on this device (the benchmark runs on the CPU).

rclpy is imported only when this section runs; without it the section says why.
"""
from __future__ import annotations

import random
import time

import numpy as np

from occnet_ros.benchmark.common import BenchContext, summary
from occnet_ros.geometry import RigidTransform
from occnet_ros.benchmark.latency import node_params, node_reconstruction
from occnet_ros.benchmark.node_throughput import render_scene, section_environment, unavailable_reason
from occnet_ros.perception.frame_pipeline import FRAME_STAGES, FramePipeline, object_threads

STAGES = ("parse", *FRAME_STAGES, "message", "publish")
"""Keys of each frame's ``stages``, in processing order."""


def _ros_side(domain_id: int):
    """(rclpy, node, objects publisher, markers publisher, listener context): publishers of the node's
    output types with one subscription each in a second context, so publishing reaches a reader."""
    import rclpy
    from visualization_msgs.msg import MarkerArray

    from occnet_ros.msg import ReconstructedObjectArray

    ctx_pub, ctx_sub = rclpy.Context(), rclpy.Context()
    rclpy.init(context=ctx_pub, domain_id=domain_id)
    rclpy.init(context=ctx_sub, domain_id=domain_id)
    node = rclpy.create_node("occnet_bench_frame", context=ctx_pub)
    listener = rclpy.create_node("occnet_bench_frame_listener", context=ctx_sub)
    pubs = (node.create_publisher(ReconstructedObjectArray, "objects", 10),
            node.create_publisher(MarkerArray, "markers", 10))
    listener.create_subscription(ReconstructedObjectArray, "objects", lambda m: None, 10, raw=True)
    listener.create_subscription(MarkerArray, "markers", lambda m: None, 10, raw=True)
    end = time.monotonic() + 10.0
    while any(p.get_subscription_count() == 0 for p in pubs) and time.monotonic() < end:
        time.sleep(0.05)
    return rclpy, (node, listener), pubs, (ctx_pub, ctx_sub)


def _messages(frame, only_label: int | None):
    """The frame as the node receives it: PointCloud2, colour Image, mask Image, CameraInfo."""
    from std_msgs.msg import Header

    from occnet_ros.ros import conversions

    mask = frame.mask if only_label is None else np.where(frame.mask == only_label, frame.mask, 0).astype(frame.mask.dtype)
    header = Header(frame_id="camera_color_optical_frame")
    return {"points": conversions.arrays_to_pointcloud2(frame.points, frame.rgb, header),
            "image": conversions.array_to_image(frame.rgb, "rgb8", header),
            "mask": conversions.array_to_image(mask, "mono16", header),
            "camera_info": conversions.camera_info(frame.intrinsics, header)}


def _measure(ctx: BenchContext, pipeline: FramePipeline, params, msgs, pubs, up: np.ndarray) -> dict:
    from std_msgs.msg import Header

    from occnet_ros.ros.frame_input import decode_frame_messages
    from occnet_ros.ros.object_msgs import frame_messages

    header = Header(frame_id="camera_color_optical_frame")
    times: dict[str, list[float]] = {k: [] for k in (*STAGES, "total")}
    n_objects = n_evals = 0
    for i in range(ctx.repeats + 1):  # the first frame warms up
        t0 = time.perf_counter()
        decoded = decode_frame_messages(msgs, msgs["camera_info"], params)
        inp = decoded.frame_input(0.0, up, np.zeros(3), RigidTransform())
        t1 = time.perf_counter()
        result = pipeline.process(inp)
        t2 = time.perf_counter()
        out = frame_messages(result.objects, header, set(), True, params.marker_alpha)
        t3 = time.perf_counter()
        pubs[0].publish(out.objects)
        pubs[1].publish(out.markers)
        t4 = time.perf_counter()
        if i == 0:
            continue
        n_objects = len(result.objects)
        n_evals = sum(int(r.obj.mise_stats.get("n_evals", 0)) for r in result.objects)
        times["parse"].append(t1 - t0)
        for k in FRAME_STAGES:
            times[k].append(result.stage_seconds.get(k, 0.0))
        times["message"].append(t3 - t2)
        times["publish"].append(t4 - t3)
        times["total"].append(t4 - t0)
    stages = {k: summary(v) for k, v in times.items()}
    total = stages["total"]["median_s"]
    accounted = sum(stages[k]["median_s"] for k in STAGES)
    reconstructor = pipeline.reconstructor
    rec = reconstructor.config
    threads = 1 if reconstructor.batch_objects() else object_threads(reconstructor, n_objects,
                                                                      pipeline.objects_at_once)
    encodings = n_objects * rec.input_subsamples * (2 if rec.mirror_average else 1)
    floor = {"encode": threads * ctx.encode_floor_s(encodings, reconstructor.dtype),
             "mise": threads * ctx.decoder_floor_s(n_evals)}
    return {"objects": n_objects, "object_threads": threads, "stages": stages, "mise_evals": n_evals,
            "encodings": encodings, "floor": floor,
            "share": {k: stages[k]["median_s"] / (threads * total) for k in STAGES},
            "unaccounted_s": threads * total - accounted,
            "objects_per_s": n_objects / total if total > 0 else float("nan")}



def run(ctx: BenchContext) -> dict:
    reason = unavailable_reason()
    if reason is not None:
        return {"available": False, "reason": reason}
    from occnet_ros.benchmark.mise_vs_dense import reconstructor
    from occnet_ros.perception.parallel_decimation import ParallelDecimation

    params, source = node_params()
    s = ctx.sizes
    node_steps = params.reconstruction.upsampling_steps if s.node_mise is None else s.node_mise[1]
    node_res0 = params.reconstruction.resolution0 if s.node_mise is None else s.node_mise[0]
    rec = reconstructor(ctx, resolution0=node_res0, upsampling_steps=node_steps,
                        **{**node_reconstruction(params), "batch_objects": "off"})
    with reconstructor(ctx, resolution0=node_res0, upsampling_steps=node_steps,
                       **{**node_reconstruction(params), "batch_objects": params.reconstruction.batch_objects,
                          "compute_threads": 1}) as node_rec:
        node_batches = node_rec.batch_objects()
    frame = render_scene(ctx)
    labels = sorted(int(v) for v in np.unique(frame.mask) if v > 0)
    domain_id = random.SystemRandom().randint(20, 99)
    with section_environment():  # the in-process nodes on this host, Fast DDS transports as the node runs
        worker = ParallelDecimation(params.mesh.decimation_workers) if params.mesh.decimate_in_worker and params.mesh.max_faces > 0 else None
        rclpy = nodes = contexts = batched = None
        try:
            rclpy, nodes, pubs, contexts = _ros_side(domain_id)
            if worker is not None:
                worker.start()
            rows = {}
            batched = reconstructor(ctx, resolution0=node_res0, upsampling_steps=node_steps,
                                    **{**node_reconstruction(params), "batch_objects": "on"})
            for name, only, r in (("all", None, rec), ("one", labels[0], rec), ("batched", None, batched)):
                pipeline = FramePipeline(r, params, decimate=worker) if worker is not None else FramePipeline(r, params)
                rows[name] = _measure(ctx, pipeline, params, _messages(frame, only), pubs, np.asarray(frame.up))
        finally:
            rec.close()  # the compute threads end with the section
            if batched is not None:
                batched.close()
            if worker is not None:
                worker.close()
            if nodes is not None:
                for n in nodes:
                    n.destroy_node()
                for c in contexts:
                    rclpy.try_shutdown(context=c)
    full = rows["all"]
    return {"available": True, "node_params": source, "resolution": node_res0 * 2 ** node_steps,
            "width": int(frame.points.shape[1]), "height": int(frame.points.shape[0]),
            "decimation": "worker processes" if worker is not None else "in process",
            "frame": full, "one_object": rows["one"], "batched": rows["batched"], "node_batches": bool(node_batches),
            "batched_over_one_by_one": rows["batched"]["stages"]["total"]["median_s"] / full["stages"]["total"]["median_s"],
            "four_over_one": full["stages"]["total"]["median_s"] / rows["one"]["stages"]["total"]["median_s"]}
