"""The reconstruction node's work on one frame, from its messages to the bytes it publishes and the objects its
query service answers from. No rclpy: :class:`FrameProcessor` runs in the node's own worker thread or in the
node's reconstruction process (:mod:`occnet_ros.ros.reconstruction_process`), and both give it the same
:class:`FrameRequest` and get the same :class:`FrameOutcome`.

What needs the node (tf2 lookups, the pose of the cloud's frame, the markers' subscriber count) is resolved by
the node before the request is made; what the processor says about a frame (problems with optional input, why
objects were skipped, gravity decisions, decimation warnings) comes back in :attr:`FrameOutcome.logs` for the node
to log, rate-limited. The objects for queries are kept without their meshes
(:func:`~occnet_ros.perception.processed_frame.stored_objects`): the query service needs each object's canonical frame
and occupancy field only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from occnet_ros.geometry import RigidTransform, TransformError
from occnet_ros.perception.frame_pipeline import FramePipeline
from occnet_ros.perception.processed_frame import stored_objects
from occnet_ros.perception.map_pipeline import MapPipeline
from occnet_ros.perception.mesh_ops import Decimation, fast_or_open3d_decimation
from occnet_ros.perception.object_store import StoredObject
from occnet_ros.ros.conversions import MessageError
from occnet_ros.ros.frame_input import UpAndCamera, decode_frame_messages
from occnet_ros.ros.node_params import NodeParams, ParamError
from occnet_ros.ros.object_msgs import ObjectMessageCache, frame_messages

__all__ = ["FrameRequest", "FrameOutcome", "FrameProcessor", "LOG_KINDS", "cloud_header", "load_reconstructor"]

LOG_KINDS = ("input", "skipped", "up_info", "up_warning", "decimation")
"""Kinds of :attr:`FrameOutcome.logs`: input = optional input unusable (warning); skipped = why segments were not
reconstructed (info); up_info / up_warning = what :class:`~occnet_ros.ros.frame_input.UpAndCamera` says (the gravity
tracker's decisions, a camera pose that could not be looked up); decimation = a lost decimation worker
(warning)."""


def load_reconstructor(params: NodeParams):
    """The :class:`~occnet_ros.reconstruction.reconstructor.Reconstructor` of the ``reconstruction.*``
    parameters and ``checkpoint``. Raises :class:`ParamError` naming the parameter for a missing checkpoint
    or an unavailable device."""
    from occnet_ros.reconstruction.reconstructor import Reconstructor

    path = str(Path(params.checkpoint).expanduser()) if params.checkpoint else None
    try:
        return Reconstructor.from_config(params.reconstruction, path)
    except FileNotFoundError as e:
        raise ParamError(f"parameter 'checkpoint' = '{params.checkpoint}': {e}") from e
    except ValueError as e:  # e.g. device cuda without CUDA
        if "device" in str(e):
            raise ParamError(f"parameter 'reconstruction.device' = '{params.reconstruction.device}': {e}") from e
        raise


def cloud_header(items: dict[str, Any]):
    """The std_msgs/Header of the frame's cloud (``items["points"]``); :class:`MessageError` for an empty
    ``frame_id``."""
    header = items["points"].header
    if not header.frame_id:
        raise MessageError("PointCloud2 has an empty header.frame_id")
    return header


@dataclass
class FrameRequest:
    """One frame for :meth:`FrameProcessor.process`.

    ``items``: the stamp-paired messages (``points`` sensor_msgs/PointCloud2; ``mask``, ``image``:
    sensor_msgs/Image; ``pose``: geometry_msgs/PoseStamped); ``stamp``: the frame's stamp, s; ``camera_info``: the
    newest sensor_msgs/CameraInfo or None; ``cloud_to_world``: the cloud frame's pose in ``world_frame`` (None
    without an object map); ``camera_pose``: the camera_info frame's pose in the cloud frame as the node's tf2 gave
    it, or the :class:`TransformError` text of a failed lookup, or None where none was made;
    ``marker_listeners``: subscribers of ``markers`` now (0 = build no markers)."""

    items: dict[str, Any]
    stamp: float
    camera_info: Any = None
    cloud_to_world: RigidTransform | None = None
    camera_pose: RigidTransform | str | None = None
    marker_listeners: int = 0


@dataclass
class FrameOutcome:
    """What one frame gave. ``objects``: the serialized occnet_ros/ReconstructedObjectArray (CDR bytes, None when
    the frame was cancelled); ``markers``: the serialized visualization_msgs/MarkerArray or None; ``stored``: the
    objects for the query service (meshes dropped); ``frame_id``: the frame of all of it (the cloud's, or
    ``world_frame`` with the object map); ``logs``: (kind of :data:`LOG_KINDS`, text); ``summary``: e.g.
    "4 object(s) (1 reused) by mask"; ``cancelled``: the stop request cut the frame short; ``seconds``: its
    processing time; ``marker_ids``: the object ids whose markers are shown once ``markers`` is published (the
    previous ones when it is None)."""

    objects: bytes | None
    markers: bytes | None
    stored: list[StoredObject]
    frame_id: str
    stamp: float
    logs: list[tuple[str, str]] = field(default_factory=list)
    summary: str = ""
    cancelled: bool = False
    seconds: float = 0.0
    marker_ids: frozenset[int] = frozenset()


class FrameProcessor:
    """Decode, reconstruct and serialize frames with the node's parameters.

    reconstructor: a :class:`~occnet_ros.reconstruction.reconstructor.Reconstructor`; decimate: how meshes are
    reduced (a :class:`~occnet_ros.perception.parallel_decimation.ParallelDecimation` in the node); pose_source:
    "tf" or "topic" with an object map in ``world_frame``, "" without; objects_at_once: the pipelines' (False in the
    node's own process: :attr:`FramePipeline.objects_at_once
    <occnet_ros.perception.frame_pipeline.FramePipeline.objects_at_once>`). Keeps between frames what the pipeline keeps
    (reuse, the object map), the markers shown and the encoded objects of unchanged map objects. Not thread-safe:
    one caller."""

    def __init__(self, params: NodeParams, reconstructor, decimate: Decimation = fast_or_open3d_decimation,
                 pose_source: str = "", objects_at_once: bool = True):
        self.params = params
        self.reconstructor = reconstructor
        self.pose_source = pose_source
        self.pipeline = (MapPipeline(reconstructor, params, params.map, decimate, objects_at_once) if pose_source
                         else FramePipeline(reconstructor, params, decimate, objects_at_once))
        self._logs: list[tuple[str, str]] = []
        self._camera_pose: RigidTransform | str | None = None
        self.up_and_camera = UpAndCamera(params, self._up_log, lookup=self._resolved_lookup)
        self._marker_ids: set[int] = set()
        self._marker_listeners = 0
        self._msg_cache = ObjectMessageCache() if pose_source else None  # map objects kept between frames

    def log(self, kind: str, text: str) -> None:
        """Add a line to the current frame's :attr:`FrameOutcome.logs` (also for the decimation's warnings)."""
        self._logs.append((kind, text))

    def _up_log(self, level: str, text: str) -> None:
        self.log("up_warning" if level == "warning" else "up_info", text)

    def _resolved_lookup(self, cloud_frame: str, camera_frame: str, stamp) -> RigidTransform:
        pose = self._camera_pose
        if isinstance(pose, RigidTransform):
            return pose
        raise TransformError(pose or f"no transform from '{camera_frame}' to '{cloud_frame}' was looked up")

    def process(self, request: FrameRequest, should_stop: Callable[[], bool] = lambda: False) -> FrameOutcome:
        """Reconstruct ``request``'s frame. Raises what the node drops a frame for
        (:class:`~occnet_ros.perception.pointcloud2.CloudFormatError`, :class:`MessageError`,
        :class:`~occnet_ros.perception.segmentation.SegmentationError`, :class:`TransformError`)."""
        t0 = time.perf_counter()
        self._logs = []
        self._camera_pose = request.camera_pose
        decoded = decode_frame_messages(request.items, request.camera_info, self.params,
                                        warn=lambda problems: self.log("input", problems))
        header = decoded.header
        cloud_to_world = request.cloud_to_world
        up, viewpoint, camera_to_cloud = self.up_and_camera(
            header.frame_id, request.camera_info, cloud_to_world, xyz=decoded.xyz, stamp=header.stamp)
        inp = decoded.frame_input(request.stamp, up, viewpoint, camera_to_cloud)
        if cloud_to_world is None:
            result = self.pipeline.process(inp, should_stop=should_stop)
        else:
            result = self.pipeline.process(inp, cloud_to_world, should_stop=should_stop)
            header = type(header)(stamp=header.stamp, frame_id=self.params.world_frame)
        logs = self._logs
        if result.cancelled:
            return FrameOutcome(None, None, [], header.frame_id, request.stamp, logs, cancelled=True,
                                seconds=time.perf_counter() - t0, marker_ids=frozenset(self._marker_ids))
        if result.warnings:
            logs.append(("skipped", "; ".join(result.warnings)))
        stored = stored_objects(result)
        listeners = request.marker_listeners
        unchanged = set()
        if self.pose_source:  # map objects whose mesh did not change keep their markers, unless a listener joined
            unchanged = {r.segment.id for r in result.objects} - set(result.changed)
            if listeners > self._marker_listeners:
                unchanged = set()
        self._marker_listeners = listeners
        out = frame_messages(result.objects, header, self._marker_ids, listeners > 0, self.params.marker_alpha,
                             unchanged, self._msg_cache)
        self._marker_ids = out.marker_ids
        reused = sum(r.reused for r in result.objects)
        summary = f"{len(result.objects)} object(s) ({reused} reused) by {result.method}"
        return FrameOutcome(out.objects, out.markers, stored, header.frame_id, request.stamp, logs, summary,
                            seconds=time.perf_counter() - t0, marker_ids=frozenset(out.marker_ids))
