#!/usr/bin/env python3
"""Probe: are ``query_occupancy`` calls of freshly started clients lost, where, and what avoids it?

A server runs in its own process: either the real ``reconstruction_node`` (``--server node``, started with
``--log-level reconstruction_node:=debug`` so that every request reaching its callback is logged as
"query_occupancy request N") or a minimal rclpy service of the same type (``--server minimal``) that logs
each request and each response rclpy failed to send. ``--clients`` fresh clients (each its own process,
``--client-mode process``, or its own thread and rclpy context, i.e. its own DDS participant,
``--client-mode thread``) start at the same moment, wait for the service with ``wait_for_service()``,
optionally sleep (``--sleep-after-wait``) or require ``service_is_ready()`` several times in a row
(``--ready-polls``), then make ``--calls`` calls one after another without re-sending, each waiting up to
``--timeout`` seconds for its answer. The probe then compares the answered calls with what the server saw:

* answered: the client got the response;
* lost response: the server received the request (its count) but the client got nothing;
* lost request: the server never received it.

``--server-depth`` / ``--client-depth`` deepen the request / response histories (rclpy's services QoS keeps
the last 10); ``--helper ATTEMPT_S`` makes the clients call through
:class:`~occnet_ros.ros.query_client.OccupancyQueryClient` (re-sent every ATTEMPT_S, deadline ``--timeout``).
``--busy`` loads the server while the clients call: the real node reconstructs a scene published by this
probe at ~4 Hz (worker thread + GIL contention); the minimal server gets a timer in its single-threaded
executor that holds it 50 ms of every 100 ms and a thread that burns CPU in Python.

Each request carries its client and call number in its points ((client, call, 0) in metres, i.e. harmless
points far from any object), so the minimal server can say exactly which calls it received; the real node
only logs a count.

Examples::

    .venv/bin/python tools/service_race_probe.py --server minimal --clients 20 --calls 10
    .venv/bin/python tools/service_race_probe.py --server node --clients 20 --calls 10 --repeat 3
    .venv/bin/python tools/service_race_probe.py --server node --sleep-after-wait 0.5
    .venv/bin/python tools/service_race_probe.py --server minimal --busy --client-mode thread
    .venv/bin/python tools/service_race_probe.py --server minimal --server-depth 1000 --client-depth 1000
    .venv/bin/python tools/service_race_probe.py --server node --helper 0.5 --timeout 10

Prints one summary per trial and, with ``--json FILE``, writes every trial's per-call results.
"""
from __future__ import annotations

import argparse
import array
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from occnet_ros.cli.processes import ros_environment

REPO = Path(__file__).resolve().parents[1]
SERVICE = "query_occupancy"
NAMESPACE = f"/race_probe_{os.getpid()}"
"""The server's namespace: unique, so that no other server of the same name on the same domain answers."""
READY_LINE = "PROBE_SERVER_READY"


# ---------------------------------------------------------------------------------------------- helpers


def _env(domain_id: int) -> dict:
    env = ros_environment(domain_id)
    env["OMP_NUM_THREADS"] = "1"
    # every rclpy RuntimeWarning ("failed to send response (timeout)") printed, not only the first one
    env["PYTHONWARNINGS"] = "always::RuntimeWarning"
    return env


def _make_request(cid: int, k: int):
    from occnet_ros.srv import QueryOccupancy

    req = QueryOccupancy.Request()
    req.points = array.array("f", [float(cid), float(k), 0.0])
    return req


# ---------------------------------------------------------------------------------------------- roles


