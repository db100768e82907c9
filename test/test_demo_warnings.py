"""``occnet_demo`` prints no warning a user cannot act on.

The one it printed: RuntimeWarnings (divide by zero / invalid value) from trimesh's mass properties, reached
through ``Trimesh.volume`` on flat closed parts of reconstructed meshes while scoring them
(occnet_ros.data.solid_inside.mesh_parts). The volume is now computed directly; these tests run that code
with warnings as errors, and a short demo run with the shipped weights must write no "Warning" to its
terminal."""
from __future__ import annotations

import subprocess
import warnings

import numpy as np
import pytest
import trimesh
from ros_helpers import REPO, node_env, random_domain_id

from occnet_ros.data.solid_inside import mesh_parts, signed_volume, solid_inside


def flat_closed_part() -> trimesh.Trimesh:
    """Two triangles back to back: watertight, zero volume (what marching cubes leaves on a 1-voxel sheet)."""
    return trimesh.Trimesh(np.array([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0]]),
                           np.array([[0, 1, 2], [0, 2, 1]]), process=False)


def test_signed_volume_matches_trimesh_on_closed_meshes():
    box = trimesh.creation.box((0.1, 0.2, 0.3))
    sphere = trimesh.creation.icosphere(2, 0.05).apply_translation([1.0, -2.0, 0.5])
    inverted = box.copy()
    inverted.invert()
    for m in (box, sphere, inverted):
        assert signed_volume(m.vertices, m.faces) == pytest.approx(m.volume, rel=1e-12, abs=1e-15)
    assert signed_volume(inverted.vertices, inverted.faces) < 0
    flat = flat_closed_part()
    assert flat.is_watertight and signed_volume(flat.vertices, flat.faces) == 0.0


def test_trimesh_volume_of_a_flat_closed_part_warns_which_is_why_it_is_not_used():
    with pytest.warns(RuntimeWarning):
        flat_closed_part().volume


def test_mesh_parts_of_a_mesh_with_a_flat_closed_part_warns_nothing():
    box = trimesh.creation.box((0.1, 0.1, 0.1))
    flat = flat_closed_part().apply_translation([1.0, 0.0, 0.0])
    mesh = trimesh.util.concatenate([box, flat])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parts = mesh_parts(mesh)
        inside = solid_inside(parts, np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5]]), n_rays=3, n_rays_open=3,
                              rng=np.random.default_rng(0))
    assert len(parts) == 2 and parts.closed.all() and parts.signs.tolist() == [1, 1]
    assert inside.tolist() == [True, False]


@pytest.mark.slow
def test_a_short_demo_run_prints_no_warning(tmp_path):
    """The default scene, camera and shipped weights (the meshes that warned were real reconstructions of it;
    with trimesh's volume in mesh_parts this run printed four RuntimeWarnings), 1 frame and the object map
    over 2 views, fewer scoring points."""
    cmd = [str(REPO / ".venv" / "bin" / "occnet_demo"), "--out", str(tmp_path / "out"), "--frames", "1",
           "--map-views", "2", "--timeout", "200", "--iou-points", "20000", "--surface-points", "5000"]
    proc = subprocess.run(cmd, env=node_env(random_domain_id()), capture_output=True, text=True, timeout=280,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    terminal = proc.stdout + proc.stderr
    assert "Warning" not in terminal and "warning:" not in terminal.lower(), proc.stderr[-3000:]
