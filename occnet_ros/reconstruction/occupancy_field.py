"""The network's occupancy field of one observation: the model and the observation's prepared codes, so
that any point can be answered without encoding again (pure Python, no ROS).

An :class:`OccupancyField` holds the codes of one observation in one or more canonical frames
(:class:`FrameCode`; the first is the object's own frame, the others those of the other cameras of a
cloud fused from several views) and the observation's known-empty test. A probability is the mean over
the frames whose padded box holds the point; points the sensor shows empty get 0 without reaching the
network. Queries (:meth:`OccupancyField.query_canonical`) answer the *calibrated* probability
(:class:`~occnet_ros.network.probability_calibration.ProbabilityCalibration` of the checkpoint, for the cloud's
number of views); :meth:`OccupancyField.probabilities` stays the network's own, which the mesh is extracted
from at the checkpoint's threshold, so a calibration never changes a mesh. :meth:`OccupancyField.sources`
says, per point, whether the answer rests on the observation or on the network alone
(:data:`SOURCE_INFERRED`, :data:`SOURCE_OBSERVED_EMPTY`, :data:`SOURCE_OBSERVED_SURFACE`). :class:`~occnet_ros.reconstruction.reconstructor.Reconstructor` makes fields;
:class:`~occnet_ros.reconstruction.reconstructed_object.ReconstructedObject` carries one.

Queries decode in float32 whatever the reconstruction's ``precision``. Where the decoder runs in a reduced
precision (on a GPU; a CPU's decoder is float32, :mod:`~occnet_ros.reconstruction.precision`), that serves the large
batched decodes of MISE, while a query's points are split over the objects whose boxes hold them, a few hundred
per object, where autocast's per-call casts cost more than the narrower arithmetic saves (600 points of one
object on a 2-core AMD EPYC with AVX512-BF16: 0.62 ms in float32, 0.96 ms in bfloat16), and planners get the
network's float32 answer. A :class:`FrameCode` then carries a float32 preparation beside the reduced one.
Where the field has a :class:`~occnet_ros.network.query_graph.LazyQueryGraph` (the reconstructor gives each field its
network's), queries decode through that one-call graph, so a query waits for the GIL a few times per object instead
of some 40 times while other threads of the process run Python (:mod:`occnet_ros.network.query_graph`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from occnet_ros.geometry import all_columns
from occnet_ros.network.model import OccupancyNetwork, PreparedCode, PreparedPlanes
from occnet_ros.network.plane_lattice import MAX_LATTICE_RESOLUTION, PlaneLattice
from occnet_ros.network.probability_calibration import IDENTITY, ProbabilityCalibration
from occnet_ros.network.query_graph import LazyQueryGraph
from occnet_ros.reconstruction.compute_pool import ComputePool, split_range
from occnet_ros.reconstruction.known_empty import KnownEmpty
from occnet_ros.reconstruction.normalization import BOX_HALF, CanonicalFrame

__all__ = ["OccupancyField", "FrameCode", "MIRROR", "AUTO_BATCH", "inside_box", "SOURCE_NONE", "SOURCE_INFERRED",
           "SOURCE_OBSERVED_EMPTY", "SOURCE_OBSERVED_SURFACE"]

SOURCE_NONE = 0
"""No object covers the point (outside every queried object's padded box): probability 0, nothing known."""
SOURCE_INFERRED = 1
"""The probability is the network's alone: the sensor neither showed the point empty nor measured a surface at
it (hidden behind the object or another surface, outside every view, or no depth image to test against)."""
SOURCE_OBSERVED_EMPTY = 2
"""The sensor shows the point empty (below the support plane, or in front of a measured depth by more than the
noise margin; :mod:`occnet_ros.reconstruction.known_empty`): probability 0 without the network."""
SOURCE_OBSERVED_SURFACE = 3
"""A depth pixel measured a surface at the point, within ``known_empty.n_sigma`` sensor sigmas along its ray
(:meth:`~occnet_ros.reconstruction.known_empty.KnownEmpty.on_depth_surface`); the probability is the network's,
which near an observed surface is the most reliable part of its answer. The surface may be another one inside
the object's padded box (the support plane under it, a neighbour touching it)."""

MIRROR = torch.tensor([1.0, -1.0, 1.0])
"""Multiplier of canonical coordinates that mirrors them across the x-z plane (see ``mirror_average``)."""
AUTO_BATCH = {"cpu": 4096, "cuda": 65536}
"""Points per network call when ``query_batch_size`` is 0: on a CPU, chunks whose activations
(3 x 4096 x hidden 64 x 4 bytes = 3 MB) stay in the L2 caches; on a GPU, large launches."""


def inside_box(points: np.ndarray) -> np.ndarray:
    """points (M, 3) canonical -> (M,) bool, inside the padded box ``[-BOX_HALF, BOX_HALF]^3`` (with a
    float32 rounding margin); False for NaN."""
    with np.errstate(invalid="ignore"):
        return all_columns(np.abs(points) <= BOX_HALF * (1.0 + 1e-5))


@dataclass(frozen=True)
class FrameCode:
    """The observation encoded in one canonical frame.

    ``frame``: source <-> canonical transform of that frame; ``code``: (1, *model.code_shape) on the
    model's device; ``prepared``: the decoder's precomputed form of ``code``
    (:meth:`~occnet_ros.network.model.OccupancyNetwork.prepare`). ``mirror_code`` / ``mirror_prepared``:
    only for a global-code network with mirror averaging, the code of the mirrored inputs, decoded beside
    ``code`` (the probability is then the sigmoid of the mean of the two logits, the mirrored one taken
    at the mirrored point); None otherwise (a feature-plane network's ``code`` already holds the mean with
    the mirrored planes). ``query_prepared`` / ``query_mirror_prepared``: the same codes prepared in float32
    for queries (module docstring) where ``prepared`` is in a reduced precision; None where it is float32."""

    frame: CanonicalFrame
    code: torch.Tensor
    prepared: PreparedCode | PreparedPlanes
    mirror_code: torch.Tensor | None = None
    mirror_prepared: PreparedCode | PreparedPlanes | None = None
    query_prepared: PreparedCode | PreparedPlanes | None = None
    query_mirror_prepared: PreparedCode | PreparedPlanes | None = None

    def decoding(self, float32: bool = False) -> tuple[PreparedCode | PreparedPlanes, PreparedCode | PreparedPlanes | None]:
        """(prepared, mirror_prepared) to decode with: the reconstruction's precision, or (``float32``) the
        float32 preparation where there is one."""
        if float32 and self.query_prepared is not None:
            return self.query_prepared, self.query_mirror_prepared
        return self.prepared, self.mirror_prepared


class OccupancyField:
    """Occupancy probabilities of one observation from its cached codes.

    model: the network (eval mode, on the codes' device); codes: one :class:`FrameCode` per canonical
    frame, the object's own first; batch_size: points per network call; known_empty: the observation's
    empty-space test (source frame) or None; calibration: the probability calibration of answered
    queries (None = the identity; the checkpoint's for this cloud's number of views,
    :meth:`~occnet_ros.network.checkpoint.CheckpointMeta.calibration_for`); query_graph: the network's one-call
    decoder for queries (None = the eager decoder; module docstring). Read-only after construction, so several
    threads may query it at once."""

    def __init__(self, model: OccupancyNetwork, codes: list[FrameCode] | tuple[FrameCode, ...], batch_size: int,
                 known_empty: KnownEmpty | None = None, calibration: ProbabilityCalibration | None = None,
                 query_graph: LazyQueryGraph | None = None):
        if not codes:
            raise ValueError("an occupancy field needs the code of at least one frame")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.codes = tuple(codes)
        self.batch_size = int(batch_size)
        self.known_empty = known_empty if known_empty is not None and known_empty.active else None
        if calibration is not None and not isinstance(calibration, ProbabilityCalibration):
            raise TypeError(f"calibration must be a ProbabilityCalibration or None, got {type(calibration).__name__}")
        self.calibration = calibration if calibration is not None else IDENTITY
        if query_graph is not None and query_graph.model is not model:
            raise ValueError("query_graph belongs to another network")
        self.query_graph = query_graph
        self.lattice: PlaneLattice | None = None
        """The own frame's planes at the corners of a grid (:meth:`on_grid`); None = sample every point."""

    def __getstate__(self) -> dict:
        """Pickled, a field carries its codes, known-empty test and calibration, not the network (nor the query
        graph or a grid table): the process that loads it gives it its own copy of the same network with
        :meth:`attach` before asking it anything (the node's reconstruction process sends its objects this way).
        Tensors are pickled by value (plain :mod:`pickle`)."""
        state = dict(self.__dict__)
        state.update(model=None, query_graph=None, lattice=None)
        return state

    def attach(self, model: OccupancyNetwork, query_graph: LazyQueryGraph | None = None) -> None:
        """Give an unpickled field (``model`` None) the network it was encoded with (a copy of the same weights, on
        the codes' device) and that network's one-call query decoder. ValueError for a ``query_graph`` of another
        network."""
        if query_graph is not None and query_graph.model is not model:
            raise ValueError("query_graph belongs to another network")
        self.model = model
        self.query_graph = query_graph

    def calibrate(self, probabilities: np.ndarray) -> np.ndarray:
        """(M,) network probabilities (of :meth:`probabilities`, or a grid interpolating them) -> (M,) float32
        calibrated probabilities (:attr:`calibration`; 0 stays 0)."""
        return self.calibration.apply(probabilities)

    def calibrated_threshold(self, threshold: float) -> float:
        """A surface threshold of the network's probabilities -> the same surface's calibrated level."""
        return self.calibration.threshold(threshold)

    @property
    def frame(self) -> CanonicalFrame:
        """The object's own canonical frame (the one :meth:`probabilities` takes points in)."""
        return self.codes[0].frame

    def on_grid(self, resolution: int, box_half: float = BOX_HALF) -> "OccupancyField":
        """This field for evaluating the corners of the ``resolution`` grid over ``[-box_half, box_half]^3``
        (canonical, MISE's grid): the same answers bit for bit, with its own frame's feature planes sampled once at
        the grid's corner positions (:class:`~occnet_ros.network.plane_lattice.PlaneLattice`), so that a set of
        corners skips the per-point plane sampling (:meth:`network_probabilities`). That applies to a feature-plane
        network with the fused float32 decoder on a CPU (on a GPU the sampling is cheap) and a grid of at most
        :data:`~occnet_ros.network.plane_lattice.MAX_LATTICE_RESOLUTION` cells per axis; otherwise -> ``self``. The
        returned field shares everything else with this one and holds the table (1.6 MB at 64^3) while it lives;
        queries stay on this one."""
        prep = self.codes[0].prepared
        if (self.lattice is not None or not isinstance(prep, PreparedPlanes) or prep.fc_c_weight is None
                or prep.dtype != torch.float32 or prep.code.shape[0] != 1 or prep.code.device.type != "cpu"
                or self.codes[0].mirror_prepared is not None or not 1 <= resolution <= MAX_LATTICE_RESOLUTION):
            return self
        field = OccupancyField(self.model, self.codes, self.batch_size, self.known_empty, self.calibration,
                               self.query_graph)
        field.lattice = PlaneLattice(prep.code, int(resolution), box_half)
        return field

    def probabilities(self, points: np.ndarray, pool: ComputePool | None = None, float32: bool = False) -> np.ndarray:
        """points (M, 3) canonical (of :attr:`frame`), no box test -> (M,) float32 probabilities: 0 where
        the known-empty test marks the point (tested first, so those points never reach the network), else
        :meth:`network_probabilities`. pool: threads that decode parts of the points at once (None = the
        calling thread); float32: decode in float32 whatever the reconstruction's precision (queries)."""
        p = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
        if self.known_empty is None:
            return self.network_probabilities(p, pool, float32)
        out = np.zeros(p.shape[0], dtype=np.float32)
        keep = ~self._known_empty_mask(p, pool)
        if keep.any():
            out[keep] = self.network_probabilities(p[keep], pool, float32)
        return out

    def _known_empty_mask(self, p: np.ndarray, pool: ComputePool | None) -> np.ndarray:
        """(M,) bool: the known-empty test of canonical points (M, 3); on a CPU ``pool`` of several threads each tests
        one contiguous part (numpy releases the GIL in the heavy steps: 44 -> 20 ms for 350k points on 2 cores)."""
        test = lambda q: self.known_empty.mask(self.frame.from_canonical(q))  # noqa: E731
        if pool is None or pool.threads < 2 or p.shape[0] < 2 * self.batch_size:
            return test(p)
        return np.concatenate(pool.run([lambda a=a, b=b: test(p[a:b]) for a, b in split_range(p.shape[0], pool.threads)]))

    def network_probabilities(self, points: np.ndarray, pool: ComputePool | None = None,
                              float32: bool = False) -> np.ndarray:
        """The network alone: points (M, 3) float32 canonical -> (M,) float32, the mean probability over
        the frames whose padded box holds the point (the object's own frame always counts). Chunks of
        :attr:`batch_size` points; no per-point Python. pool, float32: as in :meth:`probabilities`."""
        p = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
        first = self.codes[0]
        corners = self.lattice.corner_index(p) if self.lattice is not None and not float32 and p.shape[0] else None
        if corners is not None:  # grid corners: plane features from the table (on_grid)
            out = self._decode(p, first.prepared, None, pool, rows=self.lattice.plane_rows(corners))
        else:
            out = self._decode(p, *first.decoding(float32), pool, graph=float32)
        if len(self.codes) == 1 or p.shape[0] == 0:
            return out
        total, count = out.astype(np.float64), np.ones(p.shape[0])
        source = first.frame.from_canonical(p)
        for fc in self.codes[1:]:
            q = fc.frame.to_canonical(source).astype(np.float32)
            inside = np.flatnonzero(all_columns(np.abs(q) <= BOX_HALF))
            if inside.size:
                total[inside] += self._decode(q[inside], *fc.decoding(float32), pool, graph=float32)
                count[inside] += 1.0
        return (total / count).astype(np.float32)

    def _decode(self, p: np.ndarray, prepared, mirror, pool: ComputePool | None = None, graph: bool = False,
                rows: torch.Tensor | None = None) -> np.ndarray:
        """(M, 3) float32 canonical points of the frame ``prepared`` belongs to -> (M,) float32
        probabilities of that code alone. On a GPU: one transfer each way per call (no synchronisation
        per chunk). On a CPU with a ``pool`` of several threads: each thread decodes one contiguous part,
        in the same chunks of :attr:`batch_size` points as the calling thread would. ``graph``: through
        :attr:`query_graph` where there is one and it takes ``prepared`` (queries), in the calling thread. ``rows``:
        (3, M) the points' rows in :attr:`lattice` (:meth:`~occnet_ros.network.plane_lattice.PlaneLattice.plane_rows`):
        their plane features come from there."""
        if self.model is None:
            raise RuntimeError("this occupancy field was unpickled without its network: attach() it first")
        one_call = self.query_graph.get() if graph and self.query_graph is not None and mirror is None else None
        if one_call is not None and one_call.usable(prepared):
            out = np.empty(p.shape[0], dtype=np.float32)
            src = torch.from_numpy(p)
            for s in range(0, p.shape[0], self.batch_size):
                out[s:s + self.batch_size] = one_call(src[s:s + self.batch_size].unsqueeze(0), prepared)[0].numpy()
            return out
        dev = self.codes[0].code.device
        if pool is not None and pool.threads > 1 and dev.type == "cpu" and p.shape[0] > self.batch_size:
            out = np.empty(p.shape[0], dtype=np.float32)
            pool.run([lambda a=a, b=b: self._decode_into(p[a:b], prepared, mirror, out[a:b],
                                                         None if rows is None else rows[:, a:b])
                      for a, b in split_range(p.shape[0], pool.threads, self.batch_size)])
            return out
        return self._decode_into(p, prepared, mirror, np.empty(p.shape[0], dtype=np.float32), rows)

    def _decode_into(self, p: np.ndarray, prepared, mirror, out: np.ndarray, rows: torch.Tensor | None = None
                     ) -> np.ndarray:
        """:meth:`_decode` of ``p`` in the calling thread, written into ``out`` (M,) float32 -> ``out``."""
        dev = self.codes[0].code.device
        bs = self.batch_size
        with torch.inference_mode():
            src, dst = torch.from_numpy(p), torch.from_numpy(out)
            if dev.type != "cpu":
                src, dst = src.to(dev), torch.empty(p.shape[0], dtype=torch.float32, device=dev)
            flip = MIRROR.to(dev)
            for s in range(0, p.shape[0], bs):
                q = src[s:s + bs].unsqueeze(0)
                if rows is not None:
                    logits = self.model.decode_sampled(q, self.lattice.features(rows[:, s:s + bs]), prepared)[0]
                    dst[s:s + bs] = logits.sigmoid_()
                    continue
                logits = self.model.decode_prepared(q, prepared)[0]
                if mirror is not None:
                    logits = (logits + self.model.decode_prepared(q * flip, mirror)[0]) * 0.5
                dst[s:s + bs] = logits.sigmoid_()
            if dev.type != "cpu":
                out[:] = dst.cpu().numpy()
        return out

    def query_canonical(self, points: np.ndarray) -> np.ndarray:
        """points (M, 3) canonical -> (M,) float32 calibrated probabilities (:meth:`calibrate` of
        :meth:`probabilities`); 0 outside the padded box or not finite, without touching the network."""
        p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
        out = np.zeros(p.shape[0], dtype=np.float32)
        idx = np.flatnonzero(inside_box(p))
        if idx.size:
            out[idx] = self.calibrate(self.probabilities(p[idx], float32=True))
        return out

    def query_with_sources_canonical(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """points (M, 3) canonical -> (probabilities (M,) float32, sources (M,) uint8): :meth:`query_canonical` and
        :meth:`sources` of the same points in one pass, the box test, the move to the source frame and the
        known-empty test (:meth:`~occnet_ros.reconstruction.known_empty.KnownEmpty.classify`, one projection per
        depth view) made once (the two methods are the reference)."""
        p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
        probs = np.zeros(p.shape[0], dtype=np.float32)
        sources = np.zeros(p.shape[0], dtype=np.uint8)
        idx = np.flatnonzero(inside_box(p))
        if idx.size == 0:
            return probs, sources
        sources[idx] = SOURCE_INFERRED
        q = np.ascontiguousarray(p[idx])
        if self.known_empty is None:
            probs[idx] = self.calibrate(self.network_probabilities(q, float32=True))
            return probs, sources
        empty, surface = self.known_empty.classify(self.frame.from_canonical(q))
        raw = np.zeros(q.shape[0], dtype=np.float32)
        keep = ~empty
        if keep.any():
            raw[keep] = self.network_probabilities(q[keep], float32=True)
        probs[idx] = self.calibrate(raw)
        sources[idx[empty]] = SOURCE_OBSERVED_EMPTY
        sources[idx[surface]] = SOURCE_OBSERVED_SURFACE
        return probs, sources

    def sources(self, points: np.ndarray) -> np.ndarray:
        """points (M, 3) canonical -> (M,) uint8, what the answer at each point rests on:
        :data:`SOURCE_OBSERVED_EMPTY` where the known-empty test marks it (the probability is 0 there),
        else :data:`SOURCE_OBSERVED_SURFACE` where a depth view measured a surface at it within the noise
        band, else :data:`SOURCE_INFERRED`; :data:`SOURCE_NONE` outside the padded box or not finite.
        Without a known-empty test every point in the box is inferred. No network call."""
        p = np.asarray(points, dtype=np.float32).reshape(-1, 3)
        out = np.zeros(p.shape[0], dtype=np.uint8)
        idx = np.flatnonzero(inside_box(p))
        out[idx] = SOURCE_INFERRED
        if idx.size == 0 or self.known_empty is None:
            return out
        src = self.frame.from_canonical(p[idx])
        empty = self.known_empty.mask(src)
        surface = ~empty & self.known_empty.on_depth_surface(src)
        out[idx[empty]] = SOURCE_OBSERVED_EMPTY
        out[idx[surface]] = SOURCE_OBSERVED_SURFACE
        return out
