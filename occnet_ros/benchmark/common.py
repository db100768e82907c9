"""Shared pieces of the benchmark: sizes (full / quick), timing by medians, the network under test and
a realistic test object (a partial view of a procedural shape from the training data's virtual camera).
"""
from __future__ import annotations

import dataclasses

import os
import pickle
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import trimesh
import yaml

from occnet_ros.reconstruction.compute_pool import usable_cores
from occnet_ros.network.checkpoint import DEFAULT_WEIGHTS, CheckpointMeta, load_checkpoint, save_checkpoint
from occnet_ros.config_io import from_dict
from occnet_ros.network.model import ModelConfig, OccupancyNetwork, cost_report

REPO = Path(__file__).resolve().parents[2]
TRAIN_CONFIG = REPO / "config" / "train" / "default.yaml"
RANDOM_WEIGHTS_NAME = "random_default_architecture.pt"


@dataclass
class BenchSizes:
    """Problem sizes. Full run: the sizes the speed targets are defined at; quick (``--quick``): tiny, for
    the smoke test.

    ``resolution0`` * 2**``upsampling_steps`` = final MISE resolution; ``cloud_sizes``: observed points
    per object (latency); ``query_sizes``: points per request; ``matmul_batch``: rows of the floor
    matmul; ``chunk_sizes``: decoder chunk sizes tried; ``iou_points``: points of the mesh IoU;
    ``node_seconds``: how long frames are streamed to the node; ``latency_calls``: service calls
    during reconstructions (p50/p99); ``dense_repeats``: repeats of the slow dense grid;
    ``node_mise``: (resolution0, upsampling_steps) of the node section, None = the node's shipped
    parameters (config/reconstruct.yaml, 64^3)."""

    resolution0: int = 32
    upsampling_steps: int = 2
    cloud_sizes: tuple[int, ...] = (1000, 5000, 20000)
    query_sizes: tuple[int, ...] = (1000, 10000, 100000)
    matmul_batch: int = 65536
    chunk_sizes: tuple[int, ...] = (1024, 4096, 8192, 16384, 65536)
    decoder_points: int = 262144
    iou_points: int = 100_000
    node_seconds: float = 40.0
    latency_calls: int = 500
    dense_repeats: int = 3
    node_mise: tuple[int, int] | None = None

    @property
    def resolution(self) -> int:
        return self.resolution0 * 2 ** self.upsampling_steps


QUICK_SIZES = BenchSizes(resolution0=8, upsampling_steps=2, cloud_sizes=(300, 1000), query_sizes=(1000, 5000),
                         matmul_batch=8192, chunk_sizes=(1024, 4096), decoder_points=16384,
                         iou_points=20_000, node_seconds=6.0, latency_calls=10, dense_repeats=1,
                         node_mise=(8, 2))


