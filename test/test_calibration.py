"""Threshold calibration on held-out training-distribution objects: which objects, the table, the CLI
that writes the chosen threshold into a checkpoint."""
import numpy as np
import pytest

from occnet_ros.network.checkpoint import load_raw
from occnet_ros.data.dataset import DataConfig, split_meshes
from occnet_ros.data.mesh_sources import data_root
from occnet_ros.evaluation.calibration import CalibrationConfig, calibrate_threshold, calibration_objects
from occnet_ros.evaluation.metrics import MetricsConfig
from occnet_ros.reconstruction.reconstructor import Reconstructor
from fixtures_geometry import octahedron_checkpoint

SMALL_METRICS = MetricsConfig(n_points_iou=4000, n_points_surface=4000)


def test_calibration_objects_are_held_out_and_scaled():
    val = split_meshes(DataConfig(), "val")
    train = split_meshes(DataConfig(), "train")
    cfg = CalibrationConfig(n_meshes=2, n_shapes=2, mesh_size_m=0.1)
    objs = calibration_objects(cfg, val)
    assert len(objs) == 4 and not {str(p) for p, _ in val[:2]} & {str(p) for p, _ in train}
    for o in objs[:2]:
        assert o.mesh.extents.max() == pytest.approx(0.1, rel=1e-6)
    assert objs[2].source == "procedural" and objs[2].name.startswith("shape_0_")
    again = calibration_objects(cfg, val)
    assert np.array_equal(again[3].mesh.vertices, objs[3].mesh.vertices)  # seeded
    duck = data_root() / "duck_vhacd.urdf"
    with pytest.raises(ValueError, match="evaluation object"):
        calibration_objects(cfg, [(duck.with_name("duck.obj"), 1.0)])


def test_table_scores_each_threshold_and_picks_the_best_iou(tmp_path):
    """The hand-set octahedron network's surface moves with the threshold (logit = k (r - |p|_1)), so the
    thresholds score differently; the best is the one of the highest mean IoU."""
    rec = Reconstructor.from_pretrained(octahedron_checkpoint(tmp_path / "oct.pt"), device="cpu",
                                        resolution0=16, upsampling_steps=1)
    cfg = CalibrationConfig(n_meshes=0, n_shapes=2, thresholds=[0.05, 0.5, 0.95], metrics=SMALL_METRICS)
    res = calibrate_threshold(rec, calibration_objects(cfg, []), cfg)
    ious = [row["iou"] for row in res["table"]]
    assert res["n_objects"] == 2 and len(ious) == 3 and len(set(ious)) == 3
    assert all(0.0 <= v <= 1.0 for v in ious)
    assert res["best_threshold"] == cfg.thresholds[int(np.argmax(ious))]
    assert rec.threshold == 0.5  # the reconstructor passed in is left as it was
    with pytest.raises(ValueError, match="thresholds"):
        CalibrationConfig(thresholds=[1.5]).validate()


def test_cli_writes_the_chosen_threshold(tmp_path, capsys):
    from occnet_ros.cli.train import main

    ckpt = octahedron_checkpoint(tmp_path / "oct.pt")
    assert main(["--calibrate", str(ckpt), "--calibration-objects", "0", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    meta = load_raw(ckpt)["meta"]
    cal = meta["metrics"]["calibration"]
    assert meta["threshold"] == cal["best_threshold"] and len(cal["table"]) == 5 and cal["n_objects"] == 1
    assert f"wrote threshold {cal['best_threshold']}" in out and "IoU" in out
    # several fused view counts in one call: each its own threshold and record; the single-view one stays
    assert main(["--calibrate", str(ckpt), "--calibration-objects", "0", "1", "--calibration-views", "2", "4",
                 "--no-progress"]) == 0
    meta2 = load_raw(ckpt)["meta"]
    cal2 = meta2["metrics"]["calibration_2_views"]
    assert cal2["views"] == 2 and set(meta2["view_thresholds"]) == {2, 4}
    for v in (2, 4):
        assert meta2["view_thresholds"][v] == meta2["metrics"][f"calibration_{v}_views"]["best_threshold"]
    assert meta2["threshold"] == meta["threshold"] and meta2["metrics"]["calibration"] == cal
    assert Reconstructor.from_pretrained(ckpt, device="cpu").threshold_for(3) == cal2["best_threshold"]
    assert main(["--calibrate", str(ckpt), "--calibration-views", "2", "0", "--no-progress"]) == 2
    assert main(["--calibrate", str(tmp_path / "missing.pt"), "--no-progress"]) == 2
