"""Saving and loading checkpoints; the path of the shipped default weights.

A checkpoint is a ``.pt`` file holding only plain types (dicts, lists, str, numbers, tensors) so that
``torch.load(..., weights_only=True)`` reads it::

    {"format": "occnet_ros-checkpoint", "version": 1,
     "model_config": {...ModelConfig fields...},
     "state_dict": {...tensors...},
     "meta": {"step", "data_config_hash", "threshold", "view_thresholds", "temperature", "logit_bias",
              "view_temperatures", "view_logit_biases", "metrics", "wall_time_s", ...},
     "training": {...optimiser / RNG state...}  # optional, absent in exported weights}
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from occnet_ros.config_io import ConfigError, from_dict
from occnet_ros.network.model import ModelConfig, OccupancyNetwork
from occnet_ros.network.probability_calibration import ProbabilityCalibration

FORMAT = "occnet_ros-checkpoint"
VERSION = 1
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "occnet_default.pt"
"""Shipped weights (exported from the best training checkpoint)."""

DEFAULT_THRESHOLD = 0.5


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable or not an occnet_ros checkpoint."""


@dataclass
class CheckpointMeta:
    """Training metadata stored next to the weights. ``threshold``: occupancy probability of the
    surface (best on validation, or calibrated on held-out single views); ``view_thresholds``: {number of
    fused views (int >= 2): threshold calibrated with that many views} (see :func:`threshold_for_views`);
    ``temperature``, ``logit_bias``, ``logit_map`` (``[knots_in, knots_out]`` or empty): the probability
    calibration of one view, ``view_temperatures``, ``view_logit_biases``, ``view_logit_maps``: {fused views
    (int >= 2): value} for more
    (:class:`~occnet_ros.network.probability_calibration.ProbabilityCalibration`, chosen like the thresholds:
    :func:`calibration_for_views`; a checkpoint without them has temperature 1 and bias 0, the identity);
    ``metrics``: e.g. ``{"val_iou": 0.7}``; ``wall_time_s``: training wall time in seconds."""

    step: int = 0
    data_config_hash: str = ""
    threshold: float = DEFAULT_THRESHOLD
    view_thresholds: dict = field(default_factory=dict)
    temperature: float = 1.0
    logit_bias: float = 0.0
    view_temperatures: dict = field(default_factory=dict)
    view_logit_biases: dict = field(default_factory=dict)
    logit_map: list = field(default_factory=list)
    view_logit_maps: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    wall_time_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        check_view_thresholds(self.view_thresholds)
        check_view_calibrations(self.temperature, self.logit_bias, self.view_temperatures, self.view_logit_biases,
                                self.logit_map, self.view_logit_maps)

    def calibration_for(self, n_views: int) -> ProbabilityCalibration:
        """The probability calibration for a cloud fused from ``n_views`` views (:func:`calibration_for_views`)."""
        return calibration_for_views(n_views, self.temperature, self.logit_bias, self.view_temperatures,
                                     self.view_logit_biases, self.logit_map, self.view_logit_maps)


def _calibration(temperature, bias, logit_map) -> ProbabilityCalibration:
    """ProbabilityCalibration from the stored form; ``logit_map``: [] or [knots_in, knots_out]."""
    if logit_map and len(logit_map) != 2:
        raise ValueError(f"a logit map is [knots_in, knots_out], got {len(logit_map)} lists")
    ki, ko = (tuple(float(v) for v in logit_map[0]), tuple(float(v) for v in logit_map[1])) if logit_map else ((), ())
    return ProbabilityCalibration(float(temperature), float(bias), ki, ko)


