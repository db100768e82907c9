"""Settings of the frame pipeline (:mod:`occnet_ros.perception.frame_pipeline`), described once.

:class:`PerceptionConfig` groups what turns a frame into objects: cleaning (``filter``), segmentation,
the known-empty space, the reconstruction itself (:class:`~occnet_ros.reconstruction.config.ReconstructorConfig`)
and the published meshes. The node's parameters are these settings plus the node's own
(:class:`occnet_ros.ros.node_params.NodeParams` extends this class), so the dotted field names are the
ROS parameter names and each field's ``doc`` is the parameter's description.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from occnet_ros.config_io import setting
from occnet_ros.perception.cloud_filter import CleanConfig
from occnet_ros.perception.mesh_ops import MIN_CLOSED_FACES
from occnet_ros.perception.segmentation import SegmentationConfig
from occnet_ros.reconstruction.config import ReconstructorConfig
from occnet_ros.reconstruction.known_empty import KnownEmptyConfig

__all__ = ["PerceptionConfig", "MeshOutputConfig"]


@dataclass
class MeshOutputConfig:
    """The meshes the pipeline hands out for publishing (each field's ``doc``)."""

    max_faces: int = setting(20000, doc="published meshes (objects and markers) are reduced to at most this "
                             "many faces by quadric edge-collapse decimation (0 = off; otherwise >= 4): fast-simplification, "
                             "or Open3D where its result would be open or over the budget; a budget below about 4 "
                             "faces per closed piece is reached by dropping whole small pieces. "
                             "Watertight meshes stay watertight: a decimation that would open one is discarded "
                             "and the full mesh is published. Occupancy queries never use this mesh",
                             range=(0, 100000000))
    decimate_in_worker: bool = setting(True, doc="run that decimation in worker processes started with the node: "
                                       "the decimation holds the Python GIL while it runs (fast-simplification "
                                       "0.2-0.3 s per 128^3 mesh on 2 cores, Open3D, the fallback for meshes the "
                                       "fast one would open, 1.7 s: tools/compare_decimators.py), which would "
                                       "stall query_occupancy meanwhile; each worker costs about 110 MB of "
                                       "memory; false = in the node's own process")
    decimation_workers: int = setting(2, doc="worker processes (with decimate_in_worker) that mesh and decimate the "
                                      "slabs of a large surface at once: the MISE grid of a surface of at least 20000 "
                                      "cells is cut into slabs, each meshed by marching cubes and decimated with its "
                                      "cut edges kept in a worker, and the slabs are joined (so the node itself never "
                                      "runs marching cubes on such a grid); 1 = one worker, slab after slab",
                                      range=(1, 16))

    def validate(self) -> None:
        if isinstance(self.decimation_workers, bool) or not isinstance(self.decimation_workers, int) \
                or not 1 <= self.decimation_workers <= 16:
            raise ValueError(f"decimation_workers must be an integer in 1..16, got {self.decimation_workers!r}")
        if 0 < self.max_faces < MIN_CLOSED_FACES:
            raise ValueError(f"max_faces must be 0 (off) or >= {MIN_CLOSED_FACES} (the faces of the smallest "
                             f"closed mesh), got {self.max_faces}")


@dataclass
class PerceptionConfig:
    """Everything :class:`~occnet_ros.perception.frame_pipeline.FramePipeline` reads (each field's ``doc``;
    the groups are documented field by field in their own classes)."""

    seed: int = setting(0, doc="seed of the segmentation's random choices (RANSAC)", range=(0, 2**31 - 1))
    color_from_image: bool = setting(True, doc="colour mesh vertices from the 'image' topic when it is published")
    filter: CleanConfig = field(default_factory=lambda: CleanConfig(min_range=0.1, max_range=5.0))
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    known_empty: KnownEmptyConfig = field(default_factory=KnownEmptyConfig)
    reconstruction: ReconstructorConfig = field(default_factory=lambda: ReconstructorConfig(precision="auto"))
    """The library's defaults except ``precision``: auto in the node, for its speed (bfloat16 where the CPU has it
    natively); the library, the evaluations and the tests keep float32, the reference, unless asked."""
    mesh: MeshOutputConfig = field(default_factory=MeshOutputConfig)
