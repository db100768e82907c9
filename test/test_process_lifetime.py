"""No process outlives the one that started it: the decimation worker ends within seconds of its parent's end,
however it ended (SIGINT, SIGTERM, SIGKILL), for a :class:`ProcessDecimation` in a small program and for the
reconstruction node.

The node runs with a random-weight checkpoint (TEST DOUBLE, see ros_helpers.write_random_checkpoint) and
mesh.max_faces > 0, so that it starts its decimation worker.
"""
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
from ros_helpers import random_domain_id, start_program, stop_program, wait_until, write_random_checkpoint

pytest.importorskip("rclpy")

NODE_ARGS = ["-p", "reconstruction.device:=cpu", "-p", "reconstruction.resolution0:=8",
             "-p", "reconstruction.upsampling_steps:=1", "-p", "mesh.max_faces:=2000",
             "-p", "mesh.decimate_in_worker:=true"]
GRACE_S = 5.0  # how long descendants may outlive the node

HELPER = textwrap.dedent('''
    """Start a ProcessDecimation from a thread that then ends, check that its worker still serves, print
    "<worker pid> <restarts>", optionally keep it busy with a big mesh, and sleep."""
    import sys
    import threading
    import time

    import numpy as np

    from occnet_ros.perception.decimation_worker import ProcessDecimation


    def main():
        worker = ProcessDecimation()
        started = {}
        starter = threading.Thread(target=lambda: started.update(pid=worker.start()))
        starter.start()
        starter.join()
        time.sleep(0.5)  # the thread that started the worker has ended; the worker must not have
        v = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
        f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
        worker(v, f, 4)
        print(started["pid"], worker.restarts, flush=True)
        if sys.argv[1] == "busy":
            import trimesh

            big = trimesh.creation.icosphere(subdivisions=7)  # several seconds of decimation, holding its GIL
            bv, bf = np.asarray(big.vertices), np.asarray(big.faces)
            threading.Thread(target=lambda: [worker(bv, bf, 1000) for _ in iter(int, 1)], daemon=True).start()
            time.sleep(1.0)
            print("busy", flush=True)
        time.sleep(300)


    if __name__ == "__main__":
        main()
    ''')


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "random_test_double.pt")


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes of ``procs`` still running (a zombie has ended)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds for ``procs`` to end; -> those still running."""
    wait_until(lambda: not _alive(procs), timeout, step=0.01)
    return _alive(procs)


def _describe(procs: list[psutil.Process]) -> str:
    lines = []
    for p in procs:
        try:
            lines.append(f"pid {p.pid}: {' '.join(p.cmdline())}")
        except psutil.Error as e:
            lines.append(f"pid {p.pid}: ({e})")
    return "\n".join(lines)


def _kill_all(procs: list[psutil.Process]) -> None:
    for p in _alive(procs):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def _is_worker(p: psutil.Process) -> bool:
    return "decimation_worker import _child_main" in " ".join(p.cmdline())


@pytest.mark.timeout(90)
@pytest.mark.parametrize("busy", [False, True], ids=["idle", "decimating"])
def test_a_killed_parent_leaves_no_worker(tmp_path, busy):
    script = tmp_path / "decimation_parent.py"
    script.write_text(HELPER)
    parent = subprocess.Popen([sys.executable, str(script), "busy" if busy else "idle"], stdout=subprocess.PIPE,
                              text=True)
    descendants = []
    try:
        pid, restarts = map(int, parent.stdout.readline().split())
        assert restarts == 0  # the worker did not end with the thread that started it
        if busy:
            assert parent.stdout.readline().strip() == "busy"
        descendants = psutil.Process(parent.pid).children(recursive=True)
        assert pid in [p.pid for p in descendants if _is_worker(p)], _describe(descendants)
        parent.kill()
        t0 = time.monotonic()
        parent.wait(10)
        left = _wait_gone(descendants, 2.0)
        assert not left, f"alive {time.monotonic() - t0:.1f} s after the parent's SIGKILL:\n{_describe(left)}"
    finally:
        parent.kill()
        parent.wait(10)
        _kill_all(descendants)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_no_process_outlives_the_node(tmp_path, checkpoint, sig):
    log = tmp_path / "node.log"
    node = start_program("reconstruction_node", NODE_ARGS + ["-p", f"checkpoint:={checkpoint}"], random_domain_id(),
                         log)
    descendants = []
    try:
        wait_until(lambda: "ready:" in log.read_text() or node.poll() is not None, 90, step=0.1)
        assert node.poll() is None and "ready:" in log.read_text(), log.read_text()[-3000:]
        descendants = psutil.Process(node.pid).children(recursive=True)
        assert any(_is_worker(p) for p in descendants), _describe(descendants)  # the decimation worker
        t0 = time.monotonic()
        node.send_signal(sig)
        rc = node.wait(15)
        left = _wait_gone(descendants, max(GRACE_S - (time.monotonic() - t0), 0.0))
        assert not left, f"alive {time.monotonic() - t0:.1f} s after {sig.name} to the node:\n{_describe(left)}"
        text = log.read_text()
        if sig == signal.SIGKILL:
            assert rc == -signal.SIGKILL
        else:  # rclpy's signal handlers shut the node down cleanly on SIGINT and SIGTERM alike
            assert rc == 0 and "Traceback" not in text, f"exit code {rc}:\n{text[-3000:]}"
    finally:
        if node.poll() is None:
            stop_program(node)
        _kill_all(descendants)
