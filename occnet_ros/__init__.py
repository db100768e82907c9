"""occnet_ros: object reconstruction with a point-cloud-conditioned Occupancy Network, for ROS 2.

The pure-Python API (no rclpy) is importable from here::

    from occnet_ros import Reconstructor

The generated ROS interfaces (``occnet_ros.msg``, ``occnet_ros.srv``) may be installed in another
directory than these sources (pip route: see README); ``extend_path`` joins the two.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__all__ = ["Reconstructor", "ReconstructedObject"]


def __getattr__(name):  # lazy: importing occnet_ros.msg must not import torch
    if name in ("Reconstructor", "ReconstructedObject"):
        from occnet_ros.reconstruction import reconstructor

        return getattr(reconstructor, name)
    raise AttributeError(name)
