"""Held-out comparison of variants (weights + reconstruction settings): parsing, scoring every variant on
the same observations, the occnet_heldout command. The network is a hand-set octahedron TEST DOUBLE."""
import json

import numpy as np
import pytest

from occnet_ros.evaluation.calibration import CalibrationConfig, calibrate_threshold, calibration_objects
from occnet_ros.evaluation.heldout import compare_variants, parse_variant
from occnet_ros.evaluation.metrics import MetricsConfig
from occnet_ros.reconstruction.reconstructor import Reconstructor
from fixtures_geometry import octahedron_checkpoint


def test_parse_variant_fields_and_errors():
    v = parse_variant("a")
    assert (v.name, v.weights, v.overrides, v.anchor) == ("a", None, {}, {})
    v = parse_variant("b: weights=runs/x.pt, threshold=0.4, max_view_frames=1, anchor.radius=0.12, mirror_average=false")
    assert v.weights == "runs/x.pt" and v.anchor == {"radius": 0.12}
    assert v.overrides == {"threshold": 0.4, "max_view_frames": 1, "mirror_average": False}
    with pytest.raises(ValueError, match="unknown key 'thresh'"):
        parse_variant("c:thresh=0.4")
    with pytest.raises(ValueError, match="not key=value"):
        parse_variant("d:threshold")
    with pytest.raises(ValueError, match="not a YAML value"):
        parse_variant("e:threshold=[0.4")
    assert parse_variant("f:weights=a: b.pt").weights == "a: b.pt"  # a path is not parsed as YAML
    with pytest.raises(ValueError, match="empty name"):
        parse_variant(":threshold=0.4")


def test_variants_are_scored_on_the_same_observations(tmp_path):
    ckpt = octahedron_checkpoint(tmp_path / "oct.pt")
    cfg = CalibrationConfig(n_meshes=0, n_shapes=2, metrics=MetricsConfig(n_points_iou=4000, n_points_surface=4000))
    objects = calibration_objects(cfg, [])
    variants = [parse_variant(f"a:weights={ckpt},threshold=0.5"), parse_variant(f"b:weights={ckpt},threshold=0.5"),
                parse_variant(f"c:weights={ckpt},threshold=0.95")]
    res = compare_variants(variants, objects, cfg, upsampling_steps=0)
    a, b, c = (res["variants"][k] for k in "abc")
    assert res["n_objects"] == 2 and [r["object"] for r in a["objects"]] == [o.name for o in objects]
    assert a["objects"] == b["objects"] and a["mean"] == b["mean"]  # same settings, same observations
    assert a["mean"]["iou"] != c["mean"]["iou"] and c["threshold"] == 0.95
    assert a["mean_meshes"] is None and a["mean_shapes"] == a["mean"]
    # the same numbers as the threshold calibration, which shares the loop
    rec = Reconstructor.from_pretrained(ckpt, device="cpu", upsampling_steps=0)
    cal = calibrate_threshold(rec, objects, CalibrationConfig(n_meshes=0, n_shapes=2, thresholds=[0.5, 0.95],
                                                              metrics=cfg.metrics))
    assert np.isclose(cal["table"][0]["iou"], a["mean"]["iou"]) and np.isclose(cal["table"][1]["iou"], c["mean"]["iou"])
    with pytest.raises(ValueError, match="names must differ"):
        compare_variants([variants[0], variants[0]], objects, cfg)
    for bad, words in [("threshold=abc", "variant 'bad'"), ("max_view_frames=0", "max_view_frames"),
                       ("anchor.radius=-1", "anchor radius")]:
        with pytest.raises(ValueError, match=words):
            compare_variants([parse_variant(f"bad:weights={ckpt},{bad}")], objects, cfg)


