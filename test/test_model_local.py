"""The local-feature (feature-plane) network: plane scatter and pooling against per-point loops, the
plane coordinate convention, prepared decoding, and the cost figures against torch's FLOP counter."""
import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from occnet_ros.network.model import ModelConfig, OccupancyNetwork, cost_report
from occnet_ros.network.model_local import (PLANE_AXES, PLANE_HALF, UNet2d, cell_index, local_max_pool,
                                    plane_grid, scatter_mean, unet_macs)
from fixtures_geometry import randomize_like_trained

LOCAL = ModelConfig(kind="local", c_dim=8, encoder_hidden=16, encoder_blocks=3, decoder_hidden=16,
                    decoder_blocks=2, plane_resolution=8, unet_base=8, unet_levels=2)


def _points(b, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, n, 3, generator=g) - 0.5) * 1.2  # a few points outside the box, too


def test_scatter_mean_matches_per_point_loop():
    r, c = 4, 3
    p = _points(2, 40)
    feats = torch.randn(2, 40, c, generator=torch.Generator().manual_seed(1))
    idx = cell_index(plane_grid(p), r)
    planes = scatter_mean(feats, idx, r)
    ref = np.zeros((2, 3, c, r, r))
    for b in range(2):
        for k, (a0, a1) in enumerate(PLANE_AXES):
            sums, counts = np.zeros((r, r, c)), np.zeros((r, r))
            for i in range(40):
                u = np.clip(p[b, i, a0].item() / PLANE_HALF, -1, 1)
                v = np.clip(p[b, i, a1].item() / PLANE_HALF, -1, 1)
                col = min(int((u + 1) / 2 * r), r - 1)
                row = min(int((v + 1) / 2 * r), r - 1)
                sums[row, col] += feats[b, i].numpy()
                counts[row, col] += 1
            ref[b, k] = (sums / np.maximum(counts, 1)[..., None]).transpose(2, 0, 1)
    np.testing.assert_allclose(planes.numpy(), ref, atol=1e-5)


def test_local_max_pool_matches_per_point_loop():
    r = 3
    p = _points(1, 30, seed=2)
    feats = torch.randn(1, 30, 4, generator=torch.Generator().manual_seed(3))
    idx = cell_index(plane_grid(p), r)
    out = local_max_pool(feats, idx, r)
    for i in range(30):
        ref = sum(feats[0, idx[0, k] == idx[0, k, i]].max(dim=0)[0] for k in range(3))
        assert torch.allclose(out[0, i], ref, atol=1e-6)


def test_a_cell_centre_reads_its_own_cell():
    """Scatter and bilinear sampling agree on where a cell is: sampling at a cell centre returns that
    cell's value exactly (for every plane and axis order)."""
    from occnet_ros.network.model_local import LocalDecoder

    r = 8
    planes = torch.zeros(1, 3, 1, r, r)
    centre = (np.arange(r) + 0.5) / r * 2 - 1  # grid coordinates of the cell centres
    p = torch.tensor([[[centre[5] * PLANE_HALF, centre[2] * PLANE_HALF, centre[6] * PLANE_HALF]]],
                     dtype=torch.float32)
    idx = cell_index(plane_grid(p), r)[0, :, 0]
    for k in range(3):
        planes[0, k, 0].view(-1)[idx[k]] = 10.0 ** k
    assert idx.tolist() == [2 * r + 5, 6 * r + 5, 6 * r + 2]
    assert LocalDecoder.sample(p, planes).item() == pytest.approx(111.0)


