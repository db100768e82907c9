"""Reconstructor API: frames, fixed-size seeded inputs, MISE mesh in the source frame, batched queries,
the missing/corrupt weights errors. Uses a randomly initialised network and an analytic test double."""
import numpy as np
import pytest
import torch
import trimesh
from dataclasses import replace

from occnet_ros.network.checkpoint import CheckpointError, CheckpointMeta, save_checkpoint
from occnet_ros.network.model import ModelConfig, OccupancyNetwork
from occnet_ros.reconstruction.normalization import BOX_HALF
from occnet_ros.reconstruction.reconstructor import Reconstructor, ReconstructorConfig
from occnet_ros.reconstruction.surface_anchor import AnchorConfig
from fixtures_geometry import front_half_sphere

SMALL = ModelConfig(c_dim=16, encoder_hidden=16, encoder_blocks=2, decoder_hidden=16, decoder_blocks=2)


class SphereOccupancyTestModel(OccupancyNetwork):
    """TEST DOUBLE, not a trained model: logit = 40 * (0.35 - |p|) in canonical units (a sphere of
    radius 0.35 at the canonical origin), whatever the input. Records how many points it decoded."""

    def __init__(self, radius: float = 0.35):
        super().__init__(SMALL)
        self.n_decoded = 0
        self.radius = radius

    def decode_prepared(self, query, prep):
        self.n_decoded += query.shape[1]
        return 40.0 * (self.radius - query.norm(dim=-1))


def _cloud(n=500, seed=0):
    """Front half of a 10 cm radius sphere 0.8 m in front of an optical frame."""
    return front_half_sphere(n, seed, center=(0.05, 0.02, 0.8))


def test_random_network_reconstruct_shapes_and_determinism():
    torch.manual_seed(0)
    rec = Reconstructor(OccupancyNetwork(SMALL), device="cpu",
                        config=ReconstructorConfig(resolution0=8, upsampling_steps=1, n_input_points=64))
    pts = _cloud()
    pts[3] = np.nan
    a = rec.reconstruct(pts)
    b = rec.reconstruct(pts[::-1].copy())  # same set, other order: seeded subsample differs, but stable
    c = rec.reconstruct(pts)
    assert a.n_input_points == 499
    assert a.code.shape == (1, 16) and torch.equal(a.code, c.code)
    assert set(a.timings) == {"normalize", "encode", "mise", "marching_cubes", "simplify", "anchor", "total"}
    assert a.mise_stats["evals_per_level"][0] == 9 ** 3
    q = _cloud(50, seed=1)
    assert np.array_equal(a.query(q), c.query(q))
    assert b.code.shape == (1, 16)
    none = rec.reconstruct(pts, extract_mesh=False)
    assert none.mesh is None and none.timings["mise"] == 0.0


def test_sphere_test_double_mesh_in_source_frame():
    model = SphereOccupancyTestModel()
    rec = Reconstructor(model, device="cpu", config=ReconstructorConfig(resolution0=16, upsampling_steps=2,
                                                                        anchor=AnchorConfig(radius=0.0)))
    obj = rec.reconstruct(_cloud())
    m = obj.mesh
    assert isinstance(m, trimesh.Trimesh) and m.is_watertight and m.volume > 0
    # the sphere of radius 0.35 canonical units is centred at the frame origin, scale = frame.scale
    r = np.linalg.norm(m.vertices - obj.frame.center, axis=1)
    assert np.allclose(r, 0.35 * obj.frame.scale, rtol=0.02)
    # MISE evaluated far fewer points than the dense 65^3 grid
    assert obj.mise_stats["n_evals"] < 0.3 * 65 ** 3
    assert np.all(obj.bounds()[0] <= m.vertices.min(0) + 1e-6)


