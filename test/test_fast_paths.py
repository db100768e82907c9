"""Each fast routine of the reconstruction path against a simple slow reference (fixed seeds): the fused
decoder, the cached occupancy grid, the cropped marching cubes, and the reconstructor's batched MISE
evaluation, query modes and reuse."""
import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree
from skimage.measure import marching_cubes

from occnet_ros.reconstruction.mise import PAD_VALUE, keep_off_threshold, mesh_from_values, mise_values
from occnet_ros.network.model import ModelConfig, OccupancyNetwork
from occnet_ros.reconstruction.normalization import BOX_HALF
from occnet_ros.reconstruction.occupancy_field import OccupancyField
from occnet_ros.reconstruction.occupancy_grid import OccupancyGrid
from occnet_ros.reconstruction.reconstructor import Reconstructor, ReconstructorConfig
from fixtures_geometry import front_half_sphere, randomize_like_trained

SMALL = ModelConfig(c_dim=16, encoder_hidden=16, encoder_blocks=2, decoder_hidden=16, decoder_blocks=3)
LOCAL_SMALL = ModelConfig(kind="local", c_dim=8, encoder_hidden=16, encoder_blocks=2, decoder_hidden=16, decoder_blocks=3,
                          plane_resolution=8, unet_base=8, unet_levels=2)


def trained_like(model: OccupancyNetwork, seed: int = 0) -> OccupancyNetwork:
    return randomize_like_trained(model, seed, scale=0.3).eval()


class CountingSphereModel(OccupancyNetwork):
    """TEST DOUBLE, not a trained model: logit = 30 * (0.3 - |p - c|) in canonical units, whatever the
    input; records the size of every decode call."""

    CENTER = torch.tensor([0.05, -0.03, 0.02])

    def __init__(self):
        super().__init__(SMALL)
        self.calls: list[int] = []

    def decode_prepared(self, query, prep):
        self.calls.append(int(query.shape[1]))
        return 30.0 * (0.3 - (query - self.CENTER).norm(dim=-1))


def sphere_cloud(n=400, seed=0):
    """Front half of a 10 cm sphere 0.8 m in front of an optical frame, metres."""
    return front_half_sphere(n, seed)


# ------------------------------------------------------------------ fused decoder

def test_fused_decoder_matches_plain_eval_decoder():
    m = trained_like(OccupancyNetwork(SMALL))
    g = torch.Generator().manual_seed(1)
    pts, q = torch.randn(2, 30, 3, generator=g), torch.randn(2, 400, 3, generator=g)
    with torch.inference_mode():
        code = m.encode(pts)
        ref = m.decode(q, code)
        prep = m.prepare(code)
        assert prep.fused is not None and prep.fused.n_codes == 2
        fused = m.decode_prepared(q, prep)
        plain = m.decode_prepared(q, m.prepare(code, fuse=False))
        one = m.decode_prepared(q, m.prepare(code[1:2]))  # one code broadcast over both query batches
        ref_one = m.decode(q, code[1:2].expand(2, -1))
    scale = ref.abs().max()
    assert fused.dtype == torch.float32 and fused.shape == (2, 400)
    assert (fused - ref).abs().max() <= 1e-5 * scale + 1e-5
    assert (plain - ref).abs().max() <= 1e-5 * scale + 1e-5
    assert (one - ref_one).abs().max() <= 1e-5 * scale + 1e-5
    with pytest.raises(ValueError, match="query batch"):
        m.decode_prepared(torch.randn(3, 5, 3), prep)


def test_fused_decoder_low_precision_is_close_and_returns_float32():
    m = OccupancyNetwork(SMALL)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # moderate weights: bf16 keeps ~3 significant digits
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    m.eval()
    q = torch.rand(1, 2000, 3, generator=torch.Generator().manual_seed(4)) - 0.5
    with torch.inference_mode():
        code = m.encode(torch.rand(1, 50, 3, generator=g) - 0.5)
        ref = m.decode_prepared(q, m.prepare(code))
        low = m.decode_prepared(q, m.prepare(code, dtype=torch.bfloat16))
    assert low.dtype == torch.float32
    assert m.prepare(code, dtype=torch.bfloat16).fused.dtype == torch.bfloat16
    err = (low - ref).abs().max()
    assert 0 < err <= 0.03 * ref.abs().max() + 1e-3  # not identical (really bf16), but close


# ------------------------------------------------------------------ occupancy grid

