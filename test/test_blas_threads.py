"""numpy's BLAS threads in the node's processes (occnet_ros.blas_threads): limited in this process and in the processes
it starts, and left alone where the environment says otherwise. Each case runs in a fresh interpreter, so the limit
never leaks into the test process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from occnet_ros.blas_threads import BLAS_THREADS_ENV, limit_blas_threads

SCRIPT = """
import json, os, subprocess, sys
import numpy as np
from occnet_ros.blas_threads import blas_thread_counts, limit_blas_threads
before = blas_thread_counts()
said = limit_blas_threads(int(sys.argv[1]))
np.ones((300, 300)) @ np.ones((300, 300))  # BLAS still answers
child = subprocess.run([sys.executable, "-c", "import json, numpy; from occnet_ros.blas_threads import "
                        "blas_thread_counts; print(json.dumps(blas_thread_counts()))"],
                       capture_output=True, text=True, check=True).stdout
print(json.dumps({"before": before, "said": said, "after": blas_thread_counts(), "env": os.environ.get("%s"),
                  "child": json.loads(child)}))
""" % BLAS_THREADS_ENV


def _run(threads: int, env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != BLAS_THREADS_ENV}
    if env_value is not None:
        env[BLAS_THREADS_ENV] = env_value
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(threads)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_limit_holds_in_this_process_and_in_the_processes_it_starts():
    res = _run(1, None)
    assert res["before"], "numpy's BLAS is not visible to threadpoolctl"
    assert res["said"] == "BLAS threads limited to 1"
    assert set(res["after"]) == {1} and res["env"] == "1" and set(res["child"]) == {1}


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS has one thread anyway")
def test_a_different_value_in_the_environment_rules():
    res = _run(1, "2")
    assert res["said"] == f"BLAS threads left to {BLAS_THREADS_ENV}=2"
    assert res["env"] == "2" and set(res["after"]) == set(res["before"]) == set(res["child"]) == {2}


def test_the_same_value_in_the_environment_is_applied_again():
    res = _run(1, "1")
    assert res["said"] == "BLAS threads limited to 1" and set(res["after"]) == {1}


@pytest.mark.parametrize("bad", [0, -1, True, 1.0, "1"])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="integer >= 1"):
        limit_blas_threads(bad)
