"""The global-code parts of the occupancy network (Mescheder et al. 2019): a ResNet-PointNet encoder to
one code vector and a decoder of residual blocks with conditional batch norm (CBN), with the eval-time
folded forms. Assembled by :class:`occnet_ros.network.model.OccupancyNetwork` (``ModelConfig.kind = "global"``).

Coordinates are canonical (:mod:`occnet_ros.reconstruction.normalization`).

* ``prepare(code)`` -> :class:`PreparedCode`: at inference the conditional batch-norm scales and shifts
  (and the running statistics) are folded into one per-channel affine map per code, once, so each query
  point then costs only the MLP (``forward_prepared``). The fast path (:class:`FusedDecoder`) further folds
  the second map of every block into the linear layer before it and moves the biases of the residual
  stream into the maps that read it: per block one affine, two matmuls and two in-place ReLUs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ResnetBlockFC(nn.Module):
    """Pre-activation residual block of two linear layers: x + fc1(relu(fc0(relu(x))))."""

    def __init__(self, size_in: int, size_out: int, size_h: int):
        super().__init__()
        self.fc_0 = nn.Linear(size_in, size_h)
        self.fc_1 = nn.Linear(size_h, size_out)
        self.shortcut = nn.Linear(size_in, size_out, bias=False) if size_in != size_out else None
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = self.fc_1(F.relu(self.fc_0(F.relu(x))))
        xs = self.shortcut(x) if self.shortcut is not None else x
        return xs + dx


class ResnetPointNet(nn.Module):
    """points (B, N, 3) -> code (B, c_dim). After each block the max over points is concatenated back."""

    def __init__(self, c_dim: int, hidden: int, n_blocks: int):
        super().__init__()
        self.fc_pos = nn.Linear(3, 2 * hidden)
        self.blocks = nn.ModuleList(
            [ResnetBlockFC(2 * hidden, hidden, hidden) for _ in range(n_blocks)])
        self.fc_c = nn.Linear(hidden, c_dim)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        net = self.fc_pos(p)
        for i, block in enumerate(self.blocks):
            net = block(net)
            if i + 1 < len(self.blocks):
                pooled = net.max(dim=1, keepdim=True)[0].expand_as(net)
                net = torch.cat([net, pooled], dim=2)
        return self.fc_c(F.relu(net.max(dim=1)[0]))


class CBatchNorm(nn.Module):
    """Conditional batch norm: normalise each channel over all (batch, point) rows, then scale and shift
    with gamma(c), beta(c) predicted from the code. Training uses batch statistics and updates running
    statistics; evaluation uses the running statistics."""

    def __init__(self, c_dim: int, features: int, momentum: float, eps: float):
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.conv_gamma = nn.Linear(c_dim, features)
        self.conv_beta = nn.Linear(c_dim, features)
        nn.init.zeros_(self.conv_gamma.weight)
        nn.init.ones_(self.conv_gamma.bias)
        nn.init.zeros_(self.conv_beta.weight)
        nn.init.zeros_(self.conv_beta.bias)
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))

    def affine(self, code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode folded map y = a * x + b. code (B, c_dim) -> a, b (B, 1, features)."""
        inv = torch.rsqrt(self.running_var + self.eps)
        a = self.conv_gamma(code) * inv
        b = self.conv_beta(code) - self.running_mean * a
        return a.unsqueeze(1), b.unsqueeze(1)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """x (B, M, F), code (B, c_dim) -> (B, M, F)."""
        if self.training:
            flat = x.reshape(-1, x.shape[-1])
            mean = flat.mean(dim=0)
            var = flat.var(dim=0, unbiased=False)
            with torch.no_grad():
                n = flat.shape[0]
                unbiased = var * (n / max(n - 1, 1))
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(unbiased.detach(), self.momentum)
            xn = (x - mean) * torch.rsqrt(var + self.eps)
            return xn * self.conv_gamma(code).unsqueeze(1) + self.conv_beta(code).unsqueeze(1)
        a, b = self.affine(code)
        return x * a + b


