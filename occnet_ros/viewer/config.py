"""Parameters of ``viewer_node``, each described once where its field is declared (:func:`setting`).

ROS parameter names are the field names (``web_port``, ``cloud_topic``, ...); :func:`viewer_config` checks
types and ranges (pure) and names the parameter in its error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from occnet_ros.config_io import ConfigError, SettingInfo, describe, from_dict, setting

NODE_NAME = "viewer_node"

_TOPIC = re.compile(r"^~?/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*(B|KB|MB|GB|KiB|MiB|GiB|%)$")


class ViewerParamError(ValueError):
    """A viewer parameter value the node cannot run with; the message names the parameter."""


@dataclass
class ViewerConfig:
    """Everything ``viewer_node`` reads at start (each field's ``doc``)."""

    web_port: int = setting(9090, doc="TCP port of the web viewer page (http://HOST:web_port/)", range=(1, 65535))
    grpc_port: int = setting(9876, doc="TCP port of the Rerun data server that the page connects to",
                             range=(1, 65535))
    host: str = setting("localhost", doc="host name printed in the page address (the servers listen on every "
                        "interface); use the machine's name or IP address to open the page from another computer")
    cloud_topic: str = setting("points", doc="input cloud (sensor_msgs/PointCloud2, sensor-data QoS), the "
                               "reconstruction node's input; empty = not shown")
    objects_topic: str = setting("objects", doc="reconstructed objects (occnet_ros/ReconstructedObjectArray)")
    query_topic: str = setting("query_points", doc="recent query_occupancy points with their probabilities "
                               "(sensor_msgs/PointCloud2 x, y, z, probability); empty = not shown")
    pose_topic: str = setting("camera_pose", doc="pose of the cloud's frame in `frame` (geometry_msgs/PoseStamped, "
                              "the object map's camera_pose), used to show a cloud that is not in `frame`; "
                              "empty = such clouds are not shown")
    frame: str = setting("", doc="fixed frame of the view; data in another frame is shown only when it can be "
                         "placed (a cloud with a camera_pose); empty = the frame of the first objects message")
    axes: Literal["auto", "RDF", "RFU", "FLU", "RUB"] = setting(
        "auto", doc="directions of the fixed frame's x, y, z for the 3D view's camera (R right, D down, F forward, "
        "U up, L left, B back): RDF = a camera optical frame, FLU = a z-up world or robot frame; auto = REP 103's "
        "convention: RDF for a frame named *_optical_frame or *_optical, else FLU")
    max_cloud_points: int = setting(30000, doc="largest number of cloud points shown (evenly subsampled)",
                                    range=(1, 5000000))
    max_cloud_rate: float = setting(2.0, doc="most clouds shown per second; clouds arriving sooner are skipped "
                                    "before they are decoded, Hz", range=(0.01, 100.0))
    max_query_points: int = setting(20000, doc="largest number of query points shown per request",
                                    range=(1, 5000000))
    point_radius: float = setting(0.002, doc="radius of a shown cloud point, m", range=(1e-5, 1.0))
    query_radius: float = setting(0.004, doc="radius of a shown query point, m", range=(1e-5, 1.0))
    pose_tolerance: float = setting(0.05, doc="largest stamp difference between a cloud and the camera_pose "
                                    "that places it, s", range=(0.0, 10.0))
    memory_limit: str = setting("512MB", doc="data the server keeps for pages that connect later (oldest "
                                "dropped first), e.g. 512MB, 2GB or 10%")
    log_throttle_sec: float = setting(5.0, doc="smallest interval between repeated warnings, s",
                                      range=(0.0, 3600.0))

    def validate(self) -> None:
        if self.web_port == self.grpc_port:
            raise ValueError(f"web_port and grpc_port must differ, both are {self.web_port}")
        for name in ("cloud_topic", "query_topic", "pose_topic", "objects_topic"):
            topic = getattr(self, name)
            if (topic or name == "objects_topic") and not _TOPIC.match(topic):
                raise ValueError(f"{name} {topic!r} is not a valid ROS topic name")
        if self.frame.startswith("/"):
            raise ValueError(f"frame must not start with '/', got {self.frame!r}")
        if not self.host or any(c in self.host for c in "/:? "):
            raise ValueError(f"host must be a host name or IPv4 address, got {self.host!r}")
        if not _MEMORY.match(self.memory_limit.strip()):
            raise ValueError(f"memory_limit {self.memory_limit!r} is not a size like 512MB, 2GB or 10%")


PARAMETERS: dict[str, SettingInfo] = describe(ViewerConfig)
"""{parameter name: description, range, default}, from the fields of :class:`ViewerConfig`."""


def viewer_config(values: dict[str, Any]) -> ViewerConfig:
    """Validated :class:`ViewerConfig` from {parameter name: value}; :class:`ViewerParamError` names the
    parameter (unknown name, wrong type, outside its range, or a rule of :meth:`ViewerConfig.validate`)."""
    for name, value in values.items():
        if name not in PARAMETERS:
            raise ViewerParamError(f"unknown parameter '{name}'")
        rng = PARAMETERS[name].range
        if rng is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            if not rng[0] <= value <= rng[1]:
                raise ViewerParamError(f"parameter '{name}' = {value!r} is outside [{rng[0]}, {rng[1]}]")
    try:
        return from_dict(ViewerConfig, dict(values), where="parameter")
    except ConfigError as e:
        raise ViewerParamError(re.sub(r"^parameter\.(\w+):", r"parameter '\1':", str(e))) from e
