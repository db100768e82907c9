"""occnet_reconstruct with a randomly initialised checkpoint written here (not the shipped weights)."""
import numpy as np
import pytest
import torch
import trimesh

from occnet_ros.checkpoint import CheckpointMeta, save_checkpoint
from occnet_ros.cli.reconstruct import InputError, main, read_cloud
from occnet_ros.model import ModelConfig, OccupancyNetwork
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
