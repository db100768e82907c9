"""Section "ros": the reconstruction node in its own process, driven from this one (the benchmark is
the other process: a camera publishing frames, and a planner calling the service).

1. frame throughput: a 640x480 organized cloud of the simulated tabletop (4 objects, mask, image,
   camera_info) is published with fresh stamps at ``PUBLISH_HZ`` for ``node_seconds``, and on until
   ``MIN_FRAMES`` frames arrived (at most ``MIN_FRAMES_MAX_S`` more: a window shorter than two frames
   measures no rate, as ``--quick`` on a slow machine showed); frames/s =
   reconstructed frames (``objects`` messages) per second, end to end; latency = arrival - stamp;
   peak memory = the node process's VmHWM;
2. service throughput, node idle: ``query_occupancy`` with 1k/10k/100k points spread over the scene
   (uniform in the box around the objects' points, enlarged by ``SCENE_MARGIN_M``) and inside one
   object (its observed points' box), points/s of the full round trip;
3. service latency while reconstructions run (frames keep coming from a camera in its own process,
   :func:`~occnet_ros.benchmark.bench_camera.camera_main`): ``UNDER_LOAD_RUNS`` runs of 10k-point requests at
   ``UNDER_LOAD_HZ``, one in flight at a time (a planner's rate, which leaves the node the rest of the CPU), each
   run on until ``UNDER_LOAD_MIN_FRAMES`` frames were reconstructed in it; p50/p99/max of each run and the frames
   reconstructed meanwhile. The node subscribes reliably (:func:`_start_node`): subscribed best effort it lost
   nearly every 5 MB cloud while queries ran, and runs of calls overlapped 0-1 frames in 24-240 s.

rclpy is imported only when this section runs.
"""
from __future__ import annotations

import array
import contextlib
import importlib.util
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from occnet_ros.benchmark.bench_camera import FRAME_ID, PUBLISH_HZ, save_frame, start_camera
from occnet_ros.benchmark.common import BenchContext, percentile, summary
from occnet_ros.cli.processes import stop_process
from occnet_ros.ros.launch_spec import dds_environment, dds_transports

SCENE_MARGIN_M = 0.2
START_TIMEOUT_S = 180.0
LATENCY_POINTS = 10_000
UNDER_LOAD_MAX_S = 120.0
"""The under-load latency calls of one run go on until a reconstruction finished meanwhile, for at most this long."""
UNDER_LOAD_RUNS = 3
"""Runs of under-load calls, each of at least ``latency_calls`` calls."""
UNDER_LOAD_HZ = 20.0
"""Calls per second of the under-load runs (the next call starts on schedule, or at once after a late answer)."""
UNDER_LOAD_MIN_FRAMES = 2
"""Frames the node must reconstruct during each under-load run: the calls overlap whole frames."""
MIN_FRAMES = 2
MIN_FRAMES_MAX_S = 120.0
"""Frames are streamed past ``node_seconds`` until MIN_FRAMES arrived, for at most this long."""


@contextlib.contextmanager
def section_environment():
    """For one section, in this process and the node and camera processes it starts: discovery on this host only and
    the package's Fast DDS settings where unset (:func:`~occnet_ros.ros.launch_spec.dds_environment`: the shipped
    profile, as ``occnet_launch`` and :func:`~occnet_ros.cli.processes.ros_environment` run the nodes); the environment
    is restored afterwards. Yields the transports in use, in words (:func:`~occnet_ros.ros.launch_spec.dds_transports`).
    The camera's transports are the ones that matter for its clouds: a writer with Fast DDS's default 512 KiB
    shared-memory segment delivers no 5 MB cloud to a best-effort reader (the profile's comment)."""
    saved = {k: os.environ.get(k) for k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_BUILTIN_TRANSPORTS",
                                            "FASTDDS_DEFAULT_PROFILES_FILE")}
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.update(dds_environment())
    try:
        yield dds_transports(os.environ)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def unavailable_reason() -> str | None:
    """Why the section cannot run here (None when it can)."""
    for mod in ("rclpy", "occnet_ros.srv", "occnet_ros.msg", "occnet_ros.ros.reconstruction_node"):
        try:
            if importlib.util.find_spec(mod) is None:
                return f"module {mod} not found"
        except (ImportError, ValueError) as e:
            return f"module {mod}: {e}"
    if not (Path(sys.executable).parent / "reconstruction_node").exists():
        return f"no reconstruction_node program next to {sys.executable}"
    return None


def _status_mb(pid: int) -> tuple[float, float]:
    """(VmHWM peak resident set, VmRSS) of ``pid`` in MiB, from /proc (NaN if unreadable)."""
    peak = rss = float("nan")
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024.0
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak, rss


