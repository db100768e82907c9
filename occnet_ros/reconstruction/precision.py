"""The precision the network runs in on a device (pure torch, no ROS): the ``precision`` setting of
:class:`~occnet_ros.reconstruction.config.ReconstructorConfig` resolved to a dtype. Reduced precision runs the decoder's
MLP and the feature-plane encoder's U-Net under ``torch.autocast``; the points' MLP, the pooling and the codes stay
float32 (:meth:`~occnet_ros.network.model.OccupancyNetwork.encode`, :meth:`~occnet_ros.network.model.OccupancyNetwork.prepare`).
"""
from __future__ import annotations

import torch

__all__ = ["DTYPES", "native_bfloat16", "resolve_precision"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def native_bfloat16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 matrix products in hardware that the precision ``auto`` uses: a CPU with
    AVX512-BF16 or AMX tiles (oneDNN's bfloat16 kernels; elsewhere torch emulates bfloat16, slower than float32).
    GPUs: False (bfloat16 is not measured there; float32 stays)."""
    if device.type != "cpu":
        return False
    cpu = getattr(torch, "cpu", None)
    checks = (getattr(cpu, "_is_avx512_bf16_supported", None), getattr(cpu, "_is_amx_tile_supported", None))
    return any(bool(check()) for check in checks if check is not None)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """A ``precision`` setting -> the dtype of the decoder's MLP and the encoder's U-Net on ``device``: ``auto`` =
    bfloat16 where :func:`native_bfloat16`, else float32."""
    if precision == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    return DTYPES[precision]
