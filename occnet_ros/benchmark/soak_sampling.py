"""What the soak test samples while it runs (no ROS imports: numpy and psutil): each process's memory, descriptors,
threads and CPU (:class:`ProcessSampler`), one row of ``soak.csv`` (:func:`sample_row`), the machine, and the node's
``objects`` read without deserializing them (:func:`objects_count`, :func:`query_region`).
:mod:`occnet_ros.benchmark.soak_report` makes the report of them.
"""
from __future__ import annotations

import os
import platform
import struct
import time
from pathlib import Path

import numpy as np

from occnet_ros.reconstruction.compute_pool import usable_cores

SAMPLE_FIELDS = ("t_s", "wall_time", "node_rss_mb", "node_fds", "node_threads", "node_cpu_percent", "children",
                 "children_rss_mb", "camera_rss_mb", "camera_cpu_percent", "frames_total", "camera_frames_total",
                 "queries_ok_total", "queries_failed_total", "queries_timeout_total", "latency_p50_ms",
                 "latency_p99_ms", "latency_max_ms")
"""Columns of soak.csv; totals count from the soak's start, latencies are over the calls since the previous sample."""


def objects_count(data: bytes) -> tuple[float, int]:
    """A serialized ``ReconstructedObjectArray`` (CDR) -> (header stamp s, number of objects), without
    deserializing the meshes."""
    e = "<" if data[1] == 1 else ">"
    sec, nanosec = struct.unpack_from(e + "iI", data, 4)
    (n_id,) = struct.unpack_from(e + "I", data, 12)
    off = 16 + n_id
    off += (-(off - 4)) % 4  # CDR aligns the sequence length to 4 bytes (counted after the encapsulation)
    (n,) = struct.unpack_from(e + "I", data, off)
    return sec + 1e-9 * nanosec, n


def query_region(msg) -> tuple[np.ndarray, np.ndarray]:
    """The axis-aligned box (lo, hi) around every object's oriented bounding box in an objects message."""
    from occnet_ros.geometry import RigidTransform

    corners = []
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64)
    for o in msg.objects:
        q, p, s = o.bbox_pose.orientation, o.bbox_pose.position, o.bbox_size
        tf = RigidTransform.from_quaternion([q.x, q.y, q.z, q.w], [p.x, p.y, p.z])
        corners.append(tf.apply(0.5 * signs * np.array([s.x, s.y, s.z])))
    pts = np.concatenate(corners)
    return pts.min(axis=0), pts.max(axis=0)


class ProcessSampler:
    """psutil samples of one process (and its children)."""

    def __init__(self, pid: int):
        import psutil

        self.psutil = psutil
        self.proc = psutil.Process(pid)
        self.proc.cpu_percent(None)  # the first call starts the interval

    def sample(self) -> dict:
        ps = self.psutil
        try:
            with self.proc.oneshot():
                out = {"rss_mb": self.proc.memory_info().rss / 2**20, "fds": self.proc.num_fds(),
                       "threads": self.proc.num_threads(), "cpu_percent": self.proc.cpu_percent(None)}
            kids = self.proc.children(recursive=True)
        except (ps.NoSuchProcess, ps.AccessDenied):
            return {"rss_mb": float("nan"), "fds": None, "threads": None, "cpu_percent": float("nan"),
                    "children": None, "children_rss_mb": float("nan")}
        rss = 0
        for c in kids:
            try:
                rss += c.memory_info().rss
            except (ps.NoSuchProcess, ps.AccessDenied):
                pass
        return out | {"children": len(kids), "children_rss_mb": rss / 2**20}


def machine_info() -> dict:
    import psutil

    cpu = platform.processor() or "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    usable = usable_cores()
    return {"cpu_model": cpu, "cpu_count": os.cpu_count(), "usable_cores": usable,
            "memory_gb": psutil.virtual_memory().total / 2**30,
            "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version()}


def sample_row(t: float, node: dict, camera: dict, frames: int, camera_frames: int,
               calls: list[tuple[float, float, str]], since: int) -> dict:
    """One row of soak.csv (:data:`SAMPLE_FIELDS`): ``node`` / ``camera``: :meth:`ProcessSampler.sample` s;
    ``frames`` / ``camera_frames``: totals so far; ``calls``: every query so far, ``calls[since:]`` those since
    the previous sample (their latency percentiles)."""
    lat = [c[1] * 1e3 for c in calls[since:] if c[2] == "ok"]
    return {"t_s": round(t, 3), "wall_time": time.strftime("%H:%M:%S"), "node_rss_mb": node["rss_mb"],
            "node_fds": node["fds"], "node_threads": node["threads"], "node_cpu_percent": node["cpu_percent"],
            "children": node["children"], "children_rss_mb": node["children_rss_mb"],
            "camera_rss_mb": camera["rss_mb"], "camera_cpu_percent": camera["cpu_percent"], "frames_total": frames,
            "camera_frames_total": camera_frames, "queries_ok_total": sum(c[2] == "ok" for c in calls),
            "queries_failed_total": sum(c[2] == "failed" for c in calls),
            "queries_timeout_total": sum(c[2] == "timeout" for c in calls),
            "latency_p50_ms": percentile(lat, 50), "latency_p99_ms": percentile(lat, 99),
            "latency_max_ms": max(lat) if lat else float("nan")}


def percentile(values, q: float) -> float:
    """The ``q``-th percentile of ``values`` (any sequence of numbers), NaN for none."""
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else float("nan")
