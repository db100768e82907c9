"""Reading rosbag2 recordings (MCAP or sqlite3) as raw CDR messages, with the pure-Python ``rosbags`` library
for the container only: no message is decoded here (no rclpy). A bag is a rosbag2 directory (with
``metadata.yaml``), or one ``.mcap`` / ``.db3`` file (also a directory holding exactly one such file and no
``metadata.yaml``).

A bag that ends early (a truncated or damaged file) yields the messages before the damage and then records
what went wrong in :attr:`BagReader.errors`; it never hangs and never raises out of :meth:`BagReader.messages`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from rosbags.rosbag2 import Reader

STORAGE_SUFFIXES = (".mcap", ".db3")


class BagError(RuntimeError):
    """A bag that cannot be opened or read; the message names the path."""


@dataclass(frozen=True)
class BagTopic:
    """One topic of a bag: ``name`` (as recorded, e.g. ``/points``), ``msgtype`` (``pkg/msg/Type``),
    ``count`` messages, the recorded message definition (``msgdef`` text, ``msgdef_format`` ``ros2msg`` /
    ``ros2idl`` / ``""`` when the bag has none) and its type hash ``digest``."""

    name: str
    msgtype: str
    count: int
    msgdef: str
    msgdef_format: str
    digest: str


@dataclass(frozen=True)
class BagMessage:
    """One recorded message: ``topic`` name, ``msgtype``, ``log_time_ns`` (the bag's timestamp, ns) and
    ``data`` (serialized CDR bytes, encapsulation header included)."""

    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


def resolve_bag_path(path: str | Path) -> Path:
    """The path ``rosbags`` opens for ``path``; :class:`BagError` naming it when there is no bag there."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BagError(f"bag not found: {p}")
    if p.is_dir():
        if (p / "metadata.yaml").is_file():
            return p
        files = sorted(f for f in p.iterdir() if f.suffix in STORAGE_SUFFIXES)
        if len(files) == 1:
            return files[0]
        raise BagError(f"{p} is not a rosbag2 bag: no metadata.yaml and "
                       f"{'no' if not files else len(files)} {'/'.join(STORAGE_SUFFIXES)} files")
    if p.suffix not in STORAGE_SUFFIXES:
        raise BagError(f"{p} is not a rosbag2 bag: expected a directory or a {' / '.join(STORAGE_SUFFIXES)} file")
    return p


class BagReader:
    """An open bag (use as a context manager). Raises :class:`BagError` when it cannot be opened."""

    def __init__(self, path: str | Path):
        self.path = resolve_bag_path(path)
        self.errors: list[str] = []
        """What went wrong while reading messages (a damaged or truncated file), one line each."""
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except Exception as e:  # ReaderError, OSError, or the storage libraries' own types for a damaged file
            raise BagError(f"cannot open bag {path}: {type(e).__name__}: {e}") from e
        self.topics: dict[str, BagTopic] = {}
        for c in self._reader.connections:
            prev = self.topics.get(c.topic)
            count = c.msgcount + (prev.count if prev is not None else 0)
            fmt = {1: "ros2msg", 2: "ros2idl"}.get(getattr(c.msgdef.format, "value", 0), "")
            self.topics[c.topic] = BagTopic(c.topic, c.msgtype, count, c.msgdef.data or "", fmt, c.digest or "")
        self.start_ns = int(self._reader.start_time) if self._reader.message_count else 0
        self.end_ns = int(self._reader.end_time) if self._reader.message_count else 0

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def describe_topics(self) -> str:
        """One line per topic: name, type, message count."""
        if not self.topics:
            return "(no topics)"
        return "\n".join(f"  {t.name} [{t.msgtype}] {t.count} message(s)" for t in self.topics.values())

    def messages(self, topics: Iterable[str]) -> Iterator[BagMessage]:
        """The messages of ``topics`` (recorded names) in the bag's time order. A read error ends the
        iteration and is recorded in :attr:`errors`, naming the bag and how many messages came before it."""
        wanted = set(topics)
        conns = [c for c in self._reader.connections if c.topic in wanted]
        if not conns:
            return
        n = 0
        try:
            for conn, t, data in self._reader.messages(connections=conns):
                n += 1
                yield BagMessage(conn.topic, conn.msgtype, int(t), bytes(data))
        except Exception as e:  # a damaged/truncated file: the storage library's own error types
            self.errors.append(f"bag {self.path} could not be read past message {n} "
                               f"({type(e).__name__}: {e}); the rest of the bag is skipped")


def match_topic(bag_topics: Iterable[str], name: str) -> tuple[str | None, str]:
    """The recorded topic for the node's topic ``name`` -> (recorded name or None, how it was matched).
    ``name`` matches itself, ``/name``, or - when exactly one topic does - a namespaced ``/ns/.../name``."""
    names = list(bag_topics)
    for candidate in (name, "/" + name.lstrip("/")):
        if candidate in names:
            return candidate, "exact"
    if name.startswith("/"):
        return None, "absolute name not recorded"
    ends = [t for t in names if t.endswith("/" + name)]
    if len(ends) == 1:
        return ends[0], f"namespaced match for '{name}'"
    if len(ends) > 1:
        return None, f"ambiguous: {', '.join(ends)} all end in '/{name}'; give the full name"
    return None, "not recorded"
