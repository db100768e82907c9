"""A worker process tied to its parent: a fresh Python interpreter that answers requests over a socket, so that
work which holds the GIL runs without stalling the parent's threads (pure Python, no ROS).

Used by the mesh decimation workers (:mod:`occnet_ros.perception.decimation_worker`) and the node's reconstruction
process (:mod:`occnet_ros.ros.reconstruction_process`). The worker is started with ``python -c`` running an entry
function of a module (``"package.module:function"``), not forked from the parent (torch and ROS threads) nor
started by multiprocessing's spawn (which re-imports the parent's main script: for the node, torch and rclpy); it
imports what its entry needs. The entry reads its arguments with :func:`child_arguments` and answers with
:func:`serve`. Requests and answers travel as plain pickles (:func:`send` / :func:`receive`), not as
multiprocessing's own, which after ``import torch`` would try to share tensors through file descriptors: a tensor
goes by value.

The worker never outlives the process that started it (its parent), however that process ends, SIGKILL
included. On Linux the kernel kills it with SIGKILL the moment the parent ends (``PR_SET_PDEATHSIG``; the
worker is started from a thread of this module that lives as long as the parent, since the kernel sends that
signal when the *thread* that started the child ends). Independently of that, a thread in the worker ends it
(``os._exit``) within about 0.5 s of the parent's end, seen on a pidfd of the parent (Linux >= 5.3) or a change
of ``os.getppid()``; that thread needs the worker's GIL, so a long call holding it at that moment delays it by up
to that call's duration. An idle worker also ends when its connection to the parent closes. The worker ignores
SIGINT (a Ctrl-C in a terminal reaches the whole process group), so that it ends with its parent rather than
before it.
"""
from __future__ import annotations

import ctypes
import io
import multiprocessing
import multiprocessing.connection
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future
from typing import Callable, NoReturn

__all__ = ["WorkerLost", "WorkerConnection", "child_arguments", "serve", "exit_text", "send", "receive"]

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_PARENT_POLL_S = 0.5
KILL_WAIT_S = 1.0
"""How long to wait for a worker to end after SIGKILL, s."""


