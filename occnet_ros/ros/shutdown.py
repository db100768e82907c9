"""How the package's programs end on SIGINT: one rule for every executor loop.

rclpy's signal handler shuts the context down and then raises KeyboardInterrupt in the main thread; Python drops
that exception when it lands inside a ``__del__`` ("Exception ignored in: Future.__del__"), and an executor building
its next wait set on the dead context then fails ("failed to initialize wait set"). Both are a shutdown, not an
error. :func:`until_shutdown` treats them so; anything raised while the context is still valid propagates.
"""
from __future__ import annotations

import contextlib

import rclpy
from rclpy.executors import ExternalShutdownException

__all__ = ["until_shutdown"]


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
