"""Section "map": the reconstruction node as an object mapper (``world_frame`` set, poses on ``camera_pose``),
in its own process, on a static scene: the simulated 640x480 tabletop of section "ros" (4 objects, mask, image,
camera_info) and the camera's pose in the simulated world, published with fresh stamps at ``PUBLISH_HZ``, with the
package's Fast DDS profile (as ``occnet_launch`` and ``make demo`` use it, unless set otherwise), to a node whose
inputs are subscribed reliable (``sensor_reliability``: the client publishes reliable).

1. first meshes: once the node is up (its service is there), seconds from the first published frame to the
   first ``objects`` message holding a mesh of every object of the scene (the node reconstructs at most
   ``map.reconstructions_per_frame`` objects a frame); and the node's start-up before it;
2. converged: once a frame changed no object (every ``reconstruction_time`` 0: codes and meshes kept),
   frames/s over ``node_seconds`` (``objects`` messages per second, end to end) and their latency. The camera's
   ``PUBLISH_HZ`` bounds this figure;
3. in process (after the node has stopped): the node's map pipeline
   (:class:`~occnet_ros.perception.map_pipeline.MapPipeline`, the node's parameters and decimation worker processes)
   on the same frame in this process until a frame changed nothing, then ``4 * repeats`` converged frames timed
   stage by stage (:data:`~occnet_ros.perception.map_pipeline.MAP_STAGES`, medians): the work a converged frame
   costs without ROS, and the frames/s that work alone would allow.

rclpy is imported only when this section runs.
"""
from __future__ import annotations

import random
import struct
import time

import numpy as np

from occnet_ros.benchmark.common import BenchContext, summary
from occnet_ros.benchmark.node_throughput import (MIN_FRAMES, MIN_FRAMES_MAX_S, START_TIMEOUT_S, _Client, _frame_stats,
                                                  _start_node, _stop_node, node_mise, peak_rss_mb, render_scene,
                                                  section_environment, unavailable_reason)

WORLD_FRAME = "world"
CONVERGE_TIMEOUT_S = 300.0
MAX_CONVERGE_FRAMES = 50
"""In process: frames given to the map pipeline at most before it must have converged."""


class _MapClient(_Client):
    """The camera of section "ros" plus its pose in the world on ``camera_pose`` (same stamp as the cloud).
    ``objects`` arrive serialized: while :attr:`decode` is on (until the map converged) each is deserialized
    to count the objects recomputed in its frame; in the timed window only its stamp is read from the bytes,
    so this process's own work (deserializing megabytes of meshes) does not take the node's CPU."""

    def __init__(self, ctx: BenchContext, frame, domain_id: int):
        super().__init__(ctx, frame, domain_id)
        from geometry_msgs.msg import PoseStamped
        from rclpy.qos import QoSProfile

        from occnet_ros.msg import ReconstructedObjectArray
        from occnet_ros.ros import conversions

        self.node.destroy_subscription(self.objects_sub)
        self.objects_sub = self.node.create_subscription(ReconstructedObjectArray, "objects", self._on_raw, 10,
                                                         raw=True)
        self._type = ReconstructedObjectArray
        self.decode = True

        self.pose_pub = self.node.create_publisher(PoseStamped, "camera_pose", QoSProfile(depth=2))
        self.pose = PoseStamped()
        self.pose.header.frame_id = WORLD_FRAME
        self.pose.pose = conversions.pose_from_rt(frame.camera_pose[:3, :3], frame.camera_pose[:3, 3])
        self.first_published: float | None = None
        self.changed: list[int] = []  # per objects message: objects whose reconstruction_time > 0

    def publish_frame(self) -> None:
        stamp = self.node.get_clock().now().to_msg()
        self.pose.header.stamp = stamp
        self.pose_pub.publish(self.pose)
        for name in ("camera_info", "image", "mask", "points"):
            msg = self.msgs[name]
            msg.header.stamp = stamp
            self.pubs[name].publish(msg)
        self.published += 1
        if self.first_published is None:
            self.first_published = time.time()

    def _on_raw(self, data: bytes) -> None:
        if self.decode:
            from rclpy.serialization import deserialize_message

            msg = deserialize_message(data, self._type)
            self._on_objects(msg)
            self.changed.append(sum(o.reconstruction_time > 0 for o in msg.objects))
            return
        # CDR: 4 bytes of encapsulation, then header.stamp (int32 sec, uint32 nanosec), little endian here
        sec, nanosec = struct.unpack_from("<iI", data, 4)
        self.received.append((time.time(), sec + 1e-9 * nanosec, -1))


def run(ctx: BenchContext) -> dict:
    reason = unavailable_reason()
    if reason is not None:
        return {"available": False, "reason": reason}
    frame = render_scene(ctx)
    n_objects = int(len(set(frame.mask.reshape(-1).tolist()) - {0}))
    domain_id = random.SystemRandom().randint(20, 99)
    log_path = ctx.out / "reconstruction_node_map.log"
    with section_environment() as transports:
        out = _run_section(ctx, frame, n_objects, domain_id, log_path, transports)
    out["in_process"] = in_process(ctx, frame)
    return out