def slow_trilinear(values: np.ndarray, box_half: float, p: np.ndarray) -> float:
    """Reference: the weighted sum over the 8 corners of the cell holding p; 0 outside the box."""
    if not np.all(np.isfinite(p)) or np.any(np.abs(p) > box_half * (1 + 1e-5)):
        return 0.0
    r = values.shape[0] - 1
    u = np.clip((p.astype(np.float64) + box_half) * r / (2 * box_half), 0, r)
    i0 = np.minimum(np.floor(u).astype(int), r - 1)
    f = u - i0
    total = 0.0
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (f[0] if dx else 1 - f[0]) * (f[1] if dy else 1 - f[1]) * (f[2] if dz else 1 - f[2])
                total += w * values[i0[0] + dx, i0[1] + dy, i0[2] + dz]
    return total


def test_grid_interpolation_matches_slow_reference():
    rng = np.random.default_rng(0)
    values = rng.random((7, 7, 7)).astype(np.float32)
    grid = OccupancyGrid(values, 0.55)
    pts = rng.uniform(-0.6, 0.6, (300, 3)).astype(np.float32)
    pts[:5] = [[0.55, 0.55, 0.55], [-0.55, -0.55, -0.55], [0.0, 0.0, 0.0], [np.nan, 0, 0], [0.551, 0, 0]]
    fast = grid.interpolate(pts)
    ref = np.array([slow_trilinear(values, 0.55, p) for p in pts])
    assert fast.dtype == np.float32 and fast.shape == (300,)
    assert np.allclose(fast, ref, atol=1e-5)
    assert fast[3] == 0.0 and fast[4] == 0.0  # NaN and outside the box
    assert np.any(ref[5:] == 0.0) and np.any(ref[5:] > 0)  # the sample covers inside and outside


def test_grid_is_exact_at_corners_and_for_linear_fields():
    r, h = 8, 0.5
    idx = np.stack(np.meshgrid(*(np.arange(r + 1),) * 3, indexing="ij"), -1).reshape(-1, 3)
    corners = (idx * (2 * h / r) - h).astype(np.float32)
    a, b = np.array([0.3, -0.2, 0.1]), 0.4
    values = (corners @ a + b).reshape(r + 1, r + 1, r + 1).astype(np.float32)
    grid = OccupancyGrid(values, h)
    assert np.allclose(grid.interpolate(corners), values.reshape(-1), atol=1e-6)
    p = np.random.default_rng(1).uniform(-h, h, (1000, 3)).astype(np.float32)
    assert np.allclose(grid.interpolate(p), p @ a + b, atol=1e-5)  # trilinear reproduces linear fields
    with pytest.raises(ValueError):
        OccupancyGrid(np.zeros((3, 4, 3), np.float32), h)


# ------------------------------------------------------------------ marching cubes on the cropped grid

def full_grid_marching_cubes(values, threshold, box_half=BOX_HALF):
    """Reference: marching cubes on the whole padded grid (values kept off the threshold alike)."""
    res = values.shape[0] - 1
    padded = keep_off_threshold(np.pad(values, 1, mode="constant", constant_values=PAD_VALUE), threshold)
    v, f, _, _ = marching_cubes(padded, level=threshold, gradient_direction="ascent")
    return ((v - 1.0) * (2.0 * box_half / res) - box_half).astype(np.float32), f


def same_triangles(v1, f1, v2, f2, tol=1e-5) -> bool:
    """Every triangle (its 3 corners in order) of one mesh has its own twin in the other, within ``tol``."""
    if len(f1) != len(f2):
        return False
    t1, t2 = v1[f1].reshape(len(f1), 9), v2[f2].reshape(len(f2), 9)
    dist, match = cKDTree(t2).query(t1, k=1)
    return bool(dist.max() < tol and len(np.unique(match)) == len(f1))


@pytest.mark.parametrize("center", [(0.0, 0.0, 0.0), (0.3, -0.25, 0.3), (0.5, 0.5, -0.5)])
def test_cropped_marching_cubes_equals_full_grid(center):
    n = 33
    ax = np.linspace(-BOX_HALF, BOX_HALF, n)
    p = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1)
    d = np.linalg.norm(p - np.array(center), axis=-1) - 0.2  # the last sphere is cut by the box faces
    values = (1 / (1 + np.exp(d / 0.03))).astype(np.float32)
    v1, f1 = mesh_from_values(values, 0.5)
    v2, f2 = full_grid_marching_cubes(values, 0.5)
    assert len(f1) == len(f2) > 0
    assert same_triangles(v1, f1, v2, f2)
    assert not same_triangles(v1, f1, v2 + np.float32(1e-3), f2)  # the comparison can fail