def run_minimal_server(executor_kind: str, busy: bool, namespace: str, depth: int = 0) -> int:
    """A minimal QueryOccupancy server: answers every request with probability 0, prints ``REQ n cid k``
    per request and ``DROP cid k: <warning>`` for each response rclpy could not send."""
    import warnings

    import rclpy
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, qos_profile_services_default

    from occnet_ros.srv import QueryOccupancy

    rclpy.init()
    node = rclpy.create_node("race_probe_server", namespace=namespace)
    lock = threading.Lock()
    count = [0]
    current = threading.local()

    def on_request(request, response):
        with lock:
            count[0] += 1
            n = count[0]
        cid, k = (int(request.points[0]), int(request.points[1])) if len(request.points) >= 2 else (-1, -1)
        current.request = (cid, k)
        print(f"REQ {n} {cid} {k} {time.time():.4f}", flush=True)
        response.success = True
        response.message = "ok"
        response.probabilities = array.array("f", [0.0] * (len(request.points) // 3))
        response.object_ids = array.array("q", [-1] * (len(request.points) // 3))
        return response

    def show(message, category, filename, lineno, file=None, line=None):  # rclpy's send_response warning
        cid, k = getattr(current, "request", (-1, -1))
        print(f"DROP {cid} {k} {time.time():.4f}: {message}", flush=True)

    warnings.simplefilter("always", RuntimeWarning)
    warnings.showwarning = show
    qos = qos_profile_services_default
    if depth > 0:
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=qos.reliability,
                         durability=qos.durability)
    node.create_service(QueryOccupancy, SERVICE, on_request, qos_profile=qos,
                        callback_group=MutuallyExclusiveCallbackGroup())
    stop = threading.Event()
    if busy:
        node.create_timer(0.1, lambda: time.sleep(0.05))  # holds a single-threaded executor 50% of the time

        def burn():
            while not stop.is_set():
                sum(i * i for i in range(20000))  # pure Python: holds the GIL

        threading.Thread(target=burn, daemon=True).start()
    executor = SingleThreadedExecutor() if executor_kind == "single" else MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    print(READY_LINE, flush=True)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        stop.set()
        print(f"TOTAL {count[0]}", flush=True)
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


def one_client(cid: int, calls: int, timeout: float, sleep_after_wait: float, ready_polls: int,
               start_at: float, domain_id: int | None, late_wait: float = 0.0, service_ns: str = NAMESPACE,
               progress: bool = False, depth: int = 0, helper_attempt_s: float = 0.0) -> dict:
    """One fresh client in its own rclpy context (own DDS participant): created at ``start_at`` (epoch s),
    waits for the service, then ``calls`` calls, each waiting ``timeout`` s, never re-sent; then up to
    ``late_wait`` s more for answers to the unanswered calls (reported as late answers). ``depth`` > 0:
    the client's response history depth (default: services QoS, keep last 10; a client's response reader
    receives the responses to every client of the service and drops the others' only when it takes them).
    ``helper_attempt_s`` > 0: call through :class:`~occnet_ros.ros.query_client.OccupancyQueryClient`
    instead (re-sent every ``helper_attempt_s``, deadline ``timeout``; the helper's own QoS)."""
    import numpy as np
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, qos_profile_services_default
    from rclpy.signals import SignalHandlerOptions

    from occnet_ros.srv import QueryOccupancy

    time.sleep(max(0.0, start_at - time.time()))
    t0 = time.monotonic()
    ctx = Context()
    kw = {} if domain_id is None else {"domain_id": domain_id}
    rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO, **kw)
    out = {"client": cid, "answered": [], "latency_s": [], "wait_s": None}
    try:
        node = rclpy.create_node(f"race_probe_client_{cid}", context=ctx)
        qos = qos_profile_services_default
        if depth > 0:
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=qos.reliability,
                             durability=qos.durability)
        client = node.create_client(QueryOccupancy, f"{service_ns}/{SERVICE}", qos_profile=qos)
        helper = None
        if helper_attempt_s > 0:
            from occnet_ros.ros.query_client import OccupancyQueryClient, QueryError

            helper = OccupancyQueryClient(node, f"{service_ns}/{SERVICE}")
        executor = SingleThreadedExecutor(context=ctx)
        if helper is None:  # the helper spins the node itself
            executor.add_node(node)
        if not client.wait_for_service(timeout_sec=30.0):
            out["error"] = "service not available within 30 s"
            return out
        if progress:
            print(json.dumps(out), flush=True)
        good = 0
        while good < ready_polls:  # service_is_ready() true this many times in a row, 10 ms apart
            good = good + 1 if client.service_is_ready() else 0
            time.sleep(0.01)
        out["wait_s"] = round(time.monotonic() - t0, 3)
        if sleep_after_wait > 0:
            time.sleep(sleep_after_wait)
        unanswered = {}  # call -> (future, sent at): kept pending, so that a late answer is still seen
        for k in range(calls):
            t = time.monotonic()
            if helper is not None:
                try:
                    helper.query(np.array([[cid, k, 0.0]], np.float32), deadline_s=timeout,
                                 attempt_timeout_s=helper_attempt_s)
                    ok = True
                except QueryError as e:
                    ok, out["error"] = False, f"{type(e).__name__}: {e}"
                out["answered"].append(ok)
                out["latency_s"].append(round(time.monotonic() - t, 4) if ok else None)
                continue
            fut = client.call_async(_make_request(cid, k))
            executor.spin_until_future_complete(fut, timeout_sec=timeout)
            ok = fut.done() and fut.result() is not None
            if not ok:
                unanswered[k] = (fut, t)
            out["answered"].append(bool(ok))
            out["latency_s"].append(round(time.monotonic() - t, 4) if ok else None)
            if progress:
                print(json.dumps(out), flush=True)
        end = time.monotonic() + late_wait
        late = {}
        while unanswered and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
            for k, (fut, t) in list(unanswered.items()):
                if fut.done():
                    late[k] = round(time.monotonic() - t, 3)
                    del unanswered[k]
        for fut, _ in unanswered.values():
            client.remove_pending_request(fut)
        out["late_answers"] = late  # call -> seconds after sending, for answers after the timeout
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)
    return out


