"""Parameters of ``reconstruction_node``: one typed dataclass, one table of descriptions and ranges.

ROS parameter names are the dotted paths of the fields (``segmentation.min_points``); the YAML file
``config/reconstruct.yaml`` nests them under ``ros__parameters``. :func:`params_from_values` (pure) checks
ranges and types and builds :class:`NodeParams`; :func:`declare_parameters` declares every parameter on
an rclpy node once, with its description and range, and returns the validated values.
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from occnet_ros.perception.cloud_filter import CleanConfig
from occnet_ros.config_io import ConfigError, flatten, from_dict, unflatten
from occnet_ros.reconstruction.known_empty import KnownEmptyConfig
from occnet_ros.perception.mesh_ops import MIN_CLOSED_FACES
from occnet_ros.perception.segmentation import SegmentationConfig
from occnet_ros.reconstruction.surface_anchor import AnchorConfig

NODE_NAME = "reconstruction_node"
ANCHOR_RADIUS = AnchorConfig().radius


class ParamError(ValueError):
    """A parameter value that the node cannot run with; the message names the parameter."""


@dataclass
class SyncParams:
    """``tolerance``: largest stamp difference (s) between a cloud and its mask/image;
    ``stream_timeout``: a mask (image) stream counts as active when a message came within this many
    seconds or since the previous cloud arrived; while active, clouds wait for their matching mask
    (image)."""

    tolerance: float = 0.05
    stream_timeout: float = 2.0


@dataclass
class MeshParams:
    """MISE grid ``resolution0`` * 2**``upsampling_steps``; ``threshold``: surface probability (0 = the
    checkpoint's); ``n_input_points``: network input size (0 = the checkpoint's); ``max_faces``: published
    meshes are simplified to at most this many faces (0 = off, see :func:`occnet_ros.perception.mesh_ops.simplify_mesh`);
    ``reuse_tolerance``: an object whose canonical frame moved less than this keeps its last
    reconstruction (0 = off, see :func:`occnet_ros.reconstruction.reconstructor.frames_close`); ``anchor_radius``: mesh
    vertices this close to the observed points (canonical units, 1 = the object's size) move onto them
    (0 = off, see :mod:`occnet_ros.reconstruction.surface_anchor`); ``mirror_average``: average the network over the
    observation and its mirror image; ``input_subsamples``: codes of this many input subsamples averaged (both
    see :class:`occnet_ros.reconstruction.reconstructor.ReconstructorConfig`); ``decimate_in_worker``: the ``max_faces``
    decimation runs in a worker process (:mod:`occnet_ros.perception.decimation_worker`), so the GIL Open3D holds while
    it decimates does not stall the query service."""

    resolution0: int = 32
    upsampling_steps: int = 1
    threshold: float = 0.0
    n_input_points: int = 0
    max_faces: int = 20000
    reuse_tolerance: float = 0.0
    anchor_radius: float = ANCHOR_RADIUS
    mirror_average: bool = True
    input_subsamples: int = 6
    decimate_in_worker: bool = True

    def validate(self) -> None:
        if 0 < self.max_faces < MIN_CLOSED_FACES:
            raise ValueError(f"max_faces must be 0 (off) or >= {MIN_CLOSED_FACES} (the faces of the smallest "
                             f"closed mesh), got {self.max_faces}")


@dataclass
class NodeParams:
    """Everything the node reads at start (see :data:`PARAMETERS` for each parameter's meaning)."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    checkpoint: str = ""
    up: list[float] = field(default_factory=lambda: [0.0, -1.0, 0.0])
    world_frame: str = ""
    tf_timeout: float = 0.2
    color_from_image: bool = True
    publish_markers: bool = True
    marker_alpha: float = 1.0
    query_max_points: int = 2000000
    query_mode: Literal["exact", "grid"] = "exact"
    log_throttle_sec: float = 5.0
    seed: int = 0
    filter: CleanConfig = field(default_factory=lambda: CleanConfig(min_range=0.1, max_range=5.0))
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    sync: SyncParams = field(default_factory=SyncParams)
    mesh: MeshParams = field(default_factory=MeshParams)
    known_empty: KnownEmptyConfig = field(default_factory=KnownEmptyConfig)

    def validate(self) -> None:
        if len(self.up) != 3 or not all(math.isfinite(v) for v in self.up) or sum(v * v for v in self.up) < 1e-12:
            raise ValueError(f"up must be 3 finite numbers, not all zero, got {self.up}")
        if self.world_frame.startswith("/"):
            raise ValueError(f"world_frame must not start with '/', got {self.world_frame!r}")


INF = math.inf
PARAMETERS: dict[str, tuple[str, tuple[float, float] | None]] = {
    # name: (description, (min, max) or None)
    "device": ("torch device: auto (cuda when available), cpu or cuda", None),
    "checkpoint": ("model checkpoint file (.pt); empty = the shipped default weights", None),
    "up": ("gravity-up direction [x, y, z] in the cloud frame (level optical frame: [0, -1, 0]); "
           "unused when world_frame is set", None),
    "world_frame": ("if set: a z-up frame; gravity-up is looked up with tf2 (needs tf2_ros)", None),
    "tf_timeout": ("seconds to wait for a tf2 transform", (0.0, 10.0)),
    "color_from_image": ("colour mesh vertices from the 'image' topic when it is published", None),
    "publish_markers": ("publish visualization_msgs/MarkerArray on 'markers'", None),
    "marker_alpha": ("opacity of the mesh markers", (0.0, 1.0)),
    "query_max_points": ("largest number of points one query_occupancy request may hold", (1, 100000000)),
    "query_mode": ("how query_occupancy answers points inside an object's box: exact = the network on each "
                   "point (exact for the cached code); grid = trilinear interpolation in the object's cached "
                   "MISE probability grid (approximate: equal to the network at the grid corners MISE "
                   "evaluated, i.e. near the surface; interpolated elsewhere and between corners; keeps a "
                   "4*(R+1)^3-byte grid per object, 8.6 MB at R = 128)", None),
    "log_throttle_sec": ("smallest interval between repeated warnings about dropped messages, s", (0.0, 3600.0)),
    "seed": ("seed of the random choices (RANSAC, input subsampling)", (0, 2**31 - 1)),
    "filter.min_range": ("drop object points closer than this to the camera, m", (0.0, 100.0)),
    "filter.max_range": ("drop object points farther than this from the camera, m (0 = no limit)", (0.0, 1000.0)),
    "filter.outlier_neighbors": ("k of the statistical outlier filter (0 = off)", (0, 256)),
    "filter.outlier_std_ratio": ("outlier if mean k-neighbour distance > mean + ratio * std", (0.01, 100.0)),
    "filter.voxel_size": ("voxel downsampling of each object's points, m (0 = off)", (0.0, 1.0)),
    "segmentation.mode": ("auto (mask when masks arrive, else geometric), mask or geometric", None),
    "segmentation.min_points": ("objects with fewer observed points are ignored", (3, 10000000)),
    "segmentation.max_points": ("objects with more observed points are ignored", (3, 100000000)),
    "segmentation.min_extent": ("objects whose largest bounding-box edge is shorter are ignored, m", (0.0, 100.0)),
    "segmentation.max_extent": ("objects whose largest bounding-box edge is longer are ignored, m", (0.0, 100.0)),
    "segmentation.max_objects": ("reconstruct at most this many objects per frame (the largest)", (1, 1000)),
    "segmentation.plane_distance": ("RANSAC support-plane inlier distance, m", (1e-5, 1.0)),
    "segmentation.plane_iterations": ("RANSAC hypotheses", (1, 100000)),
    "segmentation.plane_max_tilt_deg": ("largest angle between the support plane normal and up, degrees", (0.0, 90.0)),
    "segmentation.plane_min_inliers": ("fraction of the points the support plane must hold to be removed", (0.0, 1.0)),
    "segmentation.cluster_distance": ("Euclidean clustering neighbour distance, m", (1e-5, 1.0)),
    "segmentation.cluster_voxel": ("voxel size the clustering runs on, m (0 = raw points)", (0.0, 1.0)),
    "segmentation.track_distance": ("a cluster keeps the id of the previous cluster within this distance, m",
                                    (1e-5, 10.0)),
    "sync.tolerance": ("largest stamp difference between a cloud and its mask/image, s", (0.0, 10.0)),
    "sync.stream_timeout": ("a mask/image stream is active (clouds wait for it) if a message came within this "
                            "time, or since the previous cloud, s", (0.01, 3600.0)),
    "mesh.resolution0": ("MISE initial grid resolution (cells per axis)", (2, 512)),
    "mesh.upsampling_steps": ("MISE refinement steps (final resolution resolution0 * 2^steps; 1 = 64^3 had the "
                              "same evaluation IoU as 2 = 128^3 at a quarter of the time)", (0, 6)),
    "mesh.threshold": ("surface occupancy probability (0 = the checkpoint's)", (0.0, 0.999)),
    "mesh.n_input_points": ("network input points per object (0 = the checkpoint's)", (0, 1000000)),
    "mesh.max_faces": ("published meshes (objects and markers) are reduced to at most this many faces by "
                       "quadric edge-collapse decimation (0 = off; otherwise >= 4; a mesh of more than "
                       "max_faces / 4 separate closed pieces keeps at least 4 faces per piece). Watertight meshes "
                       "stay watertight: a decimation that would open one is discarded and the full mesh is "
                       "published. Occupancy queries never use this mesh", (0, 100000000)),
    "mesh.decimate_in_worker": ("run that decimation in a separate worker process started with the node: Open3D "
                                "holds the Python GIL while it decimates (about 0.1 s per 64^3 mesh, 2.3 s per "
                                "128^3 one on 2 cores), which would stall query_occupancy meanwhile; the worker "
                                "costs about 210 MB of memory; false = in the node's own process", None),
    "mesh.reuse_tolerance": ("0 = off; > 0: an object (same id as in the previous frame) is not re-encoded nor "
                             "re-meshed (its last code, mesh and pose are republished) when the canonical frame "
                             "of its new observation (centre, scale, orientation of the cleaned points) is within "
                             "this tolerance of the previous one: centres and scales within tolerance * object "
                             "scale, rotation matrices within tolerance (Frobenius norm of the difference, about "
                             "1.4 x the angle in radians)", (0.0, 0.999)),
    "mesh.anchor_radius": ("mesh vertices closer than this to the observed points move onto a plane fitted to "
                           "them (where the camera saw the surface, the mesh follows the measurement; the "
                           "network completes the rest), canonical units (1 = the object's size); 0 = off. "
                           "Occupancy queries answer the network itself", (0.0, 0.5)),
    "mesh.mirror_average": ("also encode the observation mirrored across the vertical plane along the viewing "
                            "direction and average the two (feature-plane networks: the codes, one extra encoding; "
                            "global-code networks: the logits, 2x the decoding); meshes and queries alike; "
                            "+0.007 IoU on held-out objects (MODEL.md)", None),
    "mesh.input_subsamples": ("disjoint subsamples of n_input_points encoded (in one batch) and their codes "
                              "averaged, so more of a dense cloud is used; 4 and 6 scored higher than 1 on held-out "
                              "objects (MODEL.md)", (1, 64)),
    "known_empty.support_plane": ("remove occupancy below the support plane (RANSAC along up on the whole cloud; "
                                  "used for an object only when its points lie above it); meshes and queries alike",
                                  None),
    "known_empty.plane_margin_m": ("tolerance below the support plane before space counts as empty, m", (0.0, 0.1)),
    "known_empty.free_space": ("remove occupancy in front of the measured depth (needs an organized cloud of the "
                               "camera_info's size, in the camera frame or with tf2 to it); meshes and queries alike",
                               None),
    "known_empty.sigma_a": ("depth noise sigma(d) = sigma_a + sigma_b * d^2: constant part, m", (0.0, 1.0)),
    "known_empty.sigma_b": ("depth noise sigma(d) = sigma_a + sigma_b * d^2: quadratic part, 1/m", (0.0, 1.0)),
    "known_empty.n_sigma": ("space is free only this many noise sigmas in front of the depth", (0.0, 100.0)),
    "known_empty.edge_window_px": ("odd window of the flying-pixel test: a pixel whose depth lies between the "
                                   "window's nearest and farthest is bounded by the nearest (1 = no test)", (1, 99)),
}


def default_values() -> dict[str, Any]:
    """{name: default} of every parameter."""
    return flatten(NodeParams())


def check_ranges(values: dict[str, Any]) -> None:
    """Raise :class:`ParamError` naming the first parameter outside its range in :data:`PARAMETERS`."""
    for name, value in values.items():
        if name not in PARAMETERS:
            raise ParamError(f"unknown parameter '{name}'")
        rng = PARAMETERS[name][1]
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


def declare_parameters(node) -> NodeParams:
    """Declare every parameter on the rclpy ``node`` (description, type, range) and return the validated
    values. Raises :class:`ParamError` for a bad override."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    values = {}
    for name, default in default_values().items():
        description, rng = PARAMETERS[name]
        # dynamic typing: an integer given for a float parameter is accepted; params_from_values checks
        # the types and ranges itself, with messages naming the parameter
        desc = ParameterDescriptor(name=name, description=description, read_only=True, dynamic_typing=True)
        if rng is not None and isinstance(default, float):
            desc.floating_point_range = [FloatingPointRange(from_value=float(rng[0]), to_value=float(rng[1]))]
        elif rng is not None and isinstance(default, int) and not isinstance(default, bool):
            desc.integer_range = [IntegerRange(from_value=int(rng[0]), to_value=int(rng[1]), step=1)]
        try:
            values[name] = node.declare_parameter(name, default, desc).value
        except Exception as e:  # rclpy's InvalidParameterValue/TypeException for a bad override
            raise ParamError(f"parameter '{name}': {e}") from e
    return params_from_values(values)
