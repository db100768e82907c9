"""The training loop: Adam, binary cross-entropy on logits, validation IoU with a threshold sweep,
time-based checkpoints, resumable runs.

Run folder ``out_dir``:
* ``last.pt``  - latest state (model, optimiser, RNG states, step), written every
  ``checkpoint_every_s`` seconds and at the end; ``--resume`` continues from it.
* ``best.pt``  - best validation IoU so far, with the best threshold in its metadata.
* ``log.csv``  - step, loss (mean since the previous row), val_iou, threshold, lr, wall_time_s.
* ``config.yaml`` - the configuration used.

Datasets are any objects with ``sample_batch(rng, batch_size, n_input_points, n_query_points,
input_noise) -> (inputs (B, n_in, 3), queries (B, n_q, 3), occ (B, n_q))``, float32, canonical frame.
"""
from __future__ import annotations

import csv
import dataclasses
import math
import time
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from occnet_ros.network.checkpoint import (CheckpointMeta, config_hash, load_raw, save_checkpoint)
from occnet_ros.config_io import from_dict
from occnet_ros.network.model import ModelConfig, OccupancyNetwork, resolve_device
from occnet_ros.training.config import TrainConfig

LOG_FIELDS = ["step", "loss", "val_iou", "threshold", "lr", "wall_time_s"]


