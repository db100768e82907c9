"""The feature planes sampled once at a grid's corners (PlaneLattice) against per-point sampling, and MISE through
OccupancyField.on_grid against MISE on the plain field: bit-identical answers, and a fallback for any point that is
not a corner."""
import dataclasses

import numpy as np
import pytest
import torch

from occnet_ros.network.model import ModelConfig, OccupancyNetwork
from occnet_ros.network.model_local import LocalDecoder
from occnet_ros.network.domain import grid_axis
from occnet_ros.network.plane_lattice import MAX_LATTICE_RESOLUTION, PlaneLattice
from occnet_ros.geometry import Plane
from occnet_ros.reconstruction.known_empty import KnownEmpty, KnownEmptyConfig
from occnet_ros.reconstruction.mise import grid_coords, mise_values
from occnet_ros.reconstruction.normalization import BOX_HALF, CanonicalFrame
from occnet_ros.reconstruction.occupancy_field import FrameCode, OccupancyField
from occnet_ros.reconstruction.reconstructor import Reconstructor, ReconstructorConfig
from fixtures_geometry import front_half_sphere, randomize_like_trained

LOCAL = ModelConfig(kind="local", c_dim=8, encoder_hidden=16, encoder_blocks=2, decoder_hidden=16, decoder_blocks=3,
                    plane_resolution=8, unet_base=8, unet_levels=2)


def _code(seed=0, c=8, r=8):
    return torch.randn(1, 3, c, r, r, generator=torch.Generator().manual_seed(seed))


def _corners(resolution, n, seed=0):
    """n random corner indices (n, 3) of the grid (the extreme corners included) and their points (1, n, 3)."""
    idx = np.random.default_rng(seed).integers(0, resolution + 1, (n, 3))
    idx[:2] = [[0, 0, 0], [resolution, resolution, resolution]]
    return idx, torch.from_numpy(grid_coords(idx, resolution, BOX_HALF))[None]


def test_grid_axis_is_the_float64_formula_rounded_to_float32():
    """MISE's corners (grid_coords) and the tables' positions come from grid_axis: i * (2h / R) - h in float64, then
    float32, for every corner index."""
    for r in (1, 7, 64, 256):
        i = np.arange(r + 1)
        ref = (i * (2.0 * BOX_HALF / r) - BOX_HALF).astype(np.float32)
        assert np.array_equal(grid_axis(r, BOX_HALF), ref)
        idx = np.stack(np.meshgrid(i, i[::-1], i, indexing="ij"), axis=-1).reshape(-1, 3)
        assert np.array_equal(grid_coords(idx, r, BOX_HALF), ref[idx])


@pytest.mark.parametrize("resolution", [1, 2, 7, 64, 129])
def test_lattice_features_equal_per_point_sampling_bit_for_bit(resolution):
    code = _code(resolution)
    lattice = PlaneLattice(code, resolution, BOX_HALF)
    idx, p = _corners(resolution, 3000, seed=resolution)
    assert np.array_equal(lattice.corner_index(p[0].numpy()), idx)
    got = lattice.features(lattice.plane_rows(idx))
    assert got.shape == (1, 3000, 8)
    assert torch.equal(got, LocalDecoder.sample(p, code))
    assert lattice.nbytes == 3 * (resolution + 1) ** 2 * 8 * 4


def test_corner_index_refuses_anything_but_exact_corners():
    lattice = PlaneLattice(_code(), 16, BOX_HALF)
    idx, p = _corners(16, 50)
    pts = p[0].numpy()
    assert np.array_equal(lattice.corner_index(pts), idx)
    assert lattice.corner_index(np.zeros((0, 3), np.float32)).shape == (0, 3)
    for bad in (np.nextafter(pts[5, 1], np.float32(1.0)),  # one ulp off a corner
                pts[5, 1] + 0.3 * (2 * BOX_HALF / 16),  # between corners
                np.nan, np.inf, -np.inf, BOX_HALF * 1.5):  # not a number, outside the box
        q = pts.copy()
        q[5, 1] = bad
        assert lattice.corner_index(q) is None, bad
    assert PlaneLattice(_code(), 32, BOX_HALF).corner_index(pts[2:]) is not None  # a finer grid holds these corners
    assert PlaneLattice(_code(), 15, BOX_HALF).corner_index(pts[2:]) is None  # another grid does not


def test_lattice_refuses_bad_arguments():
    with pytest.raises(ValueError, match="resolution"):
        PlaneLattice(_code(), MAX_LATTICE_RESOLUTION + 1, BOX_HALF)
    with pytest.raises(ValueError, match="resolution"):
        PlaneLattice(_code(), 0, BOX_HALF)
    with pytest.raises(ValueError, match="code"):
        PlaneLattice(torch.zeros(2, 3, 8, 8, 8), 8, BOX_HALF)
    with pytest.raises(ValueError, match="box_half"):
        PlaneLattice(_code(), 8, 0.0)


