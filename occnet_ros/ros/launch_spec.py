"""What the occnet_ros launch starts: the ONE description shared by ``launch/reconstruct.launch.py``
(ROS 2 workspace, launch_ros) and ``occnet_launch`` (pip route, plain processes). Pure Python.

:func:`launch_nodes` turns the launch options (parameter file, namespace, topic remaps, simulated
camera on/off) into :class:`NodeSpec` s; :meth:`NodeSpec.ros_args` gives the ``--ros-args`` command
line that launch_ros would build for the same node.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping
from xml.etree import ElementTree

PACKAGE = "occnet_ros"
NODE_EXECUTABLE = "reconstruction_node"
NODE_NAME = "reconstruction_node"
SIM_EXECUTABLE = "sim_camera"
SIM_NAME = "sim_camera"

NODE_INPUTS = ("points", "mask", "image", "camera_info", "camera_pose")
"""Topics the reconstruction node subscribes to (relative names)."""
NODE_NAMES = NODE_INPUTS + ("objects", "markers", "query_occupancy")
"""Every topic / service name of the reconstruction node that a remap may rename."""
SIM_CAMERA_OUTPUTS = ("points", "mask", "image", "camera_info", "camera_pose")
"""Topics the simulated camera publishes (relative names), each feeding the node input of that name."""

PARAMS_FILE = "reconstruct.yaml"
SIM_PARAMS_FILE = "sim_camera.yaml"
FASTDDS_PROFILE_FILE = "fastdds_profile.xml"

_NAME = re.compile(r"^~?/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


class LaunchSpecError(ValueError):
    """A launch option that cannot be honoured (the message says which)."""


@dataclass(frozen=True)
class NodeSpec:
    """One process to start: ``package``/``executable``, node ``name`` and ``namespace`` ("" = root),
    ``parameters`` (parameter files, in order), ``remappings`` ((from, to) name pairs)."""

    package: str
    executable: str
    name: str
    namespace: str = ""
    parameters: tuple[str, ...] = ()
    remappings: tuple[tuple[str, str], ...] = ()

    def ros_args(self) -> list[str]:
        """The ``--ros-args`` arguments that start this node as specified."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            args += ["-r", f"__ns:={self.namespace}"]
        for f in self.parameters:
            args += ["--params-file", f]
        for a, b in self.remappings:
            args += ["-r", f"{a}:={b}"]
        return args


def source_config_dir() -> Path:
    """``config/`` of the source checkout this module lives in (pip route, editable install)."""
    return Path(__file__).resolve().parents[2] / "config"


def config_dir() -> Path:
    """Where the shipped config files are: the installed share directory of a ROS 2 workspace when it
    holds them, else the source checkout's ``config/``."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:
        return source_config_dir()
    try:
        share = Path(get_package_share_directory(PACKAGE)) / "config"
    except (PackageNotFoundError, LookupError, ValueError, OSError):  # OSError: AMENT_PREFIX_PATH unset
        return source_config_dir()
    return share if (share / PARAMS_FILE).is_file() else source_config_dir()


def default_params_file() -> Path:
    """The node's shipped parameter file."""
    return config_dir() / PARAMS_FILE


def fastdds_profile_file() -> Path:
    """The shipped Fast DDS profile (``config/fastdds_profile.xml``): shared memory with a 32 MiB segment and UDPv4,
    so that large best-effort samples arrive whole (a 640x480 cloud did not with Fast DDS's 512 KiB segment), and
    reliable writers that send their periodic heartbeat every 0.1 s instead of every 3 s, so that a lost service reply
    is repaired within about 0.1 s. The file's comment holds the measurements."""
    return config_dir() / FASTDDS_PROFILE_FILE


def dds_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Fast DDS settings the package's processes start with, for those not set in ``environ`` (default: ours)
    -> {variable: value} to add: ``FASTDDS_DEFAULT_PROFILES_FILE`` = :func:`fastdds_profile_file`. A profile file
    the user set is left alone (its transports are theirs; where it names none, ``FASTDDS_BUILTIN_TRANSPORTS``
    chooses them)."""
    env = os.environ if environ is None else environ
    if "FASTDDS_DEFAULT_PROFILES_FILE" in env:
        return {}
    return {"FASTDDS_DEFAULT_PROFILES_FILE": str(fastdds_profile_file())}


def dds_transports(environ: Mapping[str, str] | None = None) -> str:
    """The Fast DDS transports a participant started with ``environ`` (default: ours) uses, in words, for reports:
    the shipped profile's (which overrides ``FASTDDS_BUILTIN_TRANSPORTS``), else the builtin transports the
    variable names, else Fast DDS's default."""
    env = os.environ if environ is None else environ
    profile = env.get("FASTDDS_DEFAULT_PROFILES_FILE", "")
    transports = profile_transports(profile) if profile else []
    if transports:
        return " + ".join(transports) + f" (profile {Path(profile).name})"
    builtin = env.get("FASTDDS_BUILTIN_TRANSPORTS") or "DEFAULT"
    return f"builtin {builtin}" + (f" (profile {profile})" if profile else "")