class BatchSource(Protocol):
    def sample_batch(self, rng: np.random.Generator, batch_size: int, n_input_points: int,
                     n_query_points: int, input_noise: float = 0.0
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


def iou_per_threshold(logits: torch.Tensor, occ: torch.Tensor, thresholds: list[float]) -> np.ndarray:
    """logits, occ (B, M) -> (T,) mean over objects of the IoU of {sigmoid(logit) >= t} and {occ >= 0.5}
    on the query points. An object with empty union counts as IoU 1."""
    prob = torch.sigmoid(logits)
    gt = occ >= 0.5
    out = []
    for t in thresholds:
        pred = prob >= t
        inter = (pred & gt).sum(dim=1).double()
        union = (pred | gt).sum(dim=1).double()
        iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        out.append(float(iou.mean()))
    return np.array(out)


class Trainer:
    """Owns the model, optimiser and run folder. ``run()`` trains until ``cfg.steps`` or the time
    budget; ``resume()`` loads ``out_dir/last.pt`` first."""

    def __init__(self, cfg: TrainConfig, train_set: BatchSource, val_set: BatchSource,
                 out_dir: str | Path | None = None, progress: bool = True, extra_data: tuple = ()):
        self.cfg = cfg
        self.train_set, self.val_set = train_set, val_set
        self.out_dir = Path(out_dir if out_dir is not None else cfg.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.progress = progress
        torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.model = OccupancyNetwork(cfg.model).to(self.device)
        o = cfg.optim
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        self.rng = np.random.default_rng(cfg.seed)
        self.step = 0
        self.wall_time_s = 0.0
        self.best_iou = -1.0
        self.best_threshold = cfg.val_thresholds[0]
        self.init_meta: dict = {}
        self.data_hash = data_hash(cfg.data, extra_data)
        self._val = self._fixed_val_batches()

    # ----------------------------------------------------------------------------------- helpers
    def _fixed_val_batches(self) -> list[tuple[torch.Tensor, ...]]:
        c = self.cfg
        rng = np.random.default_rng(c.seed + 1_000_003)
        out = []
        for _ in range(c.val_batches):
            inp, q, occ = self.val_set.sample_batch(rng, c.batch_size, c.n_input_points,
                                                    c.n_query_points, c.input_noise)
            out.append(tuple(torch.as_tensor(np.asarray(a, np.float32)) for a in (inp, q, occ)))
        return out

    def _to(self, *arrays) -> list[torch.Tensor]:
        return [torch.as_tensor(np.asarray(a, np.float32)).to(self.device) for a in arrays]

    def progress_fraction(self, step: int) -> float:
        """Fraction of the run done: max(step / steps, wall time / max_minutes budget), in [0, 1]."""
        c = self.cfg
        frac = step / max(c.steps, 1)
        if c.max_minutes > 0:
            frac = max(frac, self.wall_time_s / (60.0 * c.max_minutes))
        return min(frac, 1.0)

    def lr_at(self, step: int) -> float:
        o = self.cfg.optim
        lr = o.lr
        if o.schedule == "cosine":
            frac = self.progress_fraction(step)
            lr = o.lr * (o.lr_min_ratio + (1 - o.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))
        if o.warmup_steps > 0 and step < o.warmup_steps:
            lr *= (step + 1) / o.warmup_steps
        return lr

    def train_step(self, inputs, queries, occ) -> float:
        """One optimiser step on numpy or tensor batch -> loss (float)."""
        self.model.train()
        inputs, queries, occ = self._to(inputs, queries, occ)
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(self.step)
        logits = self.model(inputs, queries)
        loss = F.binary_cross_entropy_with_logits(logits, occ)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.optimizer.step()
        self.step += 1
        return float(loss.detach())

    @torch.inference_mode()
    def validate(self) -> tuple[float, float, float]:
        """-> (best mean IoU over the threshold sweep, its threshold, val loss), eval-mode model."""
        self.model.eval()
        ious, losses = [], []
        for inp, q, occ in self._val:
            inp, q, occ = inp.to(self.device), q.to(self.device), occ.to(self.device)
            logits = self.model(inp, q)
            losses.append(float(F.binary_cross_entropy_with_logits(logits, occ)))
            ious.append(iou_per_threshold(logits, occ, self.cfg.val_thresholds))
        mean = np.mean(ious, axis=0)
        i = int(np.argmax(mean))
        return float(mean[i]), float(self.cfg.val_thresholds[i]), float(np.mean(losses))

    def _meta(self, threshold: float, metrics: dict) -> CheckpointMeta:
        return CheckpointMeta(step=self.step, data_config_hash=self.data_hash, threshold=threshold,
                              metrics=metrics, wall_time_s=self.wall_time_s,
                              extra={"train_config": dataclasses.asdict(self.cfg), **self.init_meta})

    def save_last(self) -> Path:
        training = {
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": self.rng.bit_generator.state,
            "best_iou": self.best_iou,
            "best_threshold": self.best_threshold,
        }
        meta = self._meta(self.best_threshold, {"best_val_iou": self.best_iou})
        return save_checkpoint(self.out_dir / "last.pt", self.model, meta, training)

    def init_weights(self, path: str | Path) -> list[str]:
        """Start from the weights of checkpoint ``path`` (see ``TrainConfig.init_from``) -> the names
        of the parameters it lacks, which keep their initialisation. The step counter, optimiser and
        schedule start afresh."""
        payload = load_raw(path)
        own = self.model.state_dict()
        for name, value in payload["state_dict"].items():
            if name not in own:
                raise ValueError(f"{path}: parameter {name} does not exist in the model being trained")
            if tuple(value.shape) != tuple(own[name].shape):
                raise ValueError(f"{path}: parameter {name} has shape {tuple(value.shape)}, the model "
                                 f"being trained has {tuple(own[name].shape)}")
        missing, _ = self.model.load_state_dict(payload["state_dict"], strict=False)
        self.init_meta = {"init_from": str(path), "init_step": int(payload["meta"].get("step", 0)),
                          "init_missing": sorted(missing)}
        return sorted(missing)

    def resume(self, path: str | Path | None = None) -> int:
        """Load model, optimiser and RNG state from ``path`` (default ``out_dir/last.pt``) -> step."""
        path = Path(path) if path is not None else self.out_dir / "last.pt"
        payload = load_raw(path)
        if "training" not in payload:
            raise ValueError(f"{path} has no training state (exported weights cannot be resumed)")
        stored = from_dict(ModelConfig, payload["model_config"], where=f"{path}:model_config")
        if stored != self.cfg.model:  # fields added since the checkpoint compare at their defaults
            raise ValueError(f"{path}: model config differs from the current config")
        if payload["meta"].get("data_config_hash", "") != self.data_hash:
            raise ValueError(f"{path}: was trained on another data config (hash differs)")
        self.model.load_state_dict(payload["state_dict"])
        tr = payload["training"]
        self.optimizer.load_state_dict(tr["optimizer"])
        torch.set_rng_state(tr["torch_rng"])
        self.rng.bit_generator.state = tr["numpy_rng"]
        self.best_iou = float(tr["best_iou"])
        self.best_threshold = float(tr["best_threshold"])
        meta = payload["meta"]
        self.step = int(meta["step"])
        self.wall_time_s = float(meta["wall_time_s"])
        self.init_meta = {k: v for k, v in meta.get("extra", {}).items() if k.startswith("init_")}
        return self.step

    def _log(self, row: dict) -> None:
        path = self.out_dir / "log.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            if new:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in LOG_FIELDS})

    # -------------------------------------------------------------------------------------- loop
    def run(self, max_seconds: float | None = None) -> dict:
        """Train until ``cfg.steps``, ``max_seconds`` of wall time in this call, or the run's total
        budget ``cfg.max_minutes``; always ends with a validation and a ``last.pt`` checkpoint.
        -> summary dict."""
        from tqdm import tqdm

        c = self.cfg
        (self.out_dir / "config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(c), sort_keys=False))
        start = time.perf_counter()
        wall0 = self.wall_time_s
        last_ckpt = start
        losses: list[float] = []
        stopped_by_time = False
        bar = tqdm(total=c.steps, initial=self.step, disable=not self.progress, desc="train",
                   dynamic_ncols=True)
        val_iou = float("nan")
        try:
            while self.step < c.steps:
                elapsed = time.perf_counter() - start
                if (max_seconds is not None and elapsed >= max_seconds) or (
                        c.max_minutes > 0 and wall0 + elapsed >= 60.0 * c.max_minutes):
                    stopped_by_time = True
                    break
                batch = self.train_set.sample_batch(self.rng, c.batch_size, c.n_input_points,
                                                    c.n_query_points, c.input_noise)
                losses.append(self.train_step(*batch))
                self.wall_time_s = wall0 + time.perf_counter() - start
                bar.update(1)
                row = None
                if self.step % c.val_every == 0 or self.step == c.steps:
                    val_iou, thr, val_loss = self.validate()
                    if val_iou > self.best_iou:
                        self.best_iou, self.best_threshold = val_iou, thr
                        save_checkpoint(self.out_dir / "best.pt", self.model,
                                        self._meta(thr, {"val_iou": val_iou, "val_loss": val_loss}))
                    row = {"val_iou": f"{val_iou:.4f}", "threshold": thr}
                    bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", val_iou=f"{val_iou:.3f}")
                elif self.step % c.log_every == 0:
                    row = {}
                    bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", val_iou=f"{val_iou:.3f}")
                if row is not None:
                    row.update(step=self.step, loss=f"{np.mean(losses):.5f}", lr=f"{self.lr_at(self.step):.3e}",
                               wall_time_s=f"{self.wall_time_s:.1f}")
                    self._log(row)
                    losses = []
                if time.perf_counter() - last_ckpt >= c.checkpoint_every_s:
                    self.save_last()
                    last_ckpt = time.perf_counter()
        finally:
            bar.close()
        if losses or stopped_by_time:
            val_iou, thr, val_loss = self.validate()
            if val_iou > self.best_iou:
                self.best_iou, self.best_threshold = val_iou, thr
                save_checkpoint(self.out_dir / "best.pt", self.model,
                                self._meta(thr, {"val_iou": val_iou, "val_loss": val_loss}))
            self._log({"step": self.step, "loss": f"{np.mean(losses):.5f}" if losses else "",
                       "val_iou": f"{val_iou:.4f}", "threshold": thr, "lr": f"{self.lr_at(self.step):.3e}",
                       "wall_time_s": f"{self.wall_time_s:.1f}"})
        self.save_last()
        return {"step": self.step, "best_val_iou": self.best_iou, "best_threshold": self.best_threshold,
                "wall_time_s": self.wall_time_s, "stopped_by_time": stopped_by_time,
                "out_dir": str(self.out_dir)}


def data_hash(data, extra_data: tuple = ()) -> str:
    """The hash that ties a checkpoint to its data: of ``data`` (a DataConfig) alone, as before
    ``extra_data_files`` existed, or of the list of ``data`` and the ``extra_data`` configs."""
    if not dataclasses.is_dataclass(data):
        return ""
    if not extra_data:
        return config_hash(data.identity())
    return config_hash([d.identity() for d in (data, *extra_data)])


def train(cfg: TrainConfig, resume: bool = False, max_seconds: float | None = None,
          progress: bool = True) -> dict:
    """Load (or generate) the train/val datasets of ``cfg.data`` and run a :class:`Trainer`."""
    from occnet_ros.config_io import load_config
    from occnet_ros.data.dataset import DataConfig, OccupancyDataset, load_or_generate

    if cfg.init_from and not resume and not Path(cfg.init_from).is_file():
        raise FileNotFoundError(f"init_from: checkpoint file not found: {cfg.init_from}")
    if cfg.data_file:
        cfg = dataclasses.replace(cfg, data=load_config(DataConfig, cfg.data_file))
    extra = tuple(load_config(DataConfig, f) for f in cfg.extra_data_files)
    sets = {split: OccupancyDataset.concatenate([load_or_generate(d, split, cfg.cache_dir, progress=progress)
                                                 for d in (cfg.data, *extra)]) for split in ("train", "val")}
    trainer = Trainer(cfg, sets["train"], sets["val"], progress=progress, extra_data=extra)
    if resume:
        last = trainer.out_dir / "last.pt"
        if not last.exists():
            raise FileNotFoundError(f"--resume: no checkpoint to resume at {last}")
        trainer.resume(last)
    elif cfg.init_from:
        missing = trainer.init_weights(cfg.init_from)
        if progress:
            print(f"init_from {cfg.init_from}; new parameters: {', '.join(missing) or 'none'}")
    return trainer.run(max_seconds=max_seconds)