def test_anchoring_moves_the_seen_side_onto_the_observation_and_keeps_the_mesh_closed():
    """The test double's sphere (radius 0.45 canonical) is a little inside the observed half sphere
    (about 0.5); with anchoring the mesh's seen side moves onto the points, the faces and the queries
    stay the same."""
    from scipy.spatial import cKDTree

    model = SphereOccupancyTestModel(radius=0.45)
    pts = _cloud(4000)
    runs = {}
    for radius in (0.0, 0.1):
        cfg = ReconstructorConfig(resolution0=16, upsampling_steps=2, anchor=AnchorConfig(radius=radius))
        runs[radius] = Reconstructor(model, device="cpu", config=cfg).reconstruct(pts)
    raw, anchored = runs[0.0], runs[0.1]
    assert raw.n_anchored == 0 and anchored.n_anchored > 100 and anchored.timings["anchor"] > 0
    assert np.array_equal(raw.mesh.faces, anchored.mesh.faces) and anchored.mesh.is_watertight
    gap = {r: cKDTree(o.mesh.vertices).query(pts)[0].mean() for r, o in runs.items()}
    assert gap[0.1] < 0.5 * gap[0.0]  # observed points now lie on the mesh
    q = _cloud(50, seed=1)
    assert np.array_equal(raw.query(q), anchored.query(q))  # queries answer the network itself
    vps = np.zeros((len(pts), 3))
    again = Reconstructor(model, device="cpu", config=ReconstructorConfig(
        resolution0=16, upsampling_steps=2, anchor=AnchorConfig(radius=0.1))).reconstruct(pts, point_viewpoints=vps)
    assert np.array_equal(again.mesh.vertices, anchored.mesh.vertices)  # one camera at the origin either way
    with pytest.raises(ValueError, match="point_viewpoints"):
        Reconstructor(model, device="cpu").reconstruct(pts, point_viewpoints=vps[:10])


def test_query_matches_mesh_and_skips_points_outside_the_box():
    model = SphereOccupancyTestModel()
    rec = Reconstructor(model, device="cpu", config=ReconstructorConfig(query_batch_size=7, mirror_average=False))
    obj = rec.reconstruct(_cloud(), extract_mesh=False)
    f = obj.frame
    canon = np.array([[0, 0, 0], [0.3, 0, 0], [0.4, 0, 0], [0.6, 0, 0], [0, 0, -2.0]], np.float32)
    model.n_decoded = 0
    p = obj.query(f.from_canonical(canon))
    assert p.dtype == np.float32 and p.shape == (5,)
    ref = 1 / (1 + np.exp(-40 * (0.35 - np.linalg.norm(canon, axis=1))))
    assert np.allclose(p[:3], ref[:3], atol=1e-5)
    assert p[3] == 0.0 and p[4] == 0.0 and model.n_decoded == 3  # outside the box: no network call
    big = f.from_canonical(np.random.default_rng(0).uniform(-0.5, 0.5, (100, 3)))
    model.n_decoded = 0
    assert np.allclose(obj.query(big), 1 / (1 + np.exp(-40 * (0.35 - np.linalg.norm(f.to_canonical(big), axis=1)))), atol=1e-5)
    assert model.n_decoded == 100
    assert obj.occupied(f.from_canonical(canon)).tolist() == [True, True, False, False, False]
    corners = obj.box_corners()
    assert np.allclose(np.abs(f.to_canonical(corners)), BOX_HALF, atol=1e-5)