@dataclass
class BenchContext:
    """What every section gets: ``sizes``, ``repeats`` (medians over this many runs), ``out`` folder,
    the network (``model``, ``threshold``, ``weights`` description), ``rate_gflops`` (measured float32
    matmul rate of the decoder's size; set by the floor section), ``unet_rate_gflops`` (feature-plane networks:
    the matmul rate at the U-Net's widest layer by dtype name, float32 and bfloat16, float16 too on a GPU; set by
    the floor section), ``seed``, ``device`` (the torch device the network runs on in every section: ``cpu``, or
    ``cuda`` on a machine with an NVIDIA GPU), ``views``: the test objects the sections look at (:class:`ViewSet`)."""

    sizes: BenchSizes
    repeats: int
    out: Path
    model: OccupancyNetwork
    threshold: float
    weights: dict
    n_input_points: int
    seed: int = 0
    rate_gflops: float = float("nan")
    costs: dict = field(default_factory=dict)
    device: str = "cpu"
    unet_rate_gflops: dict = field(default_factory=dict)
    views: "ViewSet" = field(default_factory=lambda: ViewSet())

    def sync(self) -> None:
        """Wait for the device's queued work (CUDA runs asynchronously; a no-op on the CPU), so timings hold it."""
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def floor_s(self, flops: float) -> float:
        """Seconds the given FLOPs take at the measured matmul rate (the FLOPs-based floor)."""
        return float(flops / (self.rate_gflops * 1e9)) if self.rate_gflops > 0 else float("nan")

    def decoder_floor_s(self, n_queries: int) -> float:
        return self.floor_s(n_queries * self.costs["decoder_flops_per_query"])

    def encode_floor_s(self, encodings: int, unet_dtype: torch.dtype = torch.float32) -> float:
        """Seconds ``encodings`` encoder passes of ``n_input_points`` points take at the measured rates: the points'
        MLP as inference computes it (float32, at the decoder-size rate) plus the per-code work (the U-Net of a
        feature-plane network, at the rate of its widest layer in ``unet_dtype``, the precision it runs in, or in
        float32 where that precision was not measured; a global network's CBN folding at the float32 rate)."""
        points = self.floor_s(encodings * self.n_input_points * self.costs["encoder_inference_flops_per_input_point"])
        per_code = encodings * self.costs["prepare_flops_per_code"]
        rate = self.unet_rate_gflops.get(str(unet_dtype).replace("torch.", ""),
                                         self.unet_rate_gflops.get("float32", float("nan")))
        if self.model.config.kind != "local" or not rate > 0:
            return points + self.floor_s(per_code)
        return points + float(per_code / (rate * 1e9))


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[dict, object]:
    """Run ``fn`` ``warmup`` + ``repeats`` times -> ({median_s, min_s, max_s, runs}, last result)."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return summary(times), result


class GilStallMeter:
    """How long the code run inside ``with GilStallMeter() as m:`` kept another Python thread waiting.

    A helper thread sleeps ``period_s`` at a time and records how late each wake-up was; ``max_s`` is the
    longest delay: the longest stretch the GIL was held (by one C call that does not release it, e.g.
    Open3D's mesh decimation), which is also how long the node's query service would wait. On a machine
    short of cores it includes scheduling delays as well."""

    def __init__(self, period_s: float = 0.001):
        import threading

        self.period_s = period_s
        self.max_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gil_stall_meter", daemon=True)

    def _run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            time.sleep(self.period_s)
            now = time.perf_counter()
            self.max_s = max(self.max_s, now - last - self.period_s)
            last = now

    def __enter__(self) -> "GilStallMeter":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def summary(times: list[float]) -> dict:
    """Seconds -> {median_s, min_s, max_s, runs}."""
    return {"median_s": float(statistics.median(times)), "min_s": float(min(times)),
            "max_s": float(max(times)), "runs": len(times)}


def percentile(values: list[float], q: float) -> float:
    """q-th percentile (0..100), linear interpolation; NaN for no values."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def machine_info() -> dict:
    """Core counts, torch threads and versions, CPU model, load average (a busy machine skews timings)."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = usable_cores()
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu_count": os.cpu_count(), "usable_cores": usable, "cpu_model": cpu,
            "torch_threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "numpy_version": np.__version__, "cuda_available": torch.cuda.is_available(),
            "loadavg_1_5_15": [round(x, 2) for x in load]}


def default_model_config() -> ModelConfig:
    """The model section of ``config/train/default.yaml`` (the shipped architecture); ModelConfig
    defaults if the file is not there (an installed package)."""
    if TRAIN_CONFIG.is_file():
        data = yaml.safe_load(TRAIN_CONFIG.read_text()) or {}
        if isinstance(data.get("model"), dict):
            return from_dict(ModelConfig, data["model"], where=f"{TRAIN_CONFIG}:model")
    return ModelConfig()


def resolve_weights(weights: str | Path | None, out: Path, seed: int = 0) -> tuple[Path, str]:
    """The checkpoint to benchmark -> (path, kind). ``weights`` given: that file ("given", or "random"
    when it is a named test double). None: the shipped weights if present ("trained"), else a randomly
    initialised network of the default architecture written to ``out`` ("random": a stand-in, never a
    model; a random net's surface, and so MISE's work, differs from a trained one's)."""
    if weights is not None:
        path = Path(weights)
        _, meta, _ = load_checkpoint(path)
        return path, ("random" if "test_double" in meta.extra else "given")
    if DEFAULT_WEIGHTS.is_file():
        return DEFAULT_WEIGHTS, "trained"
    return write_random_weights(out / RANDOM_WEIGHTS_NAME, seed), "random"


def write_random_weights(path: Path, seed: int = 0) -> Path:
    """A TEST DOUBLE checkpoint: the default architecture with random (untrained) weights."""
    torch.manual_seed(seed)
    model = OccupancyNetwork(default_model_config())
    meta = CheckpointMeta(extra={"test_double": "random weights, untrained: benchmark stand-in for the "
                                                "shipped model (occnet_bench)"})
    return save_checkpoint(path, model, meta)


def make_context(weights: str | Path | None, out: Path, sizes: BenchSizes, repeats: int,
                 seed: int = 0, device: str = "cpu") -> BenchContext:
    """Load the network to benchmark onto ``device`` (``cpu`` or ``cuda``; the benchmark measures this machine)."""
    path, kind = resolve_weights(weights, out, seed)
    model, meta, _ = load_checkpoint(path, device=device)
    n_in = meta.extra.get("train_config", {}).get("n_input_points")
    n_in = int(n_in) if isinstance(n_in, int) else 300
    info = {"path": str(path), "kind": kind, "threshold": meta.threshold, "step": meta.step,
            "model_config": dataclasses.asdict(model.config),
            "n_input_points": n_in}
    return BenchContext(sizes=sizes, repeats=repeats, out=out, model=model, threshold=meta.threshold,
                        weights=info, n_input_points=n_in, seed=seed, costs=cost_report(model.config), device=device)


@dataclass
class TestObject:
    """A partial view: ``points`` (N, 3) float32 camera optical frame, metres; ``up`` (3,) gravity-up
    in that frame; ``family``: the procedural shape family; ``mesh``: the shape (object frame);
    ``depth_view``: the depth crop the points came from (:class:`~occnet_ros.reconstruction.known_empty.DepthView`,
    camera frame); ``plane``: the table plane fitted to its table pixels (None if none)."""

    points: np.ndarray
    up: np.ndarray
    family: str
    mesh: object
    depth_view: object = None
    plane: object = None


def realistic_object(seed: int = 0, family: str = "mug", min_points: int = 0,
                     distance: float = 0.7) -> TestObject:
    """A procedural shape (default: a mug, handle included) seen by the training data's virtual depth
    camera (640x480, RealSense-like noise) from ``distance`` metres; moved closer until the view holds
    at least ``min_points`` points. The depth crop keeps half the object's size around it (for the
    known-empty test)."""
    from occnet_ros.data.shapes import sample_shape
    from occnet_ros.data.virtual_camera import DepthNoise, ObjectScene, look_at_pose, observe_view
    from occnet_ros.geometry import PinholeCamera
    from occnet_ros.reconstruction.known_empty import DepthView
    from occnet_ros.perception.segmentation import SegmentationConfig, fit_support_plane

    rng = np.random.default_rng([seed, 5])
    shape = sample_shape(rng, family)
    mesh = shape.mesh(96)
    scene = ObjectScene(mesh)
    target = np.array([0.0, 0.0, 0.5 * float(mesh.bounds[1, 2])])
    d = distance
    while True:
        eye = target + d * np.array([-np.cos(np.radians(35)), -0.25, np.sin(np.radians(35))])
        intr = PinholeCamera()
        seen = observe_view(scene, look_at_pose(eye, target), intr, DepthNoise(), np.random.default_rng([seed, 6]),
                            context=0.5)
        pts, up = seen.points, seen.up
        if pts.shape[0] >= max(min_points, 50) or d < 0.2:
            break
        d *= 0.8
    if pts.shape[0] < 50:
        raise RuntimeError(f"the test object ({family}, seed {seed}) shows only {pts.shape[0]} points")
    plane = fit_support_plane(seen.table_points, SegmentationConfig(), np.random.default_rng([seed, 7]), up)
    view = DepthView(seen.depth, intr, seen.roi_origin)
    return TestObject(points=pts, up=up, family=family, mesh=mesh, depth_view=view, plane=plane)


class ViewSet:
    """The sections' test objects (:func:`realistic_object`), rendered once per (seed, family, min_points) and kept;
    or, loaded from a file that :meth:`save` wrote (``occnet_bench --save-views`` / ``--views``), only those: a machine
    without open3d (the ray caster of the virtual camera), such as a GPU machine given just the network's packages,
    then benchmarks the same objects as the machine that rendered them."""

    def __init__(self, views: dict | None = None, source: str = ""):
        self.views: dict[tuple[int, str, int], TestObject] = dict(views or {})
        self.source = source
        """The file the views came from ("" = rendered here)."""

    def get(self, seed: int = 0, family: str = "mug", min_points: int = 0) -> TestObject:
        """The test object (:func:`realistic_object` with these arguments). KeyError naming the file where the views
        came from one that lacks it."""
        key = (int(seed), str(family), int(min_points))
        if key not in self.views:
            if self.source:
                raise KeyError(f"{self.source} holds no view for seed {seed}, family {family}, min_points "
                               f"{min_points} (it holds {sorted(self.views)}): save the views with the same "
                               f"--seed, --quick and --sections")
            self.views[key] = realistic_object(*key)
        return self.views[key]

    def save(self, path: str | Path) -> Path:
        """Write every view so far (pickle of plain arrays, the shapes' meshes as float32 vertices and int32 faces; read
        back only by :meth:`load`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        views = {k: dataclasses.replace(v, mesh=(np.asarray(v.mesh.vertices, np.float32),
                                                 np.asarray(v.mesh.faces, np.int32)))
                 for k, v in self.views.items()}
        with open(path, "wb") as f:
            pickle.dump({"format": "occnet_bench_views", "version": 1, "views": views}, f)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ViewSet":
        """Views :meth:`save` wrote. ValueError naming the file where it is not such a file."""
        try:
            with open(path, "rb") as f:
                data = pickle.load(f)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as e:
            raise ValueError(f"views file {path}: {type(e).__name__}: {e}") from e
        if not isinstance(data, dict) or data.get("format") != "occnet_bench_views" or data.get("version") != 1:
            raise ValueError(f"views file {path}: not an occnet_bench views file "
                             f"(occnet_bench --save-views writes one)")
        views = {k: dataclasses.replace(v, mesh=trimesh.Trimesh(*v.mesh, process=False))
                 for k, v in data["views"].items()}
        return cls(views, str(path))


def resample(points: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Exactly ``n`` of ``points`` (without replacement when there are enough)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(points.shape[0], size=n, replace=points.shape[0] < n)
    return np.ascontiguousarray(points[idx])