def test_shapes_prepared_decode_and_broadcast():
    m = randomize_like_trained(OccupancyNetwork(LOCAL), 0, scale=0.2).eval()
    pts, q = _points(2, 60), _points(2, 300, seed=5)
    with torch.inference_mode():
        code = m.encode(pts)
        assert code.shape == (2,) + m.code_shape == (2, 3, 8, 8, 8)
        ref = m.decode(q, code)
        assert torch.allclose(m.decode_prepared(q, m.prepare(code)), ref, atol=1e-5)
        one = m.decode_prepared(q, m.prepare(code[1:2]))  # one object's planes broadcast over 2 batches
        assert torch.allclose(one[1], ref[1], atol=1e-5)
        perm = torch.randperm(60, generator=torch.Generator().manual_seed(0))
        assert torch.allclose(m.encode(pts[:, perm]), code, atol=1e-5)
    with pytest.raises(ValueError):
        m.decode(q, code[:, :2])
    with pytest.raises(ValueError):
        m.decode_prepared(_points(3, 5), m.prepare(code))


def test_local_pool_option_changes_only_the_pooling():
    """Same weights, per-cell pooling on and off: same parameters, different planes."""
    glob = randomize_like_trained(OccupancyNetwork(LOCAL), 4, scale=0.2).eval()
    loc = OccupancyNetwork(ModelConfig(**{**LOCAL.__dict__, "local_pool": True})).eval()
    loc.load_state_dict(glob.state_dict())
    pts = _points(1, 200, seed=4)
    with torch.inference_mode():
        a, b = glob.encode(pts), loc.encode(pts)
    assert loc.encoder.local_pool and not glob.encoder.local_pool
    assert a.shape == b.shape and not torch.allclose(a, b, atol=1e-4)


@pytest.mark.parametrize("levels,res", [(1, 8), (2, 8), (3, 16)])
def test_unet_macs_match_torch_flop_counter(levels, res):
    net = UNet2d(6, 4, levels)
    with FlopCounterMode(display=False) as fc:
        net(torch.zeros(1, 6, res, res))
    assert 2 * unet_macs(6, 4, levels, res) == fc.get_total_flops()


@pytest.mark.parametrize("global_context", [False, True])
def test_cost_report_local_matches_torch_flop_counter(global_context):
    """cost_report against torch's counter (matmuls and convolutions; it does not count bilinear
    sampling, which cost_report adds as 4 taps per channel and plane)."""
    cfg = dataclasses.replace(LOCAL, global_context=global_context)
    rep = cost_report(cfg)
    m = OccupancyNetwork(cfg)
    assert rep["params_total"] == sum(p.numel() for p in m.parameters())
    n, q = 50, 70
    with FlopCounterMode(display=False) as fc:
        code = m.encode(_points(1, n))
    assert fc.get_total_flops() == n * rep["encoder_flops_per_input_point"] + rep["prepare_flops_per_code"]
    with FlopCounterMode(display=False) as fc:
        m.decode(_points(1, q, seed=1), code)
    taps = 2 * 3 * 4 * LOCAL.c_dim
    assert fc.get_total_flops() == q * (rep["decoder_flops_per_query"] - taps)


@pytest.mark.parametrize("global_context", [False, True])
def test_cost_report_inference_encoder_flops_match_torch_flop_counter(global_context):
    """The encoder at inference (eval, no autograd: encoder_inference.point_planes) does the per-point work
    cost_report says, plus the pooled half of each later block's maps once per input (2 maps of hidden x hidden)."""
    cfg = dataclasses.replace(LOCAL, global_context=global_context)
    rep = cost_report(cfg)
    m = OccupancyNetwork(cfg).eval()
    e = cfg.encoder_hidden
    per_input = 2 * (cfg.encoder_blocks - 1) * 2 * e * e
    # torch's counter skips in-place addmm_, which each block's second layer is (hidden x hidden per point)
    uncounted_per_point = 2 * cfg.encoder_blocks * e * e
    assert rep["encoder_inference_flops_per_input_point"] < rep["encoder_flops_per_input_point"]
    for n in (50, 90):
        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            m.encode(_points(1, n))
        assert fc.get_total_flops() == (n * (rep["encoder_inference_flops_per_input_point"] - uncounted_per_point)
                                        + per_input + rep["prepare_flops_per_code"])
    pooled = dataclasses.replace(cfg, local_pool=True)
    assert (cost_report(pooled)["encoder_inference_flops_per_input_point"]
            == cost_report(pooled)["encoder_flops_per_input_point"])