def _count_table_reads(monkeypatch) -> list[int]:
    """Wrap PlaneLattice.features to record how many points each call read from a table."""
    reads: list[int] = []
    features = PlaneLattice.features

    def counted(self, rows):
        reads.append(int(rows.shape[1]))
        return features(self, rows)

    monkeypatch.setattr(PlaneLattice, "features", counted)
    return reads


def _field(model, known_empty=None, mirror=False):
    model.eval()
    with torch.inference_mode():
        code = model.encode(torch.rand(1, 200, 3, generator=torch.Generator().manual_seed(1)) - 0.5)
        prep = model.prepare(code)
    frame = CanonicalFrame(rotation=np.eye(3), center=np.zeros(3), scale=1.0)
    fc = FrameCode(frame, code, prep, mirror_code=code if mirror else None, mirror_prepared=prep if mirror else None)
    return OccupancyField(model, [fc], batch_size=512, known_empty=known_empty)


@pytest.mark.parametrize("threads", [1, 2])
def test_mise_on_the_grid_field_equals_mise_on_the_plain_field(threads, monkeypatch):
    from occnet_ros.reconstruction.compute_pool import ComputePool

    reads = _count_table_reads(monkeypatch)
    torch.manual_seed(0)
    model = randomize_like_trained(OccupancyNetwork(LOCAL), seed=2, scale=0.3)
    field = _field(model)
    grid_field = field.on_grid(32, BOX_HALF)
    assert grid_field is not field and grid_field.lattice is not None and field.lattice is None
    pool = ComputePool(threads)
    try:
        plain, ps = mise_values(lambda q: field.probabilities(q, pool), 8, 2, 0.5, BOX_HALF, batch_size=10**9)
        fast, fs = mise_values(lambda q: grid_field.probabilities(q, pool), 8, 2, 0.5, BOX_HALF, batch_size=10**9)
    finally:
        pool.close()
    assert ps["n_evals"] == fs["n_evals"] > 0 and 0.0 < (plain >= 0.5).mean() < 1.0
    assert sum(reads) == fs["n_evals"]  # every MISE point of the grid field came from the table
    assert np.array_equal(plain, fast)
    reads.clear()
    # points that are not corners of its grid: the grid field samples them, as the plain field does
    q = (np.random.default_rng(3).random((700, 3)) - 0.5).astype(np.float32)
    assert np.array_equal(grid_field.probabilities(q), field.probabilities(q))
    assert np.array_equal(grid_field.query_canonical(q), field.query_canonical(q))
    assert not reads


def test_on_grid_keeps_the_plain_field_where_no_table_applies():
    local = randomize_like_trained(OccupancyNetwork(LOCAL), seed=2)
    big = _field(local)
    assert big.on_grid(MAX_LATTICE_RESOLUTION + 1) is big
    assert big.on_grid(0) is big
    mirrored = _field(local, mirror=True)
    assert mirrored.on_grid(32) is mirrored
    glob = _field(randomize_like_trained(OccupancyNetwork(dataclasses.replace(LOCAL, kind="global"))))
    assert glob.on_grid(32) is glob
    grid_field = _field(local).on_grid(32)
    assert grid_field.on_grid(32) is grid_field


def test_the_reconstructor_meshes_through_the_table_with_the_same_grid(monkeypatch):
    """Reconstructor.reconstruct's MISE (through OccupancyField.on_grid) gives the grid MISE gives on the object's
    plain field, bit for bit, with a known-empty test in play."""
    torch.manual_seed(0)
    model = randomize_like_trained(OccupancyNetwork(LOCAL), seed=4, scale=0.3).eval()
    cfg = ReconstructorConfig(resolution0=8, upsampling_steps=2, n_input_points=256, threshold=0.5, keep_grid=True,
                              input_subsamples=2, anchor=dataclasses.replace(ReconstructorConfig().anchor, radius=0.0))
    rec = Reconstructor(model, device="cpu", config=cfg)
    cloud = front_half_sphere(400, 0, center=(0.0, 0.0, 0.8))
    empty = KnownEmpty(KnownEmptyConfig(), Plane(np.array([0.0, -1.0, 0.0]), 0.0), [])  # through the centre
    reads = _count_table_reads(monkeypatch)
    obj = rec.reconstruct(cloud, up=(0.0, -1.0, 0.0), known_empty=empty)
    assert 0 < sum(reads) < obj.mise_stats["n_evals"]  # from the table, less the points known to be empty
    reads.clear()
    assert obj.occupancy.known_empty is not None
    values, _ = mise_values(lambda q: obj.occupancy.probabilities(q, rec.pool), 8, 2, 0.5, BOX_HALF,
                            batch_size=10**9)
    assert obj.occupancy.lattice is None  # the stored field answers queries without the table
    assert not reads and np.array_equal(obj.grid.values, values)
