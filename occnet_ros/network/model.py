"""The Occupancy Network: configuration, the assembled network, its costs, device selection.

Two kinds (``ModelConfig.kind``): "global", a ResNet-PointNet encoder to one code and a
conditional-batch-norm decoder (:mod:`occnet_ros.network.model_global`); "local", feature planes and a U-Net
(:mod:`occnet_ros.network.model_local`).

All coordinates are in the canonical object frame (see :mod:`occnet_ros.reconstruction.normalization`), box
``[-BOX_HALF, BOX_HALF]^3``. The network is device-agnostic: nothing here creates CPU-only tensors.

* ``encode(points (B, N, 3)) -> code (B, *code_shape)``
* ``decode(query (B, M, 3), code) -> logits (B, M)``
* ``prepare(code)`` -> per-object decoder constants, computed once (global: the folded CBN maps,
  :class:`PreparedCode`; local: :class:`PreparedPlanes`); ``decode_prepared(query, prepared)`` then
  costs only the per-point work. A cached code answers occupancy queries.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from occnet_ros.network.model_global import (CBatchNorm, CBNDecoder, FusedDecoder, PreparedCode,  # noqa: F401
                                     ResnetBlockFC, ResnetPointNet)
from occnet_ros.network.model_local import LocalDecoder, LocalPoolPointNet, PreparedPlanes, mirror_planes, unet_macs


MODEL_KINDS = ("global", "local")


@dataclass
class ModelConfig:
    """Network sizes. ``kind``: "global" (one code vector, CBN decoder; this module) or "local" (three
    feature planes, :mod:`occnet_ros.network.model_local`). ``c_dim``: size of the global code, or channels of
    the local feature planes; ``*_hidden``: layer widths; ``*_blocks``: number of residual blocks;
    ``bn_momentum``/``bn_eps``: the global decoder's batch norm. Local only: ``plane_resolution`` R
    (cells per plane side, divisible by 2^(unet_levels-1)), ``unet_base`` channels and ``unet_levels``
    resolutions of the U-Net, ``local_pool``: the point encoder pools over the points of each plane
    cell (ConvONet) instead of over all points (twice the training time here, see MODEL.md),
    ``global_context``: the features pooled over all points are added to every plane cell before the
    U-Net (see :class:`~occnet_ros.network.model_local.LocalPoolPointNet`)."""

    kind: str = "global"
    c_dim: int = 128
    encoder_hidden: int = 64
    encoder_blocks: int = 5
    decoder_hidden: int = 64
    decoder_blocks: int = 5
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    plane_resolution: int = 32
    unet_base: int = 32
    unet_levels: int = 3
    local_pool: bool = False
    global_context: bool = False

    def validate(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ValueError(f"kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        if self.kind == "local":
            for name in ("plane_resolution", "unet_base", "unet_levels"):
                if getattr(self, name) < 1:
                    raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
            if self.plane_resolution % 2 ** (self.unet_levels - 1):
                raise ValueError(f"plane_resolution {self.plane_resolution} must be divisible by "
                                 f"2^(unet_levels-1) = {2 ** (self.unet_levels - 1)}")
        if self.global_context and self.kind != "local":
            raise ValueError("global_context is an option of kind 'local' (the global kind is one code)")
        for name in ("c_dim", "encoder_hidden", "encoder_blocks", "decoder_hidden", "decoder_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.bn_momentum <= 1.0:
            raise ValueError(f"bn_momentum must be in (0, 1], got {self.bn_momentum}")


class OccupancyNetwork(nn.Module):
    """Point-cloud-conditioned occupancy network (canonical frame in, logits out)."""

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        self.config.validate()
        c = self.config
        if c.kind == "local":
            self.encoder = LocalPoolPointNet(c.c_dim, c.encoder_hidden, c.encoder_blocks,
                                             c.plane_resolution, c.unet_base, c.unet_levels,
                                             c.local_pool, c.global_context)
            self.decoder = LocalDecoder(c.c_dim, c.decoder_hidden, c.decoder_blocks)
        else:
            self.encoder = ResnetPointNet(c.c_dim, c.encoder_hidden, c.encoder_blocks)
            self.decoder = CBNDecoder(c.c_dim, c.decoder_hidden, c.decoder_blocks, c.bn_momentum,
                                      c.bn_eps)

    @property
    def code_shape(self) -> tuple[int, ...]:
        """Shape of one object's code: (c_dim,) global, (3, c_dim, R, R) local."""
        c = self.config
        if c.kind == "local":
            return (3, c.c_dim, c.plane_resolution, c.plane_resolution)
        return (c.c_dim,)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encode(self, points: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """points (B, N, 3) float32, canonical frame -> code (B, *code_shape) float32: (B, c_dim) global,
        (B, 3, c_dim, R, R) feature planes local. ``dtype`` (None = float32): local, bfloat16 or float16 runs the
        planes' U-Net in that precision (:class:`~occnet_ros.network.model_local.LocalPoolPointNet`); global
        encoders have no U-Net and stay float32."""
        if points.dim() != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
        if self.config.kind == "local":
            return self.encoder(points, unet_dtype=dtype)
        return self.encoder(points)

    def mirror_code(self, code: torch.Tensor) -> torch.Tensor | None:
        """code (B, *code_shape) of an input mirrored across the canonical x-z plane (y -> -y) -> the
        same code mirrored back into the input's frame, or None where a code has no spatial layout
        (global: one vector). Local: the feature planes flipped along y (:func:`mirror_planes`)."""
        if self.config.kind != "local":
            return None
        return mirror_planes(code)

    def decode(self, query: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """query (B, M, 3) float32 canonical, code (B, *code_shape) -> logits (B, M)."""
        if query.dim() != 3 or query.shape[-1] != 3:
            raise ValueError(f"query must be (B, M, 3), got {tuple(query.shape)}")
        if tuple(code.shape[1:]) != self.code_shape or code.shape[0] != query.shape[0]:
            raise ValueError(f"code must be (B={query.shape[0]}, {self.code_shape}), got {tuple(code.shape)}")
        return self.decoder(query, code)

    def prepare(self, code: torch.Tensor, dtype: torch.dtype | None = None, fuse: bool = True
                ):
        """Per-object decoder constants for ``code`` (B, *code_shape); only valid in eval mode. Global:
        the folded CBN maps (:class:`PreparedCode`), ``dtype`` the precision of the fused fast path
        (None = float32), ``fuse=False`` keeps only the reference affines. Local: the feature planes
        (:class:`occnet_ros.network.model_local.PreparedPlanes`)."""
        if self.training:
            raise RuntimeError("prepare() needs eval mode (call model.eval())")
        return self.decoder.prepare(code, dtype=dtype, fuse=fuse)

    def decode_prepared(self, query: torch.Tensor, prep) -> torch.Tensor:
        """query (B, M, 3) canonical (B as in the prepared code, or 1 code broadcast) -> logits (B, M)."""
        if self.training:
            raise RuntimeError("decode_prepared() needs eval mode (call model.eval())")
        return self.decoder.forward_prepared(query, prep)

    def decode_sampled(self, query: torch.Tensor, features: torch.Tensor, prep) -> torch.Tensor:
        """A feature-plane network's :meth:`decode_prepared` of query (B, M, 3) whose plane features (B, M, C) are
        given (sampled already, e.g. from a :class:`~occnet_ros.network.plane_lattice.PlaneLattice`) -> logits
        (B, M); float32 ``prep`` only."""
        if self.training:
            raise RuntimeError("decode_sampled() needs eval mode (call model.eval())")
        if self.config.kind != "local":
            raise ValueError("decode_sampled() is for feature-plane networks")
        return self.decoder.forward_sampled(query, features, prep)

    def forward(self, points: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """points (B, N, 3), query (B, M, 3), canonical -> logits (B, M)."""
        return self.decode(query, self.encode(points))


def cost_report(config: ModelConfig) -> dict[str, float]:
    """Parameter counts and multiply-add-based FLOPs (2 per MAC, bias/activations ignored).

    ``decoder_flops_per_query``: per query point once the code is prepared (global: the CBN maps
    folded; local: 4 bilinear taps per channel and plane, then the MLP);
    ``encoder_flops_per_input_point``: per input point (pooling ignored), as the modules compute it;
    ``encoder_inference_flops_per_input_point``: per input point as inference computes it (local kind without
    ``local_pool``: :func:`~occnet_ros.network.encoder_inference.point_planes` maps the pooled half of each block's
    input once per input, not once per point; those per-input maps, a few thousand FLOPs, are ignored; otherwise the
    modules' count); ``prepare_flops_per_code``: per object, independent of the points (global: CBN folding; local:
    the U-Net on three planes)."""
    c = config
    model = OccupancyNetwork(c)
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    n_dec = sum(p.numel() for p in model.decoder.parameters())
    h, e = c.decoder_hidden, c.encoder_hidden
    if c.kind == "local":
        dec_macs = 3 * 4 * c.c_dim + 3 * h + c.decoder_blocks * (c.c_dim * h + 2 * h * h) + h
        enc_macs = 3 * 2 * e + c.encoder_blocks * (2 * e * e + e * e + 2 * e * e) + e * c.c_dim
        # inference: the first block takes the full [a, a] input, the later ones only the per-point half a
        inf_macs = (enc_macs if c.local_pool
                    else 3 * 2 * e + 5 * e * e + (c.encoder_blocks - 1) * 3 * e * e + e * c.c_dim)
        per_code = 3 * unet_macs(c.c_dim, c.unet_base, c.unet_levels, c.plane_resolution)
        per_code += e * c.c_dim if c.global_context else 0
    else:
        dec_macs = 3 * h + c.decoder_blocks * (2 * h * h + 2 * h) + h + h
        enc_macs = 3 * 2 * e + c.encoder_blocks * (2 * e * e + e * e + 2 * e * e)
        inf_macs = enc_macs
        per_code = (2 * c.decoder_blocks + 1) * 2 * c.c_dim * h
    return {
        "params_total": float(n_enc + n_dec),
        "params_encoder": float(n_enc),
        "params_decoder": float(n_dec),
        "decoder_flops_per_query": float(2 * dec_macs),
        "encoder_flops_per_input_point": float(2 * enc_macs),
        "encoder_inference_flops_per_input_point": float(2 * inf_macs),
        "prepare_flops_per_code": float(2 * per_code),
    }


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" -> cuda if available else cpu; "cpu", "cuda", "cuda:N" as given (error if unavailable)."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    return torch.device(device)
