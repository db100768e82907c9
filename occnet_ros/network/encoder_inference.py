"""The feature-plane encoder's point MLP, pooling and cell means at inference, with fewer passes over memory (pure
torch, no ROS).

:class:`~occnet_ros.network.model_local.LocalPoolPointNet` with pooling over all points (``local_pool`` off, the
shipped network) concatenates each point's features with their maximum over the points before every block after the
first, runs each block module by module and averages the points of each plane cell by ``scatter_add`` over three
copies of the features. At inference, :func:`point_planes` computes the same function:

* a block's input is ``[a, g]`` with ``g`` the same for every point of an input, so its two linear maps of ``g``
  (the first layer's and the shortcut's) are computed once per input instead of once per point, and nothing is
  concatenated;
* the residual sum is made in place by the block's second matrix product, and the maximum over the points is
  ``amax`` (no indices);
* the cell means come from three ``index_add_`` calls into one (B * 3 * R * R, C) buffer (the points in the same
  order as ``scatter_add`` takes them, so the same sums) and are returned in the channels-last order the U-Net runs
  in at inference, so neither side copies them into the other's layout.

The planes equal the module's up to float rounding (tested). Measured on a 2-core AMD EPYC, one thread, the
shipped encoder on 6 inputs of 1024 points (the node's per-thread share of one object): the points' part 8.8-9.3 ms
module by module, 5.0-7.0 ms here; the encode stage of one object at 64^3 (``occnet_bench --sections latency``, 12
inputs on two compute threads) 37-54 ms (median 42.5) against 32-44 ms (median 35.4) in six alternated runs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from occnet_ros.network.model_local import cell_index, plane_grid

if TYPE_CHECKING:
    from occnet_ros.network.model_global import ResnetBlockFC
    from occnet_ros.network.model_local import LocalPoolPointNet

__all__ = ["applies", "point_planes"]


def applies(encoder: "LocalPoolPointNet", p: torch.Tensor) -> bool:
    """Whether :func:`point_planes` computes ``encoder``'s planes for ``p``: eval mode without autograd (its in-place
    sums keep no graph), pooling over all points, float32 points, every block with a shortcut map (an input twice as
    wide as its output)."""
    return (not encoder.training and not torch.is_grad_enabled() and not encoder.local_pool
            and p.dtype == torch.float32 and p.dim() == 3
            and all(blk.shortcut is not None for blk in encoder.blocks))


def _block(blk: "ResnetBlockFC", x: torch.Tensor) -> torch.Tensor:
    """``blk(x)`` for x (M, in) -> (M, out): the shortcut's product, then the residual added in place."""
    out = torch.mm(x, blk.shortcut.weight.t())
    h = torch.addmm(blk.fc_0.bias, F.relu(x), blk.fc_0.weight.t()).relu_()
    out.addmm_(h, blk.fc_1.weight.t())
    return out.add_(blk.fc_1.bias)


def _block_pooled(blk: "ResnetBlockFC", a: torch.Tensor, g: torch.Tensor, b: int, n: int) -> torch.Tensor:
    """``blk(cat([a, g expanded]))`` for a (B*N, H) per point and g (B, H) per input -> (B*N, out): the maps of
    ``g`` once per input."""
    h_in = a.shape[1]
    w0, ws = blk.fc_0.weight, blk.shortcut.weight
    per_input_0 = torch.addmm(blk.fc_0.bias, F.relu(g), w0[:, h_in:].t())  # (B, hidden)
    per_input_s = torch.addmm(blk.fc_1.bias, g, ws[:, h_in:].t())         # (B, out), fc_1's bias with it
    h = torch.mm(F.relu(a), w0[:, :h_in].t())
    h.view(b, n, -1).add_(per_input_0[:, None, :])
    out = torch.mm(a, ws[:, :h_in].t())
    out.view(b, n, -1).add_(per_input_s[:, None, :])
    return out.addmm_(h.relu_(), blk.fc_1.weight.t())


def _cell_means(features: torch.Tensor, index: torch.Tensor, resolution: int) -> torch.Tensor:
    """features (B, N, C), index (B, 3, N) -> (B, 3, R, R, C): the mean feature of the points in each cell of each
    plane (zero in empty cells), as ``scatter_mean`` gives them but channels last."""
    b, n, c = features.shape
    r2 = resolution * resolution
    src = features.reshape(b * n, c)
    base = (torch.arange(b, device=index.device) * (3 * r2))[:, None]
    sums = features.new_zeros(b * 3 * r2, c)
    cells = []
    for k in range(3):
        flat = (index[:, k] + (base + k * r2)).reshape(-1)  # (B*N,): input b, plane k, its cell
        sums.index_add_(0, flat, src)
        cells.append(flat)
    counts = torch.bincount(torch.cat(cells), minlength=b * 3 * r2).to(features.dtype)
    sums /= counts.clamp(min=1.0).unsqueeze(-1)
    return sums.view(b, 3, resolution, resolution, c)


def point_planes(encoder: "LocalPoolPointNet", p: torch.Tensor) -> torch.Tensor:
    """p (B, N, 3) float32 canonical -> the planes the encoder's U-Net takes, (B, 3, C, R, R) float32 (a view whose
    memory is (B, 3, R, R, C): channels last), equal to the module's points' MLP, pooling, cell means and global
    context up to float rounding. Only where :func:`applies`."""
    b, n, _ = p.shape
    r = encoder.resolution
    index = cell_index(plane_grid(p), r)
    net = torch.addmm(encoder.fc_pos.bias, p.reshape(b * n, 3), encoder.fc_pos.weight.t())
    net = _block(encoder.blocks[0], net)
    for blk in encoder.blocks[1:]:
        net = _block_pooled(blk, net, net.view(b, n, -1).amax(dim=1), b, n)
    feats = torch.addmm(encoder.fc_c.bias, net, encoder.fc_c.weight.t())
    planes = _cell_means(feats.view(b, n, -1), index, r)
    if encoder.fc_global is not None:
        planes += encoder.fc_global(net.view(b, n, -1).amax(dim=1))[:, None, None, None, :]
    return planes.permute(0, 1, 4, 2, 3)