def test_from_pretrained_threshold_overrides_and_errors(tmp_path):
    torch.manual_seed(0)
    meta = CheckpointMeta(threshold=0.3, extra={"train_config": {"n_input_points": 123}})
    path = save_checkpoint(tmp_path / "w.pt", OccupancyNetwork(SMALL), meta)
    rec = Reconstructor.from_pretrained(path, device="cpu", resolution0=8, upsampling_steps=0)
    assert rec.threshold == 0.3 and rec.config.resolution0 == 8 and rec.device == torch.device("cpu")
    assert rec.config.n_input_points == 123
    assert Reconstructor.from_pretrained(path, device="cpu", n_input_points=50).config.n_input_points == 50
    # None (a config file's default) means "as trained", not a fixed size
    assert Reconstructor.from_pretrained(path, device="cpu", n_input_points=None).config.n_input_points == 123
    assert Reconstructor.from_pretrained(path, device="cpu", threshold=0.6).threshold == 0.6
    with pytest.raises(TypeError, match="unknown"):
        Reconstructor.from_pretrained(path, device="cpu", resolution=8)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        Reconstructor.from_pretrained(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        Reconstructor.from_pretrained(bad)


def test_view_thresholds_choose_the_surface_by_number_of_fused_views(tmp_path):
    """The test double's sphere has probability p at radius 0.35 - logit(p) / 40 (canonical units); a
    threshold calibrated for 4 views serves 4 or more fused views, the single-view one fewer; an explicit
    threshold serves every count."""
    cfg = ReconstructorConfig(resolution0=16, upsampling_steps=2, anchor=AnchorConfig(radius=0.0))
    rec = Reconstructor(SphereOccupancyTestModel(), device="cpu", config=cfg, default_threshold=0.3,
                        default_view_thresholds={4: 0.7})
    for n_views, thr in [(1, 0.3), (3, 0.3), (4, 0.7), (6, 0.7)]:
        obj = rec.reconstruct(_cloud(), n_views=n_views)
        assert obj.threshold == thr and rec.threshold_for(n_views) == thr
        r = np.linalg.norm(obj.frame.to_canonical(obj.mesh.vertices), axis=1)
        assert np.mean(r) == pytest.approx(0.35 - np.log(thr / (1 - thr)) / 40, abs=0.003)
        inner = 0.35 - np.log(thr / (1 - thr)) / 40 - 0.005  # just inside that surface
        assert obj.occupied(obj.frame.from_canonical(np.array([[inner, 0, 0]])))[0]
    # a previous reconstruction is reused only if it was made with the threshold the view count asks for
    reusing = Reconstructor(SphereOccupancyTestModel(), device="cpu", config=replace(cfg, reuse_tolerance=0.02),
                            default_threshold=0.3, default_view_thresholds={4: 0.7})
    one = reusing.reconstruct(_cloud())
    assert reusing.reconstruct(_cloud(), previous=one, n_views=2).reused
    four = reusing.reconstruct(_cloud(), previous=one, n_views=4)
    assert not four.reused and four.threshold == 0.7
    with pytest.raises(ValueError, match="n_views"):
        rec.reconstruct(_cloud(), n_views=0)
    fixed = Reconstructor(SphereOccupancyTestModel(), device="cpu", config=replace(cfg, threshold=0.5),
                          default_threshold=0.3, default_view_thresholds={4: 0.7})
    assert fixed.threshold_for(1) == fixed.threshold_for(4) == 0.5
    with pytest.raises(ValueError, match="view_thresholds"):
        Reconstructor(SphereOccupancyTestModel(), device="cpu", default_view_thresholds={1: 0.4})
    # stored in and read from a checkpoint; a bad table stops the load with the file's name
    path = save_checkpoint(tmp_path / "w.pt", OccupancyNetwork(SMALL), CheckpointMeta(threshold=0.3, view_thresholds={4: 0.45}))
    loaded = Reconstructor.from_pretrained(path, device="cpu")
    assert loaded.threshold_for(2) == 0.3 and loaded.threshold_for(4) == 0.45
    bad = save_checkpoint(tmp_path / "bad.pt", OccupancyNetwork(SMALL), CheckpointMeta(view_thresholds={4: 1.5}))
    with pytest.raises(CheckpointError, match="bad.pt.*view_thresholds"):
        Reconstructor.from_pretrained(bad, device="cpu")


def test_default_weights_missing_message(monkeypatch, tmp_path):
    import occnet_ros.reconstruction.reconstructor as r

    monkeypatch.setattr(r, "DEFAULT_WEIGHTS", tmp_path / "weights" / "occnet_default.pt")
    with pytest.raises(FileNotFoundError, match="occnet_train"):
        r.Reconstructor.from_pretrained()


def test_bad_inputs():
    rec = Reconstructor(OccupancyNetwork(SMALL), device="cpu")
    with pytest.raises(ValueError):
        rec.reconstruct(np.zeros((10, 2)))
    with pytest.raises(ValueError):
        rec.reconstruct(np.full((10, 3), np.nan))


def test_local_feature_network_through_the_reconstructor(tmp_path):
    """The feature-plane network works everywhere the global one does: checkpoint round trip, a
    watertight MISE mesh, and exact queries equal to decoding the cached code directly."""
    from fixtures_geometry import randomize_like_trained

    local = ModelConfig(kind="local", c_dim=8, encoder_hidden=16, encoder_blocks=2, decoder_hidden=16,
                        decoder_blocks=2, plane_resolution=8, unet_base=8, unet_levels=2)
    net = randomize_like_trained(OccupancyNetwork(local), 3, scale=0.2)
    with torch.no_grad():
        net.decoder.fc_out.bias.fill_(0.0)
    path = save_checkpoint(tmp_path / "local.pt", net, CheckpointMeta(threshold=0.5))
    rec = Reconstructor.from_pretrained(path, device="cpu", resolution0=8, upsampling_steps=1,
                                        n_input_points=128, mirror_average=False)
    obj = rec.reconstruct(_cloud())
    assert obj.code.shape == (1, 3, 8, 8, 8) and obj.mirror_code is None
    assert obj.mesh is not None and len(obj.mesh.faces) > 0 and obj.mesh.is_watertight
    canon = np.random.default_rng(0).uniform(-BOX_HALF, BOX_HALF, (300, 3)).astype(np.float32)
    with torch.inference_mode():
        ref = torch.sigmoid(rec.model.decode(torch.from_numpy(canon)[None], obj.code))[0].numpy()
    assert np.allclose(obj.query_canonical(canon), ref, atol=1e-5)


def _local_net(seed: int = 3) -> OccupancyNetwork:
    from fixtures_geometry import randomize_like_trained

    local = ModelConfig(kind="local", c_dim=8, encoder_hidden=16, encoder_blocks=2, decoder_hidden=16,
                        decoder_blocks=2, plane_resolution=8, unet_base=8, unet_levels=2, global_context=True)
    return randomize_like_trained(OccupancyNetwork(local), seed, scale=0.2).eval()


def _global_net(seed: int = 3) -> OccupancyNetwork:
    from fixtures_geometry import randomize_like_trained

    return randomize_like_trained(OccupancyNetwork(SMALL), seed, scale=0.2).eval()


FLIP = np.array([1.0, -1.0, 1.0], np.float32)


def _reference_codes(net, rec, obj, pts):
    """Slow reference: encode each subsample of the canonical input and its y-mirrored copy by hand,
    one at a time, and average each kind's codes."""
    subs = rec._subsample(pts.astype(np.float64))
    assert subs.shape == (rec.config.input_subsamples, rec.config.n_input_points, 3)
    direct, mirrored = [], []
    with torch.inference_mode():
        for sub in subs:
            pc = obj.frame.to_canonical(sub)
            direct.append(net.encode(torch.from_numpy(pc)[None]))
            mirrored.append(net.encode(torch.from_numpy(pc * FLIP)[None]))
    return torch.stack(direct).mean(0), torch.stack(mirrored).mean(0)


def test_mirror_average_of_a_feature_plane_network_decodes_the_mean_code():
    """The local network's mirrored code, flipped back along y, is averaged with the direct one; the
    fast path (prepared planes, chunks) must match decoding that mean by hand, and differ from one pass."""
    net = _local_net()
    cfg = dict(resolution0=8, upsampling_steps=1, n_input_points=128, query_batch_size=37)
    rec = Reconstructor(net, device="cpu", config=ReconstructorConfig(**cfg))
    obj = rec.reconstruct(_cloud())
    c0, c1 = _reference_codes(net, rec, obj, _cloud())
    back = c1.clone()
    back[:, 0], back[:, 2] = c1[:, 0].flip(-2), c1[:, 2].flip(-1)  # x-y plane: rows are y; y-z: columns
    assert torch.allclose(obj.code, (c0 + back) / 2, atol=1e-6)
    assert obj.mirror_code is None and obj.occupancy.codes[0].mirror_prepared is None  # one code kept, one decoding per point
    q = np.random.default_rng(0).uniform(-BOX_HALF, BOX_HALF, (200, 3)).astype(np.float32)
    with torch.inference_mode():
        ref = torch.sigmoid(net.decode(torch.from_numpy(q)[None], (c0 + back) / 2))[0].numpy()
        single = torch.sigmoid(net.decode(torch.from_numpy(q)[None], c0))[0].numpy()
    assert np.allclose(obj.query_canonical(q), ref, atol=1e-5)
    plain = Reconstructor(net, device="cpu", config=ReconstructorConfig(**cfg, mirror_average=False)).reconstruct(_cloud())
    assert plain.mirror_code is None and np.allclose(plain.query_canonical(q), single, atol=1e-5)
    assert np.abs(single - ref).max() > 1e-3  # the average differs from one pass


def test_mirror_average_of_a_global_code_network_is_the_mean_logit():
    net = _global_net()
    rec = Reconstructor(net, device="cpu", config=ReconstructorConfig(
        resolution0=8, upsampling_steps=1, n_input_points=128, query_batch_size=37))
    obj = rec.reconstruct(_cloud())
    c0, c1 = _reference_codes(net, rec, obj, _cloud())
    assert torch.allclose(obj.code, c0, atol=1e-6) and torch.allclose(obj.mirror_code, c1, atol=1e-6)
    q = np.random.default_rng(0).uniform(-BOX_HALF, BOX_HALF, (200, 3)).astype(np.float32)
    with torch.inference_mode():
        l0 = net.decode(torch.from_numpy(q)[None], c0)[0]
        l1 = net.decode(torch.from_numpy(q * FLIP)[None], c1)[0]
    assert np.allclose(obj.query_canonical(q), torch.sigmoid((l0 + l1) / 2).numpy(), atol=1e-5)
    assert np.abs(torch.sigmoid(l0).numpy() - obj.query_canonical(q)).max() > 1e-3


def _mirrored_observation(rec, pts):
    """The cloud and the camera mirrored across the canonical x-z plane of ``pts``'s reconstruction:
    the same canonical frame (the plane contains up and the viewing direction's horizontal part)."""
    a = rec.reconstruct(pts, extract_mesh=False)
    mirror = lambda x: a.frame.from_canonical(a.frame.to_canonical(x) * FLIP)  # noqa: E731
    b = rec.reconstruct(mirror(pts), viewpoint=mirror(np.zeros((1, 3)))[0], extract_mesh=False)
    assert np.allclose(a.frame.rotation, b.frame.rotation, atol=1e-6)
    assert np.allclose(a.frame.center, b.frame.center, atol=1e-6) and abs(a.frame.scale - b.frame.scale) < 1e-7
    return a, b


def test_mirror_average_makes_the_field_mirror_symmetric():
    """Mirroring the observation leaves the canonical frame unchanged and swaps the two passes: the
    global network's field, and the local network's sampled features, are then exactly mirrored;
    without mirror_average a random network's field is not."""
    pts = _cloud(400, seed=2)
    q = np.random.default_rng(1).uniform(-0.5, 0.5, (300, 3)).astype(np.float32)
    cfg = dict(resolution0=8, upsampling_steps=1, n_input_points=128)
    a, b = _mirrored_observation(Reconstructor(_global_net(5), device="cpu", config=ReconstructorConfig(**cfg)), pts)
    assert np.allclose(a.query_canonical(q), b.query_canonical(q * FLIP), atol=1e-4)
    a1, b1 = _mirrored_observation(Reconstructor(_global_net(5), device="cpu", config=ReconstructorConfig(
        **cfg, mirror_average=False)), pts)
    assert np.abs(a1.query_canonical(q) - b1.query_canonical(q * FLIP)).max() > 1e-3
    net = _local_net(5)
    a, b = _mirrored_observation(Reconstructor(net, device="cpu", config=ReconstructorConfig(**cfg)), pts)
    t = torch.from_numpy(q)[None]
    fa, fb = net.decoder.sample(t, a.code), net.decoder.sample(t * torch.from_numpy(FLIP), b.code)
    assert torch.allclose(fa, fb, atol=1e-5) and fa.abs().max() > 1e-3
    a1, b1 = _mirrored_observation(Reconstructor(net, device="cpu", config=ReconstructorConfig(
        **cfg, mirror_average=False)), pts)
    fa1, fb1 = net.decoder.sample(t, a1.code), net.decoder.sample(t * torch.from_numpy(FLIP), b1.code)
    assert (fa1 - fb1).abs().max() > 1e-3


def test_input_subsamples_are_disjoint_seeded_and_their_codes_averaged():
    net = _local_net(7)
    cfg = ReconstructorConfig(resolution0=8, upsampling_steps=1, n_input_points=100, input_subsamples=3,
                              mirror_average=False)
    rec = Reconstructor(net, device="cpu", config=cfg)
    pts = _cloud(500, seed=4)
    subs = rec._subsample(pts)
    assert subs.shape == (3, 100, 3) and np.array_equal(subs, rec._subsample(pts))  # seeded
    assert len(np.unique(subs.reshape(-1, 3), axis=0)) == 300  # disjoint: 300 distinct points of 500
    obj = rec.reconstruct(pts, extract_mesh=False)
    with torch.inference_mode():
        codes = [net.encode(torch.from_numpy(obj.frame.to_canonical(s))[None]) for s in subs]
    assert torch.allclose(obj.code, torch.stack(codes).mean(0), atol=1e-5)  # float rounding of batched convs
    one = Reconstructor(net, device="cpu", config=replace(cfg, input_subsamples=1))
    assert one._subsample(pts).shape == (1, 100, 3)
    with pytest.raises(ValueError, match="input_subsamples"):
        Reconstructor(net, device="cpu", config=replace(cfg, input_subsamples=0))


def _fused_sphere(cameras, n_per_view=300, center=(0.05, 0.02, 0.8), radius=0.1, seed=0):
    """A 10 cm sphere seen from each camera centre of ``cameras`` ((V, 3), optical frame of camera 0,
    metres): (V * n, 3) points on the half facing each camera and the (V * n, 3) camera centre of each."""
    rng = np.random.default_rng(seed)
    c = np.asarray(center, np.float64)
    pts, vps = [], []
    for cam in np.asarray(cameras, np.float64):
        d = rng.normal(size=(n_per_view, 3))
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        towards = (cam - c) / np.linalg.norm(cam - c)
        d[d @ towards < 0] *= -1.0  # the hemisphere that faces this camera
        pts.append(c + radius * d)
        vps.append(np.repeat(cam[None], n_per_view, axis=0))
    return np.concatenate(pts).astype(np.float32), np.concatenate(vps).astype(np.float32)


CAMERAS = np.array([[0.0, 0.0, 0.0], [0.85, 0.0, 0.85], [0.05, 0.0, 1.6]])  # front, side, back (y is down)


def test_view_frames_average_each_camera_frame_against_single_frame_references():
    """Fast path vs slow reference: a cloud fused from 3 cameras answers the mean of the single-frame
    reconstructions made from each camera's viewpoint, over the frames whose box holds the point."""
    net = _local_net(11)
    cfg = ReconstructorConfig(resolution0=8, upsampling_steps=1, n_input_points=128, query_batch_size=53)
    pts, vps = _fused_sphere(CAMERAS)
    obj = Reconstructor(net, device="cpu", config=cfg).reconstruct(pts, point_viewpoints=vps)
    assert len(obj.view_frames) == 2
    one = Reconstructor(net, device="cpu", config=replace(cfg, max_view_frames=1))
    singles = [one.reconstruct(pts, viewpoint=cam, point_viewpoints=vps, extract_mesh=False) for cam in CAMERAS]
    assert not singles[0].view_frames
    for vf, ref in zip(obj.view_frames, singles[1:]):  # the other cameras, in order of first appearance
        assert np.allclose(vf.frame.rotation, ref.frame.rotation) and torch.allclose(vf.code, ref.code, atol=1e-6)
    rng = np.random.default_rng(2)
    q = (obj.frame.from_canonical(rng.uniform(-BOX_HALF, BOX_HALF, (400, 3)))).astype(np.float32)
    each = np.stack([s.query(q) for s in singles])  # 0 outside each frame's box
    inside = np.stack([(np.abs(s.frame.to_canonical(q)) <= BOX_HALF).all(axis=1) for s in singles])
    assert inside[0].all() and not inside.all()  # some points lie outside another camera's box
    expected = (each * inside).sum(axis=0) / inside.sum(axis=0)
    assert np.allclose(obj.query(q), expected, atol=1e-5)
    assert np.abs(obj.query(q) - each[0]).max() > 1e-3  # the average differs from camera 0's frame alone
    assert obj.mesh is not None and len(obj.mesh.faces) > 0


def test_view_frames_only_for_several_cameras_and_at_most_max_view_frames():
    net = _local_net(12)
    cfg = ReconstructorConfig(resolution0=8, upsampling_steps=1, n_input_points=128)
    pts, vps = _fused_sphere(CAMERAS)
    two = Reconstructor(net, device="cpu", config=replace(cfg, max_view_frames=2)).reconstruct(
        pts, point_viewpoints=vps, extract_mesh=False)
    assert len(two.view_frames) == 1  # the side camera, the first other centre in the cloud
    side = Reconstructor(net, device="cpu", config=replace(cfg, max_view_frames=1)).reconstruct(
        pts, viewpoint=CAMERAS[1], extract_mesh=False)
    assert np.allclose(two.view_frames[0].frame.rotation, side.frame.rotation)
    front = _cloud(400, seed=3)  # one camera: point_viewpoints all at the viewpoint
    rec = Reconstructor(net, device="cpu", config=cfg)
    a = rec.reconstruct(front, point_viewpoints=np.zeros_like(front))
    b = Reconstructor(net, device="cpu", config=replace(cfg, max_view_frames=1)).reconstruct(front)
    assert not a.view_frames and np.array_equal(a.query(front), b.query(front))
    with pytest.raises(ValueError, match="max_view_frames"):
        Reconstructor(net, device="cpu", config=replace(cfg, max_view_frames=0))


def test_a_fused_reconstruction_is_reused_only_while_every_camera_frame_stays():
    net = _local_net(13)
    rec = Reconstructor(net, device="cpu", config=ReconstructorConfig(
        resolution0=8, upsampling_steps=1, n_input_points=128, reuse_tolerance=0.05))
    pts, vps = _fused_sphere(CAMERAS)
    first = rec.reconstruct(pts, point_viewpoints=vps)
    again = rec.reconstruct(pts, point_viewpoints=vps, previous=first)
    assert again.reused is True
    moved = vps.copy()
    moved[vps[:, 0] > 0.8] = [0.0, 0.0, 1.7]  # the side camera's points now come from behind
    other = rec.reconstruct(pts, point_viewpoints=moved, previous=first)
    assert not other.reused
