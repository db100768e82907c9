"""Shared test inputs: partial sphere clouds and non-trivially initialised networks (no rclpy)."""
from __future__ import annotations

import numpy as np
import torch


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
