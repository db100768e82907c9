"""Child-process helpers shared by the launcher, the demo, the benchmark and the tests (no ROS imports)."""
from __future__ import annotations

import signal
import subprocess


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Stop ``proc`` as Ctrl-C would (SIGINT), SIGKILL it after ``timeout`` seconds; returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return int(proc.returncode)
