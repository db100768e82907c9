"""The GPU path: the same reconstructions and answers on CUDA as on the CPU, and the frame's objects batched there
(``reconstruction.batch_objects: auto`` turns batching on for a GPU). These tests run wherever torch sees a CUDA
device and are skipped, saying why, elsewhere; nothing in the CPU path depends on them."""
import numpy as np
import pytest
import torch

from occnet_ros.network.model import ModelConfig, OccupancyNetwork
from occnet_ros.reconstruction.reconstructor import Reconstructor, ReconstructorConfig
from fixtures_geometry import front_half_sphere, randomize_like_trained

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here (torch.cuda.is_available() is False): the GPU path "
                                       "runs on a machine with an NVIDIA GPU")

LOCAL = ModelConfig(kind="local", c_dim=8, encoder_hidden=16, encoder_blocks=2, decoder_hidden=16, decoder_blocks=2,
                    plane_resolution=8, unet_base=8, unet_levels=2)


def _pair(**overrides) -> tuple[Reconstructor, Reconstructor]:
    torch.manual_seed(11)
    net = randomize_like_trained(OccupancyNetwork(LOCAL), 11, scale=0.2).eval()
    cfg = dict(resolution0=8, upsampling_steps=2, n_input_points=128, input_subsamples=2, threshold=0.5, **overrides)
    cpu = Reconstructor(net, device="cpu", config=ReconstructorConfig(device="cpu", **cfg))
    gpu = Reconstructor(_copy(net), device="cuda", config=ReconstructorConfig(device="cuda", **cfg))  # own copy:
    # a Reconstructor moves its model to its device
    return cpu, gpu


def _copy(net):
    twin = OccupancyNetwork(LOCAL)
    twin.load_state_dict(net.state_dict())
    return twin.eval()


def test_a_reconstruction_on_cuda_matches_the_cpu():
    cpu, gpu = _pair()
    assert gpu.device.type == "cuda" and gpu.batch_objects()  # auto: batched on a GPU
    pts = front_half_sphere(700, 1, center=(0.05, 0.02, 0.8))
    a, b = cpu.reconstruct(pts), gpu.reconstruct(pts)
    torch.testing.assert_close(b.code.cpu(), a.code, rtol=1e-4, atol=1e-4)
    assert abs(len(b.mesh.faces) - len(a.mesh.faces)) <= 0.02 * len(a.mesh.faces)
    q = np.random.default_rng(0).uniform(-0.15, 0.15, (2000, 3)) + np.array([0.05, 0.02, 0.8])
    np.testing.assert_allclose(b.query(q), a.query(q), atol=1e-3)


def test_a_frame_batched_on_cuda_matches_one_after_the_other_on_the_cpu():
    cpu, gpu = _pair()
    requests = [dict(points=front_half_sphere(n, s, center=c, radius=r))
                for n, s, c, r in ((700, 1, (0.05, 0.02, 0.8), 0.1), (300, 2, (-0.2, 0.05, 0.9), 0.05),
                                   (900, 3, (0.25, -0.05, 1.0), 0.08))]
    alone = cpu.reconstruct_many(requests, batched=False)
    together = gpu.reconstruct_many(requests)  # batched: the GPU default
    for a, b in zip(alone, together):
        torch.testing.assert_close(b.code.cpu(), a.code, rtol=1e-4, atol=1e-4)
        assert abs(len(b.mesh.faces) - len(a.mesh.faces)) <= 0.02 * len(a.mesh.faces)


def test_the_benchmark_runs_the_network_on_the_gpu(tmp_path):
    """``occnet_bench --device cuda`` (``make gpu-check``), quick sizes, the in-process sections: measured numbers. Where
    ``OCCNET_BENCH_VIEWS`` names a views file (``tools/gpu_check.sh`` on a machine without open3d), the test objects
    come from it."""
    import json
    import os
    import subprocess
    import sys

    views = ["--views", os.environ["OCCNET_BENCH_VIEWS"]] if os.environ.get("OCCNET_BENCH_VIEWS") else []
    proc = subprocess.run([sys.executable, "-m", "occnet_ros.cli.bench", "--quick", "--repeats", "1", "--device", "cuda",
                           "--sections", "mise", "latency", "--out", str(tmp_path / "bench"), *views],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert res["machine"]["device"].startswith("cuda (") and res["floor"]["device"] == "cuda"
    assert res["floor"]["matmul_float32"]["gflops"] > 0 and "error" not in res["latency"]
    assert all(r["stages"]["total"]["median_s"] > 0 for r in res["latency"]["sizes"])
