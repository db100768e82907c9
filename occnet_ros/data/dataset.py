"""Training/validation datasets for the occupancy network: configuration, cached generation, batches.

    cfg = load_config(DataConfig, "config/data/default.yaml")
    train = load_or_generate(cfg, "train", Path("data_cache"))
    x, q, occ = train.sample_batch(rng, batch_size=64, n_input_points=1024, n_query_points=2048)

Cache layout: ``<cache_dir>/<split>-<hash>/shard_NNNN.npz`` where the hash covers every field that
changes the data (so the same config loads the cache, another config regenerates). Each object ``i`` of a
split draws from its own generator ``default_rng([seed, split_code, i])``: the data are identical for the
same config whatever the shard size or the order of generation. The val split uses other seed streams
and held-out random_urdfs meshes (every 10th), with the same families.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from occnet_ros.perception.cloud_filter import CleanConfig
from occnet_ros.data.generate import FAMILY_CODES, GenStats, generate_object
from occnet_ros.data.virtual_camera import DepthNoise
from occnet_ros.geometry import PinholeCamera

DATA_FORMAT_VERSION = 4
"""2: GenStats gained ``fused_views`` (stored in every shard). 3: mesh labels are inside the union of the
mesh's closed parts (:mod:`occnet_ros.data.solid_inside`); before, ray parity over the whole mesh called the
overlaps of a random_urdfs object's parts outside. 4: mugs and cups have thicker walls (mugs up to a
quarter of their radius, cups up to a fifth; before, both at most 0.12)."""
SPLITS = {"train": 0, "val": 1}


@dataclass
class DataConfig:
    """Training-data generation. Lengths in metres unless said otherwise."""

    seed: int = 0
    n_objects: int = 2500
    """objects of the train split"""
    n_val_objects: int = 150
    views_per_object: int = 4
    mesh_fraction: float = 0.25
    """fraction of objects from meshes (random_urdfs and ``mesh_dirs``; the rest procedural)"""
    use_random_urdfs: bool = True
    """draw meshes from pybullet_data ``random_urdfs``"""
    mesh_dirs: list[str] = field(default_factory=list)
    """folders of your own meshes (OBJ/STL/PLY, searched recursively, any units: each is rescaled to
    ``mesh_size_range``); every 10th file (sorted) is held out for the val split"""
    mesh_size_range: tuple[float, float] = (0.05, 0.25)
    """largest extent of a mesh object after rescaling"""
    mesh_resolution: int = 48
    """marching-cubes cells along the longest side, procedural shapes (rendering and surface samples)"""
    n_input_points: int = 2048
    """observed points stored per view (fewer observed: padded by resampling)"""
    min_view_points: int = 64
    """views with fewer segmented points are re-drawn"""
    n_query_uniform: int = 1024
    n_query_near_surface: int = 1024
    near_surface_sigmas: list[float] = field(default_factory=lambda: [0.01, 0.05])
    """Gaussian offsets of the near-surface queries, canonical units (split evenly)"""
    camera: PinholeCamera = field(default_factory=PinholeCamera)
    distance_range: tuple[float, float] = (0.35, 1.2)
    elevation_deg_range: tuple[float, float] = (10.0, 65.0)
    max_roll_deg: float = 5.0
    noise: DepthNoise = field(default_factory=DepthNoise)
    table: bool = True
    """render the table plane (occludes the base)"""
    table_leak_prob: float = 0.05
    """probability that a table pixel within 2 px of the object is mis-segmented into the cloud"""
    clean_inputs: bool = False
    """clean each view's cloud with ``clean`` (in its camera frame, before the min_view_points check and
    the normalisation), as the evaluation protocol and the node do"""
    clean: CleanConfig = field(default_factory=CleanConfig)
    """the per-view cleaning of ``clean_inputs`` (statistical outlier removal by default)"""
    fused_samples_per_object: int = 0
    """fused samples added after an object's single views: each fuses k views (k uniform in
    [2, min(fused_max_views, successful views)]) in the first chosen camera's optical frame, as the
    evaluation fuses views; none for an object with fewer than 2 successful views"""
    fused_max_views: int = 4
    """largest number of views in one fused sample (>= 2)"""
    shard_size: int = 250
    """objects per cache file"""
    family_weights: dict[str, float] = field(default_factory=dict)
    """procedural family name -> relative weight (e.g. ``{hollow_box: 1.0}``); empty: the default weights
    of ``occnet_ros.data.shapes.FAMILY_WEIGHTS``, which leave out ``hollow_box``"""
    thin_wall_dilation: float = 0.0
    """fraction of an object's largest extent by which each side of a thin wall is labelled occupied (0:
    exact labels); see :mod:`occnet_ros.data.thin_walls`"""
    thin_wall_max_thickness: float = 0.02
    """walls thinner than this fraction of the largest extent count as thin (used when
    ``thin_wall_dilation`` > 0)"""

    def validate(self) -> None:
        """Raise ValueError naming the first bad field."""
        for name in ("n_objects", "n_val_objects", "views_per_object", "n_input_points", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_query_uniform < 0 or self.n_query_near_surface < 0 or \
                self.n_query_uniform + self.n_query_near_surface < 1:
            raise ValueError("n_query_uniform and n_query_near_surface must be >= 0 and not both 0")
        if not 0.0 <= self.mesh_fraction <= 1.0:
            raise ValueError(f"mesh_fraction must be in [0, 1], got {self.mesh_fraction}")
        if self.min_view_points < 3:
            raise ValueError("min_view_points must be >= 3")
        if self.mesh_resolution < 8:
            raise ValueError("mesh_resolution must be >= 8")
        if not self.near_surface_sigmas or min(self.near_surface_sigmas) <= 0:
            raise ValueError("near_surface_sigmas must be a non-empty list of positive numbers")
        for name in ("mesh_size_range", "distance_range", "elevation_deg_range"):
            a, b = getattr(self, name)
            if not 0 < a <= b:
                raise ValueError(f"{name} must be an increasing pair of positive numbers, got {(a, b)}")
        if self.elevation_deg_range[1] >= 90:
            raise ValueError("elevation_deg_range must stay below 90 degrees")
        if not 0.0 <= self.table_leak_prob <= 1.0:
            raise ValueError("table_leak_prob must be in [0, 1]")
        if self.fused_samples_per_object < 0:
            raise ValueError(f"fused_samples_per_object must be >= 0, got {self.fused_samples_per_object}")
        if self.thin_wall_dilation < 0 or self.thin_wall_max_thickness <= 0:
            raise ValueError("thin_wall_dilation must be >= 0 and thin_wall_max_thickness > 0, got "
                             f"{self.thin_wall_dilation}, {self.thin_wall_max_thickness}")
        if self.fused_max_views < 2:
            raise ValueError(f"fused_max_views must be >= 2, got {self.fused_max_views}")
        if self.family_weights:
            from occnet_ros.data.shapes import check_family_weights

            try:
                check_family_weights(self.family_weights)
            except ValueError as e:
                raise ValueError(f"family_weights: {e}") from None
        if self.mesh_fraction > 0 and not self.use_random_urdfs and not self.mesh_dirs:
            raise ValueError("mesh_fraction > 0 needs meshes: use_random_urdfs or mesh_dirs")
        if self.mesh_fraction > 0:
            from occnet_ros.data.mesh_sources import user_mesh_paths

            user_mesh_paths(self.mesh_dirs)  # raises naming a missing or empty folder
        if not isinstance(self.clean_inputs, bool):
            raise ValueError(f"clean_inputs must be true or false, got {self.clean_inputs!r}")
        self.camera.validate()
        self.noise.validate()
        self.clean.validate()

    def n_for_split(self, split: str) -> int:
        _check_split(split)
        return self.n_objects if split == "train" else self.n_val_objects

    def identity(self) -> dict:
        """The fields that define the data, as a plain dict for hashing: an empty ``family_weights`` (the
        default weights) is left out, and so are the thin-wall fields while ``thin_wall_dilation`` is 0,
        so configs written before those fields keep their cache and checkpoint hashes."""
        d = dataclasses.asdict(self)
        if not d["family_weights"]:
            d.pop("family_weights")
        if not d["thin_wall_dilation"]:
            d.pop("thin_wall_dilation")
            d.pop("thin_wall_max_thickness")
        return d

    def cache_key(self, split: str) -> str:
        """16 hex digits identifying the data of ``split`` under this config."""
        d = self.identity()
        for k in ("n_objects", "n_val_objects", "shard_size"):
            d.pop(k)
        d.update(split=split, n=self.n_for_split(split), version=DATA_FORMAT_VERSION)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")


class OccupancyDataset:
    """Samples (one object view each, or several fused views of one object) in canonical units.

    inputs: (S, n_in, 3) float16; queries: (S, n_q, 3) float16, the first ``n_query_uniform`` of each row
    uniform in the box, the rest near the surface; occupancies: (S, n_q) bool; family: (S,) int16 index
    into ``FAMILY_CODES``; frame_scale: (S,) float32 metres per canonical unit; object_index: (S,) int32.
    """

    def __init__(self, inputs, queries, occupancies, n_query_uniform: int, family=None, frame_scale=None,
                 object_index=None, stats: GenStats | None = None):
        self.inputs, self.queries, self.occupancies = inputs, queries, occupancies
        s = len(inputs)
        if queries.shape[0] != s or occupancies.shape != queries.shape[:2]:
            raise ValueError("inputs, queries and occupancies disagree in shape")
        self.n_query_uniform = int(n_query_uniform)
        self.family = family if family is not None else np.zeros(s, np.int16)
        self.frame_scale = frame_scale if frame_scale is not None else np.ones(s, np.float32)
        self.object_index = object_index if object_index is not None else np.arange(s, dtype=np.int32)
        self.stats = stats or GenStats()

    def __len__(self) -> int:
        return len(self.inputs)

    @staticmethod
    def _subset(rng, batch: int, n_avail: int, n_take: int) -> np.ndarray:
        """(batch, n_take) column indices: without replacement when possible."""
        if n_take <= n_avail:
            return np.argpartition(rng.random((batch, n_avail)), n_take - 1, axis=1)[:, :n_take] \
                if n_take < n_avail else np.tile(np.arange(n_avail), (batch, 1))
        return rng.integers(0, n_avail, (batch, n_take))

    def sample_batch(self, rng: np.random.Generator, batch_size: int, n_input_points: int,
                     n_query_points: int, input_noise: float = 0.0):
        """Random batch: inputs (B, n_input_points, 3) float32, queries (B, n_query_points, 3) float32,
        occupancies (B, n_query_points) float32 in {0, 1}. Queries are half uniform, half near-surface
        (all from one kind if the other is absent); ``input_noise``: std of Gaussian noise added to the
        inputs, canonical units."""
        if len(self) == 0:
            raise ValueError("the dataset is empty")
        if batch_size < 1 or n_input_points < 1 or n_query_points < 1:
            raise ValueError("batch_size, n_input_points and n_query_points must be >= 1")
        rows = rng.integers(0, len(self), batch_size)
        cols_in = self._subset(rng, batch_size, self.inputs.shape[1], n_input_points)
        x = np.take_along_axis(self.inputs[rows], cols_in[..., None], axis=1).astype(np.float32)
        if input_noise > 0:
            x += rng.normal(0.0, input_noise, x.shape).astype(np.float32)
        n_u_avail = self.n_query_uniform
        n_s_avail = self.queries.shape[1] - n_u_avail
        n_u = n_query_points // 2 if n_s_avail > 0 else n_query_points
        n_u = n_u if n_u_avail > 0 else 0
        cols = []
        if n_u > 0:
            cols.append(self._subset(rng, batch_size, n_u_avail, n_u))
        if n_query_points - n_u > 0:
            cols.append(n_u_avail + self._subset(rng, batch_size, n_s_avail, n_query_points - n_u))
        cq = np.concatenate(cols, axis=1)
        q = np.take_along_axis(self.queries[rows], cq[..., None], axis=1).astype(np.float32)
        occ = np.take_along_axis(self.occupancies[rows], cq, axis=1).astype(np.float32)
        return x, q, occ

    @staticmethod
    def concatenate(parts: "list[OccupancyDataset]") -> "OccupancyDataset":
        """One dataset holding the samples of ``parts`` in order (object indices renumbered so objects of
        different parts stay distinct). All parts need the same stored input and query counts."""
        if not parts:
            raise ValueError("nothing to concatenate")
        first = parts[0]
        for k, d in enumerate(parts[1:], 1):
            if d.inputs.shape[1:] != first.inputs.shape[1:] or d.queries.shape[1:] != first.queries.shape[1:] \
                    or d.n_query_uniform != first.n_query_uniform:
                raise ValueError(f"dataset {k} stores {d.inputs.shape[1]} input / {d.queries.shape[1]} query points "
                                 f"({d.n_query_uniform} uniform), dataset 0 {first.inputs.shape[1]} / "
                                 f"{first.queries.shape[1]} ({first.n_query_uniform}): they cannot be mixed")
        offsets = np.cumsum([0] + [int(d.object_index.max()) + 1 if len(d) else 0 for d in parts[:-1]])
        stats = GenStats()
        for d in parts:
            stats.add(d.stats)
        return OccupancyDataset(
            np.concatenate([d.inputs for d in parts]), np.concatenate([d.queries for d in parts]),
            np.concatenate([d.occupancies for d in parts]), first.n_query_uniform,
            np.concatenate([d.family for d in parts]), np.concatenate([d.frame_scale for d in parts]),
            np.concatenate([d.object_index + int(o) for d, o in zip(parts, offsets)]).astype(np.int32), stats)


def _generate_shard(cfg: DataConfig, split: str, start: int, stop: int, mesh_paths: list, bar) -> dict:
    parts, stats = [], GenStats()
    for i in range(start, stop):
        rng = np.random.default_rng([cfg.seed, SPLITS[split], i])
        obj = generate_object(cfg, rng, mesh_paths)
        stats.add(obj.stats)
        parts.append((i, obj))
        if bar is not None:
            bar.update(1)
    n_q = cfg.n_query_uniform + cfg.n_query_near_surface
    occ = np.concatenate([o.occupancies for _, o in parts]) if parts else np.zeros((0, n_q), bool)
    return {
        "inputs": np.concatenate([o.inputs for _, o in parts]),
        "queries": np.concatenate([o.queries for _, o in parts]),
        "occupancies_packed": np.packbits(occ, axis=1),
        "family": np.concatenate([np.full(len(o.inputs), o.family, np.int16) for _, o in parts]),
        "frame_scale": np.concatenate([o.frame_scale for _, o in parts]),
        "object_index": np.concatenate([np.full(len(o.inputs), i, np.int32) for i, o in parts]),
        "stats": stats.as_array(),
    }


def split_meshes(cfg: DataConfig, split: str) -> list:
    """(path, scale) meshes of ``split``: every 10th of each source list is val, the rest train."""
    from occnet_ros.data.mesh_sources import training_mesh_paths, user_mesh_paths

    out = []
    for paths in (training_mesh_paths() if cfg.use_random_urdfs else [], user_mesh_paths(cfg.mesh_dirs)):
        out += [p for k, p in enumerate(paths) if (k % 10 == 0) == (split == "val")]
    return out


def load_or_generate(cfg: DataConfig, split: str, cache_dir: str | Path, progress: bool = True
                     ) -> OccupancyDataset:
    """The dataset of ``split`` ('train' or 'val') under ``cfg``: loaded from the cache in ``cache_dir``
    if present, else generated (single process, tqdm bar if ``progress``) and cached shard by shard."""
    _check_split(split)
    cfg.validate()
    n = cfg.n_for_split(split)
    out_dir = Path(cache_dir) / f"{split}-{cfg.cache_key(split)}"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1, sort_keys=True))
    bounds = [(s, min(n, s + cfg.shard_size)) for s in range(0, n, cfg.shard_size)]
    missing = [b for b in bounds if not (out_dir / f"shard_{b[0]:07d}_{b[1]:07d}.npz").exists()]
    mesh_paths = split_meshes(cfg, split) if missing and cfg.mesh_fraction > 0 else []
    bar = None
    if missing and progress:
        from tqdm import tqdm

        bar = tqdm(total=sum(b - a for a, b in missing), desc=f"generating {split} data", unit="obj")
    shards = []
    for a, b in bounds:
        path = out_dir / f"shard_{a:07d}_{b:07d}.npz"
        if (a, b) in missing:
            data = _generate_shard(cfg, split, a, b, mesh_paths, bar)
            tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
            np.savez(tmp, **data)
            os.replace(tmp, path)
        else:
            with np.load(path) as f:
                data = {k: f[k] for k in f.files}
        shards.append(data)
    if bar is not None:
        bar.close()
    n_q = cfg.n_query_uniform + cfg.n_query_near_surface
    stats = GenStats()
    for s in shards:
        stats.add(GenStats.from_array(s["stats"]))
    cat = {k: np.concatenate([s[k] for s in shards]) for k in
           ("inputs", "queries", "occupancies_packed", "family", "frame_scale", "object_index")}
    occ = np.unpackbits(cat["occupancies_packed"], axis=1, count=n_q).astype(bool)
    return OccupancyDataset(cat["inputs"], cat["queries"], occ, cfg.n_query_uniform, cat["family"],
                            cat["frame_scale"], cat["object_index"], stats)


__all__ = ["DataConfig", "OccupancyDataset", "load_or_generate", "FAMILY_CODES", "DATA_FORMAT_VERSION"]
