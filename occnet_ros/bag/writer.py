"""Writing rosbag2 recordings (MCAP by default, or sqlite3) from serialized CDR bytes, with ``rosbags`` for
the container only (no rclpy). Every topic's connection carries its message definition (``ros2msg`` text with
the definitions of the nested types, as ``ros2 bag record`` writes it) and type hash (RIHS01), so Foxglove
decodes the messages and ``ros2 bag play`` replays them. The definitions come from the ``rosbags`` typestore
of ROS 2 Kilted plus occnet_ros's own ``msg/*.msg`` (:func:`typestore`), or are copied from an input bag.
"""
from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from occnet_ros.bag.reader import BagError, BagTopic

INTERFACE_PACKAGE = "occnet_ros"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


def interface_msg_dir() -> Path:
    """The folder holding occnet_ros's ``.msg`` files: the source tree's ``msg/`` (pip route, editable), else
    ``share/occnet_ros/msg`` of this Python's prefix or of an ``AMENT_PREFIX_PATH`` entry (installed).
    Raises :class:`BagError` listing where it looked."""
    here = Path(__file__).resolve().parents[2] / "msg"
    prefixes = [sys.prefix] + [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates = [here] + [Path(p) / "share" / INTERFACE_PACKAGE / "msg" for p in prefixes]
    for c in candidates:
        if any(c.glob("*.msg")):
            return c
    raise BagError("occnet_ros's message definitions (*.msg) were not found in: "
                   + ", ".join(str(c) for c in candidates))


@lru_cache(maxsize=1)
def typestore():
    """The ``rosbags`` typestore of ROS 2 Kilted with occnet_ros's messages registered."""
    store = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for f in sorted(interface_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(f.read_text(), f"{INTERFACE_PACKAGE}/msg/{f.stem}"))
    store.register(types)
    return store


def message_definition(msgtype: str) -> tuple[str, str]:
    """(msgdef text, RIHS01 hash) of ``msgtype`` (``pkg/msg/Type``) from :func:`typestore`; :class:`BagError`
    for a type it does not know."""
    store = typestore()
    if msgtype not in store.fielddefs:
        raise BagError(f"no message definition known for '{msgtype}'")
    msgdef, _ = store.generate_msgdef(msgtype, ros_version=2)
    return msgdef, store.hash_rihs01(msgtype)


class BagWriter:
    """A new rosbag2 bag at ``path`` (a directory that must not exist yet; rosbags names the storage file
    after it), ``storage`` "mcap" or "sqlite3". Use as a context manager; topics first (:meth:`add_topic`,
    :meth:`copy_topic`), then :meth:`write`."""

    def __init__(self, path: str | Path, storage: str = "mcap"):
        if storage not in STORAGES:
            raise BagError(f"storage must be one of {sorted(STORAGES)}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"output bag {self.path} exists already; choose a new path")
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=STORAGES[storage])
        self._writer.open()
        self._conns: dict[str, object] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Register ``topic`` of ``msgtype`` with the definition from :func:`message_definition`."""
        msgdef, digest = message_definition(msgtype)
        self._add(topic, msgtype, msgdef, digest)

    def copy_topic(self, source: BagTopic, topic: str | None = None) -> None:
        """Register a topic with the type and definition recorded in an input bag (``topic``: its name here,
        default the recorded one); the typestore's definition when the input bag has none."""
        name = topic or source.name
        if source.msgdef and source.digest:
            self._add(name, source.msgtype, source.msgdef, source.digest)
        else:
            self.add_topic(name, source.msgtype)

    def _add(self, topic: str, msgtype: str, msgdef: str, digest: str) -> None:
        if topic in self._conns:
            raise BagError(f"topic '{topic}' added twice to {self.path}")
        self._conns[topic] = self._writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=digest)
        self.counts[topic] = 0

    def has_topic(self, topic: str) -> bool:
        return topic in self._conns

    def write(self, topic: str, time_ns: int, data: bytes) -> None:
        """One message: serialized CDR ``data`` on ``topic`` at bag time ``time_ns`` (ns)."""
        self._writer.write(self._conns[topic], int(time_ns), data)
        self.counts[topic] += 1

    def close(self) -> None:
        if self._writer.storage is not None:
            self._writer.close()
            self._writer.storage = None