# ---------------------------------------------------------------------------------------------- driver


def _start_server(args, domain_id: int, log_path: Path) -> subprocess.Popen:
    if args.server == "minimal":
        cmd = [sys.executable, str(Path(__file__).resolve()), "_server", "--executor", args.server_executor,
               "--namespace", NAMESPACE, "--depth", str(args.server_depth)]
        if args.busy:
            cmd.append("--busy")
    else:
        exe = Path(sys.executable).parent / "reconstruction_node"
        logger = NAMESPACE.strip("/").replace("/", ".") + ".reconstruction_node"  # the namespaced node's logger
        cmd = [str(exe), "--ros-args", "-r", f"__ns:={NAMESPACE}", "--log-level", f"{logger}:=debug",
               "-p", "reconstruction.device:=cpu", "-p", "reconstruction.resolution0:=8",
               "-p", "reconstruction.upsampling_steps:=1", "-p", "segmentation.min_points:=20",
               "-p", "filter.min_range:=0.05", "-p", "log_throttle_sec:=0.0"]
        if args.checkpoint:
            cmd += ["-p", f"checkpoint:={args.checkpoint}"]
    log = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(domain_id), cwd=str(REPO))


def _server_ready(args, log_path: Path) -> bool:
    text = log_path.read_text(errors="replace")
    return (READY_LINE in text) if args.server == "minimal" else ("ready:" in text)