def test_global_context_starts_at_zero_and_reaches_empty_cells():
    """Zero-initialised, the global-context model equals the plain one with the same weights; once
    its map is non-zero, plane cells that no input point falls in differ from zero."""
    torch.manual_seed(0)
    plain = OccupancyNetwork(LOCAL).eval()
    ctx = OccupancyNetwork(dataclasses.replace(LOCAL, global_context=True)).eval()
    missing, unexpected = ctx.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["encoder.fc_global.bias", "encoder.fc_global.weight"] and not unexpected
    pts = _points(2, 200) * 0.3  # a small blob: most cells stay empty
    with torch.inference_mode():
        torch.testing.assert_close(ctx.encode(pts), plain.encode(pts))
        torch.nn.init.normal_(ctx.encoder.fc_global.weight)
        pre_unet = {}
        ctx.encoder.unet.register_forward_hook(lambda mod, args, out: pre_unet.setdefault("x", args[0]))
        ctx.encode(pts)
    index = cell_index(plane_grid(pts), LOCAL.plane_resolution)  # (B, 3, N)
    x = pre_unet["x"].reshape(2, 3, LOCAL.c_dim, -1)
    empty = torch.ones(x.shape[-1], dtype=torch.bool)
    empty[index[0, 0]] = False
    assert empty.sum() > 0 and x[0, 0][:, empty].abs().sum() > 0


def test_bad_local_config_is_rejected():
    with pytest.raises(ValueError, match="plane_resolution"):
        ModelConfig(kind="local", plane_resolution=10, unet_levels=3).validate()
    with pytest.raises(ValueError, match="kind"):
        ModelConfig(kind="voxels").validate()
    with pytest.raises(ValueError, match="global_context"):
        ModelConfig(kind="global", global_context=True).validate()


def test_reduced_precision_decode_stays_close():
    m = randomize_like_trained(OccupancyNetwork(LOCAL), 1, scale=0.2).eval()
    with torch.inference_mode():
        code = m.encode(_points(1, 80))
        q = _points(1, 2000, seed=9)
        ref = torch.sigmoid(m.decode_prepared(q, m.prepare(code)))
        low = torch.sigmoid(m.decode_prepared(q, m.prepare(code, dtype=torch.bfloat16)))
    assert low.dtype == torch.float32 and low.shape == ref.shape
    assert 0 < (low - ref).abs().max() < 0.05  # bfloat16 really ran, and stays close