def check_view_calibrations(temperature: float, logit_bias: float, view_temperatures: dict,
                            view_logit_biases: dict, logit_map: list | None = None,
                            view_logit_maps: dict | None = None) -> None:
    """Raise ValueError unless the temperatures are finite and > 0, the biases finite, the logit maps valid
    (:class:`ProbabilityCalibration`), ``view_temperatures`` and ``view_logit_biases`` map the same ints >= 2
    (numbers of fused views) and ``view_logit_maps`` names none other."""
    view_logit_maps = view_logit_maps or {}
    _calibration(temperature, logit_bias, logit_map or [])  # validates
    if set(view_temperatures) != set(view_logit_biases):
        raise ValueError(f"view_temperatures {sorted(view_temperatures)} and view_logit_biases "
                         f"{sorted(view_logit_biases)} must name the same view counts")
    if not set(view_logit_maps) <= set(view_temperatures):
        raise ValueError(f"view_logit_maps {sorted(view_logit_maps)} names view counts without a temperature "
                         f"({sorted(view_temperatures)})")
    for n, t in view_temperatures.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise ValueError(f"view_temperatures: key {n!r} is not a number of fused views >= 2")
        try:
            _calibration(t, view_logit_biases[n], view_logit_maps.get(n, []))
        except ValueError as e:
            raise ValueError(f"view calibration for {n} views: {e}") from e


def calibration_for_views(n_views: int, temperature: float = 1.0, logit_bias: float = 0.0,
                          view_temperatures: dict | None = None, view_logit_biases: dict | None = None,
                          logit_map: list | None = None,
                          view_logit_maps: dict | None = None) -> ProbabilityCalibration:
    """The probability calibration for a cloud fused from ``n_views`` views: the one fitted with the largest
    view count <= ``n_views`` in ``view_temperatures`` / ``view_logit_biases`` / ``view_logit_maps``, else the
    one-view ``temperature`` / ``logit_bias`` / ``logit_map`` (the same rule as :func:`threshold_for_views`)."""
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    view_temperatures, view_logit_biases = view_temperatures or {}, view_logit_biases or {}
    counts = [n for n in view_temperatures if n <= n_views]
    if counts:
        n = max(counts)
        return _calibration(view_temperatures[n], view_logit_biases[n], (view_logit_maps or {}).get(n, []))
    return _calibration(temperature, logit_bias, logit_map or [])


def check_view_thresholds(view_thresholds: dict) -> None:
    """Raise ValueError unless ``view_thresholds`` maps ints >= 2 to probabilities in (0, 1)."""
    for n, t in view_thresholds.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 2:
            raise ValueError(f"view_thresholds: key {n!r} is not a number of fused views >= 2")
        if not isinstance(t, (int, float)) or not 0.0 < float(t) < 1.0:
            raise ValueError(f"view_thresholds[{n}] = {t!r} is not a probability in (0, 1)")


def threshold_for_views(n_views: int, threshold: float, view_thresholds: dict) -> float:
    """The surface threshold for a cloud fused from ``n_views`` views: the one calibrated with the
    largest view count <= ``n_views`` in ``view_thresholds``, else ``threshold`` (one view)."""
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    counts = [n for n in view_thresholds if n <= n_views]
    return float(view_thresholds[max(counts)]) if counts else float(threshold)


def config_hash(config: Any) -> str:
    """Short stable hash of a config dataclass (or dict): 16 hex digits of SHA-256 of sorted JSON."""
    d = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else config
    text = json.dumps(d, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(obj: Any) -> Any:
    """Make ``obj`` weights_only-safe: numpy scalars/arrays -> Python numbers/lists, tuples kept."""
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, int) else k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        out = [_plain(v) for v in obj]
        return tuple(out) if isinstance(obj, tuple) else out
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if hasattr(obj, "tolist"):  # numpy arrays and scalars
        return obj.tolist()
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint")