def _stop(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class _ScenePublisher:
    """Publishes the test tabletop scene (box + sphere, with masks) at ~4 Hz so that the real node is busy
    reconstructing while the clients call."""

    def __init__(self, domain_id: int):
        import rclpy
        from rclpy.context import Context
        from rclpy.qos import QoSProfile
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        sys.path.insert(0, str(REPO / "test"))
        from ros_helpers import render_scene  # numpy-only scene generator shared with the tests

        self.scene = render_scene(160, 120)
        self.ctx = Context()
        rclpy.init(context=self.ctx, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("race_probe_scene", namespace=NAMESPACE, context=self.ctx)
        qos = QoSProfile(depth=5)
        self.pubs = {n: self.node.create_publisher(t, n, qos) for n, t in
                     (("points", PointCloud2), ("mask", Image), ("image", Image), ("camera_info", CameraInfo))}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        from std_msgs.msg import Header

        from occnet_ros.ros import conversions

        s, stamp = self.scene, 100.0
        while not self.stop.wait(0.25):
            stamp += 0.25
            h = Header(frame_id="camera_color_optical_frame")
            h.stamp.sec, h.stamp.nanosec = int(stamp), int(round((stamp % 1) * 1e9))
            self.pubs["camera_info"].publish(conversions.camera_info(s.camera, h))
            self.pubs["mask"].publish(conversions.array_to_image(s.mask, "mono16", h))
            self.pubs["image"].publish(conversions.array_to_image(s.rgb, "rgb8", h))
            self.pubs["points"].publish(conversions.arrays_to_pointcloud2(s.xyz, None, h))

    def close(self):
        import rclpy

        self.stop.set()
        self.thread.join(2.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.ctx)


def run_trial(args, trial: int, workdir: Path) -> dict:
    domain_id = args.domain if args.domain is not None else random.SystemRandom().randint(20, 99)
    log_path = workdir / f"server_{args.server}_{trial}.log"
    server = _start_server(args, domain_id, log_path)
    scene = None
    try:
        end = time.monotonic() + 120
        while not _server_ready(args, log_path):
            if server.poll() is not None or time.monotonic() > end:
                raise RuntimeError("server did not start:\n" + log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.1)
        if args.busy and args.server == "node":
            scene = _ScenePublisher(domain_id)
            end = time.monotonic() + 60  # until the node reconstructs frames
            while "object(s)" not in log_path.read_text(errors="replace") and time.monotonic() < end:
                time.sleep(0.2)
        received_before = _count_received(args, log_path)
        results = _run_clients(args, domain_id)
        time.sleep(1.0)  # late log lines
    finally:
        if scene is not None:
            scene.close()
        _stop(server)
    text = log_path.read_text(errors="replace")
    return _summarise(args, trial, results, text, received_before, log_path)


def _run_clients(args, domain_id: int) -> list[dict]:
    start_at = time.time() + (args.process_start_s if args.client_mode == "process" else 0.5)
    common = ["--calls", str(args.calls), "--timeout", str(args.timeout), "--sleep-after-wait",
              str(args.sleep_after_wait), "--ready-polls", str(args.ready_polls), "--late-wait", str(args.late_wait),
              "--start-at", f"{start_at:.3f}",
              "--namespace", NAMESPACE, "--client-depth", str(args.client_depth),
              "--helper", str(args.helper)]
    if args.client_mode == "process":
        procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "_client", "--id", str(i)] + common,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(domain_id),
                                  cwd=str(REPO)) for i in range(args.clients)]
        results = []
        end = time.monotonic() + args.process_start_s + 60 + args.calls * args.timeout + args.late_wait
        for i, p in enumerate(procs):
            try:
                out, err = p.communicate(timeout=max(1.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                err = "hung, killed; " + err
            lines = [ln for ln in out.splitlines() if ln.startswith("{")]
            results.append(json.loads(lines[-1]) if lines else
                           {"client": i, "answered": [], "error": f"exit code {p.returncode}: {(out + err)[-500:]}"})
        return results
    results: list[dict | None] = [None] * args.clients

    def worker(i):
        try:
            results[i] = one_client(i, args.calls, args.timeout, args.sleep_after_wait, args.ready_polls,
                                    start_at, domain_id, args.late_wait, depth=args.client_depth,
                                    helper_attempt_s=args.helper)
        except Exception as e:  # reported, not raised: the other clients go on
            results[i] = {"client": i, "answered": [], "error": f"{type(e).__name__}: {e}"}

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _count_received(args, text_or_path) -> int:
    text = text_or_path.read_text(errors="replace") if isinstance(text_or_path, Path) else text_or_path
    if args.server == "minimal":
        return len(re.findall(r"^REQ ", text, flags=re.M))
    return len(re.findall(r"query_occupancy request \d+:", text))


def _summarise(args, trial, results, text, received_before, log_path) -> dict:
    sent = sum(len(r["answered"]) for r in results)
    answered = sum(sum(r["answered"]) for r in results)
    received = _count_received(args, text) - received_before
    drops = len(re.findall(r"failed to send response", text))
    lost = [(r["client"], k) for r in results for k, ok in enumerate(r["answered"]) if not ok]
    late = [(r["client"], int(k), dt) for r in results for k, dt in r.get("late_answers", {}).items()]
    summary = {
        "trial": trial, "server": args.server, "client_mode": args.client_mode, "clients": args.clients,
        "calls": args.calls, "server_depth": args.server_depth, "client_depth": args.client_depth,
        "helper_attempt_s": args.helper, "sleep_after_wait": args.sleep_after_wait, "ready_polls": args.ready_polls,
        "busy": args.busy, "sent": sent, "answered": answered, "lost": len(lost),
        "server_received": received, "server_send_failures_logged": drops,
        "lost_calls_client_call": lost,
        "late_answers_client_call_s": late, "never_answered": len(lost) - len(late),
        "errors": [r for r in results if "error" in r],
        "wait_s_max": max((r.get("wait_s") or 0) for r in results) if results else None,
        "server_log": str(log_path),
    }
    if args.server == "minimal":
        got = {(int(m[0]), int(m[1])) for m in re.findall(r"^REQ \d+ (-?\d+) (-?\d+)", text, flags=re.M)}
        dropped = {(int(m[0]), int(m[1])) for m in re.findall(r"^DROP (-?\d+) (-?\d+)", text, flags=re.M)}
        summary["lost_response_server_got_request"] = [c for c in lost if c in got]
        summary["lost_request_never_received"] = [c for c in lost if c not in got]
        summary["server_reported_drop"] = sorted(dropped)
    else:
        summary["lost_response_server_got_request"] = max(0, received - answered) if received <= sent else None
        summary["lost_request_never_received"] = max(0, sent - received)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="role")
    s = sub.add_parser("_server", help="internal: the minimal server")
    s.add_argument("--executor", choices=("single", "multi"), default="multi")
    s.add_argument("--busy", action="store_true")
    s.add_argument("--namespace", default="/")
    s.add_argument("--depth", type=int, default=0)
    c = sub.add_parser("_client", help="internal: one client process")
    c.add_argument("--id", type=int, required=True)
    for p in (ap, c):
        p.add_argument("--calls", type=int, default=10)
        p.add_argument("--timeout", type=float, default=3.0, help="seconds each call waits for its answer")
        p.add_argument("--sleep-after-wait", type=float, default=0.0)
        p.add_argument("--client-depth", type=int, default=0,
                       help="clients' response history depth (0: rclpy's services default, keep last 10)")
        p.add_argument("--helper", type=float, default=0.0, metavar="ATTEMPT_S",
                       help="call through OccupancyQueryClient, re-sending every ATTEMPT_S s (deadline: --timeout)")
        p.add_argument("--late-wait", type=float, default=5.0,
                       help="after its calls, a client waits this long for late answers to unanswered calls")
        p.add_argument("--ready-polls", type=int, default=0,
                       help="also require service_is_ready() this many times in a row (10 ms apart)")
    c.add_argument("--start-at", type=float, required=True)
    c.add_argument("--namespace", required=True)
    ap.add_argument("--server", choices=("minimal", "node"), default="minimal")
    ap.add_argument("--server-executor", choices=("single", "multi"), default="multi",
                    help="minimal server's executor")
    ap.add_argument("--server-depth", type=int, default=0,
                    help="minimal server: request history depth (0: rclpy's services default, keep last 10)")
    ap.add_argument("--checkpoint", default="", help="real node: checkpoint (default: the shipped weights)")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--client-mode", choices=("process", "thread"), default="process")
    ap.add_argument("--process-start-s", type=float, default=None,
                    help="process clients: seconds from spawning to the common start (default 1.5 x clients / "
                         "cores, at least 3)")
    ap.add_argument("--busy", action="store_true", help="load the server while the clients call")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--domain", type=int, default=None)
    ap.add_argument("--json", default="", help="write every trial's summary here")
    ap.add_argument("--workdir", default=str(REPO / "out" / "service_race_probe"))
    args = ap.parse_args(argv)
    if args.role == "_server":
        return run_minimal_server(args.executor, args.busy, args.namespace, args.depth)
    if args.role == "_client":
        r = one_client(args.id, args.calls, args.timeout, args.sleep_after_wait, args.ready_polls,
                       args.start_at, None, args.late_wait, args.namespace, progress=True,
                       depth=args.client_depth, helper_attempt_s=args.helper)
        print(json.dumps(r), flush=True)
        return 0
    if args.process_start_s is None:
        args.process_start_s = max(3.0, 1.5 * args.clients / (os.cpu_count() or 1))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    summaries = []
    for trial in range(args.repeat):
        summary = run_trial(args, trial, workdir)
        summaries.append(summary)
        short = {k: v for k, v in summary.items() if k not in ("errors",)}
        print(json.dumps(short), flush=True)
        for e in summary["errors"]:
            print(f"  client error: {e}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(summaries, indent=1))
    total_lost = sum(s["lost"] for s in summaries)
    print(f"lost {total_lost} of {sum(s['sent'] for s in summaries)} call(s) over {len(summaries)} trial(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
