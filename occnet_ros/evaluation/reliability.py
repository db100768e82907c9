"""How far the occupancy probabilities can be trusted: the expected calibration error (ECE), reliability
diagrams, and the fit of a temperature and bias on the logits (pure numpy / scipy / matplotlib; no torch).

The event is binary (the point is inside the object), so a prediction is the probability ``p`` of
"occupied" itself (not ``max(p, 1 - p)``). Probabilities are put into :data:`N_BINS` equal-width bins on
[0, 1] (bin ``i`` holds ``i / n <= p < (i + 1) / n``; the last also holds ``p = 1``). In each bin ``b`` with
``n_b`` of the ``N`` points, the *confidence* is the mean predicted ``p`` and the *frequency* the fraction of
those points that are occupied; ``ECE = sum_b n_b / N * |frequency_b - confidence_b|``. A perfectly
calibrated predictor has ECE 0 up to sampling error (about ``sqrt(p (1 - p) / n_b)`` per bin); one that
says 0.9 for an event of frequency 0.6 has ECE 0.3.

:func:`fit_calibration` minimises the binary cross-entropy of ``sigmoid(logit(p) / T + b)`` over ``T > 0``
and ``b`` (or ``T`` alone). :func:`fit_logit_map` fits a monotone map of the logit instead: the points are
sorted by logit into equal-count bins, the occupied fraction of the bins is made non-decreasing by isotonic
regression (``scipy.optimize.isotonic_regression``, weighted by the bins' counts), and each bin's mean logit is
mapped to the logit of its fitted fraction. Unlike one temperature, such a map can soften the middle of the
range (where the surface is) and keep far points confident. In both fits, probabilities of exactly 0 or 1
(space the sensor shows empty, a saturated float32 sigmoid) are left out, as the calibration keeps them where
they are.
:mod:`occnet_ros.evaluation.probability_samples` draws the held-out points these functions are given.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

from occnet_ros.network.probability_calibration import ProbabilityCalibration

__all__ = ["N_BINS", "ReliabilityBins", "reliability_bins", "expected_calibration_error", "fit_calibration",
           "fit_logit_map", "reliability_diagram"]

N_BINS = 15
"""Equal-width bins of the ECE and the reliability diagrams."""
LOGIT_CLIP = 1e-7
"""Probabilities are clipped to [LOGIT_CLIP, 1 - LOGIT_CLIP] before the logit in the fit."""
MAP_BINS = 200
"""Equal-count logit bins of :func:`fit_logit_map` (knots of the fitted map)."""
MAP_MIN_STEP = 1e-3
"""Smallest rise between consecutive knots of a fitted logit map (keeps the map strictly increasing)."""


def _check(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"probabilities {p.shape} and labels {y.shape} must have the same length")
    if p.size == 0:
        raise ValueError("no probabilities to assess")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise ValueError("probabilities must be finite numbers in [0, 1]")
    if y.dtype != bool and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be booleans or 0 / 1")
    return p, y.astype(bool)


@dataclass(frozen=True)
class ReliabilityBins:
    """Per bin (``n_bins`` of them): ``count`` (int64) points, ``confidence`` mean predicted probability and
    ``frequency`` fraction occupied (float64; NaN in empty bins); ``edges`` (n_bins + 1,)."""

    edges: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    frequency: np.ndarray

    @property
    def ece(self) -> float:
        """The expected calibration error of these bins (empty bins count 0)."""
        n = self.count.sum()
        gap = np.abs(self.frequency - self.confidence)
        return float(np.sum(np.where(self.count > 0, self.count * np.nan_to_num(gap), 0.0)) / n)

    def to_dict(self) -> dict:
        return {"edges": self.edges.tolist(), "count": self.count.tolist(),
                "confidence": [None if np.isnan(v) else float(v) for v in self.confidence],
                "frequency": [None if np.isnan(v) else float(v) for v in self.frequency], "ece": self.ece}


def reliability_bins(probabilities, labels, n_bins: int = N_BINS) -> ReliabilityBins:
    """probabilities (N,) in [0, 1] and labels (N,) bool / 0-1 (occupied) -> :class:`ReliabilityBins`
    (equal-width bins, see the module docstring). ValueError for empty, mismatched or out-of-range input."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _check(probabilities, labels)
    which = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    psum = np.bincount(which, weights=p, minlength=n_bins)
    ysum = np.bincount(which, weights=y.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(count > 0, psum / count, np.nan)
        freq = np.where(count > 0, ysum / count, np.nan)
    return ReliabilityBins(np.linspace(0.0, 1.0, n_bins + 1), count.astype(np.int64), conf, freq)


def expected_calibration_error(probabilities, labels, n_bins: int = N_BINS) -> float:
    """The ECE of ``probabilities`` (N,) against ``labels`` (N,) over ``n_bins`` equal-width bins."""
    return reliability_bins(probabilities, labels, n_bins).ece


def fit_calibration(probabilities, labels, with_bias: bool = True) -> ProbabilityCalibration:
    """The temperature (and with ``with_bias`` the bias) that minimise the mean binary cross-entropy of the
    calibrated probabilities of the points whose probability lies strictly between 0 and 1. ValueError when
    fewer than 2 such points or only one class among them."""
    z, y = _fit_points(probabilities, labels)
    sign = np.where(y, -1.0, 1.0)  # loss = softplus(sign * calibrated logit)

    def loss(x):
        t, b = np.exp(x[0]), (x[1] if with_bias else 0.0)
        s = sign * (z / t + b)
        value = np.mean(np.logaddexp(0.0, s))
        g = 0.5 * (1.0 + np.tanh(0.5 * s)) * sign  # d loss / d calibrated logit
        grad = [np.mean(g * (-z / t)), np.mean(g)]  # d / d log t, d / d b
        return value, np.array(grad if with_bias else grad[:1])

    x0 = np.array([0.0, 0.0] if with_bias else [0.0])
    res = minimize(loss, x0, jac=True, method="L-BFGS-B", bounds=[(-5.0, 5.0)] + ([(-20.0, 20.0)] if with_bias else []))
    if not np.isfinite(res.fun):
        raise ValueError(f"calibration fit did not converge: {res.message}")
    return ProbabilityCalibration(float(np.exp(res.x[0])), float(res.x[1]) if with_bias else 0.0)


def _fit_points(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    """(logits, labels) of the points strictly inside (0, 1); ValueError without both classes among them."""
    p, y = _check(probabilities, labels)
    keep = (p > 0) & (p < 1)
    p, y = p[keep], y[keep]
    if p.size < 2 or y.all() or not y.any():
        raise ValueError(f"cannot fit a calibration: {p.size} points strictly inside (0, 1), "
                         f"{int(y.sum())} of them occupied")
    q = np.clip(p, LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(q) - np.log1p(-q), y


def fit_logit_map(probabilities, labels, n_bins: int = MAP_BINS) -> ProbabilityCalibration:
    """A monotone logit map (module docstring) fitted to probabilities (N,) and labels (N,): a
    :class:`ProbabilityCalibration` with temperature 1, bias 0 and at most ``n_bins`` knots. A bin's fitted
    fraction is kept within [1 / (2 n_b), 1 - 1 / (2 n_b)] of its ``n_b`` points, and consecutive knots rise
    by at least :data:`MAP_MIN_STEP`. ValueError as :func:`fit_calibration`."""
    from scipy.optimize import isotonic_regression

    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    z, y = _fit_points(probabilities, labels)
    order = np.argsort(z, kind="stable")
    z, y = z[order], y[order].astype(np.float64)
    starts = np.unique(np.linspace(0, z.size, n_bins + 1).astype(np.int64)[:-1])
    count = np.diff(np.append(starts, z.size)).astype(np.float64)
    mean_z = np.add.reduceat(z, starts) / count
    freq = np.add.reduceat(y, starts) / count
    # bins whose mean logits coincide (many equal logits) are merged into one knot
    mean_z, inverse = np.unique(mean_z, return_inverse=True)
    if mean_z.size < 2:
        raise ValueError("cannot fit a logit map: every point has the same probability")
    count_u = np.bincount(inverse, weights=count)
    freq = np.bincount(inverse, weights=freq * count) / count_u
    fitted = isotonic_regression(freq, weights=count_u, increasing=True).x
    lo = 0.5 / count_u
    q = np.clip(fitted, lo, 1.0 - lo)
    out = np.log(q) - np.log1p(-q)
    steps = MAP_MIN_STEP * np.arange(out.size)
    out = np.maximum.accumulate(out - steps) + steps  # strictly increasing, rising >= MAP_MIN_STEP
    return ProbabilityCalibration(1.0, 0.0, tuple(float(v) for v in mean_z), tuple(float(v) for v in out))


def reliability_diagram(curves: dict[str, ReliabilityBins], path: str | Path, title: str = "") -> Path:
    """Write a PNG: top, observed frequency against mean confidence per bin for each curve of ``curves``
    ({label: bins}; the label gets its ECE appended) with the diagonal of perfect calibration; bottom, the
    number of points per bin (log scale). Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise ValueError("no reliability curves to draw")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1.3]})
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfect calibration")
    n = len(curves)
    for k, (label, bins) in enumerate(curves.items()):
        ok = bins.count > 0
        top.plot(bins.confidence[ok], bins.frequency[ok], marker="o", markersize=4,
                 label=f"{label} (ECE {bins.ece:.3f})")
        width = (bins.edges[1] - bins.edges[0]) / n
        bottom.bar(bins.edges[:-1] + k * width, bins.count, width=width, align="edge", label=label)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("observed frequency of occupied")
    top.set_title(title, fontsize=10)
    top.legend(fontsize=8, loc="upper left")
    bottom.set_yscale("log")
    bottom.set_xlabel(f"predicted occupancy probability ({len(bins.count)} equal-width bins)")
    bottom.set_ylabel("points")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
