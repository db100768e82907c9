"""Stopping child processes, the one way the launcher, the demo, the benchmark and the tests do it (no ROS
imports): as Ctrl-C would (SIGINT), then SIGTERM and SIGKILL to whatever has not exited within the grace time."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from occnet_ros.ros.launch_spec import dds_environment

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)


def stop_processes(procs: list[subprocess.Popen], grace: float = 10.0) -> list[int | None]:
    """Send SIGINT to every running process of ``procs`` at once, wait up to ``grace`` seconds for all of
    them, then the same with SIGTERM and with SIGKILL; returns their exit codes (None only for a process
    that outlived SIGKILL's grace)."""
    for sig in STOP_SIGNALS:
        running = [p for p in procs if p.poll() is None]
        if not running:
            break
        for p in running:
            try:
                p.send_signal(sig)
            except ProcessLookupError:  # exited between poll and signal
                pass
        end = time.monotonic() + grace
        while time.monotonic() < end and any(p.poll() is None for p in running):
            time.sleep(0.05)
    return [p.poll() for p in procs]


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> int | None:
    """:func:`stop_processes` for one process; its exit code."""
    return stop_processes([proc], grace)[0]


def ros_environment(domain_id: int, environ: dict[str, str] | None = None) -> dict[str, str]:
    """``environ`` (default: ours) on ``domain_id``, discovery on this host only, the package's Fast DDS settings
    where unset (:func:`~occnet_ros.ros.launch_spec.dds_environment`, as ``occnet_launch``), unbuffered Python output."""
    env = dict(os.environ if environ is None else environ)
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1")
    env.pop("ROS_LOCALHOST_ONLY", None)
    env.update(dds_environment(env))
    return env