# ------------------------------------------------------------------ reconstructor

def test_mise_levels_are_batched_and_grid_matches_network_at_evaluated_corners():
    model = CountingSphereModel()
    rec = Reconstructor(model, device="cpu", config=ReconstructorConfig(resolution0=8, upsampling_steps=2,
                                                                        query_batch_size=1000,
                                                                        mirror_average=False, keep_grid=True,
                                                                        compute_threads=1))  # calls in order
    obj = rec.reconstruct(sphere_cloud())
    levels = obj.mise_stats["evals_per_level"]
    # each level's new corners in one pass, cut only into chunks of query_batch_size
    assert model.calls == [c for n in levels if n for c in [1000] * (n // 1000) + ([n % 1000] if n % 1000 else [])]
    assert obj.grid is not None and obj.grid.resolution == 32
    # at the corners the network evaluated the grid holds the network's value
    res = 32
    idx = np.stack(np.meshgrid(*(np.arange(res + 1),) * 3, indexing="ij"), -1).reshape(-1, 3)
    corners = (idx * (2 * BOX_HALF / res) - BOX_HALF).astype(np.float32)
    exact = obj.query_canonical(corners)
    close = np.isclose(obj.grid.values.reshape(-1), exact, atol=1e-6)
    assert close.sum() >= obj.mise_stats["n_evals"]
    # grid answers agree with the network away from the surface, and are 0 outside the box
    p = np.random.default_rng(0).uniform(-BOX_HALF, BOX_HALF, (4000, 3)).astype(np.float32)
    r = np.linalg.norm(p - CountingSphereModel.CENTER.numpy(), axis=1)
    away = np.abs(r - 0.3) > 2 * (2 * BOX_HALF / res)
    g, e = obj.query_canonical(p, mode="grid"), obj.query_canonical(p)
    assert np.array_equal(g[away] >= 0.5, e[away] >= 0.5)
    assert np.abs(g - e).max() < 0.5
    src = obj.frame.from_canonical(np.array([[0.0, 0.0, 2.0], [0.05, -0.03, 0.02]], np.float32))
    assert obj.query(src, mode="grid")[0] == 0.0 and obj.query(src, mode="grid")[1] > 0.99


def test_query_modes_and_chunking():
    torch.manual_seed(0)
    net = trained_like(OccupancyNetwork(SMALL), seed=5)
    cfg = dict(resolution0=4, upsampling_steps=1, n_input_points=64)
    def rec(**kw):
        return Reconstructor(net, device="cpu", config=ReconstructorConfig(**cfg, **kw))

    a = rec(query_batch_size=7).reconstruct(sphere_cloud())
    b = rec().reconstruct(sphere_cloud())
    p = a.frame.from_canonical(np.random.default_rng(2).uniform(-0.6, 0.6, (500, 3)))
    assert np.allclose(a.query(p), b.query(p), atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        a.query(p, mode="fast")
    none = rec().reconstruct(sphere_cloud(), extract_mesh=False)
    with pytest.raises(ValueError, match="grid"):
        none.query(p, mode="grid")
    nogrid = rec().reconstruct(sphere_cloud())  # keep_grid is off by default: the grid costs memory
    assert nogrid.grid is None and nogrid.mesh is not None
    with pytest.raises(ValueError, match="keep_grid=True"):
        nogrid.query(p, mode="grid")
    assert rec(keep_grid=True).reconstruct(sphere_cloud()).grid is not None


def test_precision_option():
    with pytest.raises(ValueError, match="precision"):
        ReconstructorConfig(precision="int8").validate()
    with pytest.raises(ValueError, match="query_batch_size"):
        ReconstructorConfig(query_batch_size=-1).validate()
    cfg = dict(resolution0=4, upsampling_steps=1, n_input_points=64)
    c = np.random.default_rng(3).uniform(-0.5, 0.5, (300, 3)).astype(np.float32)
    for config, encoder_differs in ((SMALL, False), (LOCAL_SMALL, True)):
        net = trained_like(OccupancyNetwork(config), seed=6)
        f32 = Reconstructor(net, device="cpu", config=ReconstructorConfig(**cfg))
        bf = Reconstructor(net, device="cpu", config=ReconstructorConfig(precision="bfloat16", **cfg))
        assert bf.dtype == torch.bfloat16 and bf.decoder_dtype == torch.float32  # a CPU decodes in float32
        f32, bf = (r.reconstruct(sphere_cloud(), extract_mesh=False) for r in (f32, bf))
        assert f32.code.dtype == bf.code.dtype == torch.float32  # the code stays float32 in either precision
        d = np.abs(f32.occupancy.probabilities(c) - bf.occupancy.probabilities(c))
        if encoder_differs:  # the local encoder's U-Net ran in bfloat16: close, not equal
            assert 0 < d.max() < 0.1
        else:  # a global network has no U-Net: nothing ran in bfloat16
            assert d.max() == 0
        assert bf.occupancy.codes[0].query_prepared is None  # nothing reduced to stand in for


@pytest.mark.parametrize("kind", ["global", "local"])
def test_float32_preparation_answers_queries_where_the_decoder_is_reduced(kind):
    """Where the decoder runs in a reduced precision (a GPU; built here on the CPU by hand), a FrameCode carries a
    float32 preparation too: MISE's path decodes the reduced one, queries the float32 one, which equals the plain
    float32 decoder."""
    from dataclasses import replace

    net = trained_like(OccupancyNetwork(SMALL if kind == "global" else LOCAL_SMALL), seed=6)
    obj = Reconstructor(net, device="cpu", config=ReconstructorConfig(resolution0=4, upsampling_steps=1,
                                                                      n_input_points=64)).reconstruct(
        sphere_cloud(), extract_mesh=False)
    fc = obj.occupancy.codes[0]
    low = replace(fc, prepared=net.prepare(fc.code, dtype=torch.bfloat16), query_prepared=fc.prepared,
                  mirror_prepared=None if fc.mirror_code is None else net.prepare(fc.mirror_code, dtype=torch.bfloat16),
                  query_mirror_prepared=fc.mirror_prepared)
    assert low.decoding(float32=True) == (fc.prepared, fc.mirror_prepared)
    assert low.decoding()[0] is low.prepared
    field = OccupancyField(net, [low], 4096)
    c = np.random.default_rng(4).uniform(-0.45, 0.45, (300, 3)).astype(np.float32)
    exact = obj.occupancy.network_probabilities(c)
    np.testing.assert_allclose(field.network_probabilities(c, float32=True), exact, atol=1e-6)
    reduced = field.network_probabilities(c)
    assert np.abs(reduced - exact).max() > 1e-6  # the reduced path really is another precision


def test_mise_values_unchanged_by_one_pass_batching():
    """One call per level (the reconstructor's setting) gives the same grid as small batches."""
    f = lambda p: (1 / (1 + np.exp((np.linalg.norm(p, axis=1) - 0.3) / 0.02))).astype(np.float32)  # noqa: E731
    a, sa = mise_values(f, 8, 2, 0.5, batch_size=33 ** 3)
    b, sb = mise_values(f, 8, 2, 0.5, batch_size=100)
    assert np.array_equal(a, b) and sa["n_evals"] == sb["n_evals"]
    assert sa["eval_calls"] == sum(1 for n in sa["evals_per_level"] if n)


# ------------------------------------------------------------------ MISE against the straightforward version

def _reference_mise_values(eval_fn, resolution0, steps, threshold, box_half=BOX_HALF):
    """The straightforward MISE (3-D index arrays, boolean masks, a full upsampled copy per level)."""
    res = resolution0 * 2 ** steps
    n = res + 1
    values = np.zeros((n, n, n), np.float32)
    evaluated = np.zeros((n, n, n), bool)

    def corners(a):
        return [a[i:a.shape[0] - 1 + i, j:a.shape[1] - 1 + j, k:a.shape[2] - 1 + k]
                for i in (0, 1) for j in (0, 1) for k in (0, 1)]

    def upsample2(a):
        for axis in range(3):
            a = np.moveaxis(a, axis, 0)
            out = np.empty((2 * a.shape[0] - 1,) + a.shape[1:], a.dtype)
            out[0::2] = a
            out[1::2] = 0.5 * (a[:-1] + a[1:])
            a = np.moveaxis(out, 0, axis)
        return a

    counts = []
    for level in range(steps + 1):
        s = 2 ** (steps - level)
        mark = np.zeros((n, n, n), bool)
        if level == 0:
            mark[::s, ::s, ::s] = True
        else:
            v, e = values[::2 * s, ::2 * s, ::2 * s], evaluated[::2 * s, ::2 * s, ::2 * s]
            inside = [c >= threshold for c in corners(v)]
            known = np.logical_and.reduce(corners(e))
            active = known & np.logical_or.reduce(inside) & ~np.logical_and.reduce(inside)
            for c in np.argwhere(active) * (2 * s):
                mark[c[0]:c[0] + 2 * s + 1:s, c[1]:c[1] + 2 * s + 1:s, c[2]:c[2] + 2 * s + 1:s] = True
        new = np.argwhere(mark & ~evaluated)
        if len(new):
            values[tuple(new.T)] = eval_fn((new * (2.0 * box_half / res) - box_half).astype(np.float32))
            evaluated[tuple(new.T)] = True
        counts.append(len(new))
    for level in range(1, steps + 1):
        s = 2 ** (steps - level)
        fine, unknown = values[::s, ::s, ::s], ~evaluated[::s, ::s, ::s]
        fine[unknown] = upsample2(values[::2 * s, ::2 * s, ::2 * s])[unknown]
        evaluated[::s, ::s, ::s] = True
    return values, counts


def _field(kind):
    def f(p):
        if kind == "sphere":
            d = np.linalg.norm(p - np.array([0.05, 0.0, -0.02]), axis=1) - 0.3
        elif kind == "torus":
            d = np.linalg.norm(np.stack([np.linalg.norm(p[:, :2], axis=1) - 0.3, p[:, 2]], 1), axis=1) - 0.08
        else:  # a field with many small blobs: many active cells at every level
            d = 0.05 - np.abs(np.sin(9 * p[:, 0]) * np.sin(7 * p[:, 1]) * np.sin(8 * p[:, 2]))
        return (1.0 / (1.0 + np.exp(d / 0.02))).astype(np.float32)
    return f


@pytest.mark.parametrize("kind", ["sphere", "torus", "blobs"])
@pytest.mark.parametrize("res0,steps", [(8, 2), (6, 3), (16, 1), (8, 0)])
def test_mise_equals_straightforward_reference(kind, res0, steps):
    f = _field(kind)
    fast, stats = mise_values(f, res0, steps, 0.5, batch_size=1000)
    ref, counts = _reference_mise_values(f, res0, steps, 0.5)
    assert stats["evals_per_level"] == counts
    assert np.array_equal(fast, ref)  # bit for bit: same points, same order, same interpolation


def test_reuse_previous_reconstruction_only_when_the_frame_is_unchanged():
    model = CountingSphereModel()
    cfg = dict(resolution0=8, upsampling_steps=1)
    rec = Reconstructor(model, device="cpu", config=ReconstructorConfig(reuse_tolerance=0.02, **cfg))
    cloud = sphere_cloud()
    a = rec.reconstruct(cloud)
    n_calls = len(model.calls)
    jitter = cloud + np.random.default_rng(1).normal(scale=1e-5, size=cloud.shape).astype(np.float32)
    b = rec.reconstruct(jitter, previous=a)
    assert b.reused and b.mesh is a.mesh and len(model.calls) == n_calls
    assert b.timings["mise"] == 0.0 and not a.reused
    moved = rec.reconstruct(cloud + np.float32([0.05, 0.0, 0.0]), previous=a)
    assert not moved.reused and len(model.calls) > n_calls
    assert not np.allclose(moved.mesh.vertices.mean(0), a.mesh.vertices.mean(0), atol=0.01)
    never = Reconstructor(model, device="cpu", config=ReconstructorConfig(**cfg)).reconstruct(jitter, previous=a)
    assert not never.reused
    no_mesh = rec.reconstruct(cloud, extract_mesh=False)
    assert not rec.reconstruct(cloud, previous=no_mesh).reused  # a mesh is asked for
    with pytest.raises(ValueError, match="reuse_tolerance"):
        ReconstructorConfig(reuse_tolerance=-0.1).validate()


def test_precision_auto_is_bfloat16_only_where_the_cpu_has_it_natively(monkeypatch):
    from occnet_ros.reconstruction.precision import native_bfloat16, resolve_precision

    cpu = torch.device("cpu")
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert not native_bfloat16(cpu) and resolve_precision("auto", cpu) == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert native_bfloat16(cpu) and resolve_precision("auto", cpu) == torch.bfloat16
    assert resolve_precision("auto", torch.device("cuda")) == torch.float32  # not measured on GPUs: float32 stays
    assert resolve_precision("float16", cpu) == torch.float16 and resolve_precision("float32", cpu) == torch.float32
    net = trained_like(OccupancyNetwork(SMALL), seed=6)
    assert Reconstructor(net, device="cpu", config=ReconstructorConfig(precision="auto")).dtype == torch.bfloat16