def test_cli_prints_and_writes_the_table(tmp_path, capsys):
    from occnet_ros.cli.heldout import main

    ckpt = octahedron_checkpoint(tmp_path / "oct.pt")
    out = tmp_path / "out"
    assert main(["--variant", f"x:weights={ckpt}", "--variant", f"y:weights={ckpt},threshold=0.3", "--views", "1",
                 "--objects", "0", "1", "--upsampling-steps", "0", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "| 1 | x | 0.50 |" in text and "| 1 | y | 0.30 |" in text
    saved = json.loads((out / "heldout.json").read_text())
    assert set(saved["results"][0]["variants"]) == {"x", "y"} and (out / "heldout.md").read_text() in text
    from PIL import Image

    with Image.open(out / "heldout_groups.png") as im:  # the per-group chart: drawn, not blank
        assert im.size[0] >= 600 and np.asarray(im.convert("L")).std() > 10
    assert main(["--variant", f"x:weights={ckpt}", "--views", "1", "--objects", "0", "2", "--upsampling-steps", "0",
                 "--out", str(out), "--render", "--no-progress"]) == 0
    with Image.open(out / "heldout_renders_1v.png") as im:  # one row: the first shape (input, x, ground truth)
        assert im.size[0] > 2 * im.size[1] and np.asarray(im.convert("L")).std() > 10
    assert main(["--variant", f"x:weights={ckpt}", "--objects", "0", "1", "--render", "--no-progress"]) == 2
    assert "--render needs --out" in capsys.readouterr().err
    assert main(["--variant", "z:colour=red", "--objects", "0", "1", "--no-progress"]) == 2
    assert "unknown key 'colour'" in capsys.readouterr().err
    assert main(["--variant", f"w:weights={tmp_path / 'missing.pt'}", "--objects", "0", "1", "--no-progress"]) == 2


def test_shape_families_choose_the_held_out_shapes(tmp_path, capsys):
    from occnet_ros.cli.heldout import main, parse_families

    cfg = CalibrationConfig(n_meshes=0, n_shapes=3, shape_families={"hollow_box": 1.0})
    assert [o.name.split("_", 2)[2] for o in calibration_objects(cfg, [])] == ["hollow_box"] * 3
    default = calibration_objects(CalibrationConfig(n_meshes=0, n_shapes=3), [])
    assert all("hollow_box" not in o.name for o in default)
    assert parse_families(["hollow_box=1", "box=0.5"]) == {"hollow_box": 1.0, "box": 0.5}
    for bad in (["hollow_box"], ["box=x"], ["box=-1"]):
        with pytest.raises(ValueError, match="FAMILY=WEIGHT"):
            parse_families(bad)
    with pytest.raises(ValueError, match="unknown shape family"):
        CalibrationConfig(n_shapes=1, shape_families={"crate": 1.0}).validate()
    ckpt = octahedron_checkpoint(tmp_path / "oct.pt")
    assert main(["--variant", f"x:weights={ckpt}", "--views", "1", "--objects", "0", "1", "--upsampling-steps", "0",
                 "--shape-families", "hollow_box=1", "--no-progress"]) == 0
    assert "(0 meshes, 1 shapes of hollow_box=1)" in capsys.readouterr().out
    assert main(["--variant", f"x:weights={ckpt}", "--objects", "0", "1", "--shape-families", "crate=1",
                 "--no-progress"]) == 2
    assert "unknown shape family ['crate']" in capsys.readouterr().err


def test_group_scores_and_plot(tmp_path):
    from types import SimpleNamespace

    from occnet_ros.evaluation.heldout_plot import group_scores, plot_groups, representatives

    names = ["mesh_00_a", "mesh_01_b", "shape_00_box", "group_plate_0", "group_plate_1", "group_pan_0"]
    assert representatives([SimpleNamespace(name=n) for n in names]) == [
        "mesh_00_a", "shape_00_box", "group_plate_0", "group_pan_0"]

    def variant(iou_plate, iou_meshes):
        return {"groups": {"plate": {"iou": iou_plate, "n": 2}}, "mean_meshes": {"iou": iou_meshes},
                "mean_shapes": None}

    res = {"views": 1, "variants": {"a": variant(0.5, 0.8), "b": variant(0.7, 0.75)}}
    assert group_scores(res) == {"a": {"plate": 0.5, "meshes": 0.8}, "b": {"plate": 0.7, "meshes": 0.75}}
    png = plot_groups([res, {**res, "views": 4}], tmp_path / "g.png")
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[1] > 600  # two panels
    with pytest.raises(ValueError, match="no held-out groups"):
        plot_groups([{"views": 1, "variants": {"a": {"groups": {}, "mean_meshes": None, "mean_shapes": None}}}],
                    tmp_path / "none.png")
