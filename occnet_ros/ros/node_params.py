"""Parameters of ``reconstruction_node``: the frame pipeline's settings plus the node's own, each
described once, where its field is declared.

ROS parameter names are the dotted paths of the fields of :class:`NodeParams` (``segmentation.min_points``,
``reconstruction.resolution0``); each field's ``doc`` and ``range`` (:func:`occnet_ros.config_io.setting`)
are the parameter's description and allowed range. From that one source come :data:`PARAMETERS`, the
declarations on the rclpy node (:func:`declare_parameters`, what ``ros2 param describe`` shows) and the
shipped ``config/reconstruct.yaml`` (:func:`params_yaml`; ``python -m occnet_ros.ros.node_params`` prints
it, a test keeps the committed file equal to it). :func:`params_from_values` (pure) checks ranges and
types and builds :class:`NodeParams`; names that were renamed are refused with the new name.
"""
from __future__ import annotations

import math
import re
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Any, Literal

from occnet_ros.config_io import ConfigError, SettingInfo, describe, flatten, from_dict, setting, unflatten
from occnet_ros.perception.config import PerceptionConfig
from occnet_ros.perception.gravity import GravityConfig
from occnet_ros.perception.map_config import ObjectMapConfig

NODE_NAME = "reconstruction_node"


class ParamError(ValueError):
    """A parameter value that the node cannot run with; the message names the parameter."""


@dataclass
class SyncParams:
    """Pairing of the cloud with its mask and image by stamp (each field's ``doc``)."""

    tolerance: float = setting(0.05, doc="largest stamp difference between a cloud and its mask / image, s",
                               range=(0.0, 10.0))
    stream_timeout: float = setting(2.0, doc="a mask / image stream is active (clouds wait for it) if a message "
                                    "came within this time, or since the previous cloud; one that has a publisher but "
                                    "has delivered nothing yet is waited for this long from the first cloud, s",
                                    range=(0.01, 3600.0))


