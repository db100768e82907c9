"""Shared test inputs: partial sphere clouds, non-trivially initialised networks and a hand-set network
checkpoint (no rclpy)."""
from __future__ import annotations

import numpy as np
import torch

from occnet_ros.network.checkpoint import CheckpointMeta, save_checkpoint
from occnet_ros.network.model import ModelConfig, OccupancyNetwork


def front_half_sphere(n: int = 400, seed: int = 0, center=(0.0, 0.0, 0.8), radius: float = 0.1) -> np.ndarray:
    """(n, 3) float32 points on the half of a sphere that faces an optical frame's origin, metres."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    d[:, 2] = -np.abs(d[:, 2])
    return (np.asarray(center, dtype=np.float64) + radius * d).astype(np.float32)


def randomize_like_trained(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Non-trivial values in every parameter and BN buffer (zero-initialised layers would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model


def octahedron_checkpoint(path, radius=0.4, k=20.0):
    """A hand-set network: logit = k * (radius - |p|_1) in the canonical frame, whatever the input
    (an octahedron), so the network path produces a known, non-empty mesh."""
    net = OccupancyNetwork(ModelConfig(c_dim=8, encoder_hidden=8, encoder_blocks=1, decoder_hidden=8,
                                       decoder_blocks=1))
    d = net.decoder
    with torch.no_grad():
        d.fc_p.weight.zero_()
        d.fc_p.bias.zero_()
        for i in range(3):
            d.fc_p.weight[2 * i, i], d.fc_p.weight[2 * i + 1, i] = 1.0, -1.0
        for b in d.blocks:
            b.fc_1.weight.zero_()
            b.fc_1.bias.zero_()
        d.fc_out.weight.zero_()
        d.fc_out.weight[0, :6] = -k
        d.fc_out.bias.fill_(k * radius)
    return save_checkpoint(path, net, CheckpointMeta(step=7, extra={"train_config": {"n_input_points": 77}}))
