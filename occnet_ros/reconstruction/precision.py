"""The precision the network runs in on a device (pure torch, no ROS): the ``precision`` setting of
:class:`~occnet_ros.reconstruction.config.ReconstructorConfig` resolved to a dtype. Reduced precision runs the
feature-plane encoder's U-Net under ``torch.autocast``, and on a GPU the decoder's MLP too; the points' MLP, the
pooling and the codes stay float32 (:meth:`~occnet_ros.network.model.OccupancyNetwork.encode`,
:meth:`~occnet_ros.network.model.OccupancyNetwork.prepare`).

On a CPU the decoder stays float32 (:func:`decoder_precision`). Under bfloat16 autocast its MISE decodes ran no
faster (7 alternated runs on a 2-core AMD EPYC with AVX512-BF16: 47.8 against 48.5 ms at 64^3, 168 against 174 ms
at 128^3), and the process grew by about 16 MB per reconstructed 4-object frame without end (530 MB -> 1.54 GB in
60 frames in process; 2.3 GB after 9 minutes of ``make soak``), while with a float32 decoder and the bfloat16
U-Net it stayed at 530 MB. oneDNN's primitive cache held part of it (ONEDNN_PRIMITIVE_CACHE_CAPACITY=0: about
12 MB per frame); the rest was not pinned down.
"""
from __future__ import annotations

import torch

__all__ = ["DTYPES", "decoder_precision", "native_bfloat16", "resolve_precision"]

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


def decoder_precision(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """The decoder's precision for a resolved ``precision`` ``dtype`` on ``device``: float32 on a CPU (module
    docstring), ``dtype`` elsewhere."""
    return torch.float32 if device.type == "cpu" else dtype
