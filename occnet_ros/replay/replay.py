"""Replay a rosbag2 recording through the node's own frame path: recorded CDR bytes -> rclpy messages
(:mod:`occnet_ros.ros.bag_messages`) -> the node's decoding (:func:`~occnet_ros.ros.frame_input.decode_frame_messages`)
-> the node's pipeline (:class:`FramePipeline`, or :class:`MapPipeline` with ``world_frame``) -> the node's
outgoing bytes (:func:`~occnet_ros.ros.object_msgs.frame_messages`), written into an output MCAP bag next to
the input topics. Clouds are paired with mask / image / camera_pose by stamp through the node's FrameSync
(:mod:`occnet_ros.bag.timeline`); every cloud is replayed, in order.

Differences from the live node, by necessity: no tf2 (a camera_info in another frame than the cloud leaves the
camera's pose unknown, as in a node without tf2; poses for the object map come from the camera_pose topic only);
mesh decimation runs in this process; markers are written as for a node that has a marker listener from the
first frame.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from std_msgs.msg import Header

from occnet_ros.bag.reader import BagError, BagReader, BagTopic, match_topic
from occnet_ros.ros.bag_messages import INPUT_TYPES, OUTPUT_TYPES, BagMessageError, deserialize, header_stamp
from occnet_ros.bag.timeline import AssembledFrame, FrameAssembler, Pacer
from occnet_ros.bag.writer import BagWriter
from occnet_ros.geometry import TransformError
from occnet_ros.perception.frame_pipeline import FramePipeline
from occnet_ros.perception.map_pipeline import MapPipeline
from occnet_ros.perception.mesh_ops import fast_or_open3d_decimation
from occnet_ros.perception.pointcloud2 import CloudFormatError
from occnet_ros.perception.segmentation import SegmentationError
from occnet_ros.ros.conversions import MessageError
from occnet_ros.ros.frame_input import UpAndCamera, cloud_pose_from_topic, decode_frame_messages
from occnet_ros.ros.node_params import NodeParams, ParamError
from occnet_ros.ros.object_msgs import ObjectMessageCache, frame_messages, mesh_arrays

OUTPUT_BAG = "bag"
"""Name of the output bag inside the output directory."""


class ReplayError(RuntimeError):
    """The replay cannot start or cannot run (bad argument, missing topic); the text says what to fix."""


@dataclass
class ReplayOptions:
    """``bag``: input; ``out``: output directory; ``topics``: the node's stream -> topic name (node defaults:
    points, mask, image, camera_info, camera_pose); ``rate``: "recorded" or "max"; ``params``: the node's
    settings; ``progress``: show a tqdm bar."""

    bag: Path
    out: Path
    params: NodeParams
    topics: dict[str, str] = field(default_factory=lambda: {"points": "points", "mask": "mask", "image": "image",
                                                            "camera_info": "camera_info", "pose": "camera_pose"})
    rate: str = "max"
    progress: bool = True


@dataclass
class FrameRecord:
    """One cloud of the bag: ``stamp`` s (header), ``log_time_ns``; ``dropped``: why it was not reconstructed
    ("" when it was); ``seconds`` of processing; ``objects``: [(id, label, vertices (V, 3), faces (F, 3),
    colours (V, 3) uint8 or None)] published, in ``frame_id``; ``reused``: objects whose reconstruction was kept."""

    index: int
    stamp: float
    log_time_ns: int
    dropped: str = ""
    seconds: float = 0.0
    frame_id: str = ""
    objects: list = field(default_factory=list)
    reused: int = 0
    method: str = ""
    warnings: list[str] = field(default_factory=list)


@dataclass
class ReplayResult:
    """What a replay did: ``frames`` (every cloud), ``topics`` (stream -> recorded topic used),
    ``notes`` (problems reported, each once, with a count), ``out_bag`` path, ``wall_s``, ``waited_s``
    (pacing), ``output_counts`` (messages per output topic)."""

    frames: list[FrameRecord]
    topics: dict[str, str]
    notes: dict[str, int]
    out_bag: Path
    wall_s: float
    waited_s: float
    output_counts: dict[str, int]
    bag_topics: str


class Notes:
    """Problems seen during a replay: each distinct text printed once (through ``emit``) and counted."""

    def __init__(self, emit: Callable[[str], None]):
        self.counts: dict[str, int] = {}
        self.emit = emit

    def add(self, text: str) -> None:
        if text not in self.counts:
            self.emit(text)
        self.counts[text] = self.counts.get(text, 0) + 1


def resolve_topics(reader: BagReader, wanted: dict[str, str], notes: Notes) -> dict[str, str]:
    """stream -> recorded topic for each stream the bag has with the right type; a stream whose topic holds
    another type is reported and left out. :class:`ReplayError` (listing the bag's topics) when the points
    topic is missing or of another type."""
    found = {}
    for stream, name in wanted.items():
        topic, how = match_topic(reader.topics, name)
        if topic is None:
            if stream == "points":
                raise ReplayError(f"points topic '{name}' ({how}) in {reader.path}; the bag has:\n"
                                  + reader.describe_topics())
            continue
        info = reader.topics[topic]
        if info.msgtype != INPUT_TYPES[stream]:
            text = (f"topic '{topic}' holds {info.msgtype}, not {INPUT_TYPES[stream]} (the node's '{name}'): "
                    "not used")
            if stream == "points":
                raise ReplayError(f"{text}; the bag has:\n" + reader.describe_topics())
            notes.add(text)
            continue
        if how != "exact":
            notes.add(f"'{name}' read from '{topic}' ({how})")
        found[stream] = topic
    return found


def streams_used(params: NodeParams, found: dict[str, str]) -> tuple[list[str], list[str]]:
    """(partner streams the node would pair, of those the required ones), as the node's subscriptions and
    ``_take`` decide them; :class:`ReplayError` where the bag cannot give what the settings need."""
    partners, required = [], []
    if params.segmentation.mode != "geometric" and "mask" in found:
        partners.append("mask")
        if params.segmentation.mode == "mask":
            required.append("mask")
    elif params.segmentation.mode == "mask":
        raise ReplayError("segmentation.mode is 'mask' but the bag has no usable mask topic")
    if params.color_from_image and "image" in found:
        partners.append("image")
    if params.world_frame:
        if params.pose_source == "tf":
            raise ReplayError(f"pose_source 'tf' (world_frame '{params.world_frame}'): the replay reads poses "
                              "from the camera_pose topic only; set pose_source to topic or auto")
        if "pose" not in found:
            raise ReplayError(f"world_frame '{params.world_frame}' needs each cloud's pose, but the bag has no "
                              "usable camera_pose topic (geometry_msgs/msg/PoseStamped)")
        partners.append("pose")
        required.append("pose")
    return partners, required


class _Run:
    """The state of one replay (pipeline, output bag, bookkeeping)."""

    def __init__(self, opts: ReplayOptions, reconstructor, writer: BagWriter, out_ns: str, notes: Notes):
        p = opts.params
        self.params, self.writer, self.notes = p, writer, notes
        self.pipeline = (MapPipeline(reconstructor, p, p.map, fast_or_open3d_decimation) if p.world_frame
                         else FramePipeline(reconstructor, p, decimate=fast_or_open3d_decimation))
        self.cache = ObjectMessageCache() if p.world_frame else None
        self.marker_ids: set[int] = set()
        self.objects_topic, self.markers_topic = f"{out_ns}/objects", f"{out_ns}/markers"
        self.camera_info = None
        self.up_and_camera = UpAndCamera(p, lambda level, text: notes.add(text))
        self.frames: list[FrameRecord] = []

    def process(self, a: AssembledFrame) -> FrameRecord:
        rec = FrameRecord(len(self.frames), a.frame.stamp, a.log_time_ns)
        self.frames.append(rec)
        t0 = time.perf_counter()
        p = self.params
        if a.missing:
            rec.dropped = (f"no {' / '.join(a.missing)} within sync.tolerance = {p.sync.tolerance} s of the "
                           "cloud's stamp")
            return rec
        try:
            decoded = decode_frame_messages(a.frame.items, self.camera_info, p,
                                            warn=lambda t: self.notes.add(f"frame {a.frame.stamp:.3f}: {t}"))
            header = decoded.header
            cloud_to_world = (cloud_pose_from_topic(a.frame.items, p.world_frame, p.sync.tolerance)
                              if p.world_frame else None)
            up, viewpoint, camera_to_cloud = self.up_and_camera(header.frame_id, self.camera_info, cloud_to_world,
                                                                decoded.xyz)
            inp = decoded.frame_input(a.frame.stamp, up, viewpoint, camera_to_cloud)
            if cloud_to_world is None:
                result = self.pipeline.process(inp)
            else:
                result = self.pipeline.process(inp, cloud_to_world)
                header = Header(stamp=header.stamp, frame_id=p.world_frame)
        except (CloudFormatError, MessageError, SegmentationError, TransformError) as e:
            rec.dropped = f"{type(e).__name__}: {e}"
            return rec
        unchanged = set()
        if p.world_frame:  # as the node with a listener: unchanged map objects keep their markers
            unchanged = {r.segment.id for r in result.objects} - set(result.changed)
        out = frame_messages(result.objects, header, self.marker_ids, p.publish_markers, p.marker_alpha,
                             unchanged, self.cache)
        self.writer.write(self.objects_topic, a.log_time_ns, out.objects)
        if out.markers is not None:
            self.writer.write(self.markers_topic, a.log_time_ns, out.markers)
        self.marker_ids = out.marker_ids
        rec.seconds = time.perf_counter() - t0
        rec.frame_id, rec.method, rec.warnings = header.frame_id, result.method, list(result.warnings)
        rec.reused = sum(r.reused for r in result.objects)
        for r in result.objects:
            verts, faces = mesh_arrays(r)
            rec.objects.append((int(r.segment.id), r.segment.label, verts, faces, r.vertex_colors))
        return rec


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="msg", desc="replay", disable=not enabled, file=sys.stderr, dynamic_ncols=True)


def replay(opts: ReplayOptions, reconstructor, pacer: Pacer | None = None,
           emit: Callable[[str], None] | None = None) -> ReplayResult:
    """Replay ``opts.bag`` into ``opts.out`` with ``reconstructor`` (raises :class:`ReplayError` or
    :class:`~occnet_ros.bag.reader.BagError` before anything is processed when the bag or the settings do not
    allow a replay). Problems with single messages or frames are reported through ``emit`` and in the result;
    the replay goes on with the rest."""
    from tqdm import tqdm

    emit = emit or (lambda t: tqdm.write(f"occnet_replay: {t}", file=sys.stderr))
    notes = Notes(emit)
    p = opts.params
    pacer = pacer or Pacer(opts.rate)
    out_bag = Path(opts.out) / OUTPUT_BAG
    if out_bag.exists():
        raise ReplayError(f"output bag {out_bag} exists already; remove it or choose another --out")
    t_start = time.perf_counter()
    with BagReader(opts.bag) as reader:
        found = resolve_topics(reader, opts.topics, notes)
        partners, required = streams_used(p, found)
        used = {s: t for s, t in found.items() if s in partners or s in ("points", "camera_info")}
        stream_of = {t: s for s, t in used.items()}
        ns = found["points"].rsplit("/", 1)[0]
        Path(opts.out).mkdir(parents=True, exist_ok=True)
        assembler = FrameAssembler("points", partners, required, p.sync.tolerance, p.sync.stream_timeout)
        with BagWriter(out_bag, "mcap") as writer:
            for topic in used.values():
                writer.copy_topic(reader.topics[topic])
            run = _Run(opts, reconstructor, writer, ns, notes)
            writer.add_topic(run.objects_topic, OUTPUT_TYPES["objects"])
            if p.publish_markers:
                writer.add_topic(run.markers_topic, OUTPUT_TYPES["markers"])
            total = sum(reader.topics[t].count for t in used.values())
            with _progress(total, opts.progress) as bar:
                def handle(frames: list[AssembledFrame]) -> None:
                    for a in frames:
                        rec = run.process(a)
                        if rec.dropped:
                            notes.add(f"cloud at {rec.stamp:.3f} dropped: {rec.dropped}")
                        for w in rec.warnings:  # the pipeline's own (the node logs them at info level)
                            notes.add(w)
                        for s in a.unpaired:
                            notes.add(f"'{used[s]}' has no message within sync.tolerance of a cloud: "
                                      f"frame(s) without {s}")
                        bar.set_postfix(frames=len(run.frames), refresh=False)

                for m in reader.messages(used.values()):
                    bar.update(1)
                    pacer.wait(m.log_time_ns)
                    writer.write(m.topic, m.log_time_ns, m.data)
                    stream = stream_of[m.topic]
                    try:
                        msg = deserialize(m.data, m.msgtype, m.topic)
                        if stream == "camera_info":
                            run.camera_info = msg
                            continue
                        stamp = header_stamp(msg, m.topic)
                    except BagMessageError as e:
                        notes.add(f"message at bag time {m.log_time_ns * 1e-9:.3f} skipped: {e}")
                        continue
                    handle(assembler.push(stream, stamp, m.log_time_ns, msg))
                handle(assembler.finish())
            for err in reader.errors:
                notes.add(err)
            counts = {t: writer.counts[t] for t in (run.objects_topic, run.markers_topic) if writer.has_topic(t)}
        bag_topics = reader.describe_topics()
    return ReplayResult(run.frames, used, notes.counts, out_bag, time.perf_counter() - t_start, pacer.waited_s,
                        counts, bag_topics)


def load_params(params_file: Path | None, weights: Path | None) -> NodeParams:
    """The node's settings from a ROS 2 parameter file (None: the shipped ``config/reconstruct.yaml``) with
    ``checkpoint`` set to ``weights`` when given. :class:`ReplayError` naming the file or parameter."""
    from dataclasses import replace

    from occnet_ros.benchmark.latency import node_params

    if params_file is not None and not Path(params_file).is_file():
        raise ReplayError(f"--params: file not found: {params_file}")
    if weights is not None and not Path(weights).is_file():
        raise ReplayError(f"--weights: file not found: {weights}")
    try:
        params, _ = node_params(params_file)
    except (ValueError, ParamError) as e:
        raise ReplayError(str(e)) from e
    if weights is not None:
        params = replace(params, checkpoint=str(weights))
    return params


__all__ = ["BagError", "BagTopic", "FrameRecord", "OUTPUT_BAG", "ReplayError", "ReplayOptions", "ReplayResult",
           "load_params", "replay"]