class CBNBlock(nn.Module):
    """Residual block: x + fc_1(relu(bn_1(fc_0(relu(bn_0(x, c))), c)))."""

    def __init__(self, c_dim: int, hidden: int, momentum: float, eps: float):
        super().__init__()
        self.bn_0 = CBatchNorm(c_dim, hidden, momentum, eps)
        self.bn_1 = CBatchNorm(c_dim, hidden, momentum, eps)
        self.fc_0 = nn.Linear(hidden, hidden)
        self.fc_1 = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        h = self.fc_0(F.relu(self.bn_0(x, code)))
        return x + self.fc_1(F.relu(self.bn_1(h, code)))


@dataclass
class FusedDecoder:
    """The eval-mode decoder of B codes with the CBN maps folded into the weights (built by
    :meth:`CBNDecoder.fuse`; ``H`` = decoder_hidden, all tensors on the model's device, in ``dtype``).

    Exactly the eval decoder in real arithmetic (float rounding differs by ~1e-6 relative):
    ``net = p @ w_p``; per block ``t = relu(scale0 * net + shift0)``, ``h = relu(t @ w0 + c0)``,
    ``net += h @ w1``; logits ``relu(scale_out * net + shift_out) @ w_out + c_out``. ``w0`` is the block's
    ``fc_0`` weight with its ``bn_1`` scale folded in (per code); the biases of ``fc_p`` and every ``fc_1``
    (added to the residual stream) are folded into the shifts of the maps that read the stream.

    ``w_p`` (3, H); per block ``scale0``, ``shift0``, ``c0`` (B, 1, H), ``w0`` (B, H, H), ``w1`` (H, H);
    ``scale_out``, ``shift_out`` (B, 1, H); ``w_out`` (H,); ``c_out`` (1,).
    """

    w_p: torch.Tensor
    scale0: list[torch.Tensor]
    shift0: list[torch.Tensor]
    w0: list[torch.Tensor]
    c0: list[torch.Tensor]
    w1: list[torch.Tensor]
    scale_out: torch.Tensor
    shift_out: torch.Tensor
    w_out: torch.Tensor
    c_out: torch.Tensor

    @property
    def n_codes(self) -> int:
        return int(self.scale_out.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.w_p.dtype

    def __call__(self, p: torch.Tensor) -> torch.Tensor:
        """p (B, M, 3) (B = n_codes, or any B when n_codes is 1) -> logits (B, M) float32."""
        if self.n_codes == 1:  # one code: all points in one 2-D matmul chain
            x = p.reshape(-1, 3).to(self.dtype)
            net = x @ self.w_p
            for s0, b0, w0, c0, w1 in zip(self.scale0, self.shift0, self.w0, self.c0, self.w1):
                t = torch.addcmul(b0[0], net, s0[0]).relu_()
                h = torch.addmm(c0[0], t, w0[0]).relu_()
                net.addmm_(h, w1)
            t = torch.addcmul(self.shift_out[0], net, self.scale_out[0]).relu_()
            return torch.addmv(self.c_out, t, self.w_out).float().reshape(p.shape[:-1])
        if p.shape[0] != self.n_codes:
            raise ValueError(f"query batch {p.shape[0]} does not match the {self.n_codes} prepared codes")
        b, m, hidden = p.shape[0], p.shape[1], self.w_p.shape[1]
        net = (p.reshape(-1, 3).to(self.dtype) @ self.w_p).reshape(b, m, hidden)
        for s0, b0, w0, c0, w1 in zip(self.scale0, self.shift0, self.w0, self.c0, self.w1):
            t = torch.addcmul(b0, net, s0).relu_()
            h = torch.baddbmm(c0, t, w0).relu_()
            net.view(-1, hidden).addmm_(h.view(-1, hidden), w1)
        t = torch.addcmul(self.shift_out, net, self.scale_out).relu_()
        return torch.addmv(self.c_out, t.view(-1, hidden), self.w_out).float().reshape(b, m)


@dataclass
class PreparedCode:
    """Per-code constants of the decoder at inference: for each CBN layer (in order) the folded affine
    ``(a, b)``, each (B, 1, decoder_hidden), on the model's device; ``fused``: the fast form of the same
    decoder (None = use the affines, the plain reference path)."""

    code: torch.Tensor
    affines: list[tuple[torch.Tensor, torch.Tensor]]
    fused: FusedDecoder | None = None


class CBNDecoder(nn.Module):
    """query (B, M, 3), code (B, c_dim) -> logits (B, M)."""

    def __init__(self, c_dim: int, hidden: int, n_blocks: int, momentum: float, eps: float):
        super().__init__()
        self.fc_p = nn.Linear(3, hidden)
        self.blocks = nn.ModuleList([CBNBlock(c_dim, hidden, momentum, eps) for _ in range(n_blocks)])
        self.bn = CBatchNorm(c_dim, hidden, momentum, eps)
        self.fc_out = nn.Linear(hidden, 1)

    def forward(self, p: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        net = self.fc_p(p)
        for block in self.blocks:
            net = block(net, code)
        return self.fc_out(F.relu(self.bn(net, code))).squeeze(-1)

    def cbn_layers(self) -> list[CBatchNorm]:
        layers = []
        for block in self.blocks:
            layers += [block.bn_0, block.bn_1]
        return layers + [self.bn]

    def prepare(self, code: torch.Tensor, dtype: torch.dtype | None = None, fuse: bool = True
                ) -> PreparedCode:
        """code (B, c_dim) -> the folded CBN maps and (``fuse``) the :class:`FusedDecoder` in ``dtype``
        (None = float32; bfloat16/float16 trade accuracy for speed where the hardware has them)."""
        with torch.no_grad():
            affines = [bn.affine(code) for bn in self.cbn_layers()]
            fused = self.fuse(affines, dtype or torch.float32) if fuse else None
        return PreparedCode(code=code, affines=affines, fused=fused)

    def fuse(self, affines: list[tuple[torch.Tensor, torch.Tensor]], dtype: torch.dtype) -> FusedDecoder:
        """Build the :class:`FusedDecoder` from the per-code affines of :meth:`prepare`."""
        beta = self.fc_p.bias  # bias carried by the residual stream, folded into the readers' shifts
        scale0, shift0, w0, c0, w1 = [], [], [], [], []
        for i, block in enumerate(self.blocks):
            a0, b0 = affines[2 * i]
            a1, b1 = affines[2 * i + 1]
            scale0.append(a0)
            shift0.append(b0 + a0 * beta)
            w0.append(block.fc_0.weight.t().unsqueeze(0) * a1)  # (B, H, H): column j scaled by a1[j]
            c0.append(a1 * block.fc_0.bias + b1)
            w1.append(block.fc_1.weight.t())
            beta = beta + block.fc_1.bias
        a, b = affines[-1]

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype).contiguous()

        return FusedDecoder(
            w_p=cast(self.fc_p.weight.t()), scale0=[cast(t) for t in scale0],
            shift0=[cast(t) for t in shift0], w0=[cast(t) for t in w0], c0=[cast(t) for t in c0],
            w1=[cast(t) for t in w1], scale_out=cast(a), shift_out=cast(b + a * beta),
            w_out=cast(self.fc_out.weight[0]), c_out=cast(self.fc_out.bias))

    def forward_prepared(self, p: torch.Tensor, prep: PreparedCode) -> torch.Tensor:
        """Eval-mode decode with folded CBN maps; identical to ``forward`` in eval mode. Uses the fused
        form when ``prep`` has one, else the per-layer affines (the reference)."""
        if prep.fused is not None:
            return prep.fused(p)
        aff = prep.affines
        net = self.fc_p(p)
        for i, block in enumerate(self.blocks):
            a0, b0 = aff[2 * i]
            a1, b1 = aff[2 * i + 1]
            h = block.fc_0(torch.relu(torch.addcmul(b0, net, a0)))
            net = net + block.fc_1(torch.relu(torch.addcmul(b1, h, a1)))
        a, b = aff[-1]
        return self.fc_out(torch.relu(torch.addcmul(b, net, a))).squeeze(-1)
