"""The pure-Python reconstruction API (no ROS): point cloud in, watertight mesh and occupancy queries out.

    from occnet_ros import Reconstructor
    rec = Reconstructor.from_pretrained()             # shipped weights, device "auto"
    obj = rec.reconstruct(points)                     # (N, 3) camera optical frame, metres
    obj.mesh.export("object.ply")                     # trimesh.Trimesh, same frame, metres
    p = obj.query(np.array([[0.0, 0.0, 0.6]]))        # occupancy probability per point
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import trimesh

from occnet_ros.network.checkpoint import (DEFAULT_THRESHOLD, DEFAULT_WEIGHTS, check_view_thresholds, load_checkpoint,
                                          threshold_for_views)
from occnet_ros.network.model import OccupancyNetwork, resolve_device
from occnet_ros.network.probability_calibration import IDENTITY, ProbabilityCalibration
from occnet_ros.network.query_graph import LazyQueryGraph
from occnet_ros.reconstruction.compute_pool import ComputePool, split_range, usable_cores
from occnet_ros.reconstruction.config import DEFAULT_INPUT_POINTS, ReconstructorConfig
from occnet_ros.reconstruction.known_empty import KnownEmpty
from occnet_ros.reconstruction.batched import probabilities_many
from occnet_ros.reconstruction.mise import MiseGrid, mesh_from_values, mise_values, mise_values_many
from occnet_ros.reconstruction.normalization import (BOX_HALF, CanonicalFrame, NormalizationError,
                                                    canonical_frame_from_observation)
from occnet_ros.reconstruction.occupancy_field import AUTO_BATCH, MIRROR, FrameCode, OccupancyField
from occnet_ros.reconstruction.occupancy_grid import OccupancyGrid
from occnet_ros.reconstruction.precision import decoder_precision, resolve_precision
from occnet_ros.reconstruction.reconstructed_object import QUERY_MODES, ReconstructedObject
from occnet_ros.reconstruction.surface_anchor import anchor_to_observation
from occnet_ros.reconstruction.reuse import can_reuse, frames_close

__all__ = ["Reconstructor", "ReconstructorConfig", "ReconstructedObject", "DEFAULT_WEIGHTS", "QUERY_MODES",
           "frames_close", "can_reuse"]


MeshSimplify = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, str]]
"""(vertices (V, 3), faces (F, 3) int64) -> (vertices, faces, note): a mesh reduction that keeps the frame and the
units (the note says why a mesh was left as it was; empty when it was reduced as asked), e.g. the node's
decimation to ``mesh.max_faces``. One that also has ``from_grid(values, threshold, box_half) -> (vertices, faces,
note, marching-cubes faces) | None`` is first offered the MISE grid itself
(:class:`~occnet_ros.perception.mesh_ops.MeshReduction`: marching cubes and decimation in slabs, in worker
processes); the object's ``timings`` then count marching cubes in ``simplify`` and ``mise_stats`` say
``marching_cubes_in_slabs``. One that also has ``mesh_whole(values, threshold, box_half) -> (vertices, faces) |
None`` makes the marching cubes of the grids ``from_grid`` declines (:func:`~occnet_ros.reconstruction.mise.mesh_from_values`,
in a worker process); None: here."""


class Reconstructor:
    """Reconstruct objects from point clouds with an :class:`OccupancyNetwork`."""

    def __init__(self, model: OccupancyNetwork, device: str = "auto",
                 config: ReconstructorConfig | None = None, default_threshold: float = DEFAULT_THRESHOLD,
                 default_view_thresholds: dict | None = None,
                 calibration_for: Callable[[int], ProbabilityCalibration] | None = None):
        """``default_threshold``, ``default_view_thresholds``: the checkpoint's calibrated surface
        thresholds for one view and for clouds fused from several (:class:`~occnet_ros.network.checkpoint.CheckpointMeta`);
        an explicit ``config.threshold`` (> 0) replaces both. ``calibration_for(n_views)``: the probability
        calibration of the answers of a cloud fused from that many views (the checkpoint's
        :meth:`~occnet_ros.network.checkpoint.CheckpointMeta.calibration_for`; None = the identity)."""
        self.config = replace(config) if config is not None else ReconstructorConfig(device=device)
        if config is None or device != "auto":
            self.config.device = device
        self.config.validate()
        check_view_thresholds(default_view_thresholds or {})
        self.device = resolve_device(self.config.device)
        self.model = model.to(self.device).eval()
        explicit = self.config.threshold > 0
        self.threshold = self.config.threshold if explicit else default_threshold  # one view
        # {fused views: threshold} calibrated for several views; see threshold_for
        self.view_thresholds = {} if explicit else dict(default_view_thresholds or {})
        self.batch_size = self.config.query_batch_size or AUTO_BATCH.get(self.device.type, AUTO_BATCH["cuda"])
        self.calibration_for = calibration_for or (lambda n_views: IDENTITY)
        threads = self.config.compute_threads or (usable_cores() if self.device.type == "cpu" else 1)
        self.dtype = resolve_precision(self.config.precision, self.device)
        """The precision the network runs in beyond float32's parts (``precision``, ``auto`` resolved)."""
        self.decoder_dtype = decoder_precision(self.dtype, self.device)
        """The decoder's precision: :attr:`dtype` on a GPU, float32 on a CPU (:mod:`~occnet_ros.reconstruction.precision`)."""
        self.pool = ComputePool(threads)
        """The threads that encode and decode parts of one batch at once (:mod:`~occnet_ros.reconstruction.compute_pool`;
        ``compute_threads``). Queries of the returned objects' fields run in the caller's thread."""
        self.query_graph = LazyQueryGraph(self.model)
        """The network's one-call decoder that the returned objects' fields answer queries with
        (:mod:`occnet_ros.network.query_graph`; traced on the first query)."""

    def close(self) -> None:
        """End :attr:`pool`'s threads; the reconstructor then works in the calling thread only."""
        self.pool.close()
        self.pool = ComputePool(1)

    def __enter__(self) -> "Reconstructor":
        return self

    def __exit__(self, *exc) -> None:
        """Leaving a ``with`` block :meth:`close` s the pool (the reconstructor stays usable, in the calling thread)."""
        self.close()

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, device: str = "auto",
                        **overrides) -> "Reconstructor":
        """Load weights (``path`` None = shipped :data:`DEFAULT_WEIGHTS`); ``overrides`` are
        :class:`ReconstructorConfig` fields. A threshold and n_input_points of 0 (or None) take the
        checkpoint's (its calibrated thresholds and its training input size)."""
        names = {f.name for f in fields(ReconstructorConfig)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"unknown ReconstructorConfig field(s) {unknown}; known: {sorted(names)}")
        if path is None:
            path = DEFAULT_WEIGHTS
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"default weights not found at {path}. Train a model with "
                    f"`occnet_train --config config/train/default.yaml`, then export it with "
                    f"`occnet_train --export runs/default/best.pt {path}`, or pass path=...")
        dev = resolve_device(device)
        model, meta, _ = load_checkpoint(path, device=dev)
        trained_n = meta.extra.get("train_config", {}).get("n_input_points")
        if not overrides.get("n_input_points") and isinstance(trained_n, int):
            overrides["n_input_points"] = trained_n  # the input size the network was trained with
        config = ReconstructorConfig(**{**overrides, "device": str(dev)})
        return cls(model, device=str(dev), config=config, default_threshold=meta.threshold,
                   default_view_thresholds=meta.view_thresholds, calibration_for=meta.calibration_for)

    @classmethod
    def from_config(cls, config: ReconstructorConfig, path: str | Path | None = None) -> "Reconstructor":
        """:meth:`from_pretrained` with every setting of ``config`` (its device included)."""
        overrides = {f.name: getattr(config, f.name) for f in fields(ReconstructorConfig) if f.name != "device"}
        return cls.from_pretrained(path, device=config.device, **overrides)

    def threshold_for(self, n_views: int = 1) -> float:
        """Surface threshold for a cloud fused from ``n_views`` views: the one calibrated with the
        largest view count <= ``n_views`` (:func:`~occnet_ros.network.checkpoint.threshold_for_views`), else
        :attr:`threshold`."""
        return threshold_for_views(n_views, self.threshold, self.view_thresholds)

    def _subsample(self, p: np.ndarray) -> np.ndarray:
        """(N, 3) -> (input_subsamples, n_input_points, 3): one seeded choice of K * n points, without
        replacement (with, if N is smaller), cut into K disjoint subsamples of n."""
        n = self.config.n_input_points or DEFAULT_INPUT_POINTS
        k = self.config.input_subsamples
        rng = np.random.default_rng(self.config.seed)
        idx = rng.choice(p.shape[0], size=k * n, replace=p.shape[0] < k * n)
        return p[idx].reshape(k, n, 3)

    def encode(self, points_canonical: np.ndarray) -> torch.Tensor:
        """(N, 3) or (B, N, 3) canonical points -> (1 or B, *model.code_shape) codes on the model device."""
        x = torch.from_numpy(np.ascontiguousarray(points_canonical, dtype=np.float32))
        x = x.to(self.device).reshape(-1, *x.shape[-2:])

        dtype = self.dtype

        def encode_part(a: int, b: int) -> torch.Tensor:
            with torch.inference_mode():
                return self.model.encode(x[a:b], dtype=dtype)

        parts = split_range(x.shape[0], self.pool.threads) if self.device.type == "cpu" else [(0, x.shape[0])]
        codes = self.pool.run([lambda a=a, b=b: encode_part(a, b) for a, b in parts])
        return codes[0] if len(codes) == 1 else torch.cat(codes)

    def _encoder_inputs(self, frame: CanonicalFrame, sub: np.ndarray) -> np.ndarray:
        """(K, n, 3) source-frame subsamples -> the encoder's inputs in ``frame``: (K, n, 3) canonical, and with
        ``mirror_average`` their K mirror images after them ((2K, n, 3))."""
        pc = frame.to_canonical(sub.reshape(-1, 3)).reshape(sub.shape)
        return np.concatenate([pc, pc * MIRROR.numpy()]) if self.config.mirror_average else pc

    def _frame_code(self, frame: CanonicalFrame, codes: torch.Tensor) -> FrameCode:
        """The codes of :meth:`_encoder_inputs` -> the :class:`FrameCode` of ``frame``: the mean code of the K
        subsamples (with ``mirror_average``, and of their mirror images)."""
        dtype = self.decoder_dtype
        mirror_code, mirror_prepared = None, None
        with torch.inference_mode():
            if self.config.mirror_average:
                k = codes.shape[0] // 2
                code, mirror_code = codes[:k].mean(0, keepdim=True), codes[k:].mean(0, keepdim=True)
                back = self.model.mirror_code(mirror_code)
                if back is not None:  # feature planes: average the codes, decode once; keep one code
                    code, mirror_code = (code + back) * 0.5, None
                else:                 # one code vector: average the logits of two decodings
                    mirror_prepared = self.model.prepare(mirror_code, dtype=dtype)
            else:
                code = codes.mean(0, keepdim=True)
            prepared = self.model.prepare(code, dtype=dtype)
            query_prepared = query_mirror = None
            if dtype != torch.float32:  # queries decode in float32 (occupancy_field's module docstring)
                query_prepared = self.model.prepare(code, dtype=torch.float32)
                query_mirror = self.model.prepare(mirror_code, dtype=torch.float32) if mirror_prepared is not None else None
        return FrameCode(frame, code, prepared, mirror_code, mirror_prepared, query_prepared, query_mirror)

    def _encode_in(self, frame: CanonicalFrame, sub: np.ndarray) -> FrameCode:
        """(K, n, 3) source-frame subsamples -> their :class:`FrameCode` in ``frame`` (one batched encoding)."""
        return self._frame_code(frame, self.encode(self._encoder_inputs(frame, sub)))

    def _encode_many(self, jobs: list[tuple[CanonicalFrame, np.ndarray]]) -> list[FrameCode]:
        """:meth:`_encode_in` of several (frame, subsamples) pairs, all inputs in one encoder call."""
        inputs = [self._encoder_inputs(f, sub) for f, sub in jobs]
        codes = self.encode(np.concatenate(inputs)) if inputs else None
        out, at = [], 0
        for (f, _), x in zip(jobs, inputs):
            out.append(self._frame_code(f, codes[at:at + x.shape[0]]))
            at += x.shape[0]
        return out

    def _other_viewpoints(self, viewpoint, point_viewpoints: np.ndarray) -> list[np.ndarray]:
        """The distinct camera centres of ``point_viewpoints`` ((N, 3) or (1, 3), source frame) other than
        ``viewpoint``, in order of first appearance, at most ``max_view_frames - 1``."""
        n = self.config.max_view_frames - 1
        if n == 0 or point_viewpoints.shape[0] == 0:
            return []
        uniq, first = np.unique(point_viewpoints, axis=0, return_index=True)
        ref = np.asarray(viewpoint, dtype=np.float64).reshape(3)
        others = [uniq[i] for i in np.argsort(first) if np.linalg.norm(uniq[i] - ref) > 1e-6]
        return others[:n]

    def reconstruct(self, points: np.ndarray, up=(0.0, -1.0, 0.0), viewpoint=(0.0, 0.0, 0.0),
                    extract_mesh: bool = True, previous: ReconstructedObject | None = None,
                    point_viewpoints: np.ndarray | None = None,
                    known_empty: KnownEmpty | None = None, n_views: int = 1,
                    simplify: MeshSimplify | None = None) -> ReconstructedObject:
        """points: (N, 3) float32 observed surface points of one object, source frame (camera optical
        frame by default), metres; rows with NaN/inf are dropped. up: (3,) gravity-up in the source
        frame; viewpoint: (3,) camera centre in the source frame, metres. point_viewpoints: (N, 3) the
        centre of the camera that saw each point, for clouds fused from several views (None = all seen
        from ``viewpoint``); the mesh anchoring uses it, and so does the averaging over the cameras'
        canonical frames (``max_view_frames``). known_empty: space the observation shows
        empty (support plane, free space in front of the depth; source frame), forced to probability 0
        in the mesh and in every query of the returned object (None = the network alone). n_views: how
        many views ``points`` were fused from; it chooses the surface threshold (:meth:`threshold_for`).
        previous: this object's last reconstruction; with ``reuse_tolerance`` > 0 it is returned as is,
        marked ``reused``, when :func:`can_reuse` says it still answers this observation. simplify: a mesh
        reduction (:data:`MeshSimplify`) applied to the marching-cubes mesh (canonical frame) before the anchoring,
        so the anchoring works on the reduced mesh (the node's path: about 10x fewer vertices at 128^3); None =
        anchor and return the full mesh."""
        return self.reconstruct_many([dict(points=points, up=up, viewpoint=viewpoint, extract_mesh=extract_mesh,
                                           previous=previous, point_viewpoints=point_viewpoints,
                                           known_empty=known_empty, n_views=n_views, simplify=simplify)],
                                     batched=False)[0]

    def batch_objects(self) -> bool:
        """Whether :meth:`reconstruct_many` batches the network work of several objects by default
        (``batch_objects``: auto = on a GPU only; on a CPU one object's work already fills the cores: see the
        setting's measurements)."""
        mode = self.config.batch_objects
        return mode == "on" or (mode == "auto" and self.device.type != "cpu")

    def reconstruct_many(self, requests: list[dict], batched: bool | None = None, return_errors: bool = False
                         ) -> list[ReconstructedObject | Exception]:
        """Several objects: each request holds :meth:`reconstruct`'s keyword arguments. ``batched`` (None =
        :meth:`batch_objects`): all objects' encoder inputs in one encoder call and each MISE level of all
        objects decoded together (:func:`~occnet_ros.reconstruction.batched.probabilities_many`), else one
        object after the other. The results are the same up to float rounding either way; ``timings`` of a
        batched object hold its share of the shared calls. ``return_errors``: a request whose points define
        no canonical frame (:class:`~occnet_ros.reconstruction.normalization.NormalizationError`) gets that error in
        its place instead of raising it."""
        batched = self.batch_objects() if batched is None else batched
        plans = []
        for r in requests:
            try:
                plans.append(self._plan(**r))
            except NormalizationError as e:  # no canonical frame for these points
                if not return_errors:
                    raise
                plans.append(e)
        todo = [p for p in plans if isinstance(p, _Plan)]
        if batched and len(todo) > 1:
            t0 = time.perf_counter()
            codes = self._encode_many([(f, p.sub) for p in todo for f in p.frames])
            share = (time.perf_counter() - t0) / len(todo)
            at = 0
            for p in todo:
                p.occupancy = OccupancyField(self.model, codes[at:at + len(p.frames)], self.batch_size, p.known_empty,
                                             p.calibration, self.query_graph)
                at += len(p.frames)
                p.timings["encode"] = share
            meshing = [p for p in todo if p.extract_mesh]
            c = self.config
            grids = [MiseGrid(c.resolution0, c.upsampling_steps, p.threshold, BOX_HALF) for p in meshing]
            fields = [p.occupancy for p in meshing]
            t1 = time.perf_counter()
            results = mise_values_many(lambda pts: probabilities_many(fields, pts, self.pool), grids)
            wall = time.perf_counter() - t1
            total = max(1, sum(stats["n_evals"] for _, stats in results))
            for p, (values, stats) in zip(meshing, results):
                stats["time_total_s"] = wall * stats["n_evals"] / total  # its share: the objects' levels overlap
                p.values, p.stats = values, stats
        else:
            for p in todo:
                t0 = time.perf_counter()
                p.occupancy = OccupancyField(self.model, [self._encode_in(f, p.sub) for f in p.frames],
                                             self.batch_size, p.known_empty, p.calibration, self.query_graph)
                p.timings["encode"] = time.perf_counter() - t0
                if p.extract_mesh:
                    c = self.config
                    n_dense = (c.resolution0 * 2 ** c.upsampling_steps + 1) ** 3
                    # every level's new corners in one call; the field chunks them for the device
                    # the grid's corners read the feature planes from a table made once (OccupancyField.on_grid)
                    occ = p.occupancy.on_grid(c.resolution0 * 2 ** c.upsampling_steps, BOX_HALF)
                    p.values, p.stats = mise_values(lambda pts: occ.probabilities(pts, self.pool), c.resolution0,
                                                    c.upsampling_steps, p.threshold, BOX_HALF, batch_size=n_dense)
        return [self._finish(p) if isinstance(p, _Plan) else p for p in plans]

    def _plan(self, points: np.ndarray, up=(0.0, -1.0, 0.0), viewpoint=(0.0, 0.0, 0.0), extract_mesh: bool = True,
              previous: ReconstructedObject | None = None, point_viewpoints: np.ndarray | None = None,
              known_empty: KnownEmpty | None = None, n_views: int = 1, simplify: MeshSimplify | None = None
              ) -> "_Plan | ReconstructedObject":
        """Checks, canonical frames and input subsamples of one request (:meth:`reconstruct`), or the
        previous reconstruction when it can be reused."""
        t0 = time.perf_counter()
        threshold = self.threshold_for(n_views)
        p = np.asarray(points, dtype=np.float64)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must be (N, 3), got {p.shape}")
        finite = np.all(np.isfinite(p), axis=1)
        p = p[finite]
        if point_viewpoints is not None:
            vps = np.asarray(point_viewpoints, dtype=np.float64)
            if vps.shape != finite.shape + (3,):
                raise ValueError(f"point_viewpoints must be (N, 3) like points, got {vps.shape}")
            vps = vps[finite]
        else:
            vps = np.asarray(viewpoint, dtype=np.float64).reshape(1, 3)
        frames = [canonical_frame_from_observation(p, up, viewpoint)]
        frames += [canonical_frame_from_observation(p, up, vp) for vp in self._other_viewpoints(viewpoint, vps)]
        calibration = self.calibration_for(n_views)
        if can_reuse(previous, self.model, frames, threshold, self.config.reuse_tolerance, extract_mesh) \
                and previous.occupancy.calibration == calibration:
            dt = time.perf_counter() - t0
            return replace(previous, timings={"normalize": dt, "encode": 0.0, "mise": 0.0, "marching_cubes": 0.0,
                                              "simplify": 0.0, "anchor": 0.0, "total": dt},
                           reused=True, n_input_points=int(p.shape[0]))
        sub = self._subsample(p)
        timings = {"normalize": time.perf_counter() - t0, "encode": 0.0, "mise": 0.0, "marching_cubes": 0.0,
                   "simplify": 0.0, "anchor": 0.0}
        return _Plan(p, vps, frames, sub, threshold, known_empty, extract_mesh, simplify, timings, calibration)

    def _finish(self, plan: "_Plan") -> ReconstructedObject:
        """Marching cubes, simplification and anchoring of a planned object whose field (and MISE grid) exist."""
        timings, stats = plan.timings, plan.stats
        frame = plan.frames[0]
        mesh, grid, n_anchored, note = None, None, 0, ""
        if plan.extract_mesh:
            c = self.config
            t3 = time.perf_counter()
            from_grid = getattr(plan.simplify, "from_grid", None)
            slabs = from_grid(plan.values, plan.threshold, BOX_HALF) if from_grid is not None else None
            if slabs is not None:  # meshed and reduced in slabs: marching cubes is inside "simplify"
                verts, faces, note, n_mc = slabs
                t4 = t3
                stats["faces_marching_cubes"] = int(n_mc)
            else:
                mesh_whole = getattr(plan.simplify, "mesh_whole", None)
                whole = mesh_whole(plan.values, plan.threshold, BOX_HALF) if mesh_whole is not None else None
                verts, faces = whole if whole is not None else mesh_from_values(plan.values, plan.threshold, BOX_HALF)
                t4 = time.perf_counter()
                stats["faces_marching_cubes"] = int(len(faces))
                if plan.simplify is not None:
                    verts, faces, note = plan.simplify(verts, faces)
            stats["marching_cubes_in_slabs"] = slabs is not None
            t5 = time.perf_counter()
            timings["simplify"] = t5 - t4
            if c.anchor.enabled:
                anchored = anchor_to_observation(verts, faces, frame.to_canonical(plan.points),
                                                 frame.to_canonical(plan.viewpoints), c.anchor)
                verts, n_anchored = anchored.vertices, anchored.n_moved
            timings["anchor"] = time.perf_counter() - t5
            mesh = trimesh.Trimesh(frame.from_canonical(verts), faces, process=False)
            stats["time_marching_cubes_s"] = t4 - t3
            timings["mise"] = stats["time_total_s"]
            timings["marching_cubes"] = stats["time_marching_cubes_s"]
            if c.keep_grid:
                grid = OccupancyGrid(plan.values, BOX_HALF)
        timings["total"] = sum(timings.values())
        return ReconstructedObject(mesh=mesh, frame=frame, occupancy=plan.occupancy,
                                   n_input_points=int(plan.points.shape[0]), timings=timings, mise_stats=stats,
                                   threshold=plan.threshold, n_anchored=n_anchored, grid=grid,
                                   simplified_by=plan.simplify if plan.extract_mesh else None, mesh_note=note)


@dataclass
class _Plan:
    """One object between :meth:`Reconstructor._plan` and :meth:`Reconstructor._finish`: finite ``points`` (N, 3)
    and their ``viewpoints`` ((N, 3) or (1, 3)), source frame; its canonical ``frames`` (own first); input
    subsamples ``sub`` (K, n, 3); then its ``occupancy`` field and MISE ``values``/``stats``."""

    points: np.ndarray
    viewpoints: np.ndarray
    frames: list[CanonicalFrame]
    sub: np.ndarray
    threshold: float
    known_empty: KnownEmpty | None
    extract_mesh: bool
    simplify: MeshSimplify | None
    timings: dict[str, float]
    calibration: ProbabilityCalibration = IDENTITY
    occupancy: OccupancyField | None = None
    values: np.ndarray | None = None
    stats: dict = field(default_factory=dict)
