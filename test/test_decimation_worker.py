"""The decimation worker process: the same meshes as decimating in this process, from another process,
recovery when the worker dies, clear errors after close."""
import os
import signal

import numpy as np
import pytest
import trimesh

from occnet_ros.perception.decimation_worker import DecimationWorkerError, ProcessDecimation
from occnet_ros.perception.mesh_ops import quadric_decimation, simplify_mesh


@pytest.fixture(scope="module")
def sphere():
    return trimesh.creation.icosphere(subdivisions=4, radius=0.1)  # 5,120 faces, closed


def test_worker_decimates_exactly_as_this_process_does(sphere):
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces, np.int64)
    with ProcessDecimation() as worker:
        pid = worker.start()
        assert pid != os.getpid()  # it runs elsewhere, so our GIL stays free meanwhile
        wv, wf = worker(v, f, 600)
        ref_v, ref_f = quadric_decimation(v, f, 600)
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
