"""The decimation worker process: the same meshes as decimating in this process, from another process,
recovery when the worker dies (one warning; a mesh it cannot decimate is decimated here), a worker that
hangs, bounded and clear close. How the worker ends with its parent process: test_process_lifetime.py."""
import os
import signal
import sys
import threading
import time

import numpy as np
import psutil
import pytest
import trimesh

from occnet_ros.blas_threads import BLAS_THREADS_ENV, NODE_BLAS_THREADS, blas_thread_counts
from occnet_ros.perception import decimation_worker
from occnet_ros.perception.decimation_worker import _TETRAHEDRON, DecimationWorkerError, ProcessDecimation
from occnet_ros.perception.mesh_ops import fast_or_open3d_decimation, simplify_mesh


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=4, radius=0.1)  # 5,120 faces, closed


def test_worker_decimates_exactly_as_this_process_does(sphere):
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces, np.int64)
    with ProcessDecimation() as worker:
        pid = worker.start()
        assert pid != os.getpid()  # it runs elsewhere, so our GIL stays free meanwhile
        wv, wf = worker(v, f, 600)
        ref_v, ref_f = fast_or_open3d_decimation(v, f, 600)
        assert np.array_equal(wv, ref_v) and np.array_equal(wf, ref_f)
        a = simplify_mesh(v, f, 600, decimate=worker)
        b = simplify_mesh(v, f, 600)
    assert a.simplified and 0 < len(a.faces) <= 600
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)


def test_a_dead_worker_is_replaced_once_and_close_stops_it(sphere):
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces, np.int64)
    worker = ProcessDecimation()
    first = worker.start()
    os.kill(first, signal.SIGKILL)
    out_v, out_f = worker(v, f, 300)  # the dead worker is noticed, a new one decimates
    assert worker.restarts == 1 and 0 < len(out_f) <= 300 and out_v.shape[1] == 3
    second = worker.start()
    assert second not in (first, os.getpid())
    worker.close()
    with pytest.raises(DecimationWorkerError, match="closed"):
        worker(v, f, 300)
    with pytest.raises(ValueError, match="timeout_s"):
        ProcessDecimation(timeout_s=0)


def _in_worker_process() -> bool:
    return sys.argv[0] == "-c"  # the worker runs ``python -c``; pytest never does


def _dies_in_the_worker(vertices, faces, target_faces):
    """fast_or_open3d_decimation, except that it ends the process when that is a worker (exit code 3)."""
    if _in_worker_process():
        os._exit(3)
    return fast_or_open3d_decimation(vertices, faces, target_faces)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.timeout(120)
def test_a_killed_worker_costs_one_warning_and_the_next_mesh_is_right(sphere):
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces, np.int64)
    warnings = []
    with ProcessDecimation(warn=warnings.append) as worker:
        first = worker.start()
        os.kill(first, signal.SIGINT)  # a Ctrl-C reaches the whole process group: the worker ignores it
        worker(v, f, 400)
        assert warnings == [] and worker.restarts == 0 and worker.start() == first
        os.kill(first, signal.SIGKILL)
        out_v, out_f = worker(v, f, 400)
        ref_v, ref_f = fast_or_open3d_decimation(v, f, 400)
        assert np.array_equal(out_v, ref_v) and np.array_equal(out_f, ref_f)
        assert len(warnings) == 1 and worker.restarts == 1, warnings
        assert f"pid {first}" in warnings[0] and "killed by SIGKILL" in warnings[0]
        assert "started a new one" in warnings[0]
        second = worker.start()
        assert second != first and not _gone(second) and _gone(first)
        assert len(warnings) == 1
    assert _gone(second)


@pytest.mark.timeout(120)
def test_a_mesh_on_which_the_worker_dies_twice_is_left_undecimated(sphere, monkeypatch):
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces, np.int64)
    warnings = []
    with ProcessDecimation(warn=warnings.append) as worker:
        worker.start()
        monkeypatch.setattr(decimation_worker, "fast_or_open3d_decimation", _dies_in_the_worker)
        out_v, out_f = worker(v, f, 400)  # dies, a new worker dies too: the mesh comes back as it was
        assert np.array_equal(out_v, v) and np.array_equal(out_f, f)
        assert len(warnings) == 2 and worker.restarts == 1, warnings
        assert "exit code 3" in warnings[0] and "started a new one" in warnings[0]
        assert "exit code 3" in warnings[1] and f"this mesh ({len(f)} faces) is left undecimated" in warnings[1]
        monkeypatch.undo()
        out_v, out_f = worker(v, f, 400)  # the next call starts a new worker, and says so
        ref_v, ref_f = fast_or_open3d_decimation(v, f, 400)
        assert np.array_equal(out_v, ref_v) and np.array_equal(out_f, ref_f)
        assert len(warnings) == 3 and "started a new one" in warnings[2] and worker.restarts == 2


@pytest.mark.timeout(120)
def test_a_worker_that_does_not_answer_in_time_is_killed_and_the_mesh_decimated_here():
    v, f = _TETRAHEDRON
    warnings = []
    with ProcessDecimation(warn=warnings.append) as worker:
        pid = worker.start()
        os.kill(pid, signal.SIGSTOP)  # alive, but never answers
        worker.timeout_s = 1.0
        t0 = time.monotonic()
        out_v, out_f = worker(v, f, 4)
        assert time.monotonic() - t0 < 4.0
        ref_v, ref_f = fast_or_open3d_decimation(v, f, 4)
        assert np.array_equal(out_v, ref_v) and np.array_equal(out_f, ref_f)
        assert len(warnings) == 1 and "took more than 1 s to answer" in warnings[0], warnings
        assert "in this process instead" in warnings[0] and _gone(pid)
        worker.timeout_s = 120.0
        assert worker.start() != pid and worker.restarts == 1
        assert len(warnings) == 2 and "started a new one" in warnings[1]


@pytest.mark.timeout(120)
def test_close_is_bounded_even_when_the_worker_hangs():
    v, f = _TETRAHEDRON
    idle = ProcessDecimation()
    pid = idle.start()
    os.kill(pid, signal.SIGSTOP)  # cannot exit when its connection closes
    t0 = time.monotonic()
    idle.close(timeout_s=0.5)
    assert time.monotonic() - t0 < 3.0 and _gone(pid)

    busy = ProcessDecimation()
    pid = busy.start()
    os.kill(pid, signal.SIGSTOP)  # the call below waits for an answer that never comes
    raised = []

    def call():
        try:
            busy(v, f, 4)
        except DecimationWorkerError as e:
            raised.append(e)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 10
    while not busy._lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    t0 = time.monotonic()
    busy.close(timeout_s=0.5)
    assert time.monotonic() - t0 < 3.0 and _gone(pid)
    caller.join(5)
    assert not caller.is_alive() and len(raised) == 1 and "closed" in str(raised[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process nice values as Linux reads them")
def test_the_worker_process_runs_at_the_lower_priority_it_was_given():
    own = os.getpriority(os.PRIO_PROCESS, 0)
    with ProcessDecimation(nice=3) as worker:
        pid = worker.start()
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, own + 3)
    with pytest.raises(ValueError, match="0..19"):
        ProcessDecimation(nice=20)


def test_the_worker_process_runs_numpy_blas_on_the_node_s_thread_count(monkeypatch):
    monkeypatch.delenv(BLAS_THREADS_ENV, raising=False)  # not inherited: the worker limits its own BLAS
    with ProcessDecimation() as worker:
        worker.start()
        assert set(worker._ask(blas_thread_counts, ())) == {NODE_BLAS_THREADS}
