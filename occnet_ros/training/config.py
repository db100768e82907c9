"""Training configuration (loaded from YAML with :func:`occnet_ros.config_io.load_config`)."""
from __future__ import annotations

from dataclasses import dataclass, field

from occnet_ros.data.dataset import DataConfig
from occnet_ros.network.model import ModelConfig


@dataclass
class OptimConfig:
    """Adam with an optional cosine decay of the learning rate over ``TrainConfig.steps`` down to
    ``lr * lr_min_ratio``; ``warmup_steps`` of linear warm-up; ``grad_clip`` <= 0 disables clipping."""

    lr: float = 5e-4
    weight_decay: float = 0.0
    schedule: str = "cosine"
    lr_min_ratio: float = 0.05
    warmup_steps: int = 200
    grad_clip: float = 1.0

    def validate(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")


@dataclass
class TrainConfig:
    """Everything a training run needs. Point counts are per object; ``input_noise`` is the std of
    Gaussian noise added to input points, canonical units. Validation every ``val_every`` steps on
    ``val_batches`` fixed batches, IoU at each of ``val_thresholds`` (the best is stored in
    ``best.pt``). ``checkpoint_every_s``: seconds between ``last.pt`` saves. ``device``: auto/cpu/cuda.
    ``num_threads``: torch CPU threads. ``out_dir``: run folder (checkpoints, log.csv, config);
    ``cache_dir``: dataset cache. ``data_file``: if set, the ``data`` section is read from this YAML
    file (e.g. ``config/data/default.yaml``) instead. ``max_minutes``: total wall-time budget of the
    run in minutes, counted across resumes (0 = none); the cosine schedule then follows
    ``max(step / steps, time / budget)`` so the learning rate decays by the end of the budget.
    ``init_from``: a checkpoint (training or exported) whose weights start a new run, e.g. a
    fine-tuning stage with its own schedule; parameters it lacks (a branch the new model config adds)
    keep their initialisation, a parameter it has that the model lacks or with another shape is an
    error. Ignored by ``--resume``, which continues ``out_dir/last.pt``."""

    data: DataConfig = field(default_factory=DataConfig)
    data_file: str = ""
    extra_data_files: list[str] = field(default_factory=list)
    """more data YAML files (DataConfig) whose train and val samples are added to those of ``data``
    (e.g. one family at its own weight), each generated and cached on its own"""
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch_size: int = 32
    n_input_points: int = 300
    n_query_points: int = 1024
    input_noise: float = 0.005
    steps: int = 10000
    max_minutes: float = 0.0
    val_every: int = 500
    val_batches: int = 8
    val_thresholds: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.4, 0.5, 0.6])
    log_every: int = 50
    checkpoint_every_s: float = 180.0
    seed: int = 0
    device: str = "auto"
    num_threads: int = 2
    out_dir: str = "runs/default"
    cache_dir: str = "data_cache"
    init_from: str = ""

    def validate(self) -> None:
        for name in ("batch_size", "n_input_points", "n_query_points", "steps", "val_every",
                     "val_batches", "log_every", "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if not self.val_thresholds or not all(0.0 < t < 1.0 for t in self.val_thresholds):
            raise ValueError(f"val_thresholds must be non-empty, each in (0, 1): {self.val_thresholds}")
        if self.input_noise < 0 or self.checkpoint_every_s <= 0 or self.max_minutes < 0:
            raise ValueError("input_noise and max_minutes must be >= 0, checkpoint_every_s > 0")
