"""Calibration of the network's occupancy probabilities: a temperature and a bias on the logit.

A calibrated probability is ``sigmoid(logit(p) / temperature + bias)`` of the network's probability ``p``
(for a field averaged over several canonical frames, ``p`` is that average). The map is strictly
increasing for ``temperature > 0``, keeps 0 at 0 and 1 at 1 (space the sensor shows empty keeps
probability 0), and maps a surface threshold ``t`` to ``calibrated(t)``: a point is at least as likely
as the surface threshold before calibration exactly when it is after (up to float32 rounding at the
threshold itself), so meshes extracted from the raw probabilities at ``t`` are the surfaces where the
calibrated probability crosses ``calibrated(t)``.

Checkpoints store one calibration per number of fused views (:mod:`occnet_ros.network.checkpoint`);
``occnet_calibrate`` fits them on held-out objects (:mod:`occnet_ros.evaluation.reliability`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ProbabilityCalibration", "IDENTITY"]


@dataclass(frozen=True)
class ProbabilityCalibration:
    """``temperature`` (> 0, finite; > 1 softens over-confident probabilities) and ``bias`` (finite,
    added to the scaled logit). The default is the identity."""

    temperature: float = 1.0
    bias: float = 0.0

    def __post_init__(self):
        t, b = self.temperature, self.bias
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"probability calibration: temperature must be a finite number > 0, got {t!r}")
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b):
            raise ValueError(f"probability calibration: bias must be a finite number, got {b!r}")

    @property
    def is_identity(self) -> bool:
        return self.temperature == 1.0 and self.bias == 0.0

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """(M,) probabilities in [0, 1] -> (M,) float32 calibrated probabilities (0 and 1 stay). Computed in
        float64; the identity returns the input as float32 unchanged."""
        p = np.asarray(probabilities)
        if self.is_identity:
            return p.astype(np.float32, copy=False)
        q = p.astype(np.float64)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            logit = np.log(q) - np.log1p(-q)  # -inf at 0, +inf at 1
            z = logit / self.temperature + self.bias
            out = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow warnings; +-inf -> 1, 0
        return out.astype(np.float32)

    def apply_logits(self, logits: np.ndarray) -> np.ndarray:
        """(M,) network logits -> (M,) float64 calibrated logits ``logit / temperature + bias``."""
        return np.asarray(logits, np.float64) / self.temperature + self.bias

    def threshold(self, threshold: float) -> float:
        """A surface threshold in (0, 1) mapped through the same transform (the calibrated surface level)."""
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        return float(self.apply(np.array([threshold], np.float64))[0])

    def to_record(self) -> list[float]:
        """``[temperature, bias]`` (the checkpoint's stored form)."""
        return [float(self.temperature), float(self.bias)]


IDENTITY = ProbabilityCalibration()
