"""What the frame pipeline gives (pure numpy, no ROS): each reconstructed object with its published mesh and colours
(:class:`ProcessedObject`), the frame (:class:`ProcessedFrame`), what reuse keeps of an object (:class:`KeptObject`), and the
object-store records of a frame (:func:`stored_objects`). :mod:`occnet_ros.perception.frame_pipeline` makes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from occnet_ros.perception.object_store import StoredObject
from occnet_ros.perception.segmentation import Segment
from occnet_ros.reconstruction.reconstructed_object import ReconstructedObject

__all__ = ["KeptObject", "ProcessedFrame", "ProcessedObject", "stored_objects"]


@dataclass
class ProcessedObject:
    """One reconstructed object: ``segment`` (id, label, observed points), ``obj`` (the
    :class:`~occnet_ros.reconstruction.reconstructor.ReconstructedObject`), ``n_observed`` points after cleaning,
    ``vertex_colors`` (V, 3) uint8 per vertex of the published mesh or None, ``seconds`` spent (clean,
    reconstruct, simplify, colour). ``vertices`` (V, 3) float64 metres and ``faces`` (F, 3) int64: the mesh to
    publish, in the cloud frame (``obj.mesh`` simplified to ``mesh.max_faces``); None = ``obj.mesh`` as is.
    ``n_views``: views fused into the object (1 for a single frame)."""

    segment: Segment
    obj: ReconstructedObject
    n_observed: int
    vertex_colors: np.ndarray | None
    seconds: float
    vertices: np.ndarray | None = None
    faces: np.ndarray | None = None
    n_views: int = 1

    @property
    def reused(self) -> bool:
        """The reconstruction is the previous frame's (see ``reconstruction.reuse_tolerance``)."""
        return self.obj.reused


@dataclass(frozen=True)
class KeptObject:
    """What reuse needs of an object of the last frame: its reconstruction and published mesh."""

    obj: ReconstructedObject
    vertices: np.ndarray
    faces: np.ndarray


@dataclass
class ProcessedFrame:
    """``objects`` reconstructed; ``method``: "mask" or "geometric"; ``warnings``: why segments were
    skipped; ``cancelled``: the stop request interrupted the frame (results incomplete)."""

    objects: list[ProcessedObject]
    method: str
    warnings: list[str]
    cancelled: bool = False
    stage_seconds: dict[str, float] = field(default_factory=dict)
    """Seconds per stage of :meth:`~occnet_ros.perception.frame_pipeline.FramePipeline.process`, summed over the frame's objects: segmentation,
    cleaning, known_empty (building the frame's empty-space tests), the reconstructor's own stages
    (normalize, encode, mise, marching_cubes, simplify, anchor) and colour."""


def stored_objects(result: ProcessedFrame) -> list[StoredObject]:
    """The object-store entries of a frame's results: id, label and the reconstruction without its mesh (queries
    need its frame, occupancy field and grid only; the record shares them with the pipeline's, and is what the
    node's reconstruction process sends back)."""
    return [StoredObject(r.segment.id, r.segment.label, replace(r.obj, mesh=None, simplified_by=None))
            for r in result.objects]
