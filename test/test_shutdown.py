"""until_shutdown (occnet_ros.ros.shutdown): how every program's spin loop ends on SIGINT. An exception raised once
the context is shut down (rclpy's signal handler does that while a spin may be building its wait set) is a clean end;
the same exception while the context is valid propagates; KeyboardInterrupt is a clean end. spin_until_shutdown spins
in another thread: it returns when the context shuts down or the main thread is interrupted, and re-raises what the
executor raised while the context was valid."""
import _thread
import signal
import threading

import pytest
from ros_helpers import random_domain_id

rclpy = pytest.importorskip("rclpy")
from rclpy.signals import SignalHandlerOptions  # noqa: E402

from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from occnet_ros.ros.shutdown import end_program, spin_until_shutdown, until_shutdown  # noqa: E402


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=random_domain_id(), signal_handler_options=SignalHandlerOptions.NO)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def test_a_failure_after_the_shutdown_is_a_clean_end(context):
    ended = []
    with until_shutdown(context):
        rclpy.shutdown(context=context)
        raise RuntimeError("failed to initialize wait set")
    ended.append(True)
    assert ended == [True]


def test_a_failure_while_the_context_is_valid_propagates(context):
    with pytest.raises(RuntimeError, match="a real error"):
        with until_shutdown(context):
            raise RuntimeError("a real error")
    assert rclpy.ok(context=context)


def test_keyboard_interrupt_is_a_clean_end(context):
    with until_shutdown(context):
        raise KeyboardInterrupt


def executor_with_timer(context, callback):
    node = rclpy.create_node("shutdown_test", context=context)
    node.create_timer(0.02, callback)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    return executor, node


def test_spin_until_shutdown_returns_when_the_context_shuts_down(context):
    ticks = []
    executor, node = executor_with_timer(context, lambda: ticks.append(1))
    threading.Timer(0.3, lambda: rclpy.shutdown(context=context)).start()
    spin_until_shutdown(executor, context)
    assert ticks and not rclpy.ok(context=context)  # the executor ran in its thread until the shutdown
    executor.shutdown()


def test_an_interrupt_of_the_main_thread_is_a_clean_end_while_the_executor_spins(context):
    ticks, threads = [], set()
    executor, node = executor_with_timer(context, lambda: ticks.append(threads.add(threading.get_ident())))
    # Python's own SIGINT handler for the test: a process started in the background by a shell inherits SIGINT
    # ignored, and then interrupt_main does nothing (a fresh-clone CI run started that way hung here)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    interrupt = threading.Timer(0.3, _thread.interrupt_main)  # what SIGINT's handler raises in the main thread
    # an interrupt that never lands fails the test instead of hanging the suite
    fallback = threading.Timer(10.0, lambda: rclpy.shutdown(context=context))
    try:
        interrupt.start()
        fallback.start()
        spin_until_shutdown(executor, context)
    finally:
        fallback.cancel()
        interrupt.join()
        signal.signal(signal.SIGINT, previous)
    assert rclpy.ok(context=context)  # the interrupt ended the spin, not the fallback shutdown
    assert ticks and threading.get_ident() not in threads  # callbacks ran on the executor's own thread
    executor.shutdown()
    node.destroy_node()


def test_an_executor_failure_while_the_context_is_valid_propagates(context):
    def fail():
        raise ValueError("a callback's bug")

    executor, node = executor_with_timer(context, fail)
    with pytest.raises(ValueError, match="a callback's bug"):
        spin_until_shutdown(executor, context)
    executor.shutdown()
    node.destroy_node()


def test_end_program_shuts_the_executor_node_and_context_down(context):
    executor, node = executor_with_timer(context, lambda: None)
    end_program(executor, node, context)
    assert not rclpy.ok(context=context)
    with pytest.raises(rclpy._rclpy_pybind11.InvalidHandle):  # the node is destroyed
        node.get_name()