@dataclass
class NodeParams(PerceptionConfig):
    """Everything the node reads at start: :class:`~occnet_ros.perception.config.PerceptionConfig` (the
    frame pipeline's settings, with the reconstruction's as the ``reconstruction`` group) and the node's
    own settings below (each field's ``doc``)."""

    checkpoint: str = setting("", doc="model checkpoint file (.pt); empty = the shipped default weights")
    up: list[float] = setting(default_factory=lambda: [0.0, 0.0, 0.0],
                              doc="gravity-up direction [x, y, z] in the cloud frame (a level camera's optical "
                              "frame: [0, -1, 0]). [0, 0, 0] = not set: estimated each frame from the support "
                              "plane in view (the gravity.* settings; [0, -1, 0] until a plane is found), and "
                              "logged. A set up is checked against the support plane in view and a warning names "
                              "the value to set when they differ by more than segmentation.plane_max_tilt_deg. "
                              "Unused when world_frame is set (its +z is up)")
    world_frame: str = setting("", doc="if set: a fixed z-up frame whose +z is gravity-up; the node keeps a map of "
                               "objects in it, fused over every view (the map.* settings), publishes objects and "
                               "markers in it and answers queries in it; each cloud's pose in it comes from "
                               "pose_source. Empty: every frame is reconstructed on its own, in the cloud's frame")
    pose_source: Literal["auto", "tf", "topic"] = setting(
        "auto", doc="where the pose of each cloud's frame in world_frame comes from: tf = tf2 at the cloud's stamp "
        "(needs tf2_ros); topic = the camera_pose topic (geometry_msgs/PoseStamped, header.frame_id = world_frame, "
        "the cloud's stamp, the pose of the cloud's frame), paired with the cloud by stamp like mask and image; "
        "auto = tf where tf2_ros exists, else topic")
    tf_timeout: float = setting(0.2, doc="seconds to wait for a tf2 transform", range=(0.0, 10.0))
    sensor_reliability: Literal["best_effort", "reliable"] = setting(
        "best_effort", doc="reliability of the input subscriptions (points, mask, image, camera_info, camera_pose; "
        "otherwise the sensor-data QoS: keep last 5, volatile): best_effort matches every publisher (the ROS "
        "convention for sensors); reliable matches only reliable publishers. Large clouds reach a best-effort "
        "subscriber only from a writer whose Fast DDS shared-memory segment holds them: the package's profile "
        "config/fastdds_profile.xml in the camera driver's environment (one machine: 30 of 30 640x480 clouds at "
        "5 Hz, 0 of 30 with Fast DDS's defaults); a reliable subscriber gets them from a reliable writer either way")
    publish_markers: bool = setting(True, doc="publish visualization_msgs/MarkerArray on 'markers'")
    marker_alpha: float = setting(1.0, doc="opacity of the mesh markers", range=(0.0, 1.0))
    query_max_points: int = setting(2000000, doc="largest number of points one query_occupancy request may hold",
                                    range=(1, 100000000))
    query_mode: Literal["exact", "grid"] = setting(
        "exact", doc="how query_occupancy answers points inside an object's box: exact = the network on each "
        "point through the object's cached code; grid = trilinear interpolation in the object's cached MISE "
        "probability grid (approximate: equal to the network at the grid corners MISE evaluated, i.e. near the "
        "surface, interpolated elsewhere; needs reconstruction.keep_grid)")
    log_throttle_sec: float = setting(5.0, doc="smallest interval between repeated warnings about dropped "
                                      "messages or refused queries, s", range=(0.0, 3600.0))
    reconstruction_process: bool = setting(True, doc="reconstruct in a process of the node's own, started with it: "
                                           "the query service then never waits for the reconstruction's Python "
                                           "(one interpreter lock per process), at the cost of a second copy of torch "
                                           "and the network in memory (README, Measured); false = in a thread of "
                                           "the node's process, a frame's objects one after the other (at once on "
                                           "the compute threads there, the query p99 under load of make bench's ros "
                                           "section measured 13.8-21.4 ms against 11.7-18.9 ms, 2 alternated runs)")
    worker_nice: int = setting(10, doc="added to the nice value of the reconstruction (its process, or its worker "
                               "thread and the torch threads it starts) and of the decimation worker processes, so "
                               "the query service and the subscriptions get a CPU core first when the network keeps "
                               "every core busy (Linux; 0 = the same priority as the rest of the node)", range=(0, 19))
    sync: SyncParams = field(default_factory=SyncParams)
    map: ObjectMapConfig = field(default_factory=ObjectMapConfig)
    gravity: GravityConfig = field(default_factory=GravityConfig)

    def explicit_up(self) -> list[float] | None:
        """``up`` as set, or None when it is [0, 0, 0] (not set: estimated from the support plane)."""
        return None if all(v == 0 for v in self.up) else [float(v) for v in self.up]

    def validate(self) -> None:
        if len(self.up) != 3 or not all(math.isfinite(v) for v in self.up) or (
                0 < sum(v * v for v in self.up) < 1e-12):
            raise ValueError(f"up must be 3 finite numbers, [0, 0, 0] (not set: estimated) or of non-zero length, "
                             f"got {self.up}")
        if self.world_frame.startswith("/"):
            raise ValueError(f"world_frame must not start with '/', got {self.world_frame!r}")
        if self.query_mode == "grid" and not self.reconstruction.keep_grid:
            raise ValueError("query_mode 'grid' answers from each object's MISE grid: set reconstruction.keep_grid "
                             "to true as well")


PARAMETERS: dict[str, SettingInfo] = describe(NodeParams)
"""{dotted parameter name: description, range, default}, from the fields of :class:`NodeParams`."""

RENAMED: dict[str, str] = {
    "device": "reconstruction.device",
    "mesh.resolution0": "reconstruction.resolution0",
    "mesh.upsampling_steps": "reconstruction.upsampling_steps",
    "mesh.threshold": "reconstruction.threshold",
    "mesh.n_input_points": "reconstruction.n_input_points",
    "mesh.reuse_tolerance": "reconstruction.reuse_tolerance",
    "mesh.anchor_radius": "reconstruction.anchor.radius",
    "mesh.mirror_average": "reconstruction.mirror_average",
    "mesh.input_subsamples": "reconstruction.input_subsamples",
}
"""Old parameter name -> its name now; an old name given to the node stops it with a message naming the new one."""


def renamed_error(name: str) -> ParamError:
    return ParamError(f"parameter '{name}' is now '{RENAMED[name]}' (the reconstruction settings form the "
                      f"'reconstruction' group); rename it in your parameter file or command line")


def default_values() -> dict[str, Any]:
    """{name: default} of every parameter."""
    return flatten(NodeParams())


