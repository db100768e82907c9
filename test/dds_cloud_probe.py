"""A test helper process: ``pub`` publishes organized 640x480 XYZRGB clouds (4.9 MB each) on ``probe_points``;
``sub`` counts the clouds it receives whole. Both best effort, keep last 5, so that the large-sample delivery of the
Fast DDS transports in the process's environment is what is measured.

``python dds_cloud_probe.py pub COUNT HZ`` / ``python dds_cloud_probe.py sub SECONDS COUNT`` (prints ``received N``
after SECONDS, or as soon as COUNT clouds arrived)."""
from __future__ import annotations

import sys
import time

import numpy as np

WIDTH, HEIGHT, POINT_STEP = 640, 480, 16


def _qos():
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT)


def publish(node, count: int, hz: float) -> None:
    import rclpy
    from sensor_msgs.msg import PointCloud2, PointField

    pub = node.create_publisher(PointCloud2, "probe_points", _qos())
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, n in enumerate("xyz")]
    fields.append(PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1))
    msg = PointCloud2(height=HEIGHT, width=WIDTH, fields=fields, is_bigendian=False, point_step=POINT_STEP,
                      row_step=WIDTH * POINT_STEP, is_dense=False)
    msg.data = np.random.default_rng(0).integers(0, 255, HEIGHT * WIDTH * POINT_STEP, dtype=np.uint8).tobytes()
    deadline = time.monotonic() + 20.0
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    time.sleep(1.0)  # the reader's side of the match settles
    for i in range(count):
        msg.header.frame_id = str(i)
        pub.publish(msg)
        time.sleep(1.0 / hz)
    time.sleep(1.0)


def receive(node, seconds: float, count: int) -> int:
    import rclpy
    from sensor_msgs.msg import PointCloud2

    got = []
    node.create_subscription(PointCloud2, "probe_points",
                             lambda m: got.append(len(m.data) == HEIGHT * WIDTH * POINT_STEP), _qos())
    end = time.monotonic() + seconds
    while time.monotonic() < end and sum(got) < count:
        rclpy.spin_once(node, timeout_sec=0.1)
    return sum(got)


def main(argv: list[str] | None = None) -> int:
    import rclpy

    args = sys.argv[1:] if argv is None else argv
    rclpy.init()
    node = rclpy.create_node(f"dds_cloud_probe_{args[0]}")
    try:
        if args[0] == "pub":
            publish(node, int(args[1]), float(args[2]))
        else:
            print(f"received {receive(node, float(args[1]), int(args[2]))}", flush=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
