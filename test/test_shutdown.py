"""until_shutdown (occnet_ros.ros.shutdown): how every program's spin loop ends on SIGINT. An exception raised once
the context is shut down (rclpy's signal handler does that while a spin may be building its wait set) is a clean end;
the same exception while the context is valid propagates; KeyboardInterrupt is a clean end."""
import pytest
from ros_helpers import random_domain_id

rclpy = pytest.importorskip("rclpy")
from rclpy.signals import SignalHandlerOptions  # noqa: E402

from occnet_ros.ros.shutdown import until_shutdown  # noqa: E402


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
