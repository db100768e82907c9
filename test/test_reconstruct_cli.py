"""occnet_reconstruct with a randomly initialised checkpoint written here (not the shipped weights)."""
import numpy as np
import pytest
import torch
import trimesh

from occnet_ros.network.checkpoint import CheckpointMeta, save_checkpoint
from occnet_ros.cli.reconstruct import InputError, main, read_cloud, read_point_viewpoints
from occnet_ros.network.model import ModelConfig, OccupancyNetwork
from fixtures_geometry import front_half_sphere

SMALL = ModelConfig(c_dim=16, encoder_hidden=16, encoder_blocks=2, decoder_hidden=16, decoder_blocks=2)


@pytest.fixture
def weights(tmp_path):
    torch.manual_seed(0)
    model = OccupancyNetwork(SMALL)
    with torch.no_grad():  # a bias towards "inside" near the origin so the random net has a surface
        model.decoder.fc_p.weight.mul_(5.0)
    return save_checkpoint(tmp_path / "rand.pt", model, CheckpointMeta())


def _cloud(n=300):
    return front_half_sphere(n, 0, center=(0.0, 0.0, 0.7), radius=0.08)


@pytest.mark.parametrize("ext", [".npy", ".xyz", ".ply", ".pcd"])
def test_read_cloud_formats(tmp_path, ext):
    pts = _cloud()
    path = tmp_path / f"c{ext}"
    if ext == ".npy":
        np.save(path, pts)
    elif ext == ".xyz":
        np.savetxt(path, pts)
    else:
        import open3d as o3d

        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.astype(np.float64)))
        assert o3d.io.write_point_cloud(str(path), pc)
    assert np.allclose(read_cloud(path), pts, atol=1e-5)


def test_read_cloud_errors(tmp_path):
    with pytest.raises(InputError, match="unknown point cloud extension"):
        read_cloud(tmp_path / "c.las")
    with pytest.raises(InputError, match="no such file"):
        read_cloud(tmp_path / "missing.npy")
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(InputError, match="bad.npy"):
        read_cloud(tmp_path / "bad.npy")
    np.save(tmp_path / "flat.npy", np.zeros((5, 2)))
    with pytest.raises(InputError, match="shape"):
        read_cloud(tmp_path / "flat.npy")


@pytest.mark.parametrize("ext", [".ply", ".obj", ".stl", ".glb"])
def test_main_writes_mesh(tmp_path, weights, ext):
    np.save(tmp_path / "c.npy", _cloud())
    out = tmp_path / f"m{ext}"
    rc = main([str(tmp_path / "c.npy"), "-o", str(out), "--weights", str(weights), "--device", "cpu",
               "--resolution0", "8", "--upsampling-steps", "1", "--threshold", "0.5"])
    assert rc == 0
    m = trimesh.load(out, force="mesh")
    assert len(m.faces) > 0


def test_main_no_surface_writes_nothing(tmp_path, capsys):
    model = OccupancyNetwork(SMALL)
    with torch.no_grad():  # constant "outside" everywhere
        model.decoder.fc_out.weight.zero_()
        model.decoder.fc_out.bias.fill_(-5.0)
    w = save_checkpoint(tmp_path / "empty.pt", model, CheckpointMeta())
    np.save(tmp_path / "c.npy", _cloud())
    out = tmp_path / "m.ply"
    assert main([str(tmp_path / "c.npy"), "-o", str(out), "--weights", str(w), "--device", "cpu",
                 "--resolution0", "4", "--upsampling-steps", "0"]) == 2
    assert "no surface" in capsys.readouterr().err and not out.exists()


