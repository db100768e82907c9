"""The settings of :class:`~occnet_ros.reconstruction.reconstructor.Reconstructor`, described once.

The node embeds :class:`ReconstructorConfig` as its ``reconstruction.*`` parameter group, the evaluation
as its ``reconstructor`` section and ``occnet_reconstruct`` / ``occnet_heldout`` take its fields, so each
setting has one default and one description (its field's ``doc``) everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from occnet_ros.config_io import setting
from occnet_ros.reconstruction.surface_anchor import AnchorConfig

__all__ = ["ReconstructorConfig", "DEFAULT_INPUT_POINTS", "PRECISIONS"]

PRECISIONS = ("float32", "bfloat16", "float16", "auto")
DEFAULT_INPUT_POINTS = 300
"""Network input size of a Reconstructor whose model carries no training record of its own."""


@dataclass
class ReconstructorConfig:
    """How one object is reconstructed (each field's ``doc`` says what it does). The default grid is 64^3
    (``upsampling_steps`` 1): on the 12 evaluation objects it scores the IoU of 128^3 from one view (0.803
    vs 0.804) and 0.009 less from four fused views (0.859 vs 0.868), F-score level (0.644 / 0.820 vs 0.644 /
    0.819), in half the time (``make eval``, rows mise1 and mise2; docs/results/eval_results.md)."""

    resolution0: int = setting(32, doc="MISE initial grid resolution (cells per axis)", range=(2, 512))
    upsampling_steps: int = setting(1, doc="MISE refinement steps: final grid resolution0 * 2^steps (1 = 64^3; "
                                    "2 = 128^3: same 1-view IoU, +0.009 at 4 fused views, 2x the time)",
                                    range=(0, 6))
    threshold: float = setting(0.0, doc="surface occupancy probability; 0 = the checkpoint's calibrated "
                               "thresholds (one per number of fused views)", range=(0.0, 0.999))
    n_input_points: int = setting(0, doc="network input points per subsample; 0 = as many as the checkpoint was "
                                  "trained with", range=(0, 1000000))
    query_batch_size: int = setting(0, doc="query points per network call; 0 = 4096 on a CPU (activations stay "
                                    "in the L2 caches), 65536 on a GPU", range=(0, 100000000))
    seed: int = setting(0, doc="seed of the input subsampling", range=(0, 2**31 - 1))
    device: str = setting("auto", doc="torch device: auto (cuda when available), cpu, cuda or cuda:N")
    precision: Literal["float32", "bfloat16", "float16", "auto"] = setting(
        "float32", doc="precision of the feature-plane encoder's U-Net, and on a GPU of the decoder's MLP while "
        "meshing (the points' MLP, the pooling, the code and the answers to queries stay float32; on a CPU the decoder "
        "too: reconstruction/precision.py): float32, bfloat16, float16, or auto = bfloat16 on a CPU with native "
        "bfloat16 instructions (AVX512-BF16, AMX), float32 elsewhere. On 56 held-out objects bfloat16 scored IoU "
        "0.8106 / 0.8960 against float32's 0.8108 / 0.8959 (1 / 4 views; occnet_heldout --variant f32 --variant "
        "bf16:precision=bfloat16 --views 1 4)")
    keep_grid: bool = setting(False, doc="keep each object's MISE probability grid for grid-mode queries "
                              "(4 * (R+1)^3 bytes per object: 1.1 MB at 64^3, 8.6 MB at 128^3)")
    reuse_tolerance: float = setting(0.0, doc="0 = off; > 0: an object whose new observation gives a canonical "
                                     "frame within this tolerance of its previous one (centres and scales within "
                                     "tolerance * object scale, rotation matrices within tolerance in Frobenius "
                                     "norm, about 1.4 x the angle in radians) keeps its previous code and mesh",
                                     range=(0.0, 0.999))
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    mirror_average: bool = setting(True, doc="also encode the observation mirrored across the vertical plane "
                                   "along the viewing direction and average (feature-plane networks: the codes, "
                                   "one extra encoding; global-code networks: the logits, 2x the decoding); "
                                   "meshes and queries alike")
    input_subsamples: int = setting(6, doc="disjoint seeded subsamples of n_input_points encoded in one batch and "
                                    "their codes averaged, so more of a dense cloud is used", range=(1, 64))
    max_view_frames: int = setting(4, doc="a cloud fused from several cameras is also encoded in the canonical "
                                   "frames of up to max_view_frames - 1 of its other cameras and the "
                                   "probabilities averaged (one more encoding and decoding each); 1 = only the "
                                   "frame of its own viewpoint", range=(1, 64))
    compute_threads: int = setting(0, doc="threads that run the network on parts of one object's batch at once, or "
                                   "the objects of a frame at once (the frame pipeline), each "
                                   "with one torch thread, so that no OpenMP team of torch's waits on a core another "
                                   "thread holds (the node's queries: p50 6-8 ms against 10-12 ms under load on 2 "
                                   "cores, make bench section ros); 0 = one per usable CPU core on a CPU, 1 on a GPU; "
                                   "1 = the calling thread with torch's own threads", range=(0, 256))
    batch_objects: Literal["auto", "on", "off"] = setting(
        "auto", doc="the objects of one frame share network calls: all their inputs encoded in one call and each "
        "MISE level of all of them decoded together (on), or each object on its own (off: on a CPU the frame's "
        "objects then run on the compute threads at once, one object's network per thread); auto = on a GPU only "
        "(a 4-object frame at 64^3 took 400 ms batched against 283 ms on the compute threads, make bench section "
        "frame on a 2-core AMD EPYC)")

    def __post_init__(self):
        # None is the Python spelling of "the checkpoint's" for the two settings whose 0 means that
        if self.threshold is None:
            self.threshold = 0.0
        if self.n_input_points is None:
            self.n_input_points = 0

    def validate(self) -> None:
        """Raise ValueError naming the first setting outside its allowed values."""
        self.anchor.validate()
        if self.resolution0 < 2 or self.upsampling_steps < 0:
            raise ValueError("resolution0 must be >= 2 and upsampling_steps >= 0")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), or 0 for the checkpoint's, got {self.threshold}")
        if self.max_view_frames < 1:
            raise ValueError(f"max_view_frames must be >= 1, got {self.max_view_frames}")
        if self.input_subsamples < 1:
            raise ValueError(f"input_subsamples must be >= 1, got {self.input_subsamples}")
        if self.n_input_points < 0:
            raise ValueError(f"n_input_points must be >= 0 (0 = the checkpoint's), got {self.n_input_points}")
        if self.query_batch_size < 0:
            raise ValueError(f"query_batch_size must be >= 0 (0 = auto), got {self.query_batch_size}")
        if not 0.0 <= self.reuse_tolerance < 1.0:
            raise ValueError(f"reuse_tolerance must be in [0, 1), got {self.reuse_tolerance}")
        if isinstance(self.compute_threads, bool) or not isinstance(self.compute_threads, int) \
                or not 0 <= self.compute_threads <= 256:
            raise ValueError(f"compute_threads must be an integer in [0, 256] (0 = auto), got {self.compute_threads!r}")
        if self.batch_objects not in ("auto", "on", "off"):
            raise ValueError(f"batch_objects must be auto, on or off, got {self.batch_objects!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        dev = self.device
        if dev not in ("auto", "cpu", "cuda") and not (dev.startswith("cuda:") and dev[5:].isdigit()):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {dev!r}")