def check_ranges(values: dict[str, Any]) -> None:
    """Raise :class:`ParamError` naming the first unknown or renamed parameter, or the first outside its range."""
    for name, value in values.items():
        if name in RENAMED:
            raise renamed_error(name)
        if name not in PARAMETERS:
            raise ParamError(f"unknown parameter '{name}'")
        rng = PARAMETERS[name].range
        if rng is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not (rng[0] <= value <= rng[1]) or (isinstance(value, float) and math.isnan(value)):
            raise ParamError(f"parameter '{name}' = {value!r} is outside [{rng[0]}, {rng[1]}]")


def params_from_values(values: dict[str, Any]) -> NodeParams:
    """Validated :class:`NodeParams` from {dotted name: value}; :class:`ParamError` names the parameter."""
    check_ranges(values)
    try:
        return from_dict(NodeParams, unflatten(values), where="parameter")
    except ConfigError as e:  # "parameter.a.b: why" -> "parameter 'a.b': why"
        raise ParamError(re.sub(r"^parameter\.([\w.]+):", r"parameter '\1':", str(e))) from e
    except ValueError as e:  # the top level's own validate()
        raise ParamError(f"parameters: {e}") from e


def declare_parameters(node) -> NodeParams:
    """Declare every parameter on the rclpy ``node`` (description, type, range) and return the validated
    values. Raises :class:`ParamError` for a bad override or an override under a renamed name."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    # rclpy keeps the overrides given for this node (parameter files, -p) in _parameter_overrides and
    # ignores those never declared; a renamed parameter must not be ignored silently
    for name in getattr(node, "_parameter_overrides", {}):
        if name in RENAMED:
            raise renamed_error(name)
    values = {}
    for name, default in default_values().items():
        info = PARAMETERS[name]
        # dynamic typing: an integer given for a float parameter is accepted; params_from_values checks
        # the types and ranges itself, with messages naming the parameter
        desc = ParameterDescriptor(name=name, description=info.doc, read_only=True, dynamic_typing=True)
        rng = info.range
        if rng is not None and isinstance(default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(rng[0]), to_value=float(rng[1]))]
        elif rng is not None and isinstance(default, int) and not isinstance(default, bool):
            desc.integer_range = [IntegerRange(from_value=int(rng[0]), to_value=int(rng[1]), step=1)]
        try:
            values[name] = node.declare_parameter(name, default, desc).value
        except Exception as e:  # rclpy's InvalidParameterValue/TypeException for a bad override
            raise ParamError(f"parameter '{name}': {e}") from e
    return params_from_values(values)


def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '""' if value == "" else value
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    return repr(value)


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def params_yaml(width: int = 116) -> str:
    """The text of ``config/reconstruct.yaml``: every parameter with its default, and its description and
    range as a comment, grouped as the YAML nests them (node settings first, then the groups)."""
    lines = ["# Parameters of reconstruction_node (occnet_ros): every parameter with its default, description and",
             "# range. Generated from the fields of occnet_ros.ros.node_params.NodeParams by",
             "#   python -m occnet_ros.ros.node_params > config/reconstruct.yaml",
             "# (a test keeps this file equal to that output); `ros2 param describe` shows the same text.",
             "# Usage: reconstruction_node --ros-args --params-file config/reconstruct.yaml [-p name:=value ...]",
             "/**:", "  ros__parameters:"]
    tree: dict = {}
    for name in PARAMETERS:  # nested {group: {...}, leaf: name}, declaration order kept
        *groups, leaf = name.split(".")
        node = tree
        for g in groups:
            node = node.setdefault(g, {})
        node[leaf] = name

    def leaves_first(node: dict) -> list[str]:
        return ([v for v in node.values() if isinstance(v, str)]
                + [n for v in node.values() if isinstance(v, dict) for n in leaves_first(v)])

    order = leaves_first(tree)
    opened: list[str] = []
    for name in order:
        info = PARAMETERS[name]
        *groups, leaf = name.split(".")
        common = 0
        while common < min(len(groups), len(opened)) and groups[common] == opened[common]:
            common += 1
        for depth in range(common, len(groups)):
            lines.append("")
            lines.append("    " + "  " * depth + f"{groups[depth]}:")
        opened = groups
        indent = "    " + "  " * len(groups)
        rng = f" [{_num(info.range[0])}, {_num(info.range[1])}]" if info.range is not None else ""
        for c in textwrap.wrap(info.doc + rng, width - len(indent) - 2):
            lines.append(f"{indent}# {c}")
        lines.append(f"{indent}{leaf}: {_yaml_value(info.default)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the parameter file (``python -m occnet_ros.ros.node_params > config/reconstruct.yaml``)."""
    sys.stdout.write(params_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
