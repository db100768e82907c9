"""Quadric decimation in a worker process, so that the calling process's Python GIL stays free.

Both decimators hold the GIL of the process that calls them for as long as they run (measured on a 2-core
machine, a 178k-face 128^3 network mesh to 5000 faces: fast-simplification 0.2-0.3 s, Open3D's
``simplify_quadric_decimation``, the fallback for meshes the fast one would open, 1.7 s). In the node that
stalls every other thread, the occupancy query service included, until it returns.
:class:`ProcessDecimation` runs :func:`occnet_ros.perception.mesh_ops.fast_or_open3d_decimation` in one persistent worker
process and is a drop-in ``decimate`` for :func:`occnet_ros.perception.mesh_ops.simplify_mesh`: the calling
thread waits on a socket without the GIL. The worker is a fresh interpreter (``python -c``) that imports
only numpy and the decimators (about 110 MB), not a forked copy of the parent (torch, ROS threads) nor a
multiprocessing spawn (which would re-import the parent's main script: for the node, torch and rclpy, about
380 MB). A worker that cannot start makes :meth:`ProcessDecimation.start` raise :class:`DecimationWorkerError`;
a call then decimates in the calling process, with a warning.

The worker never outlives the process that started it (its parent), however that process ends, SIGKILL
included. On Linux the kernel kills it with SIGKILL the moment the parent ends (``PR_SET_PDEATHSIG``; the
worker is started from a thread of this module that lives as long as the parent, since the kernel sends that
signal when the *thread* that started the child ends). Independently of that, a thread in the worker ends it
(``os._exit``) within about 0.5 s of the parent's end, seen on a pidfd of the parent (Linux >= 5.3) or a change
of ``os.getppid()``; that thread needs the worker's GIL, so a decimation running at that moment delays it by up to
that decimation's duration. An idle worker also ends when its connection to the parent closes. The worker
ignores SIGINT (a Ctrl-C in a terminal
reaches the whole process group), so that it ends with its parent rather than before it.
Pure Python, no ROS.
"""
from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from typing import Callable, NoReturn

import numpy as np

from occnet_ros.perception.mesh_ops import fast_or_open3d_decimation, fast_quadric_decimation, quadric_decimation

__all__ = ["ProcessDecimation", "DecimationWorkerError"]

_TETRAHEDRON = (np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]),
                np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]], dtype=np.int64))
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_PARENT_POLL_S = 0.5
_KILL_WAIT_S = 1.0  # how long to wait for a worker to end after SIGKILL


class DecimationWorkerError(RuntimeError):
    """No worker process could be started (:meth:`ProcessDecimation.start`), or the object was closed."""


class _WorkerLost(Exception):
    """The worker died, or gave no answer in time (it has then been killed); ``str`` says which."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


# ------------------------------------------------------------------ in the worker process


def _die_with_parent_thread() -> None:
    """Ask the kernel to SIGKILL this process when the thread that started it ends (Linux; else nothing)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL), ctypes.c_ulong(0),
                   ctypes.c_ulong(0), ctypes.c_ulong(0))
    except (OSError, AttributeError):
        pass


def _watch_parent(parent_pid: int) -> None:
    """Start a daemon thread that ends this process (``os._exit(0)``) once process ``parent_pid`` has ended;
    ends it at once if that has happened already."""
    fds = []
    parent = multiprocessing.parent_process()
    if parent is not None and parent.sentinel is not None:
        fds.append(parent.sentinel)  # readable once the parent's write end is closed: at its exit
    try:
        fds.append(os.pidfd_open(parent_pid))  # readable once that process has ended
    except (AttributeError, OSError):  # no pidfd here, or the parent has ended already (checked next)
        pass
    if os.getppid() != parent_pid:  # checked after pidfd_open: a parent that ends later is seen by it
        os._exit(0)

    def watch() -> None:
        while os.getppid() == parent_pid and not multiprocessing.connection.wait(fds, _PARENT_POLL_S):
            pass
        os._exit(0)

    threading.Thread(target=watch, name="parent_watch", daemon=True).start()


def _serve(conn, parent_pid: int) -> None:
    """The worker's main loop: answer ``(fn, args)`` requests with ``("ok", result)`` or ``("error", exception)``
    until the parent sends ``None`` or closes its end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent_thread()
    _watch_parent(parent_pid)
    conn.send(("ok", os.getpid()))  # ready
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as e:  # a request that cannot be unpickled here
            answer = ("error", e)
        else:
            if request is None:
                return
            fn, args = request
            try:
                answer = ("ok", fn(*args))
            except Exception as e:
                answer = ("error", e)
        try:
            conn.send(answer)
        except (EOFError, OSError):
            return
        except Exception as e:  # an answer that cannot be pickled
            conn.send(("error", RuntimeError(f"the decimation worker could not send its answer: {e!r}")))


def _child_main() -> None:
    """The worker process's entry (``python -c``): argv = [connection fd, parent pid, nice increment]."""
    fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    nice = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    if nice > 0 and hasattr(os, "nice"):
        os.nice(nice)  # background work: the parent's latency-bound threads get a core first
    _serve(multiprocessing.connection.Connection(fd), parent_pid)


