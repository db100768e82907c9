"""OccupancyNetwork: shapes, the folded (prepared) decoder against the plain eval decoder, and costs."""
import numpy as np
import pytest
import torch

from occnet_ros.network.model import ModelConfig, OccupancyNetwork, cost_report
from fixtures_geometry import randomize_like_trained

SMALL = ModelConfig(c_dim=32, encoder_hidden=32, encoder_blocks=2, decoder_hidden=32, decoder_blocks=2)


def _trained_like(model, seed=0):
    return randomize_like_trained(model, seed, scale=0.2)


def test_shapes_and_forward():
    torch.manual_seed(0)
    m = OccupancyNetwork(SMALL)
    pts, q = torch.randn(3, 50, 3), torch.randn(3, 70, 3)
    code = m.encode(pts)
    assert code.shape == (3, 32)
    assert m.decode(q, code).shape == (3, 70)
    assert m(pts, q).shape == (3, 70)
    with pytest.raises(ValueError):
        m.encode(torch.randn(50, 3))
    with pytest.raises(ValueError):
        m.decode(q, code[:2])


def test_encoder_is_permutation_invariant():
    m = _trained_like(OccupancyNetwork(SMALL)).eval()
    pts = torch.randn(2, 40, 3)
    perm = torch.randperm(40)
    assert torch.allclose(m.encode(pts), m.encode(pts[:, perm]), atol=1e-5)


def test_prepared_decode_equals_eval_decode():
    m = _trained_like(OccupancyNetwork(SMALL)).eval()
    pts, q = torch.randn(2, 40, 3), torch.randn(2, 500, 3)
    with torch.inference_mode():
        code = m.encode(pts)
        ref = m.decode(q, code)
        fast = m.decode_prepared(q, m.prepare(code))
    assert torch.allclose(ref, fast, rtol=1e-4, atol=1e-3)
    # one code shared by many points equals the per-object evaluation
    with torch.inference_mode():
        one = m.decode_prepared(q[1:2], m.prepare(code[1:2]))
    assert torch.allclose(one[0], ref[1], rtol=1e-4, atol=1e-3)


def test_eval_cbn_matches_torch_batchnorm_reference():
    """Eval-mode CBN = gamma(c) * BatchNorm1d_eval(x) + beta(c) (torch's BN as the slow reference)."""
    m = _trained_like(OccupancyNetwork(SMALL)).eval()
    bn = m.decoder.blocks[0].bn_0
    ref_bn = torch.nn.BatchNorm1d(32, affine=False, eps=bn.eps).eval()
    ref_bn.running_mean.copy_(bn.running_mean)
    ref_bn.running_var.copy_(bn.running_var)
    x, c = torch.randn(2, 10, 32), torch.randn(2, 32)
    ref = ref_bn(x.reshape(-1, 32)).reshape(2, 10, 32) * bn.conv_gamma(c)[:, None] + bn.conv_beta(c)[:, None]
    assert torch.allclose(bn(x, c), ref, atol=1e-5)


def test_training_cbn_uses_batch_statistics_and_updates_running_stats():
    m = OccupancyNetwork(SMALL).train()
    bn = m.decoder.bn
    x = torch.randn(4, 100, 32) * 3 + 2
    c = torch.zeros(4, 32)  # gamma = 1, beta = 0 at init
    y = bn(x, c)
    assert torch.allclose(y.reshape(-1, 32).mean(0), torch.zeros(32), atol=1e-4)
    assert torch.allclose(y.reshape(-1, 32).std(0, unbiased=False), torch.ones(32), atol=1e-3)
    assert torch.allclose(bn.running_mean, 0.1 * x.reshape(-1, 32).mean(0), atol=1e-5)
    with pytest.raises(RuntimeError):
        m.prepare(torch.zeros(1, 32))


def test_cost_report_counts_parameters_and_flops():
    cfg = ModelConfig()
    r = cost_report(cfg)
    m = OccupancyNetwork(cfg)
    assert r["params_total"] == sum(p.numel() for p in m.parameters())
    h = cfg.decoder_hidden
    # dominated by 2 hidden x hidden layers per block
    assert 2 * 2 * cfg.decoder_blocks * h * h <= r["decoder_flops_per_query"] < 1.2 * 2 * 2 * cfg.decoder_blocks * h * h
    assert r["decoder_flops_per_query"] < 1e5  # ~3e5 MISE queries at ~50 GFLOP/s in about 0.5 s
    assert r["encoder_flops_per_input_point"] > 0


def test_model_follows_device_of_parameters():
    m = OccupancyNetwork(SMALL)
    assert m.device == torch.device("cpu")
    assert np.isfinite(m(torch.randn(1, 5, 3), torch.randn(1, 5, 3)).detach().numpy()).all()
