"""Held-out points with the network's occupancy probability and the true occupancy, for measuring and fitting
the probability calibration (:mod:`occnet_ros.evaluation.reliability`).

Objects: the held-out objects of :func:`~occnet_ros.evaluation.calibration.calibration_objects` (random_urdfs
validation meshes scaled to 12 cm, seeded procedural shapes), never the named evaluation objects. Two
disjoint splits (:func:`split_objects`): the *fit* split (validation meshes from index 0, shapes of
``fit_shape_seed``) chooses the calibration, the *report* split (the validation meshes after those of the
fit split, shapes of ``report_shape_seed``) measures it.

Each object is observed as ``occnet_eval``'s ``ours`` does (:func:`~occnet_ros.evaluation.protocol.observe_object`
with ``views`` fused views, cleaning, known-empty space of the observation) and encoded without a mesh. The
points, in the evaluation frame of :mod:`occnet_ros.evaluation.metrics` (ground truth's longest edge 1):

* ``box``: uniform in the padded box ``[-0.55, 0.55]^3``;
* ``near``: on the true surface (area-weighted solid-surface samples) moved along the face normal by a
  uniform offset in ``[-near_band, near_band]`` (default 0.01 = 1 % of the object size).

True occupancy: the solid inside test the metrics use (:func:`~occnet_ros.data.solid_inside.solid_inside`).
Prediction: the network's probability as the object's field answers a query (0 outside the object's padded
canonical box, 0 where the sensor shows the space empty), *before* any probability calibration.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from occnet_ros.data.solid_inside import mesh_parts, solid_inside
from occnet_ros.evaluation.calibration import CalibrationConfig, calibration_objects
from occnet_ros.evaluation.metrics import normalization_of, solid_surface_samples
from occnet_ros.evaluation.protocol import EvalObject, ProtocolError, ViewProtocolConfig, observe_object
from occnet_ros.geometry import RigidTransform
from occnet_ros.reconstruction.known_empty import KnownEmpty, KnownEmptyConfig
from occnet_ros.reconstruction.occupancy_field import inside_box

__all__ = ["SampleConfig", "REGIONS", "split_objects", "collect_samples", "cached_samples", "network_probabilities",
           "weights_digest"]

REGIONS = ("box", "near")
"""Where the points are drawn: uniform in the padded box, within ``near_band`` of the true surface."""


@dataclass
class SampleConfig:
    """``n_box`` / ``n_near`` points per object (:data:`REGIONS`); ``near_band``: largest distance from the
    true surface of a near point, in object sizes; ``box_half``: half edge of the padded box, same units;
    ``seed``: of the points; ``fit_objects`` / ``report_objects``: (validation meshes, procedural shapes) of
    each split; ``fit_shape_seed`` / ``report_shape_seed``: the shapes' seeds (must differ); protocol and
    known-empty space as in the evaluation."""

    n_box: int = 20000
    n_near: int = 20000
    near_band: float = 0.01
    box_half: float = 0.55
    seed: int = 0
    fit_objects: tuple[int, int] = (24, 16)
    report_objects: tuple[int, int] = (24, 16)
    fit_shape_seed: int = 2026
    report_shape_seed: int = 7331
    mesh_size_m: float = 0.12
    protocol: ViewProtocolConfig = field(default_factory=ViewProtocolConfig)
    known_empty: KnownEmptyConfig = field(default_factory=KnownEmptyConfig)

    def validate(self) -> None:
        if self.n_box < 0 or self.n_near < 0 or self.n_box + self.n_near == 0:
            raise ValueError(f"n_box and n_near must be >= 0, not both 0 (got {self.n_box}, {self.n_near})")
        if not 0 < self.near_band < 0.5 or not self.box_half > 0:
            raise ValueError(f"near_band must be in (0, 0.5) and box_half > 0, got {self.near_band}, {self.box_half}")
        for name in ("fit_objects", "report_objects"):
            m, s = getattr(self, name)
            if m < 0 or s < 0 or m + s == 0:
                raise ValueError(f"{name} must be (meshes >= 0, shapes >= 0), not both 0, got {(m, s)}")
        if self.fit_shape_seed == self.report_shape_seed:
            raise ValueError("fit_shape_seed and report_shape_seed must differ (the splits must be disjoint)")
        self.protocol.validate()
        self.known_empty.validate()


def split_objects(config: SampleConfig, mesh_paths: list, split: str) -> list[EvalObject]:
    """The held-out objects of ``split`` ("fit" or "report"); ``mesh_paths``: (path, scale) of the random_urdfs
    validation split. The report split's meshes follow the fit split's, so the two never share an object."""
    config.validate()
    if split not in ("fit", "report"):
        raise ValueError(f"split must be 'fit' or 'report', got {split!r}")
    n_fit = config.fit_objects[0]
    meshes, shapes = config.fit_objects if split == "fit" else config.report_objects
    paths = mesh_paths[:n_fit] if split == "fit" else mesh_paths[n_fit:]
    if meshes and len(paths) < meshes:
        raise ValueError(f"the {split} split needs {meshes} validation meshes, {len(paths)} are left")
    cal = CalibrationConfig(n_meshes=meshes, n_shapes=shapes, mesh_size_m=config.mesh_size_m,
                            shape_seed=config.fit_shape_seed if split == "fit" else config.report_shape_seed)
    return calibration_objects(cal, paths)


def network_probabilities(obj, points: np.ndarray) -> np.ndarray:
    """(M,) float32 probabilities of a :class:`~occnet_ros.reconstruction.reconstructed_object.ReconstructedObject`
    at points (M, 3) of its source frame, as a query answers them but without the probability calibration:
    0 outside its padded box, the field's :meth:`probabilities` (0 in known-empty space) inside."""
    c = obj.frame.to_canonical(np.asarray(points, np.float64)).astype(np.float32)
    out = np.zeros(c.shape[0], np.float32)
    idx = np.flatnonzero(inside_box(c))
    if idx.size:
        out[idx] = obj.occupancy.probabilities(c[idx])
    return out