def peak_rss_mb(pid: int) -> dict:
    """VmHWM (peak resident set) and VmRSS of ``pid`` in MiB, and the same summed over its child processes (the
    reconstruction process, the decimation workers: ``children_peak_rss_mb``, ``children_rss_mb``; their peaks
    need not coincide, so the sum bounds theirs from above); NaN where unreadable."""
    peak, rss = _status_mb(pid)
    out = {"peak_rss_mb": peak, "rss_mb": rss, "children_peak_rss_mb": float("nan"), "children_rss_mb": float("nan"),
           "children": 0}
    try:
        import psutil

        kids = [_status_mb(c.pid) for c in psutil.Process(pid).children(recursive=True)]
    except Exception:  # psutil missing or the node gone: the node's own figures stand
        return out
    if kids:
        out.update(children_peak_rss_mb=float(sum(k[0] for k in kids)), children_rss_mb=float(sum(k[1] for k in kids)),
                   children=len(kids))
    return out


def render_scene(ctx: BenchContext):
    """One simulated 640x480 frame of a tabletop with 4 objects (PyBullet, no GUI)."""
    from occnet_ros.sim import CameraConfig, SceneConfig, SimCamera, TabletopScene

    with TabletopScene(SceneConfig(seed=ctx.seed, num_objects=4)) as scene:
        return SimCamera(scene, CameraConfig(), seed=ctx.seed).render(stamp=0.0, index=0)


