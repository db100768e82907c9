"""Several objects of one frame reconstructed together (Reconstructor.reconstruct_many): batched encoding and
MISE levels decoded together give what one object after the other gives; the batched field evaluation against
each field's own probabilities."""
import numpy as np
import pytest
import torch

from occnet_ros.network.model import ModelConfig, OccupancyNetwork
from occnet_ros.reconstruction.batched import ROW, probabilities_many
from occnet_ros.reconstruction.known_empty import KnownEmpty, KnownEmptyConfig
from occnet_ros.reconstruction.reconstructor import Reconstructor, ReconstructorConfig
from occnet_ros.geometry import Plane
from fixtures_geometry import front_half_sphere, randomize_like_trained

LOCAL = ModelConfig(kind="local", c_dim=8, encoder_hidden=16, encoder_blocks=2, decoder_hidden=16, decoder_blocks=2,
                    plane_resolution=8, unet_base=8, unet_levels=2)


def _net(seed=5):
    torch.manual_seed(seed)
    return randomize_like_trained(OccupancyNetwork(LOCAL), seed, scale=0.2).eval()


def _requests(n_views_second=False):
    """Three objects of one frame: spheres of different sizes and point counts, one with a known-empty plane, one
    fused from two cameras (two canonical frames)."""
    plane = Plane(normal=np.array([0.0, -1.0, 0.0]), offset=0.1)  # y < 0.1 is above the table (optical frame)
    empty = KnownEmpty(KnownEmptyConfig(), plane, [])
    a = front_half_sphere(700, 1, center=(0.05, 0.02, 0.8), radius=0.1)
    b = front_half_sphere(300, 2, center=(-0.2, 0.05, 0.9), radius=0.05)
    c = front_half_sphere(900, 3, center=(0.25, -0.05, 1.0), radius=0.08)
    vps = np.where(np.arange(len(c))[:, None] % 2 == 0, np.zeros(3), np.array([0.3, 0.0, 0.0]))
    return [dict(points=a, known_empty=empty if empty.active else None), dict(points=b),
            dict(points=c, point_viewpoints=vps, n_views=2)]


@pytest.mark.parametrize("mirror", [True, False])
def test_batched_objects_equal_one_after_the_other(mirror):
    cfg = ReconstructorConfig(resolution0=8, upsampling_steps=2, n_input_points=128, input_subsamples=2,
                              mirror_average=mirror, query_batch_size=3 * ROW, threshold=0.5)
    rec = Reconstructor(_net(), device="cpu", config=cfg)
    alone = rec.reconstruct_many(_requests(), batched=False)
    together = rec.reconstruct_many(_requests(), batched=True)
    assert len(alone) == len(together) == 3 and len(together[2].occupancy.codes) == 2
    for a, b in zip(alone, together):
        for ca, cb in zip(a.occupancy.codes, b.occupancy.codes):
            torch.testing.assert_close(cb.code, ca.code, rtol=1e-5, atol=1e-5)
        assert b.mise_stats["evals_per_level"] == a.mise_stats["evals_per_level"]
        assert len(b.mesh.faces) == len(a.mesh.faces) > 0
        np.testing.assert_allclose(b.mesh.vertices, a.mesh.vertices, atol=1e-4)
        q = np.random.default_rng(0).uniform(-0.3, 0.3, (500, 3)) + a.frame.center
        np.testing.assert_allclose(b.query(q), a.query(q), atol=1e-5)


def test_probabilities_many_matches_each_field_and_pads_rows():
    cfg = ReconstructorConfig(resolution0=8, upsampling_steps=1, n_input_points=128, input_subsamples=1,
                              query_batch_size=2 * ROW, threshold=0.5)
    rec = Reconstructor(_net(9), device="cpu", config=cfg)
    objs = rec.reconstruct_many(_requests(), batched=False)
    fields = [o.occupancy for o in objs]
    rng = np.random.default_rng(1)
    sizes = [ROW - 1, 0, 2 * ROW + 5]  # a short row, no points at all, rows plus a padded one
    pts = [rng.uniform(-0.5, 0.5, (n, 3)).astype(np.float32) for n in sizes]
    got = probabilities_many(fields, pts)
    for f, p, g in zip(fields, pts, got):
        assert g.shape == (p.shape[0],) and g.dtype == np.float32
        np.testing.assert_allclose(g, f.probabilities(p), atol=1e-5)
    assert np.any(got[0] == 0.0)  # the known-empty plane answered some points without the network
    with pytest.raises(ValueError, match="fields"):
        probabilities_many(fields, pts[:2])


def test_batch_objects_setting_chooses_by_device():
    net = _net()
    assert not Reconstructor(net, device="cpu", config=ReconstructorConfig(device="cpu")).batch_objects()
    assert Reconstructor(net, device="cpu", config=ReconstructorConfig(device="cpu", batch_objects="on")).batch_objects()
    with pytest.raises(ValueError, match="batch_objects"):
        ReconstructorConfig(batch_objects="sometimes").validate()