def collect_samples(reconstructor, objects: list[EvalObject], views: int, config: SampleConfig,
                    progress: bool = False) -> tuple[dict[str, dict[str, np.ndarray]], list[str]]:
    """Every object of ``objects`` observed with ``views`` fused views and reconstructed (no mesh) by
    ``reconstructor`` -> ({region: {"p": (N,) float32 network probability, "y": (N,) bool occupied,
    "object": (N,) int32 index into ``objects``}}, names of the objects whose observation failed)."""
    config.validate()
    rows: dict[str, list] = {r: [] for r in REGIONS}
    skipped = []
    it = enumerate(objects)
    if progress:
        from tqdm import tqdm
        it = tqdm(list(it), desc=f"{views} view(s)", dynamic_ncols=True)
    for k, eo in it:
        try:
            obs = observe_object(eo, views, config.protocol)
        except ProtocolError:
            skipped.append(eo.name)
            continue
        empty = KnownEmpty(config.known_empty, obs.support_plane, obs.depth_views)
        rec = reconstructor.reconstruct(obs.points, obs.up, obs.viewpoint, point_viewpoints=obs.point_viewpoints,
                                        known_empty=empty, n_views=obs.n_views, extract_mesh=False)
        centre, scale = normalization_of(eo.mesh)
        parts = mesh_parts(eo.mesh)
        rng = np.random.default_rng([config.seed, k, views])
        unit = {"box": rng.uniform(-config.box_half, config.box_half, size=(config.n_box, 3))}
        if config.n_near:
            pts, nrm = solid_surface_samples(parts, eo.mesh, config.n_near, 3, rng)
            offset = rng.uniform(-config.near_band, config.near_band, size=(config.n_near, 1)) * scale
            unit["near"] = (pts + nrm * offset - centre) / scale
        to_input = RigidTransform.from_matrix(obs.input_to_world).inverse()
        for region, u in unit.items():
            if not len(u):
                continue
            world = centre + u * scale
            y = solid_inside(parts, world, n_rays=3, rng=np.random.default_rng([config.seed, k, 1]))
            p = network_probabilities(rec, to_input.apply(world))
            rows[region].append((p, y, np.full(len(p), k, np.int32)))
    if not any(rows.values()):
        raise ValueError("no held-out object could be observed")
    out = {}
    for region, parts_ in rows.items():
        if parts_:
            out[region] = {"p": np.concatenate([r[0] for r in parts_]), "y": np.concatenate([r[1] for r in parts_]),
                           "object": np.concatenate([r[2] for r in parts_])}
    return out, skipped


def weights_digest(state_dict: dict) -> str:
    """16 hex digits of SHA-256 over a model's tensors (names and bytes, sorted by name): the same network gives
    the same digest whatever calibration or thresholds its file stores."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state_dict):
        h.update(name.encode())
        h.update(state_dict[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def cached_samples(reconstructor, objects: list[EvalObject], views: int, config: SampleConfig, split: str,
                   cache_dir: str | Path | None, network_digest: str, progress: bool = False):
    """:func:`collect_samples`, stored in (and, on a later call with the same network, objects, views and
    config, read back from) ``cache_dir/samples_<key>.npz``; no cache when ``cache_dir`` is None. The key covers
    ``network_digest`` (:func:`weights_digest`), ``split``, ``views``, the object names and every field of
    ``config``: the samples are the network's probabilities before any calibration, so a calibrated copy of
    the same network reuses them."""
    import dataclasses
    import hashlib
    import json

    if cache_dir is None:
        return collect_samples(reconstructor, objects, views, config, progress)
    ident = {"network": network_digest, "split": split, "views": views, "objects": [o.name for o in objects],
             "config": dataclasses.asdict(config)}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"samples_{split}_{views}v_{key}.npz"
    if path.is_file():
        with np.load(path) as f:
            out = {r: {k: f[f"{r}_{k}"] for k in ("p", "y", "object")} for r in REGIONS if f"{r}_p" in f.files}
            return out, [str(v) for v in f["skipped"]]
    out, skipped = collect_samples(reconstructor, objects, views, config, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f"{r}_{k}": v for r, d in out.items() for k, v in d.items()}
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, skipped=np.array(skipped, dtype=str), **arrays)
    tmp.replace(path)
    return out, skipped