def in_process(ctx: BenchContext, frame) -> dict:
    """Part 3 of the module docstring -> ``frames_until_converged``, ``frames``, ``stages`` ({stage: summary}),
    ``total`` (summary of whole frames), ``frames_per_s`` (1 / the median frame)."""
    from occnet_ros.benchmark.latency import node_params, node_reconstruction
    from occnet_ros.benchmark.mise_vs_dense import reconstructor
    from occnet_ros.geometry import RigidTransform
    from occnet_ros.perception.frame_pipeline import FrameInput
    from occnet_ros.perception.map_pipeline import MAP_STAGES, MapPipeline
    from occnet_ros.perception.mesh_ops import fast_or_open3d_decimation
    from occnet_ros.perception.parallel_decimation import ParallelDecimation

    params, _ = node_params()
    s = ctx.sizes
    res0, steps = ((params.reconstruction.resolution0, params.reconstruction.upsampling_steps)
                   if s.node_mise is None else s.node_mise)
    rec = reconstructor(ctx, resolution0=res0, upsampling_steps=steps, **node_reconstruction(params))
    worker = (ParallelDecimation(params.mesh.decimation_workers)
              if params.mesh.decimate_in_worker and params.mesh.max_faces > 0 else None)
    to_world = RigidTransform(frame.camera_pose[:3, :3], frame.camera_pose[:3, 3])
    try:
        if worker is not None:
            worker.start()
        pipeline = MapPipeline(rec, params, params.map, worker or fast_or_open3d_decimation)

        def one(k: int):
            inp = FrameInput(xyz=frame.points, stamp=0.2 * k, mask=frame.mask, image=frame.rgb,
                             intrinsics=frame.intrinsics, up=np.asarray(frame.up), viewpoint=np.zeros(3),
                             camera_to_cloud=RigidTransform())
            t0 = time.perf_counter()
            out = pipeline.process(inp, to_world)
            return out, time.perf_counter() - t0

        k = 0
        while True:
            out, _ = one(k)
            k += 1
            if out.objects and not out.changed:
                break
            if k >= MAX_CONVERGE_FRAMES:
                raise RuntimeError(f"the map pipeline still changed objects after {k} frames of a static scene")
        converged_after = k
        times: dict[str, list[float]] = {name: [] for name in (*MAP_STAGES, "total")}
        for _ in range(4 * ctx.repeats):
            out, dt = one(k)
            k += 1
            if out.changed:
                raise RuntimeError(f"a converged map changed objects {out.changed} on the same frame")
            for name in MAP_STAGES:
                times[name].append(out.stage_seconds[name])
            times["total"].append(dt)
    finally:
        rec.close()  # the compute threads end with the section
        if worker is not None:
            worker.close()
    total = summary(times.pop("total"))
    return {"frames_until_converged": converged_after, "frames": 4 * ctx.repeats, "objects": len(out.objects),
            "stages": {name: summary(v) for name, v in times.items()}, "total": total,
            "frames_per_s": 1.0 / total["median_s"]}


def _run_section(ctx: BenchContext, frame, n_objects: int, domain_id: int, log_path, transports: str) -> dict:
    t_start = time.time()
    proc = _start_node(ctx, frame, domain_id, log_path,
                       extra=["-p", f"world_frame:={WORLD_FRAME}", "-p", "pose_source:=topic"])
    client = None
    try:
        client = _MapClient(ctx, frame, domain_id)
        if not client.client.wait_for_service(timeout_sec=START_TIMEOUT_S):
            raise TimeoutError(f"reconstruction_node did not come up within {START_TIMEOUT_S} s; see {log_path}")
        t_ready = time.time()
        end = time.monotonic() + CONVERGE_TIMEOUT_S
        while not (client.received and client.received[-1][2] >= n_objects):  # every object has a mesh
            if proc.poll() is not None:
                raise RuntimeError(f"reconstruction_node exited with {proc.returncode}; see {log_path}")
            if time.monotonic() > end:
                raise TimeoutError(f"the map never held all {n_objects} objects; see {log_path}")
            client.tick(publish=True)
        first = {"objects": n_objects, "frames_until_all": len(client.received),
                 "seconds_from_first_frame": client.received[-1][0] - client.first_published,
                 "node_startup_s": t_ready - t_start}
        while client.changed[-1] != 0:  # converged: a frame that changed nothing
            if time.monotonic() > end:
                raise TimeoutError(f"the map kept changing for {CONVERGE_TIMEOUT_S} s; see {log_path}")
            client.tick(publish=True)
        client.received.clear()
        client.changed.clear()
        client.decode = False  # the timed window: stamps only
        published0 = client.published
        client.spin_for(ctx.sizes.node_seconds, publish=True)
        more_end = time.monotonic() + MIN_FRAMES_MAX_S
        while len(client.received) < MIN_FRAMES and time.monotonic() < more_end:
            client.spin_for(0.5, publish=True)
        converged = _frame_stats(list(client.received))
        converged.pop("objects_per_frame", None)  # not decoded in the window
        converged["published"] = client.published - published0
        client.decode = True  # one more decoded frame: did the static scene stay unchanged?
        n_decoded = len(client.changed)
        more_end = time.monotonic() + MIN_FRAMES_MAX_S
        while len(client.changed) == n_decoded and time.monotonic() < more_end:
            client.tick(publish=True)
        converged["objects_recomputed_after"] = int(sum(client.changed))
        converged["mise_resolution"] = node_mise(ctx)[0] * 2 ** node_mise(ctx)[1]
        memory = peak_rss_mb(proc.pid)
    finally:
        if client is not None:
            client.close()
        code = _stop_node(proc)
    return {"available": True, "domain_id": domain_id, "fastdds_transports": transports,
            "first_meshes": first, "converged": converged,
            "frame": {"width": int(frame.points.shape[1]), "height": int(frame.points.shape[0]),
                      "objects": n_objects},
            "node_memory": memory, "node_exit_code": code, "node_log": str(log_path)}