def test_reduced_precision_unet_keeps_float32_codes_close_to_the_float32_encoder():
    m = randomize_like_trained(OccupancyNetwork(LOCAL), 1, scale=0.2).eval()
    x = _points(3, 80)
    with torch.inference_mode():
        ref = m.encode(x)
        assert torch.equal(m.encode(x, dtype=torch.float32), ref)  # float32 asked: the same computation
        low = m.encode(x, dtype=torch.bfloat16)
        # the U-Net's input (points' MLP and pooling) is float32 either way: the same planes before the U-Net
        seen = {}
        hook = m.encoder.unet.register_forward_hook(lambda mod, args, out: seen.setdefault(len(seen), args[0]))
        m.encode(x)
        m.encode(x, dtype=torch.bfloat16)
        hook.remove()
    assert seen[0].dtype == seen[1].dtype == torch.float32 and torch.equal(seen[0], seen[1])
    assert low.dtype == torch.float32 and low.shape == ref.shape
    err = (low - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.02  # bfloat16 really ran (8 mantissa bits), and stays within 2 % of the planes' range


def test_mirror_planes_samples_at_the_mirrored_point_what_the_planes_give_at_the_point():
    from occnet_ros.network.model_local import LocalDecoder, mirror_planes

    g = torch.Generator().manual_seed(0)
    planes = torch.randn(2, 3, 5, 8, 8, generator=g)
    p = (torch.rand(2, 400, 3, generator=g) - 0.5) * 1.1
    flip = torch.tensor([1.0, -1.0, 1.0])
    mirrored = mirror_planes(planes)
    assert torch.allclose(LocalDecoder.sample(p * flip, mirrored), LocalDecoder.sample(p, planes), atol=1e-6)
    assert torch.equal(mirrored[:, 1], planes[:, 1]) and torch.equal(mirror_planes(mirrored), planes)
    assert not torch.allclose(LocalDecoder.sample(p, mirrored), LocalDecoder.sample(p, planes), atol=1e-3)


def test_fused_prepared_decode_equals_the_reference_forward():
    """The inference form (the blocks' feature maps stacked into one matrix product) gives the logits of the
    plain forward pass, for one code broadcast over a batch and for one code per batch row."""
    torch.manual_seed(3)
    net = OccupancyNetwork(dataclasses.replace(LOCAL, decoder_blocks=3)).eval()
    randomize_like_trained(net)
    with torch.inference_mode():
        code = net.encode(_points(2, 64))
        q = _points(2, 500, seed=5)
        fused, plain = net.prepare(code), net.prepare(code, fuse=False)
        assert fused.fc_c_weight is not None and plain.fc_c_weight is None
        ref = net.decoder.forward(q, code)
        torch.testing.assert_close(net.decode_prepared(q, fused), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(net.decode_prepared(q, plain), ref, rtol=0, atol=0)
        one = net.prepare(code[:1])
        ref_one = net.decoder.forward(q.reshape(1, -1, 3), code[:1]).reshape(2, 500)
        torch.testing.assert_close(net.decode_prepared(q, one).reshape(2, 500), ref_one, rtol=0,
                                   atol=1e-5 * float(ref_one.abs().max()))  # float rounding, at the logits' scale


def test_float32_mlp_equals_the_module_by_module_mlp():
    """The float32 inference MLP (biases folded, residual sums in place) gives the module-by-module MLP's logits up
    to float rounding, for one and several batch rows, one point and none, and leaves its inputs untouched."""
    torch.manual_seed(6)
    net = OccupancyNetwork(dataclasses.replace(LOCAL, decoder_blocks=4)).eval()
    randomize_like_trained(net)
    dec = net.decoder
    with torch.inference_mode():
        for b, m in ((1, 700), (3, 50), (1, 1), (2, 0)):
            code = net.encode(_points(b, 64, seed=b))
            prep = net.prepare(code)
            q = _points(b, m, seed=m) if m else torch.zeros(b, 0, 3)
            c = dec.sample(q, code)
            q0, c0 = q.clone(), c.clone()
            fast, ref = dec._mlp_float32(q, c, prep), dec._mlp_modules(q, c, prep)
            assert fast.shape == ref.shape == (b, m)
            scale = float(ref.abs().max()) if m else 1.0
            torch.testing.assert_close(fast, ref, rtol=0, atol=2e-6 * scale + 1e-6)
            assert torch.equal(q, q0) and torch.equal(c, c0)
            assert torch.equal(dec.forward_sampled(q, c, prep), fast)  # float32 outside autocast: the fast form
    with torch.enable_grad():  # with autograd on, the module-by-module form (its graph has no in-place sums)
        q = _points(1, 30, seed=1).requires_grad_(True)
        code = net.encode(_points(1, 64)).detach()
        c = dec.sample(q, code)
        dec.forward_sampled(q, c, net.prepare(code)).sum().backward()
        assert q.grad is not None and torch.isfinite(q.grad).all()


def test_unet_channels_last_inference_equals_training_layout():
    """At inference on a CPU the U-Net runs channels-last; its output equals the default layout's (the
    training mode path) up to float rounding, and comes back contiguous."""
    torch.manual_seed(4)
    unet = UNet2d(8, 8, 3)
    x = torch.randn(5, 8, 16, 16)
    unet.train()
    with torch.no_grad():
        ref = unet(x)
    unet.eval()
    with torch.inference_mode():
        out = unet(x)
    assert out.is_contiguous()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_reconstructor_precision_reaches_the_feature_plane_encoder():
    from occnet_ros.reconstruction.config import ReconstructorConfig
    from occnet_ros.reconstruction.reconstructor import Reconstructor

    m = randomize_like_trained(OccupancyNetwork(LOCAL), 1, scale=0.2).eval()
    cfg = dict(n_input_points=80, input_subsamples=2, compute_threads=1)
    x = _points(1, 80).numpy()[0]
    f32 = Reconstructor(m, device="cpu", config=ReconstructorConfig(**cfg)).encode(x)
    bf = Reconstructor(m, device="cpu", config=ReconstructorConfig(precision="bfloat16", **cfg)).encode(x)
    with torch.inference_mode():
        expected = m.encode(torch.from_numpy(x)[None], dtype=torch.bfloat16)
    assert bf.dtype == torch.float32 and torch.equal(bf, expected) and not torch.equal(bf, f32)


@pytest.mark.parametrize("global_context", [True, False])
def test_inference_point_planes_equal_the_module_by_module_planes(global_context):
    """encoder_inference.point_planes (pooled maps once per input, in-place residuals, index_add_ cell means,
    channels last) gives the module's U-Net input planes up to float rounding, for several batch sizes and point
    counts, and the encoder's codes in eval mode follow it."""
    from occnet_ros.network import encoder_inference

    cfg = dataclasses.replace(LOCAL, local_pool=False, global_context=global_context, encoder_blocks=4)
    net = randomize_like_trained(OccupancyNetwork(cfg), seed=7).eval()
    enc = net.encoder
    with torch.inference_mode():
        for b, n in ((1, 1), (3, 200), (2, 1500)):
            p = _points(b, n, seed=b + n)
            assert encoder_inference.applies(enc, p)
            ref = enc.point_planes(p)
            got = encoder_inference.point_planes(enc, p)
            assert got.shape == ref.shape == (b, 3, cfg.c_dim, cfg.plane_resolution, cfg.plane_resolution)
            torch.testing.assert_close(got, ref, rtol=0, atol=2e-6 * float(ref.abs().max()) + 1e-6)
            # channels last in memory: the U-Net's inference layout, without a copy
            assert got.reshape(b * 3, cfg.c_dim, cfg.plane_resolution, cfg.plane_resolution).is_contiguous(
                memory_format=torch.channels_last)
            code = net.encode(p)
            ref_code = enc.unet(ref.reshape(b * 3, *ref.shape[2:])).reshape(code.shape)
            torch.testing.assert_close(code, ref_code, rtol=0, atol=1e-5 * float(ref_code.abs().max()) + 1e-6)


def test_inference_point_planes_apply_only_in_eval_mode_with_pooling_over_all_points():
    from occnet_ros.network import encoder_inference

    p = _points(2, 50)
    pooled_all = OccupancyNetwork(dataclasses.replace(LOCAL, local_pool=False))
    with torch.no_grad():
        assert not encoder_inference.applies(pooled_all.encoder.train(), p)  # training: module by module
        assert encoder_inference.applies(pooled_all.encoder.eval(), p)
        assert not encoder_inference.applies(pooled_all.encoder, p.double())
        local = OccupancyNetwork(dataclasses.replace(LOCAL, local_pool=True)).encoder.eval()
        assert not encoder_inference.applies(local, p)
    assert not encoder_inference.applies(pooled_all.encoder.eval(), p)  # autograd on: the modules keep the graph
    q = p.clone().requires_grad_(True)
    pooled_all.encode(q).sum().backward()  # eval mode with gradients (e.g. to the input) still works
    assert q.grad is not None and torch.isfinite(q.grad).all()
    net = randomize_like_trained(OccupancyNetwork(dataclasses.replace(LOCAL, local_pool=False)), seed=8).train()
    net.encode(p).sum().backward()  # the training path still carries gradients
    assert net.encoder.blocks[1].fc_0.weight.grad is not None