class WorkerLost(Exception):
    """The worker died, or gave no answer in time (it has then been killed); ``str`` says which."""

    def __init__(self, message: str, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


_NUMPY_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
"""torch dtypes (by name) whose CPU tensors travel as numpy arrays."""


def _tensor_from_array(array):
    import torch

    return torch.from_numpy(array)


class _Pickler(pickle.Pickler):
    """A plain pickler that writes a CPU tensor of a numpy dtype as its numpy array (a copy of its memory), which
    loads several times faster than torch's own pickling (a ``torch.load`` per storage); other tensors as torch
    pickles them."""

    def reducer_override(self, obj):
        torch = sys.modules.get("torch")
        if (torch is not None and isinstance(obj, torch.Tensor) and type(obj) is torch.Tensor
                and obj.device.type == "cpu" and obj.layout == torch.strided and not obj.requires_grad
                and str(obj.dtype).removeprefix("torch.") in _NUMPY_DTYPES):
            return _tensor_from_array, (obj.numpy(),)
        return NotImplemented


def send(conn, obj) -> None:
    """``obj`` over ``conn`` as a plain pickle (highest protocol; CPU tensors as numpy arrays)."""
    buffer = io.BytesIO()
    _Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    conn.send_bytes(buffer.getbuffer())


def receive(conn):
    """The next object :func:`send` sent over ``conn``."""
    return pickle.loads(conn.recv_bytes())


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


def child_arguments() -> tuple[multiprocessing.connection.Connection, int]:
    """In a worker's entry function: (its connection to the parent, the parent's pid), from the command line
    :class:`WorkerConnection` gave it; the worker's nice value is raised by the increment given there."""
    fd, parent_pid = int(sys.argv[1]), int(sys.argv[2])
    nice = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    if nice > 0 and hasattr(os, "nice"):
        os.nice(nice)  # background work: the parent's latency-bound threads get a core first
    return multiprocessing.connection.Connection(fd), parent_pid


def serve(conn, parent_pid: int, handle: Callable[[object], object], ready: object = None) -> None:
    """The worker's main loop: answer each request with ``("ok", handle(request))`` or ``("error", exception)``
    until the parent sends ``None`` or closes its end. The first message is ``("ok", ready)`` (default: this
    process's id), sent once the worker is tied to its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent_thread()
    _watch_parent(parent_pid)
    send(conn, ("ok", os.getpid() if ready is None else ready))
    while True:
        try:
            request = receive(conn)
        except (EOFError, OSError):
            return
        except Exception as e:  # a request that cannot be unpickled here
            answer = ("error", e)
        else:
            if request is None:
                return
            try:
                answer = ("ok", handle(request))
            except Exception as e:
                answer = ("error", e)
        try:
            send(conn, answer)
        except (EOFError, OSError):
            return
        except Exception as e:  # an answer that cannot be pickled
            send(conn, ("error", RuntimeError(f"the worker could not send its answer: {e!r}")))


# ------------------------------------------------------------------ in the parent process


class _Spawner:
    """One daemon thread, started on first use, that starts every worker process, so that a worker's
    parent-death signal comes at the end of the process, not of the thread that asked for the worker."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def _run(jobs: queue.SimpleQueue) -> None:
        while True:
            start, done = jobs.get()
            try:
                done.set_result(start())
            except BaseException as e:
                done.set_exception(e)

    def __call__(self, start: Callable[[], "_Child"]) -> "_Child":
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._jobs = queue.SimpleQueue()
                self._thread = threading.Thread(target=self._run, args=(self._jobs,), name="worker_spawner",
                                                daemon=True)
                self._thread.start()
            done: Future = Future()
            self._jobs.put((start, done))
        return done.result()


_SPAWNER = _Spawner()  # the process's one spawner thread: the kernel ties each worker's life to it


def exit_text(code: int | None) -> str:
    """A process's exit status in words (``code`` as ``Popen.poll``: None = running, -N = signal N)."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class _Child:
    """The worker process: a fresh interpreter running ``entry`` (``"module:function"``) with argv = [connection
    fd, parent pid, nice increment]. ``pid``, ``exitcode`` (None while running, -N after signal N), ``join``,
    ``kill``: as ``multiprocessing.Process``."""

    def __init__(self, fd: int, nice: int, entry: str):
        module, function = entry.split(":")
        code = f"from {module} import {function}; {function}()"
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


class WorkerConnection:
    """One worker process and the parent's end of its connection (a socket pair; the worker's end is closed
    here once it has started, so the connection reads end-of-file as soon as the worker has died).

    entry: ``"module:function"`` the worker runs (it calls :func:`child_arguments` and :func:`serve`); name: how
    messages call it ("the decimation worker process"); nice: added to its nice value (0..19); timeout_s: how
    long it may take to start. Raises :class:`WorkerLost` when it does not start; :attr:`ready` holds its first
    answer (:func:`serve`'s ``ready``)."""

    def __init__(self, entry: str, name: str, timeout_s: float, nice: int = 0):
        self.name = name
        here, there = socket.socketpair()
        self.conn = multiprocessing.connection.Connection(here.detach())
        try:
            self.proc = _SPAWNER(lambda: _Child(there.fileno(), nice, entry))
        except Exception as e:
            self.conn.close()
            raise WorkerLost(f"{name} could not be started: {e!r}") from e
        finally:
            there.close()
        self.pid = self.proc.pid
        try:
            self.ready = self._receive(timeout_s, "to start")[1]
        except WorkerLost:
            self.stop(0.0)
            raise

    def ask(self, request, timeout_s: float | None):
        """The worker's answer to ``request``; re-raises its exception. :class:`WorkerLost` (the worker then
        stopped) if it died or gave no answer within ``timeout_s`` seconds (None = no limit)."""
        try:
            try:  # the worker reads each request as soon as it has sent the previous answer: no wait here
                send(self.conn, request)
            except (EOFError, OSError):
                self._died()
            status, value = self._receive(timeout_s, "to answer")
        except WorkerLost:
            self.stop(0.0)
            raise
        if status == "error":
            raise value
        return value

    def _receive(self, timeout_s: float | None, what: str):
        ready = multiprocessing.connection.wait([self.conn], timeout_s)
        if self.conn in ready:
            try:
                return receive(self.conn)
            except (EOFError, OSError):
                pass
        elif not ready:
            raise WorkerLost(f"{self.name} (pid {self.pid}) took more than {timeout_s:g} s {what}", timed_out=True)
        self._died()

    def _died(self) -> NoReturn:
        self.proc.join(KILL_WAIT_S)
        raise WorkerLost(f"{self.name} (pid {self.pid}) died ({exit_text(self.proc.exitcode)})")

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
        """SIGKILL, then wait up to :data:`KILL_WAIT_S` seconds."""
        if self.proc.exitcode is None:
            self.proc.kill()
            self.proc.join(KILL_WAIT_S)