def test_main_errors(tmp_path, weights, capsys):
    np.save(tmp_path / "c.npy", _cloud())
    assert main([str(tmp_path / "c.npy"), "-o", str(tmp_path / "m.xyz"), "--weights", str(weights)]) == 2
    assert "unknown mesh extension" in capsys.readouterr().err
    assert main([str(tmp_path / "nope.npy"), "-o", str(tmp_path / "m.ply"), "--weights", str(weights)]) == 2
    assert "nope.npy" in capsys.readouterr().err
    assert main([str(tmp_path / "c.npy"), "-o", str(tmp_path / "m.ply"), "--weights",
                 str(tmp_path / "nope.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err


# ---------------------------------------------------------------- known-empty space (--depth, --support-plane)
FX = FY = 300.0
CX, CY = 32.0, 24.0


def _depth_image():
    """(48, 64) depth of a fronto-parallel wall at 0.8 m with a hole (no returns) and a nearer patch."""
    d = np.full((48, 64), 0.8, np.float32)
    d[10:20, 10:20] = 0.0
    d[30:40, 40:50] = 0.6
    return d


def _args(*extra):
    from occnet_ros.cli.reconstruct import build_parser

    return build_parser().parse_args(["c.npy", "-o", "m.ply", *extra])


def test_known_empty_from_args_matches_a_direct_known_empty(tmp_path):
    from occnet_ros.cli.reconstruct import known_empty_from_args
    from occnet_ros.geometry import PinholeCamera, Plane
    from occnet_ros.reconstruction.known_empty import DepthView, KnownEmpty, KnownEmptyConfig

    np.save(tmp_path / "d.npy", _depth_image())
    pts = _cloud()  # around (0, 0, 0.7), up = -y: the table y = 0.06 lies below it
    intr = ["--intrinsics", str(FX), str(FY), str(CX), str(CY)]
    ref = KnownEmpty(KnownEmptyConfig(), Plane(np.array([0.0, -1.0, 0.0]), 0.06),
                     [DepthView(_depth_image(), PinholeCamera(width=64, height=48, fx=FX, fy=FY, cx=CX, cy=CY))])
    rng = np.random.default_rng(0)
    probe = rng.uniform([-0.1, -0.1, 0.3], [0.1, 0.1, 0.9], (5000, 3))
    # the plane given with either sign of its coefficients: oriented towards the cloud
    for plane in (["0", "1", "0", "-0.06"], ["0", "-2", "0", "0.12"]):
        got = known_empty_from_args(_args("--depth", str(tmp_path / "d.npy"), *intr, "--support-plane", *plane), pts)
        assert got.n_views == 1 and got.plane is not None
        assert np.array_equal(got.mask(probe), ref.mask(probe))
    both = ref.mask(probe)
    assert 0 < both.sum() < len(probe)  # the probe sees both answers
    only_depth = known_empty_from_args(_args("--depth", str(tmp_path / "d.npy"), *intr), pts)
    assert only_depth.plane is None and np.array_equal(only_depth.mask(probe), ref.in_free_space(probe))
    assert known_empty_from_args(_args(), pts) is None


def test_read_depth_png_in_millimetres(tmp_path):
    import open3d as o3d
    from occnet_ros.cli.reconstruct import read_depth

    mm = (_depth_image() * 1000).astype(np.uint16)
    assert o3d.io.write_image(str(tmp_path / "d.png"), o3d.geometry.Image(mm))
    assert np.allclose(read_depth(tmp_path / "d.png", 0.001), mm * 0.001, atol=1e-6)
    assert np.allclose(read_depth(tmp_path / "d.png", 0.0001), mm * 0.0001, atol=1e-7)


def test_known_empty_option_errors(tmp_path):
    from occnet_ros.cli.reconstruct import known_empty_from_args

    np.save(tmp_path / "d.npy", _depth_image())
    np.save(tmp_path / "d3.npy", np.zeros((2, 3, 4)))
    pts = _cloud()
    intr = ["--intrinsics", "300", "300", "32", "24"]
    cases = [(["--depth", str(tmp_path / "d.npy")], "go together"),
             (intr, "go together"),
             (["--depth", str(tmp_path / "nope.npy"), *intr], "nope.npy: no such file"),
             (["--depth", str(tmp_path / "d.tif"), *intr], "unknown depth image extension"),
             (["--depth", str(tmp_path / "d3.npy"), *intr], "d3.npy: expected an \\(h, w\\) depth image"),
             (["--depth", str(tmp_path / "d.npy"), "--intrinsics", "0", "300", "32", "24"], "--intrinsics"),
             (["--depth", str(tmp_path / "d.npy"), *intr, "--depth-scale", "0"], "--depth-scale"),
             (["--support-plane", "0", "0", "0", "1"], "--support-plane")]
    for extra, msg in cases:
        with pytest.raises(InputError, match=msg):
            known_empty_from_args(_args(*extra), pts)


def test_main_support_plane_removes_the_mesh_below_the_table(tmp_path, weights):
    from occnet_ros.reconstruction.normalization import BOX_HALF, canonical_frame_from_observation

    table_y = 0.03  # optical frame, y down: the table is the plane y = 0.03, objects at y < 0.03
    pts = _cloud(600)
    pts = pts[pts[:, 1] < table_y]
    np.save(tmp_path / "c.npy", pts)
    cell = 2 * BOX_HALF * canonical_frame_from_observation(pts, (0.0, -1.0, 0.0)).scale / 32
    common = ["--weights", str(weights), "--device", "cpu", "--resolution0", "16", "--upsampling-steps", "1",
              "--threshold", "0.5"]
    assert main([str(tmp_path / "c.npy"), "-o", str(tmp_path / "free.ply"), *common]) == 0
    assert main([str(tmp_path / "c.npy"), "-o", str(tmp_path / "cut.ply"), *common,
                 "--support-plane", "0", "1", "0", str(-table_y)]) == 0
    free = trimesh.load(tmp_path / "free.ply", force="mesh")
    cut = trimesh.load(tmp_path / "cut.ply", force="mesh")
    assert free.vertices[:, 1].max() > table_y + 2 * cell  # the network alone reaches under the table
    assert cut.vertices[:, 1].max() <= table_y + cell
    assert len(cut.faces) > 0 and cut.is_watertight


def test_main_with_depth_and_plane_reproduces_the_evaluation_pipeline(tmp_path):
    """The shipped weights on one protocol view of the concave box: the command given the view's depth image
    (the crop placed in a full 640 x 480 image) and its table plane writes the mesh that the evaluation's
    pipeline makes from the same observation; without them the mesh differs (the network's alone)."""
    from occnet_ros.evaluation.protocol import evaluation_object, observe_object
    from occnet_ros.reconstruction.known_empty import KnownEmpty, KnownEmptyConfig
    from occnet_ros.reconstruction.reconstructor import Reconstructor

    obs = observe_object(evaluation_object("toy_concave_box"), 1)
    (view,), plane = obs.depth_views, obs.support_plane
    assert np.allclose(view.camera_to_source.matrix(), np.eye(4), atol=1e-12) and plane is not None  # camera 0
    full = np.zeros((480, 640), np.float32)
    r0, c0 = view.roi_origin
    full[r0:r0 + view.depth.shape[0], c0:c0 + view.depth.shape[1]] = view.depth
    np.save(tmp_path / "depth.npy", full)
    np.save(tmp_path / "c.npy", obs.points)
    common = [str(tmp_path / "c.npy"), "--device", "cpu", "--resolution0", "16", "--upsampling-steps", "1",
              "--up", *map(repr, map(float, obs.up)), "--viewpoint", *map(repr, map(float, obs.viewpoint))]
    cam = view.camera
    assert cam.shape == full.shape
    known = ["--depth", str(tmp_path / "depth.npy"), "--intrinsics", *map(repr, (cam.fx, cam.fy, cam.cx, cam.cy)),
             "--support-plane", *map(repr, map(float, plane.normal)), repr(float(plane.offset))]
    assert main([*common, "-o", str(tmp_path / "with.ply"), *known]) == 0
    assert main([*common, "-o", str(tmp_path / "without.ply")]) == 0
    rec = Reconstructor.from_pretrained(device="cpu", resolution0=16, upsampling_steps=1)
    ref = rec.reconstruct(obs.points, obs.up, obs.viewpoint,
                          known_empty=KnownEmpty(KnownEmptyConfig(), plane, obs.depth_views)).mesh
    got = trimesh.load(tmp_path / "with.ply", force="mesh", process=False)
    alone = trimesh.load(tmp_path / "without.ply", force="mesh", process=False)
    assert np.array_equal(got.faces, ref.faces)
    assert np.allclose(got.vertices, ref.vertices, atol=1e-6)
    assert abs(alone.volume - got.volume) > 0.05 * got.volume


def test_main_point_viewpoints_reproduces_a_fused_reconstruction(tmp_path):
    """--point-viewpoints: the same mesh as Reconstructor.reconstruct with those per-point camera centres
    and the threshold of that many views (default --views = distinct centres); bad files are refused."""
    from occnet_ros.reconstruction.reconstructor import Reconstructor

    torch.manual_seed(0)
    model = OccupancyNetwork(SMALL)
    with torch.no_grad():
        model.decoder.fc_p.weight.mul_(5.0)
    w = save_checkpoint(tmp_path / "v.pt", model, CheckpointMeta(threshold=0.5, view_thresholds={2: 0.3}))
    centre = np.array([0.0, 0.0, 0.7])
    front = _cloud(300)
    side = (front - centre) @ np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]) + centre
    points = np.concatenate([front, side]).astype(np.float32)
    vps = np.concatenate([np.zeros((300, 3)), np.tile([[0.7, 0.0, 0.7]], (300, 1))])
    np.save(tmp_path / "c.npy", points)
    np.save(tmp_path / "vp.npy", vps)
    common = ["--weights", str(w), "--device", "cpu", "--resolution0", "8", "--upsampling-steps", "1"]
    assert main([str(tmp_path / "c.npy"), "-o", str(tmp_path / "m.ply"), "--point-viewpoints",
                 str(tmp_path / "vp.npy"), *common]) == 0
    rec = Reconstructor.from_pretrained(w, device="cpu", resolution0=8, upsampling_steps=1)
    ref = rec.reconstruct(points, point_viewpoints=vps, n_views=2)
    one = rec.reconstruct(points, n_views=1)
    assert ref.threshold == 0.3 and len(ref.view_frames) == 1
    got = trimesh.load(tmp_path / "m.ply", force="mesh", process=False)
    np.testing.assert_allclose(got.vertices, ref.mesh.vertices, atol=1e-5)
    assert np.array_equal(got.faces, ref.mesh.faces)
    assert len(got.vertices) != len(one.mesh.vertices) or not np.allclose(got.vertices, one.mesh.vertices)
    for bad, words in [(np.zeros((10, 3)), "expected \\(600, 3\\)"), (np.full((600, 3), np.nan), "finite")]:
        np.save(tmp_path / "bad.npy", bad)
        with pytest.raises(InputError, match=words):
            read_point_viewpoints(tmp_path / "bad.npy", 600)
    assert main([str(tmp_path / "c.npy"), "-o", str(tmp_path / "m2.ply"), "--point-viewpoints",
                 str(tmp_path / "vp.txt"), *common]) == 2
    assert not (tmp_path / "m2.ply").exists()