def query_sets(frame, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` points spread over the scene, and ``n`` in the box of object 1's observed points."""
    pts = frame.points.reshape(-1, 3)
    labels = frame.mask.reshape(-1)
    ok = np.isfinite(pts).all(axis=1)
    objs = pts[ok & (labels > 0)]
    lo, hi = objs.min(axis=0) - SCENE_MARGIN_M, objs.max(axis=0) + SCENE_MARGIN_M
    one = pts[ok & (labels == labels[ok & (labels > 0)].min())]
    c, h = 0.5 * (one.min(axis=0) + one.max(axis=0)), 0.5 * (one.max(axis=0) - one.min(axis=0))
    return {"spread": rng.uniform(lo, hi, (n, 3)).astype(np.float32),
            "inside_one": rng.uniform(c - h, c + h, (n, 3)).astype(np.float32)}


class _Client:
    """The benchmark's ROS side: publishes the frame, counts ``objects``, calls the service."""

    def __init__(self, ctx: BenchContext, frame, domain_id: int):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2
        from std_msgs.msg import Header

        from occnet_ros.msg import ReconstructedObjectArray
        from occnet_ros.ros import conversions
        from occnet_ros.srv import QueryOccupancy

        self.rclpy, self.Header, self.QueryOccupancy = rclpy, Header, QueryOccupancy
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node("occnet_bench_client", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        qos = QoSProfile(depth=2)
        self.pubs = {"points": self.node.create_publisher(PointCloud2, "points", qos),
                     "image": self.node.create_publisher(Image, "image", qos),
                     "mask": self.node.create_publisher(Image, "mask", qos),
                     "camera_info": self.node.create_publisher(CameraInfo, "camera_info", qos)}
        header = Header(frame_id=FRAME_ID)
        self.msgs = {"points": conversions.arrays_to_pointcloud2(frame.points, frame.rgb, header),
                     "image": conversions.array_to_image(frame.rgb, "rgb8", header),
                     "mask": conversions.array_to_image(frame.mask, "mono16", header),
                     "camera_info": conversions.camera_info(frame.intrinsics, header)}
        self.received: list[tuple[float, float, int]] = []  # (arrival wall time, stamp, objects)
        # raw: rclpy would build a Python object per mesh vertex of every objects message (hundreds of ms for 4
        # objects of 20k faces) inside this executor, and so inside the measured service round trips
        self.objects_sub = self.node.create_subscription(ReconstructedObjectArray, "objects", self._on_objects_raw,
                                                         10, raw=True)
        self.client = self.node.create_client(QueryOccupancy, "query_occupancy")
        self.published = 0
        self._next_pub = 0.0

    def _on_objects(self, msg) -> None:
        stamp = msg.header.stamp.sec + 1e-9 * msg.header.stamp.nanosec
        self.received.append((time.time(), stamp, len(msg.objects)))

    def _on_objects_raw(self, data: bytes) -> None:
        from occnet_ros.viewer.objects_cdr import decode_object_array  # numpy views of the CDR bytes

        view = decode_object_array(data)
        self.received.append((time.time(), view.stamp, len(view.objects)))

    def publish_frame(self) -> None:
        """All four messages with one fresh stamp (wall clock)."""
        stamp = self.node.get_clock().now().to_msg()
        for name in ("camera_info", "image", "mask", "points"):
            msg = self.msgs[name]
            msg.header.stamp = stamp
            self.pubs[name].publish(msg)
        self.published += 1

    def spin_for(self, seconds: float, publish: bool) -> None:
        """Spin (and publish at PUBLISH_HZ when ``publish``) for ``seconds``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.tick(publish)

    def spin_until(self, deadline: float) -> None:
        """Spin (no publishing) until ``time.monotonic()`` reaches ``deadline``."""
        while (left := deadline - time.monotonic()) > 0:
            self.executor.spin_once(timeout_sec=min(0.01, left))

    def tick(self, publish: bool) -> None:
        now = time.monotonic()
        if publish and now >= self._next_pub:
            self.publish_frame()
            self._next_pub = now + 1.0 / PUBLISH_HZ
        self.executor.spin_once(timeout_sec=0.01)

    def call(self, points: np.ndarray, publish: bool, timeout: float = 30.0) -> float:
        """One service round trip -> seconds (frames keep being published when ``publish``)."""
        req = self.QueryOccupancy.Request()
        req.header.frame_id = ""
        req.points = array.array("f", np.ascontiguousarray(points, np.float32).tobytes())
        t0 = time.perf_counter()
        future = self.client.call_async(req)
        end = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > end:
                raise TimeoutError(f"query_occupancy did not answer within {timeout} s")
            self.tick(publish)
        dt = time.perf_counter() - t0
        res = future.result()
        if not res.success or len(res.probabilities) != points.shape[0]:
            raise RuntimeError(f"query_occupancy failed: success={res.success} message={res.message!r}")
        return dt

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)


def node_mise(ctx: BenchContext) -> tuple[int, int]:
    """(resolution0, upsampling_steps) the node runs with: the sizes' ``node_mise``, else its defaults."""
    from occnet_ros.reconstruction.config import ReconstructorConfig

    d = ReconstructorConfig()
    return ctx.sizes.node_mise or (d.resolution0, d.upsampling_steps)


def _start_node(ctx: BenchContext, frame, domain_id: int, log_path: Path, extra: list[str] = ()) -> subprocess.Popen:
    """The node on the shipped parameters, the benchmark's device, network and MISE grid, the frame's up, reliable
    sensor subscriptions (the benchmark's publishers are reliable; best effort lost nearly every 5 MB cloud while
    queries ran: 1 frame in 240 s), and ``extra`` ``-p`` arguments."""
    r0, steps = node_mise(ctx)
    up = ",".join(f"{v:.6f}" for v in frame.up)
    args = ["-p", f"reconstruction.device:={ctx.device}", "-p", f"checkpoint:={ctx.weights['path']}", "-p", f"up:=[{up}]",
            "-p", f"reconstruction.resolution0:={r0}", "-p", f"reconstruction.upsampling_steps:={steps}",
            "-p", "sensor_reliability:=reliable", *extra]
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED="1",
               ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.pop("ROS_LOCALHOST_ONLY", None)
    exe = Path(sys.executable).parent / "reconstruction_node"
    log = open(log_path, "w")
    try:
        return subprocess.Popen([str(exe), "--ros-args"] + args, stdout=log, stderr=subprocess.STDOUT, env=env)
    finally:
        log.close()


def _stop_node(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    return stop_process(proc, timeout)


def _frame_stats(received: list[tuple[float, float, int]]) -> dict:
    if len(received) < 2:
        return {"frames": len(received), "frames_per_s": float("nan")}
    arrivals = [r[0] for r in received]
    return {"frames": len(received),
            "frames_per_s": (len(received) - 1) / (arrivals[-1] - arrivals[0]),
            "end_to_end_latency": summary([a - s for a, s, _ in received]),
            "objects_per_frame": summary([float(n) for _, _, n in received])}


def _under_load_runs(ctx: BenchContext, client: _Client, pts: np.ndarray) -> dict:
    """``UNDER_LOAD_RUNS`` runs of 10k-point calls at ``UNDER_LOAD_HZ`` while the camera process streams frames:
    each run at least ``latency_calls`` calls and on until ``UNDER_LOAD_MIN_FRAMES`` reconstructions finished inside
    it (at most ``UNDER_LOAD_MAX_S``). Every run is reported; the summary takes the worst run's p50, p99 and max."""
    s = ctx.sizes
    client.received.clear()
    wait_end = time.monotonic() + 120.0
    while not client.received:  # reconstructions are running
        if time.monotonic() > wait_end:
            raise TimeoutError("no objects from reconstruction_node within 120 s of starting the camera process")
        client.tick(publish=False)
    period = 1.0 / UNDER_LOAD_HZ
    runs = []
    for _ in range(UNDER_LOAD_RUNS):
        n_before, t_start = len(client.received), time.monotonic()
        lat = []
        next_call = t_start
        while (len(lat) < s.latency_calls or len(client.received) - n_before < UNDER_LOAD_MIN_FRAMES) \
                and time.monotonic() - t_start < UNDER_LOAD_MAX_S:
            lat.append(client.call(pts, publish=False))
            next_call = max(next_call + period, time.monotonic())
            client.spin_until(next_call)
        runs.append({"calls": len(lat), "p50_s": percentile(lat, 50), "p99_s": percentile(lat, 99),
                     "max_s": max(lat), "over_20ms": int(sum(t > 0.020 for t in lat)),
                     "window_s": time.monotonic() - t_start,
                     "frames_reconstructed_meanwhile": len(client.received) - n_before})
    return {"points": LATENCY_POINTS, "calls_per_s": UNDER_LOAD_HZ, "runs": runs,
            "calls": sum(r["calls"] for r in runs),
            "p50_s": max(r["p50_s"] for r in runs), "p99_s": max(r["p99_s"] for r in runs),
            "max_s": max(r["max_s"] for r in runs),
            "frames_reconstructed_meanwhile": min(r["frames_reconstructed_meanwhile"] for r in runs)}


def run(ctx: BenchContext) -> dict:
    reason = unavailable_reason()
    if reason is not None:
        return {"available": False, "reason": reason}
    frame = render_scene(ctx)
    domain_id = random.SystemRandom().randint(20, 99)
    log_path = ctx.out / "reconstruction_node.log"
    with section_environment() as transports:
        return {**_run_section(ctx, frame, domain_id, log_path), "fastdds_transports": transports,
                "fastdds_profiles_file": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")}


def _run_section(ctx: BenchContext, frame, domain_id: int, log_path: Path) -> dict:
    s = ctx.sizes
    proc = _start_node(ctx, frame, domain_id, log_path)
    client = None
    try:
        client = _Client(ctx, frame, domain_id)
        end = time.monotonic() + START_TIMEOUT_S
        while not client.received:  # node start-up (imports, weights) and the first frame
            if proc.poll() is not None:
                raise RuntimeError(f"reconstruction_node exited with {proc.returncode}; see {log_path}")
            if time.monotonic() > end:
                raise TimeoutError(f"no objects from reconstruction_node within {START_TIMEOUT_S} s; see {log_path}")
            client.tick(publish=True)
        # 1. frame throughput, nothing else running
        client.received.clear()
        published0 = client.published
        client.spin_for(s.node_seconds, publish=True)
        more_end = time.monotonic() + MIN_FRAMES_MAX_S
        while len(client.received) < MIN_FRAMES and time.monotonic() < more_end:  # a rate needs two frames
            client.spin_for(0.5, publish=True)
        frames = _frame_stats(list(client.received))
        frames["published"] = client.published - published0
        frames["mise_resolution"] = node_mise(ctx)[0] * 2 ** node_mise(ctx)[1]
        frames.update(peak_rss_mb(proc.pid))
        # 2. service throughput with the node idle (wait for the frame in progress to finish)
        last = len(client.received)
        idle_end = time.monotonic() + 60.0
        while time.monotonic() < idle_end:
            client.spin_for(max(1.0, 1.5 * frames.get("end_to_end_latency", {}).get("max_s", 1.0)), publish=False)
            if len(client.received) == last:
                break
            last = len(client.received)
        rng = np.random.default_rng(ctx.seed)
        service = []
        first_call = None  # the node's first query since it started (any warm-up it needs is inside)
        for n in s.query_sizes:
            row = {"points": n}
            for name, pts in query_sets(frame, n, rng).items():
                warm_up = client.call(pts, publish=False)
                if first_call is None:
                    first_call = {"points": n, "set": name, "seconds": warm_up}
                t = summary([client.call(pts, publish=False) for _ in range(ctx.repeats)])
                row[name] = {"points_per_s": n / t["median_s"], "time": t}
            service.append(row)
        # 3. latency while reconstructions run: the camera in its own process, this one only calls
        camera = start_camera(save_frame(frame, ctx.out / "bench_frame.npz"), domain_id)
        try:
            under_load = _under_load_runs(ctx, client, query_sets(frame, LATENCY_POINTS, rng)["spread"])
        finally:
            stop_process(camera, 5.0)
        memory = peak_rss_mb(proc.pid)
    finally:
        if client is not None:
            client.close()
        code = _stop_node(proc)
    return {"available": True, "domain_id": domain_id, "publish_hz": PUBLISH_HZ,
            "frame": {"width": int(frame.points.shape[1]), "height": int(frame.points.shape[0]),
                      "objects": int(len(np.unique(frame.mask)) - 1)},
            "node_throughput": frames, "service": service, "service_first_call": first_call,
            "service_under_load": under_load,
            "node_memory": memory, "node_exit_code": code, "node_log": str(log_path)}