def _warm_up() -> int:
    """Import both decimators (by decimating a tetrahedron) and marching cubes (of grids sent to the worker)
    -> this process's id."""
    from occnet_ros.reconstruction import mise  # noqa: F401  (scikit-image, no torch)

    quadric_decimation(*_TETRAHEDRON, 4)
    fast_quadric_decimation(*_TETRAHEDRON, 4)
    return os.getpid()


# ------------------------------------------------------------------ in the parent process

_spawner_lock = threading.Lock()
_spawner_jobs: queue.SimpleQueue | None = None
_spawner: threading.Thread | None = None


def _spawn_jobs(jobs: queue.SimpleQueue) -> None:
    while True:
        start, done = jobs.get()
        try:
            done.set_result(start())
        except BaseException as e:
            done.set_exception(e)


def _start_process(start: Callable[[], "_Child"]) -> "_Child":
    """``start()`` (which starts the worker process) on this module's spawner thread (started on first use, a
    daemon that waits for jobs until the process ends), so that the worker's parent-death signal comes at the
    end of the process, not of the calling thread."""
    global _spawner, _spawner_jobs
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner_jobs = queue.SimpleQueue()
            _spawner = threading.Thread(target=_spawn_jobs, args=(_spawner_jobs,), name="decimation_spawner",
                                        daemon=True)
            _spawner.start()
        done: Future = Future()
        _spawner_jobs.put((start, done))
    return done.result()


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Child:
    """The worker process: a fresh interpreter running :func:`_child_main` (``subprocess``, not
    ``multiprocessing``: a spawned multiprocessing child re-imports the parent's main script, for the node
    torch and rclpy, about 380 MB; this one imports numpy and the decimators, about 110 MB). ``pid``,
    ``exitcode`` (None while running, -N after signal N), ``join``, ``kill``: as ``multiprocessing.Process``."""

    def __init__(self, fd: int, nice: int = 0):
        code = "from occnet_ros.perception.decimation_worker import _child_main; _child_main()"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # the parent's imports
        self._popen = subprocess.Popen([sys.executable, "-c", code, str(fd), str(os.getpid()), str(nice)],
                                       pass_fds=(fd,), env=env, stdin=subprocess.DEVNULL)
        self.pid = self._popen.pid

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def join(self, timeout: float) -> None:
        try:
            self._popen.wait(max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            pass

    def kill(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()


class _Worker:
    """One worker process and the parent's end of its connection (a socket pair; the worker's end is closed
    here once it has started, so the connection reads end-of-file as soon as the worker has died)."""

    def __init__(self, timeout_s: float, nice: int = 0):
        here, there = socket.socketpair()
        self.conn = multiprocessing.connection.Connection(here.detach())
        try:
            self.proc = _start_process(lambda: _Child(there.fileno(), nice))
        except Exception as e:
            self.conn.close()
            raise _WorkerLost(f"the decimation worker process could not be started: {e!r}") from e
        finally:
            there.close()
        self.pid = self.proc.pid
        try:
            self._receive(timeout_s, "to start")
        except _WorkerLost:
            self.stop(0.0)
            raise

    def ask(self, fn, args: tuple, timeout_s: float):
        """``fn(*args)`` in the worker; re-raises its exception. :class:`_WorkerLost` (the worker then stopped)
        if it died or gave no answer within ``timeout_s`` seconds."""
        try:
            try:  # the worker reads each request as soon as it has sent the previous answer: no wait here
                self.conn.send((fn, args))
            except (EOFError, OSError):
                self._died()
            status, value = self._receive(timeout_s, "to answer")
        except _WorkerLost:
            self.stop(0.0)
            raise
        if status == "error":
            raise value
        return value

    def _receive(self, timeout_s: float, what: str):
        ready = multiprocessing.connection.wait([self.conn], timeout_s)
        if self.conn in ready:
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                pass
        elif not ready:
            raise _WorkerLost(f"the decimation worker process (pid {self.pid}) took more than {timeout_s:g} s "
                              f"{what}", timed_out=True)
        self._died()

    def _died(self) -> NoReturn:
        self.proc.join(_KILL_WAIT_S)
        raise _WorkerLost(f"the decimation worker process (pid {self.pid}) died ({_exit_text(self.proc.exitcode)})")

    def stop(self, wait_s: float) -> None:
        """Close the connection (an idle worker then exits), wait up to ``wait_s`` seconds for the worker to
        end, then :meth:`kill` it."""
        try:
            self.conn.close()
        except OSError:
            pass
        self.proc.join(wait_s)
        self.kill()

    def kill(self) -> None:
        """SIGKILL (the worker holds nothing to clean up), then wait up to :data:`_KILL_WAIT_S` seconds."""
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(_KILL_WAIT_S)


class ProcessDecimation:
    """``decimate(vertices, faces, target_faces) -> (vertices, faces)`` run in a worker process.

    vertices: (V, 3) float64, faces: (F, 3) int64, any frame and unit (returned in the same), exactly as
    :func:`~occnet_ros.perception.mesh_ops.fast_or_open3d_decimation` returns them; its exceptions (e.g. for malformed
    input) are raised here as they are. The worker starts on the first call (or :meth:`start`, which also
    imports Open3D there, so the first mesh does not pay for it). Calls never fail because of the worker: if it
    has died, a new one is started and the mesh is sent again; if that one dies too, the mesh is returned as
    it came (undecimated: it may be what kills the worker, and would kill the calling process just the same);
    if the worker gives no answer (or does not start) within ``timeout_s`` seconds (it is then killed), the
    mesh is decimated in the calling process instead. The next call starts a new worker. ``warn`` (default: this module's logger) is
    called with one sentence each time a new worker replaces a lost one and each time a mesh is decimated in
    the calling process; :attr:`restarts` counts the replacements. Thread-safe (one mesh at a time);
    :meth:`close` (or ``with``) stops the worker. See the module docstring for how the worker ends with its
    parent process. ``nice``: added to the worker process's nice value (0..19; see
    :mod:`occnet_ros.perception.priority`)."""

    def __init__(self, timeout_s: float = 120.0, warn: Callable[[str], None] | None = None, nice: int = 0):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if isinstance(nice, bool) or not isinstance(nice, int) or not 0 <= nice <= 19:
            raise ValueError(f"nice must be an integer in 0..19, got {nice!r}")
        self.nice = nice
        self.timeout_s = float(timeout_s)
        self._warn = warn if warn is not None else logging.getLogger(__name__).warning
        self._worker: _Worker | None = None
        self._lost: str | None = None  # why the last worker was lost, until a new one has started
        self._lock = threading.Lock()  # one request at a time
        self._closed = False
        self.restarts = 0

    def _ask(self, fn, args: tuple):
        """``fn(*args)`` in the worker, starting one if needed; one new worker and a second try if it died.
        Raises :class:`_WorkerLost` after the second loss or a timeout."""
        with self._lock:
            for attempt in (1, 2):
                if self._closed:
                    raise DecimationWorkerError("the decimation worker was closed")
                try:
                    if self._worker is None:
                        self._worker = _Worker(self.timeout_s, self.nice)
                        if self._closed:  # closed while it started
                            self._worker.stop(0.0)
                            self._worker = None
                            raise DecimationWorkerError("the decimation worker was closed")
                        if self._lost is not None:
                            self.restarts += 1
                            self._warn(f"{self._lost}; started a new one (pid {self._worker.pid})")
                        self._lost = None
                    return self._worker.ask(fn, args, self.timeout_s)
                except _WorkerLost as e:
                    self._worker, self._lost = None, str(e)
                    if self._closed:
                        raise DecimationWorkerError("the decimation worker was closed") from e
                    if e.timed_out or attempt == 2:
                        raise

    def start(self) -> int:
        """Start the worker (if none is running) and import Open3D in it; -> the worker's process id. Raises
        :class:`DecimationWorkerError` if no worker answers (twice, or once within ``timeout_s``) or after
        :meth:`close`."""
        try:
            return self._ask(_warm_up, ())
        except _WorkerLost as e:
            raise DecimationWorkerError(str(e)) from e

    def __call__(self, vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
        args = (np.ascontiguousarray(vertices, np.float64), np.ascontiguousarray(faces, np.int64), int(target_faces))
        try:
            return self._ask(fast_or_open3d_decimation, args)
        except _WorkerLost as e:
            if not e.timed_out:  # two workers died on this mesh: it may be what kills them, so not here
                self._warn(f"{e}; this mesh ({len(args[1])} faces) is left undecimated")
                return args[0], args[1]
            self._warn(f"{e}; decimating this mesh ({len(args[1])} faces) in this process instead")
        return fast_or_open3d_decimation(*args)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the worker; returns within about ``timeout_s`` + 1 s. A decimation running in the worker may
        finish within ``timeout_s`` (its call then returns normally); after that the worker is killed (SIGKILL)
        and that call raises :class:`DecimationWorkerError`, as do all later calls. Closing again
        does nothing."""
        self._closed = True
        deadline = time.monotonic() + max(timeout_s, 0.0)
        if self._lock.acquire(timeout=max(timeout_s, 0.0)):
            try:
                worker, self._worker = self._worker, None
                if worker is not None:
                    worker.stop(max(deadline - time.monotonic(), 0.0))
            finally:
                self._lock.release()
        else:
            worker = self._worker  # busy past timeout_s: end it; its caller sees the loss and raises
            if worker is not None:
                worker.kill()

    def __enter__(self) -> "ProcessDecimation":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

