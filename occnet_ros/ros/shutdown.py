"""How the package's programs end on SIGINT: one rule for every executor loop.

rclpy's signal handler shuts the context down and then raises KeyboardInterrupt in the main thread; Python drops
that exception when it lands inside a ``__del__`` ("Exception ignored in: Future.__del__"), and an executor building
its next wait set on the dead context then fails ("failed to initialize wait set"). Both are a shutdown, not an
error. :func:`until_shutdown` treats them so; anything raised while the context is still valid propagates.

The KeyboardInterrupt is raised in the main thread wherever it is: inside one of rclpy's message conversions (a
subscription's take on the thread that spins) pybind11 turns it into "RuntimeError: Unable to convert call argument
'0' to Python object" while the context may still be valid (seen once in a CI run of ``reconstruction_node``, whose
executor takes 5 MB clouds). :func:`spin_until_shutdown` therefore spins in another thread and lets the main thread only
wait.
"""
from __future__ import annotations

import contextlib
import threading

import rclpy
from rclpy.executors import ExternalShutdownException

__all__ = ["end_program", "spin_until_shutdown", "until_shutdown"]


@contextlib.contextmanager
def until_shutdown(context=None):
    """Run the body (a program's spin loop) and return normally when it ends by KeyboardInterrupt,
    ExternalShutdownException, or any exception raised once ``context`` (None = rclpy's default) is shut down."""
    try:
        yield
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok(context=context):
            raise


def spin_until_shutdown(executor, context=None, poll_s: float = 0.1) -> None:
    """Spin ``executor`` in a thread of its own until ``context`` (None = rclpy's default) shuts down, the executor is
    shut down, or SIGINT, while the calling (main) thread only waits, so that SIGINT's KeyboardInterrupt is raised there
    (module docstring). Returns normally on those ends (the executor may still be spinning: shut it down); an exception
    the executor raised while the context was valid is re-raised here."""
    failures: list[BaseException] = []

    def run() -> None:
        try:
            with until_shutdown(context):
                executor.spin()
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            failures.append(e)

    thread = threading.Thread(target=run, name="executor", daemon=True)
    thread.start()
    with until_shutdown(context):
        while thread.is_alive():
            thread.join(poll_s)
    if failures:
        raise failures[0]


def end_program(executor, node, context=None, timeout_s: float = 1.0) -> None:
    """The end of a program's spin loop: ``executor`` shut down (its callbacks given ``timeout_s``), ``node`` destroyed
    and ``context`` (None = rclpy's default) shut down if it is not already."""
    executor.shutdown(timeout_sec=timeout_s)
    node.destroy_node()
    rclpy.try_shutdown(context=context)
