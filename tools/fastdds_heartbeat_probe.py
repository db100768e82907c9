"""Show the period of a reliable Fast DDS writer's heartbeats, with and without config/fastdds_profile.xml.

A reliable rclpy publisher matches a reliable subscriber; the subscriber is then stopped (SIGSTOP), the publisher
sends one message, and ``strace`` records the publisher's writes for ``--window`` seconds. Each periodic heartbeat
to a reader on the same host posts that reader's shared-memory semaphore (a ``write`` to ``/dev/shm/sem.*``), so the
gaps between those writes are the heartbeat period: about 3 s with Fast DDS's defaults, 0.1 s with the shipped
profile. Needs Linux, strace and the right to trace one's own children.

Usage: .venv/bin/python tools/fastdds_heartbeat_probe.py [--window 4]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from occnet_ros.ros.launch_spec import fastdds_profile_file  # noqa: E402

PUBLISHER = """
import sys, time, rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("heartbeat_pub")
pub = node.create_publisher(String, "heartbeat_probe", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
end = time.monotonic() + 20
while pub.get_subscription_count() == 0 and time.monotonic() < end:
    rclpy.spin_once(node, timeout_sec=0.05)
time.sleep(1.0)
print("matched", flush=True)
sys.stdin.readline()
pub.publish(String(data="x"))
print("published", flush=True)
time.sleep(float(sys.argv[1]))
"""
SUBSCRIBER = """
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
rclpy.init()
node = rclpy.create_node("heartbeat_sub")
node.create_subscription(String, "heartbeat_probe", lambda m: None,
                         QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
rclpy.spin(node)
"""


def semaphore_writes(profile: str | None, window_s: float, domain_id: int) -> list[float]:
    """Seconds, from the first, of the publisher's writes to shared-memory semaphores over ``window_s``."""
    env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")
    env.pop("FASTDDS_DEFAULT_PROFILES_FILE", None)
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)  # Fast DDS's default transports: shared memory and UDPv4
    if profile:
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
    sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    pub = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(window_s + 5)], env=env, stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "strace.log"
        try:
            if pub.stdout.readline().strip() != "matched":
                raise RuntimeError("the publisher never matched the subscriber")
            sub.send_signal(19)  # SIGSTOP: the subscriber no longer acknowledges
            pub.stdin.write("go\n")
            pub.stdin.flush()
            pub.stdout.readline()
            subprocess.run(["timeout", str(window_s), "strace", "-f", "-tt", "-yy", "-e", "trace=write", "-o",
                            str(trace), "-p", str(pub.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            sub.send_signal(18)
            for p in (sub, pub):
                p.kill()
                p.wait(10)
        times = []
        for line in trace.read_text().splitlines() if trace.exists() else []:
            if "write(" in line and "/dev/shm/sem." in line:
                h, m, s = line.split()[1].split(":")
                times.append(int(h) * 3600 + int(m) * 60 + float(s))
    return [round(t - times[0], 3) for t in times]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--window", type=float, default=4.0, help="seconds traced per run")
    ap.add_argument("--domain-id", type=int, default=int(time.time()) % 60 + 20)
    a = ap.parse_args(argv)
    for name, profile in (("Fast DDS defaults", None), ("config/fastdds_profile.xml", str(fastdds_profile_file()))):
        t = semaphore_writes(profile, a.window, a.domain_id)
        gaps = [round(y - x, 3) for x, y in zip(t, t[1:])]
        print(f"{name}: {len(t)} heartbeat writes in {a.window:g} s, gaps {gaps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