def save_checkpoint(path: str | Path, model: OccupancyNetwork, meta: CheckpointMeta,
                    training: dict | None = None) -> Path:
    """Write ``model`` (config + CPU state dict), ``meta`` and optional ``training`` state (optimiser,
    RNG; plain types) to ``path`` atomically (temp file then rename). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": dataclasses.asdict(model.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": _plain(dataclasses.asdict(meta)),
    }
    if training is not None:
        payload["training"] = _plain(training)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_raw(path: str | Path) -> dict:
    """Read and validate a checkpoint file -> its payload dict (tensors on CPU)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, not a torch file, unsafe pickle
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an occnet_ros checkpoint (format tag missing)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: unsupported checkpoint version {payload.get('version')!r}")
    for key in ("model_config", "state_dict", "meta"):
        if key not in payload:
            raise CheckpointError(f"{path}: checkpoint lacks '{key}'")
    return payload


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[OccupancyNetwork, CheckpointMeta, dict]:
    """Load ``path`` -> (model in eval mode on ``device``, meta, raw payload)."""
    payload = load_raw(path)
    try:
        cfg = from_dict(ModelConfig, payload["model_config"], where=f"{path}:model_config")
        meta = from_dict(CheckpointMeta, payload["meta"], where=f"{path}:meta")  # validates
    except ConfigError as e:
        raise CheckpointError(str(e)) from e
    model = OccupancyNetwork(cfg)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the stored model config: {e}") from e
    model.to(device).eval()
    return model, meta, payload


def export_weights(src: str | Path, dst: str | Path) -> Path:
    """Copy a training checkpoint without optimiser/RNG state (a small file to ship)."""
    payload = load_raw(src)
    payload.pop("training", None)
    return _save_payload(payload, dst)


def set_threshold(path: str | Path, threshold: float, calibration: dict, views: int = 1) -> Path:
    """Rewrite checkpoint ``path`` (atomically) with the surface ``threshold`` for clouds of ``views``
    fused views (1: ``meta.threshold``; more: ``meta.view_thresholds[views]``) and the ``calibration``
    record that chose it (under ``meta.metrics["calibration"]``, or ``"calibration_<views>_views"``)."""
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    payload = load_raw(path)
    if views == 1:
        payload["meta"]["threshold"] = float(threshold)
        key = "calibration"
    else:
        payload["meta"].setdefault("view_thresholds", {})[int(views)] = float(threshold)
        key = f"calibration_{views}_views"
    payload["meta"].setdefault("metrics", {})[key] = _plain(calibration)
    return _save_payload(payload, path)


def set_probability_calibration(path: str | Path, calibrations: dict, record: dict,
                                dst: str | Path | None = None) -> Path:
    """Write checkpoint ``path`` to ``dst`` (default: ``path`` itself; atomically) with the probability
    calibrations ``{fused views (int >= 1): ProbabilityCalibration}`` (1: ``meta.temperature`` /
    ``meta.logit_bias`` / ``meta.logit_map``; more: ``meta.view_temperatures`` / ``meta.view_logit_biases`` /
    ``meta.view_logit_maps``; view counts not
    given keep what the file has) and the ``record`` of the fit under ``meta.metrics["probability_calibration"]``.
    Weights and thresholds are not changed."""
    if not calibrations:
        raise ValueError("no probability calibration to store")
    payload = load_raw(path)
    meta = payload["meta"]
    for views, cal in sorted(calibrations.items()):
        if not isinstance(views, int) or isinstance(views, bool) or views < 1:
            raise ValueError(f"view count {views!r} must be an int >= 1")
        if not isinstance(cal, ProbabilityCalibration):
            raise TypeError(f"calibration for {views} views must be a ProbabilityCalibration, got {type(cal).__name__}")
        logit_map = [[float(v) for v in cal.knots_in], [float(v) for v in cal.knots_out]] if cal.knots_in else []
        if views == 1:
            meta["temperature"], meta["logit_bias"] = float(cal.temperature), float(cal.bias)
            meta["logit_map"] = logit_map
        else:
            meta.setdefault("view_temperatures", {})[views] = float(cal.temperature)
            meta.setdefault("view_logit_biases", {})[views] = float(cal.bias)
            maps = meta.setdefault("view_logit_maps", {})
            if logit_map:
                maps[views] = logit_map
            else:
                maps.pop(views, None)
    check_view_calibrations(meta.get("temperature", 1.0), meta.get("logit_bias", 0.0),
                            meta.get("view_temperatures", {}), meta.get("view_logit_biases", {}),
                            meta.get("logit_map", []), meta.get("view_logit_maps", {}))
    meta.setdefault("metrics", {})["probability_calibration"] = _plain(record)
    return _save_payload(payload, path if dst is None else dst)


def _save_payload(payload: dict, dst: str | Path) -> Path:
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, dst)
    return dst
