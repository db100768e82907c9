"""Calibration of the network's occupancy probabilities: a temperature and a bias on the logit, optionally
followed by a monotone piecewise-linear map of the logit.

A calibrated probability is ``sigmoid(m(logit(p) / temperature + bias))`` of the network's probability ``p``
(for a field averaged over several canonical frames, ``p`` is that average), where ``m`` is the identity or
the map through the knots ``(knots_in[k], knots_out[k])``: linear between knots, slope 1 beyond the first and
the last (so +-inf stay +-inf). Both knot lists are strictly increasing. The map is strictly
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


def _finite_number(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


@dataclass(frozen=True)
class ProbabilityCalibration:
    """``temperature`` (> 0, finite; > 1 softens over-confident probabilities) and ``bias`` (finite,
    added to the scaled logit), then the monotone logit map through ``knots_in`` -> ``knots_out`` (tuples of
    equal length, none or at least 2, finite, each strictly increasing; logits). The default is the identity."""

    temperature: float = 1.0
    bias: float = 0.0
    knots_in: tuple = ()
    knots_out: tuple = ()

    def __post_init__(self):
        t, b = self.temperature, self.bias
        if not _finite_number(t) or t <= 0:
            raise ValueError(f"probability calibration: temperature must be a finite number > 0, got {t!r}")
        if not _finite_number(b):
            raise ValueError(f"probability calibration: bias must be a finite number, got {b!r}")
        ki, ko = tuple(self.knots_in), tuple(self.knots_out)
        object.__setattr__(self, "knots_in", ki)
        object.__setattr__(self, "knots_out", ko)
        if len(ki) != len(ko) or len(ki) == 1:
            raise ValueError(f"probability calibration: knots_in and knots_out must have the same length, none or "
                             f"at least 2, got {len(ki)} and {len(ko)}")
        for name, k in (("knots_in", ki), ("knots_out", ko)):
            if not all(_finite_number(v) for v in k) or any(b2 <= a2 for a2, b2 in zip(k, k[1:])):
                raise ValueError(f"probability calibration: {name} must be finite and strictly increasing")

    @property
    def is_identity(self) -> bool:
        return self.temperature == 1.0 and self.bias == 0.0 and not self.knots_in

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """(M,) probabilities in [0, 1] -> (M,) float32 calibrated probabilities (0 and 1 stay). Computed in
        float64; the identity returns the input as float32 unchanged."""
        p = np.asarray(probabilities)
        if self.is_identity:
            return p.astype(np.float32, copy=False)
        q = p.astype(np.float64)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            logit = np.log(q) - np.log1p(-q)  # -inf at 0, +inf at 1
            z = self.apply_logits(logit)
            out = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid without overflow warnings; +-inf -> 1, 0
        return out.astype(np.float32)

    def apply_logits(self, logits: np.ndarray) -> np.ndarray:
        """(M,) network logits -> (M,) float64 calibrated logits ``m(logit / temperature + bias)`` (+-inf
        stay +-inf)."""
        z = np.asarray(logits, np.float64) / self.temperature + self.bias
        if not self.knots_in:
            return z
        xi, xo = np.asarray(self.knots_in), np.asarray(self.knots_out)
        inside = np.interp(z, xi, xo)
        return np.where(z < xi[0], xo[0] + (z - xi[0]),  # slope 1 outside the knots
                        np.where(z > xi[-1], xo[-1] + (z - xi[-1]), inside))

    def threshold(self, threshold: float) -> float:
        """A surface threshold in (0, 1) mapped through the same transform (the calibrated surface level)."""
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        return float(self.apply(np.array([threshold], np.float64))[0])

    def to_record(self) -> dict:
        """The plain form stored in checkpoints and reports: temperature, bias and the knot lists."""
        return {"temperature": float(self.temperature), "bias": float(self.bias),
                "knots_in": [float(v) for v in self.knots_in], "knots_out": [float(v) for v in self.knots_out]}


IDENTITY = ProbabilityCalibration()