def profile_transports(path: str | Path) -> list[str]:
    """The transports a Fast DDS profile file gives its default participant instead of the builtin ones, in words
    (a shared-memory transport with its segment size), [] where it names none or cannot be read."""
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError):
        return []
    ns = {"dds": "http://www.eprosima.com"}
    descriptors = {d.findtext("dds:transport_id", "", ns): d
                   for d in root.iterfind(".//dds:transport_descriptors/dds:transport_descriptor", ns)}
    for participant in root.iterfind(".//dds:profiles/dds:participant", ns):
        if participant.get("is_default_profile") != "true":
            continue
        out = []
        for tid in participant.iterfind("dds:rtps/dds:userTransports/dds:transport_id", ns):
            d = descriptors.get((tid.text or "").strip())
            kind = d.findtext("dds:type", "?", ns) if d is not None else "?"
            segment = d.findtext("dds:segment_size", "", ns) if d is not None else ""
            out.append(f"{kind} ({int(segment) / 2 ** 20:g} MiB segment)" if kind == "SHM" and segment.isdigit()
                       else kind)
        return out
    return []


def default_sim_params_file() -> Path:
    """The simulated camera's shipped parameter file."""
    return config_dir() / SIM_PARAMS_FILE


def normalize_namespace(namespace: str) -> str:
    """"" or "/a/b" from "a/b", "/a/b/", ...; raises :class:`LaunchSpecError` for invalid names."""
    ns = (namespace or "").strip().strip("/")
    if not ns:
        return ""
    if not _NAME.match(ns):
        raise LaunchSpecError(f"invalid namespace '{namespace}'")
    return "/" + ns


def parse_remap(rule: str) -> tuple[str, str]:
    """"from:=to" -> ("from", "to"); raises :class:`LaunchSpecError`."""
    if rule.count(":=") != 1:
        raise LaunchSpecError(f"remap '{rule}' is not of the form from:=to")
    a, b = (s.strip() for s in rule.split(":="))
    for name in (a, b):
        if not _NAME.match(name):
            raise LaunchSpecError(f"remap '{rule}': '{name}' is not a valid topic name")
    return a, b


def launch_nodes(params_file: str | Path | None = None, namespace: str = "",
                 remaps: Iterable[tuple[str, str] | str] = (), use_sim_camera: bool = False,
                 sim_params_file: str | Path | None = None) -> list[NodeSpec]:
    """The processes of one launch.

    params_file: the node's parameter file (None = the shipped ``config/reconstruct.yaml``).
    namespace: namespace of every started node ("" = root). remaps: ``(from, to)`` pairs or "from:=to"
    rules for the reconstruction node's names (:data:`NODE_NAMES`). use_sim_camera: also start
    ``sim_camera`` with ``sim_params_file`` (None = shipped ``config/sim_camera.yaml``), its outputs
    remapped onto the node's (remapped) inputs; that file is also given to the node, after its own, since
    its ``/**/reconstruction_node`` section holds what the node must know about this camera (its
    gravity-up vector).
    """
    ns = normalize_namespace(namespace)
    pairs = [parse_remap(r) if isinstance(r, str) else (str(r[0]), str(r[1])) for r in remaps]
    seen = set()
    for a, b in pairs:
        if a not in NODE_NAMES:
            raise LaunchSpecError(f"cannot remap '{a}': the node's names are {list(NODE_NAMES)}")
        if a in seen:
            raise LaunchSpecError(f"'{a}' is remapped twice")
        seen.add(a)
        parse_remap(f"{a}:={b}")
    params = Path(params_file) if params_file else default_params_file()
    if not use_sim_camera:
        return [NodeSpec(PACKAGE, NODE_EXECUTABLE, NODE_NAME, ns, (str(params),), tuple(pairs))]
    targets = dict(pairs)
    sim_remaps = tuple((t, targets[t]) for t in SIM_CAMERA_OUTPUTS if t in targets and targets[t] != t)
    sim_params = str(Path(sim_params_file) if sim_params_file else default_sim_params_file())
    return [NodeSpec(PACKAGE, NODE_EXECUTABLE, NODE_NAME, ns, (str(params), sim_params), tuple(pairs)),
            NodeSpec(PACKAGE, SIM_EXECUTABLE, SIM_NAME, ns, (sim_params,), sim_remaps)]
