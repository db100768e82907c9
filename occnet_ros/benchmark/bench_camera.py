"""The ``ros`` and ``map`` sections' camera: a process of its own that publishes one saved 640x480 frame (points, image,
mask, camera_info) with fresh stamps at a steady rate, so the benchmark's planner process only calls the service.
rclpy is imported only inside that process."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PUBLISH_HZ = 5.0
"""Frames per second the camera publishes."""
FRAME_ID = "camera_color_optical_frame"
"""The frame's ``header.frame_id``."""


def save_frame(frame, path: Path) -> Path:
    """The frame's arrays and camera (what :func:`camera_main` publishes) -> ``path`` (.npz)."""
    k = frame.intrinsics
    np.savez(path, points=frame.points, rgb=frame.rgb, mask=frame.mask,
             camera=np.array([k.width, k.height, k.fx, k.fy, k.cx, k.cy], np.float64))
    return path


def camera_main(argv: list[str] | None = None) -> int:
    """``python -c "...; camera_main()" FRAME.npz HZ``: a camera in its own process that publishes the saved
    frame (points, image, mask, camera_info, fresh stamps) at HZ on the ROS domain of its environment until
    SIGINT/SIGTERM, so the benchmark's planner process only calls the service (its own publishing would
    otherwise sit inside the measured round trips)."""
    import signal

    import rclpy
    from rclpy.qos import QoSProfile
    from std_msgs.msg import Header

    from occnet_ros.geometry import PinholeCamera
    from occnet_ros.ros import conversions

    args = sys.argv[1:] if argv is None else argv
    data = np.load(args[0])
    hz = float(args[1])
    w, h, fx, fy, cx, cy = data["camera"]
    intrinsics = PinholeCamera(width=int(w), height=int(h), fx=float(fx), fy=float(fy), cx=float(cx), cy=float(cy))
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    signal.signal(signal.SIGINT, lambda *a: stop.append(1))
    from rclpy.signals import SignalHandlerOptions

    rclpy.init(args=None, signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("occnet_bench_camera")
    qos = QoSProfile(depth=2)
    header = Header(frame_id=FRAME_ID)
    msgs = {"camera_info": conversions.camera_info(intrinsics, header),
            "image": conversions.array_to_image(data["rgb"], "rgb8", header),
            "mask": conversions.array_to_image(data["mask"], "mono16", header),
            "points": conversions.arrays_to_pointcloud2(data["points"], data["rgb"], header)}
    pubs = {name: node.create_publisher(type(m), name, qos) for name, m in msgs.items()}
    next_t = time.monotonic()
    while not stop:
        stamp = node.get_clock().now().to_msg()
        for name, m in msgs.items():
            m.header.stamp = stamp
            pubs[name].publish(m)
        next_t += 1.0 / hz
        time.sleep(max(0.0, next_t - time.monotonic()))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def start_camera(frame_path: Path, domain_id: int, hz: float = PUBLISH_HZ) -> subprocess.Popen:
    """:func:`camera_main` in its own process on ``domain_id``."""
    from occnet_ros.cli.processes import ros_environment

    code = "import sys; from occnet_ros.benchmark.bench_camera import camera_main; sys.exit(camera_main())"
    return subprocess.Popen([sys.executable, "-c", code, str(frame_path), str(hz)], env=ros_environment(domain_id),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
