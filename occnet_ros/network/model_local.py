"""The local-feature variant of the occupancy network (in the spirit of Convolutional Occupancy Networks,
Peng et al. 2020): the code is not one vector but three axis-aligned feature planes.

All coordinates are in the canonical object frame (:mod:`occnet_ros.reconstruction.normalization`), box
``[-BOX_HALF, BOX_HALF]^3``; the planes cover ``[-PLANE_HALF, PLANE_HALF]^2`` (a little more, so that
near-surface queries just outside the box still read real features).

* encoder :class:`LocalPoolPointNet`: points (B, N, 3) -> per-point features (a ResNet-PointNet whose
  pooling is a max over the points that share a plane cell, summed over the three planes) -> the mean
  feature of each cell of the xy, xz and yz planes -> a small 2-D U-Net per plane (shared weights)
  -> code (B, 3, C, R, R).
* decoder :class:`LocalDecoder`: query (B, M, 3) -> bilinear plane features, summed over the planes
  (B, M, C) -> residual MLP in which every block adds a projection of the feature -> logits (B, M).

Plane k spans the canonical axes ``PLANE_AXES[k]`` = (a, b): a runs along the image width (grid x),
b along the height (grid y); a cell's flat index is ``row * R + col``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from occnet_ros.network.model_global import ResnetBlockFC
from occnet_ros.network.domain import BOX_HALF

PLANE_AXES = ((0, 1), (0, 2), (1, 2))
"""Canonical axes of the xy, xz and yz feature planes."""

PLANE_HALF = 1.05 * BOX_HALF
"""Half-extent of the feature planes, canonical units."""


def plane_grid(p: torch.Tensor) -> torch.Tensor:
    """p (B, M, 3) canonical -> (B, 3, M, 2) plane coordinates in [-1, 1] (grid_sample convention,
    align_corners=False), clamped to the plane."""
    uv = torch.stack([p[..., list(ax)] for ax in PLANE_AXES], dim=1)
    return (uv / PLANE_HALF).clamp(-1.0, 1.0)


def mirror_planes(planes: torch.Tensor) -> torch.Tensor:
    """planes (B, 3, C, R, R) -> the same features mirrored across the canonical x-z plane (y -> -y):
    the x-y plane (rows are y) flips its rows, the y-z plane (columns are y) its columns, the x-z plane
    stays. Sampling the result at (x, -y, z) gives what ``planes`` give at (x, y, z)."""
    out = planes.clone()
    out[:, 0] = planes[:, 0].flip(-2)
    out[:, 2] = planes[:, 2].flip(-1)
    return out


def cell_index(grid: torch.Tensor, resolution: int) -> torch.Tensor:
    """grid (B, 3, N, 2) from :func:`plane_grid` -> (B, 3, N) int64 flat cell index row * R + col."""
    ij = ((grid + 1.0) * (0.5 * resolution)).long().clamp_(0, resolution - 1)
    return ij[..., 1] * resolution + ij[..., 0]


def scatter_mean(features: torch.Tensor, index: torch.Tensor, resolution: int) -> torch.Tensor:
    """features (B, N, C), index (B, 3, N) -> planes (B, 3, C, R, R): the mean feature of the points in
    each cell, zero in empty cells."""
    b, n, c = features.shape
    r2 = resolution * resolution
    idx = index.reshape(b, 3 * n)
    src = features.repeat(1, 3, 1)  # (B, 3N, C), plane-major like idx
    flat = idx + (torch.arange(3, device=idx.device) * r2).repeat_interleave(n).unsqueeze(0)
    sums = features.new_zeros(b, 3 * r2, c).scatter_add_(1, flat.unsqueeze(-1).expand(-1, -1, c), src)
    counts = features.new_zeros(b, 3 * r2).scatter_add_(1, flat, features.new_ones(b, 3 * n))
    mean = sums / counts.clamp(min=1.0).unsqueeze(-1)
    return mean.reshape(b, 3, resolution, resolution, c).permute(0, 1, 4, 2, 3).contiguous()


def local_max_pool(features: torch.Tensor, index: torch.Tensor, resolution: int) -> torch.Tensor:
    """features (B, N, H), index (B, 3, N) -> (B, N, H): for every point, the channel-wise max over
    the points in its cell, summed over the three planes."""
    b, n, h = features.shape
    out = 0
    for k in range(3):
        idx = index[:, k].unsqueeze(-1).expand(-1, -1, h)
        pooled = features.new_full((b, resolution * resolution, h), float("-inf"))
        pooled = pooled.scatter_reduce(1, idx, features, reduce="amax", include_self=False)
        out = out + pooled.gather(1, idx)
    return out


class UNet2d(nn.Module):
    """A small 2-D U-Net, (B, C, R, R) -> (B, C, R, R); ``levels`` resolutions (R must be divisible by
    2^(levels-1)), ``base`` * 2^l channels at level l, two 3x3 convolutions + ReLU per level, max-pool
    down, bilinear up, skip connections by concatenation, a 1x1 convolution out."""

    def __init__(self, channels: int, base: int, levels: int):
        super().__init__()
        widths = [base * 2 ** i for i in range(levels)]
        self.down = nn.ModuleList()
        c_in = channels
        for w in widths:
            self.down.append(self._block(c_in, w))
            c_in = w
        self.up = nn.ModuleList(self._block(widths[i + 1] + widths[i], widths[i])
                                for i in reversed(range(levels - 1)))
        self.out = nn.Conv2d(widths[0], channels, 1)

    @staticmethod
    def _block(c_in: int, c_out: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True),
                             nn.Conv2d(c_out, c_out, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and x.device.type == "cpu":
            # channels-last (NHWC) at inference on a CPU: oneDNN's convolutions run about 1.3x faster on the
            # shipped 32x32 planes, same values up to float rounding (test_model_local checks 1e-5); training
            # keeps the default layout
            x = x.contiguous(memory_format=torch.channels_last)
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.out(x).contiguous()


class LocalPoolPointNet(nn.Module):
    """points (B, N, 3) canonical -> feature planes (B, 3, c_dim, R, R).

    ``global_context``: a linear map of the features max-pooled over all points is added to every
    cell of the three planes before the U-Net, so cells that no point falls in (the unseen side)
    carry the object's overall shape too. It starts at zero (``fc_global`` zero-initialised), so a
    model warm-started from one without it computes the same function at step 0."""

    def __init__(self, c_dim: int, hidden: int, n_blocks: int, resolution: int, unet_base: int,
                 unet_levels: int, local_pool: bool = True, global_context: bool = False):
        super().__init__()
        self.resolution = resolution
        self.local_pool = local_pool
        self.fc_pos = nn.Linear(3, 2 * hidden)
        self.blocks = nn.ModuleList(ResnetBlockFC(2 * hidden, hidden, hidden) for _ in range(n_blocks))
        self.fc_c = nn.Linear(hidden, c_dim)
        self.fc_global = nn.Linear(hidden, c_dim) if global_context else None
        if self.fc_global is not None:
            nn.init.zeros_(self.fc_global.weight)
            nn.init.zeros_(self.fc_global.bias)
        self.unet = UNet2d(c_dim, unet_base, unet_levels)

    def point_planes(self, p: torch.Tensor) -> torch.Tensor:
        """p (B, N, 3) canonical -> the U-Net's input planes (B, 3, c_dim, R, R): the points' MLP with its pooling,
        the cell means and the global context, module by module (training, and the reference of
        :func:`occnet_ros.network.encoder_inference.point_planes`, which :meth:`forward` uses at inference)."""
        index = cell_index(plane_grid(p), self.resolution)
        net = self.blocks[0](self.fc_pos(p))
        for block in self.blocks[1:]:
            pooled = (local_max_pool(net, index, self.resolution) if self.local_pool
                      else net.max(dim=1, keepdim=True)[0].expand_as(net))
            net = block(torch.cat([net, pooled], dim=2))
        planes = scatter_mean(self.fc_c(net), index, self.resolution)
        if self.fc_global is not None:
            planes = planes + self.fc_global(net.max(dim=1)[0])[:, None, :, None, None]
        return planes

    def forward(self, p: torch.Tensor, unet_dtype: torch.dtype | None = None) -> torch.Tensor:
        """p (B, N, 3) canonical -> planes (B, 3, c_dim, R, R) float32. ``unet_dtype``: bfloat16 or float16 runs the
        U-Net (most of the encoder's work) under ``torch.autocast`` in that precision, the points' MLP, the pooling
        and the returned planes stay float32; None or float32 = float32 throughout."""
        from occnet_ros.network import encoder_inference

        planes = (encoder_inference.point_planes(self, p) if encoder_inference.applies(self, p)
                  else self.point_planes(p))
        b, _, c, r, _ = planes.shape
        flat = planes.reshape(b * 3, c, r, r)
        if unet_dtype is None or unet_dtype == torch.float32:
            return self.unet(flat).reshape(b, 3, c, r, r)
        with torch.autocast(device_type=p.device.type, dtype=unet_dtype):
            out = self.unet(flat)
        return out.float().reshape(b, 3, c, r, r)


@dataclass
class PreparedPlanes:
    """The decoder's per-object constants at inference: ``code``, the feature planes (B, 3, C, R, R)
    float32 on the model's device, and the precision of the decoder's MLP (float32, or bfloat16/float16
    run under ``torch.autocast`` where the device has them)."""

    code: torch.Tensor
    dtype: torch.dtype = torch.float32
    fc_c_weight: torch.Tensor | None = None
    """(n_blocks * hidden, C): the decoder's per-block feature maps stacked, so that all blocks' feature
    terms come from one matrix product per chunk instead of n_blocks small ones; None = the blocks' own."""
    fc_c_bias: torch.Tensor | None = None


class LocalDecoder(nn.Module):
    """query (B, M, 3) canonical, planes (B, 3, C, R, R) -> logits (B, M)."""

    def __init__(self, c_dim: int, hidden: int, n_blocks: int):
        super().__init__()
        self.fc_p = nn.Linear(3, hidden)
        self.fc_c = nn.ModuleList(nn.Linear(c_dim, hidden) for _ in range(n_blocks))
        self.blocks = nn.ModuleList(ResnetBlockFC(hidden, hidden, hidden) for _ in range(n_blocks))
        self.fc_out = nn.Linear(hidden, 1)

    @staticmethod
    def sample(p: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
        """p (B, M, 3), planes (B, 3, C, R, R) -> (B, M, C): bilinear features summed over planes."""
        grid = plane_grid(p).to(planes.dtype)  # (B, 3, M, 2)
        b, _, c, r, _ = planes.shape
        m = p.shape[1]
        feats = F.grid_sample(planes.reshape(b * 3, c, r, r), grid.reshape(b * 3, m, 1, 2),
                              mode="bilinear", padding_mode="border", align_corners=False)
        return feats.reshape(b, 3, c, m).sum(dim=1).transpose(1, 2)

    def forward(self, p: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
        c = self.sample(p, planes)
        net = self.fc_p(p.to(c.dtype))
        for fc_c, block in zip(self.fc_c, self.blocks):
            net = block(net + fc_c(c))
        return self.fc_out(F.relu(net)).squeeze(-1)

    def prepare(self, code: torch.Tensor, dtype: torch.dtype | None = None, fuse: bool = True
                ) -> PreparedPlanes:
        """code (B, 3, C, R, R) -> :class:`PreparedPlanes`; ``dtype``: precision of the MLP (None =
        float32). ``fuse``: stack the blocks' feature maps into one (:meth:`_forward_fused`, the same logits
        up to float rounding); False: :meth:`forward` itself, the reference."""
        if not fuse:
            return PreparedPlanes(code=code, dtype=dtype or torch.float32)
        weight = torch.cat([fc.weight for fc in self.fc_c]).detach()
        bias = torch.cat([fc.bias for fc in self.fc_c]).detach()
        return PreparedPlanes(code=code, dtype=dtype or torch.float32, fc_c_weight=weight, fc_c_bias=bias)

    def _forward_fused(self, p: torch.Tensor, prep: PreparedPlanes) -> torch.Tensor:
        """:meth:`forward` with the blocks' feature maps in one matrix product (``prep.fc_c_weight``)."""
        return self.forward_sampled(p, self.sample(p, prep.code), prep)

    def forward_sampled(self, p: torch.Tensor, c: torch.Tensor, prep: PreparedPlanes) -> torch.Tensor:
        """:meth:`_forward_fused` of points p (B, M, 3) whose plane features c (B, M, C) (:meth:`sample`) are
        given -> logits (B, M). In float32 outside autocast and autograd, the residual MLP runs with fewer passes
        over its activations, the same logits up to float rounding (:meth:`_mlp_float32`; its in-place sums keep no
        graph); otherwise module by module."""
        if (c.dtype == torch.float32 and p.dtype == torch.float32 and not torch.is_autocast_enabled(p.device.type)
                and not torch.is_grad_enabled()):
            return self._mlp_float32(p, c, prep)
        return self._mlp_modules(p, c, prep)

    def _mlp_modules(self, p: torch.Tensor, c: torch.Tensor, prep: PreparedPlanes) -> torch.Tensor:
        """The residual MLP of :meth:`forward_sampled` module by module, in c's precision (any autocast is the
        caller's): the reference of :meth:`_mlp_float32`."""
        b, m, cd = c.shape
        feats = torch.addmm(prep.fc_c_bias.to(c.dtype), c.reshape(b * m, cd), prep.fc_c_weight.to(c.dtype).t())
        feats = feats.reshape(b, m, len(self.blocks), self.fc_p.out_features)
        net = self.fc_p(p.to(c.dtype))
        for i, block in enumerate(self.blocks):
            net = block(net + feats[:, :, i])
        return self.fc_out(F.relu(net)).squeeze(-1)

    def _mlp_float32(self, p: torch.Tensor, c: torch.Tensor, prep: PreparedPlanes) -> torch.Tensor:
        """The residual MLP of :meth:`forward_sampled` in float32 (p (B, M, 3), c (B, M, C) -> logits (B, M)) with
        the bias of ``fc_p`` and of each block's ``fc_1`` added with the next block's feature term (folded into the
        stacked feature maps' bias) and each block's residual sum made in place by its second matrix product: 4
        elementwise passes over the (B*M, hidden) activations per block instead of 6 (one decoder call on 4096 points,
        one thread of a 2-core AMD EPYC: 2.0-2.1 ms against 2.3-2.6 ms)."""
        b, m, cd = c.shape
        hidden = self.fc_p.out_features
        fold = torch.cat([self.fc_p.bias] + [blk.fc_1.bias for blk in self.blocks[:-1]])
        feats = torch.addmm(prep.fc_c_bias + fold, c.reshape(b * m, cd), prep.fc_c_weight.t())
        net = torch.mm(p.reshape(b * m, 3), self.fc_p.weight.t())
        for i, blk in enumerate(self.blocks):
            net.add_(feats[:, i * hidden:(i + 1) * hidden])
            h = torch.addmm(blk.fc_0.bias, net.relu(), blk.fc_0.weight.t())
            net.addmm_(h.relu_(), blk.fc_1.weight.t())
        net.add_(self.blocks[-1].fc_1.bias)
        return torch.addmm(self.fc_out.bias, net.relu_(), self.fc_out.weight.t()).reshape(b, m)

    def forward_prepared(self, p: torch.Tensor, prep: PreparedPlanes) -> torch.Tensor:
        """p (B, M, 3); B as in ``prep`` or any B with one prepared object -> logits (B, M)."""
        planes = prep.code
        shape = p.shape[:-1]
        if planes.shape[0] == 1 and p.shape[0] != 1:
            p = p.reshape(1, -1, 3)
        elif p.shape[0] != planes.shape[0]:
            raise ValueError(f"query batch {p.shape[0]} does not match the {planes.shape[0]} prepared codes")
        forward = (lambda q: self._forward_fused(q, prep)) if prep.fc_c_weight is not None else \
            (lambda q: self.forward(q, planes))
        if prep.dtype == torch.float32:
            return forward(p).reshape(shape)
        with torch.autocast(device_type=p.device.type, dtype=prep.dtype):
            return forward(p).float().reshape(shape)


def unet_macs(channels: int, base: int, levels: int, resolution: int) -> int:
    """Multiply-accumulates of one :class:`UNet2d` pass on one (channels, R, R) plane."""
    widths = [base * 2 ** i for i in range(levels)]
    macs, c_in = 0, channels
    for i, w in enumerate(widths):
        px = (resolution // 2 ** i) ** 2
        macs += px * 9 * (c_in * w + w * w)
        c_in = w
    for i in reversed(range(levels - 1)):
        px = (resolution // 2 ** i) ** 2
        macs += px * 9 * ((widths[i + 1] + widths[i]) * widths[i] + widths[i] * widths[i])
    return macs + resolution ** 2 * widths[0] * channels
