"""Probability calibration: the ECE against a slow per-point reference and on synthetic predictors with a known
answer, the temperature / bias fit, the reliability diagram, the checkpoint's stored calibrations (old files
load as the identity), the field's calibrated queries and unchanged meshes, and the held-out sampling."""
import numpy as np
import pytest
import torch

from occnet_ros.evaluation.reliability import (MAP_MIN_STEP, N_BINS, expected_calibration_error, fit_calibration,
                                               fit_logit_map, reliability_bins, reliability_diagram)
from occnet_ros.network.checkpoint import (CheckpointMeta, calibration_for_views, load_checkpoint, save_checkpoint,
                                           set_probability_calibration)
from occnet_ros.network.model import ModelConfig, OccupancyNetwork
from occnet_ros.network.probability_calibration import IDENTITY, ProbabilityCalibration


def slow_ece(p, y, n_bins=15):
    """Reference: each point put into its bin one at a time, then the weighted gaps."""
    bins = [[] for _ in range(n_bins)]
    for pi, yi in zip(p, y):
        b = int(pi * n_bins)
        bins[min(b, n_bins - 1)].append((pi, yi))
    total = 0.0
    for rows in bins:
        if rows:
            conf = sum(r[0] for r in rows) / len(rows)
            freq = sum(r[1] for r in rows) / len(rows)
            total += len(rows) / len(p) * abs(freq - conf)
    return total


def test_ece_matches_slow_reference():
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 0.5, 3000)
    p[:5] = [0.0, 1.0, 1 / 15, 14 / 15, 0.5]  # bin edges and the ends
    y = rng.random(3000) < p ** 1.5
    assert expected_calibration_error(p, y) == pytest.approx(slow_ece(p, y), abs=1e-12)
    bins = reliability_bins(p, y)
    assert N_BINS == 15 and bins.count.sum() == 3000 and len(bins.edges) == 16


def test_ece_of_synthetic_predictors():
    rng = np.random.default_rng(1)
    n = 200_000
    p = rng.random(n)
    calibrated = rng.random(n) < p  # P(occupied | p) = p
    assert expected_calibration_error(p, calibrated) < 0.01
    y60 = rng.random(n) < 0.6  # always says 0.9 for a 60 % event
    assert expected_calibration_error(np.full(n, 0.9), y60) == pytest.approx(0.3, abs=0.01)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same length"):
        expected_calibration_error([0.1, 0.2], [1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        expected_calibration_error([1.2], [1])
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error([0.5], [2])
    with pytest.raises(ValueError, match="no probabilities"):
        expected_calibration_error([], [])


def test_fit_recovers_a_known_temperature_and_bias():
    rng = np.random.default_rng(2)
    true_logit = rng.normal(0, 2.0, 100_000)
    y = rng.random(true_logit.size) < 1 / (1 + np.exp(-true_logit))
    over = 1 / (1 + np.exp(-(2.5 * (true_logit - 0.4))))  # over-confident and shifted: T = 2.5, b = 0.4
    cal = fit_calibration(over, y)
    assert cal.temperature == pytest.approx(2.5, rel=0.05) and cal.bias == pytest.approx(0.4, abs=0.05)
    assert expected_calibration_error(cal.apply(over), y) < 0.01 < expected_calibration_error(over, y)
    alone = fit_calibration(over, y, with_bias=False)
    assert alone.bias == 0.0 and alone.temperature > 1.5
    with pytest.raises(ValueError, match="cannot fit"):
        fit_calibration([0.0, 1.0, 0.3], [0, 1, 1])


def test_calibration_map_is_monotone_keeps_ends_and_maps_threshold():
    cal = ProbabilityCalibration(1.8, 0.2)
    p = np.linspace(0, 1, 10001, dtype=np.float32)
    q = cal.apply(p)
    assert q[0] == 0.0 and q[-1] == 1.0 and np.all(np.diff(q) >= 0)
    t = 0.45
    ct = cal.threshold(t)
    strictly = np.abs(p - t) > 1e-6
    assert np.array_equal((q >= ct)[strictly], (p >= t)[strictly])
    assert IDENTITY.apply(p) is not None and np.array_equal(IDENTITY.apply(p), p)
    for bad in ({"temperature": 0.0}, {"temperature": float("nan")}, {"bias": float("inf")},
                {"knots_in": (0.0,), "knots_out": (0.0,)}, {"knots_in": (0.0, 1.0), "knots_out": (0.0,)},
                {"knots_in": (1.0, 0.0), "knots_out": (0.0, 1.0)}, {"knots_in": (0.0, 1.0), "knots_out": (1.0, 1.0)},
                {"knots_in": (0.0, float("inf")), "knots_out": (0.0, 1.0)}):
        with pytest.raises(ValueError):
            ProbabilityCalibration(**bad)
    knotted = ProbabilityCalibration(1.2, 0.1, (-3.0, 0.0, 2.0), (-1.0, -0.2, 0.5))
    q = knotted.apply(p)
    assert q[0] == 0.0 and q[-1] == 1.0 and np.all(np.diff(q) >= 0)
    ct = knotted.threshold(t)
    assert np.array_equal((q >= ct)[strictly], (p >= t)[strictly])
    z = np.array([-10.0, -3.0, -1.5, 0.0, 2.0, 5.0])
    assert np.allclose(knotted.apply_logits(z * 1.2 - 0.12), [-8.0, -1.0, -0.6, -0.2, 0.5, 3.5])  # slope 1 outside


def slow_logit_map(p, y, n_bins):
    """Reference: equal-count bins by sorted logit (of p clipped to [1e-7, 1 - 1e-7]), then
    pool-adjacent-violators one block at a time."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    z = np.log(p) - np.log1p(-p)
    order = np.argsort(z, kind="stable")
    z, y = z[order], y[order].astype(float)
    starts = sorted(set(int(v) for v in np.linspace(0, len(z), n_bins + 1)[:-1]))
    bins = [(z[a:b], y[a:b]) for a, b in zip(starts, starts[1:] + [len(z)])]
    blocks = []  # [sum y, count, number of bins]
    for _, yb in bins:
        blocks.append([yb.sum(), len(yb), 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s2, n2, k2 = blocks.pop()
            blocks[-1] = [blocks[-1][0] + s2, blocks[-1][1] + n2, blocks[-1][2] + k2]
    fitted = [b[0] / b[1] for b in blocks for _ in range(b[2])]
    xs, ys, prev = [], [], -np.inf
    for k, ((zb, yb), f) in enumerate(zip(bins, fitted)):
        lo = 0.5 / len(yb)
        q = min(max(f, lo), 1 - lo)
        out = max(np.log(q / (1 - q)), prev + MAP_MIN_STEP)
        xs.append(zb.mean())
        ys.append(out)
        prev = out
    return np.array(xs), np.array(ys)


def test_logit_map_matches_slow_reference_and_fixes_what_a_temperature_cannot():
    rng = np.random.default_rng(5)

    def draw(n):  # over-confident in the middle, honest far out: no single temperature fits
        z = rng.normal(0, 4, n)
        truth = 1 / (1 + np.exp(-(z / 3 + 0.4 * np.sin(z))))
        return 1 / (1 + np.exp(-z)), rng.random(n) < truth

    p, y = draw(60_000)
    cal = fit_logit_map(p, y, n_bins=50)
    xs, ys = slow_logit_map(p, y, 50)
    assert np.allclose(cal.knots_in, xs, atol=1e-9) and np.allclose(cal.knots_out, ys, atol=1e-9)
    assert cal.temperature == 1.0 and cal.bias == 0.0
    p2, y2 = draw(200_000)  # fresh points
    temp = fit_calibration(p, y)
    assert expected_calibration_error(cal.apply(p2), y2) < 0.01 < expected_calibration_error(temp.apply(p2), y2)
    with pytest.raises(ValueError, match="cannot fit"):
        fit_logit_map([0.2, 0.3], [1, 1])
    with pytest.raises(ValueError, match="same probability"):
        fit_logit_map([0.3, 0.3, 0.3], [0, 1, 1])


def test_reliability_diagram_png(tmp_path):
    rng = np.random.default_rng(3)
    p = rng.random(5000)
    y = rng.random(5000) < p
    out = reliability_diagram({"before": reliability_bins(p, y), "after": reliability_bins(p ** 2, y)},
                              tmp_path / "r.png", "test")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def tiny_model():
    torch.manual_seed(0)
    return OccupancyNetwork(ModelConfig(c_dim=16, encoder_hidden=16, encoder_blocks=1, decoder_hidden=16, decoder_blocks=1))


def test_checkpoint_stores_calibrations_and_old_files_load_as_identity(tmp_path):
    """TEST DOUBLE weights: a randomly initialised tiny network."""
    model = tiny_model()
    old = save_checkpoint(tmp_path / "old.pt", model, CheckpointMeta(threshold=0.4, view_thresholds={4: 0.45}))
    raw = torch.load(old, weights_only=True)
    for key in ("temperature", "logit_bias", "view_temperatures", "view_logit_biases"):
        raw["meta"].pop(key)  # a file written before calibrations existed
    torch.save(raw, old)
    _, meta, _ = load_checkpoint(old)
    assert meta.calibration_for(1) == IDENTITY and meta.calibration_for(4) == IDENTITY
    new = set_probability_calibration(old, {1: ProbabilityCalibration(1.5, 0.1), 4: ProbabilityCalibration(1.2, -0.1)},
                                      {"note": "test"}, dst=tmp_path / "new.pt")
    _, meta2, payload = load_checkpoint(new)
    assert meta2.calibration_for(1) == ProbabilityCalibration(1.5, 0.1)
    assert meta2.calibration_for(2) == ProbabilityCalibration(1.5, 0.1)  # largest fitted count <= 2
    assert meta2.calibration_for(6) == ProbabilityCalibration(1.2, -0.1)
    assert meta2.threshold == 0.4 and meta2.view_thresholds == {4: 0.45}
    assert meta2.metrics["probability_calibration"] == {"note": "test"}
    for k, v in model.state_dict().items():
        assert torch.equal(payload["state_dict"][k], v)
    _, unchanged, _ = load_checkpoint(old)
    assert unchanged.calibration_for(1) == IDENTITY
    assert calibration_for_views(3, 1.0, 0.0, {2: 2.0}, {2: 0.5}) == ProbabilityCalibration(2.0, 0.5)
    mapped = {1: ProbabilityCalibration(1.0, 0.0, (-2.0, 0.0, 3.0), (-1.0, 0.1, 1.0)),
              4: ProbabilityCalibration(1.0, 0.0, (-1.0, 1.0), (-0.5, 0.5))}
    _, meta3, _ = load_checkpoint(set_probability_calibration(new, mapped, {}, dst=tmp_path / "mapped.pt"))
    assert meta3.calibration_for(1) == mapped[1] and meta3.calibration_for(5) == mapped[4]
    assert meta3.calibration_for(2) == mapped[1]
    _, meta4, _ = load_checkpoint(set_probability_calibration(tmp_path / "mapped.pt", {4: ProbabilityCalibration(1.1, 0.0)},
                                                              {}, dst=tmp_path / "unmapped4.pt"))
    assert meta4.calibration_for(4) == ProbabilityCalibration(1.1, 0.0) and meta4.calibration_for(1) == mapped[1]
    with pytest.raises(ValueError, match="without a temperature"):
        CheckpointMeta(view_logit_maps={3: [[0.0, 1.0], [0.0, 1.0]]}).validate()
    with pytest.raises(ValueError, match="strictly increasing"):
        CheckpointMeta(logit_map=[[0.0, 1.0], [1.0, 0.0]]).validate()
    with pytest.raises(ValueError, match="same view counts"):
        CheckpointMeta(view_temperatures={2: 1.5}).validate()
    with pytest.raises(ValueError, match="temperature"):
        CheckpointMeta(temperature=-1.0).validate()


def test_field_answers_calibrated_and_mesh_is_unchanged():
    """A calibrated field answers calibrate(raw) and the mesh (from the raw probabilities at the threshold) is
    the same; the calibrated probabilities cross the mapped threshold at the same grid corners."""
    from occnet_ros.reconstruction.mise import mesh_from_values, mise_values
    from occnet_ros.reconstruction.reconstructor import Reconstructor, ReconstructorConfig

    rec = Reconstructor(tiny_model(), device="cpu", config=ReconstructorConfig(device="cpu", resolution0=16,
                                                                                upsampling_steps=1, threshold=0.5))
    rng = np.random.default_rng(4)
    pts = (rng.normal(size=(500, 3)) * [0.04, 0.03, 0.05] + [0, 0, 0.6]).astype(np.float32)
    obj = rec.reconstruct(pts, extract_mesh=False)
    from occnet_ros.reconstruction.occupancy_field import OccupancyField

    cal = ProbabilityCalibration(1.7, 0.3)
    calibrated = OccupancyField(obj.occupancy.model, obj.occupancy.codes, 4096, calibration=cal)
    q = (rng.uniform(-0.55, 0.55, (2000, 3))).astype(np.float32)
    raw = obj.occupancy.query_canonical(q)
    assert np.allclose(calibrated.query_canonical(q), cal.apply(raw), atol=1e-6)
    t = float(np.median(raw))  # a threshold the random field crosses
    v_raw, _ = mise_values(obj.occupancy.probabilities, 16, 1, t, 0.55, batch_size=40000)
    v_cal, _ = mise_values(calibrated.probabilities, 16, 1, t, 0.55, batch_size=40000)
    assert np.array_equal(v_raw, v_cal)  # the mesh is extracted from the network's own probabilities
    a, b = mesh_from_values(v_raw, t, 0.55), mesh_from_values(v_cal, t, 0.55)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and len(a[1])
    ct = calibrated.calibrated_threshold(t)
    off = np.abs(v_raw - t) > 1e-6
    assert np.array_equal((cal.apply(v_raw) >= ct)[off], (v_raw >= t)[off])


@pytest.mark.slow
def test_held_out_samples_are_disjoint_and_labelled(tmp_path):
    """Two procedural shapes per split (no meshes): the splits differ, labels come from the inside test and
    near-surface points are about half occupied."""
    from occnet_ros.evaluation.probability_samples import SampleConfig, collect_samples, split_objects
    from occnet_ros.reconstruction.reconstructor import Reconstructor, ReconstructorConfig

    cfg = SampleConfig(n_box=500, n_near=500, fit_objects=(0, 2), report_objects=(0, 2))
    fit, rep = split_objects(cfg, [], "fit"), split_objects(cfg, [], "report")
    assert len(fit) == len(rep) == 2
    assert not any(np.array_equal(a.mesh.vertices, b.mesh.vertices) for a in fit for b in rep
                   if len(a.mesh.vertices) == len(b.mesh.vertices))
    rec = Reconstructor(tiny_model(), device="cpu", config=ReconstructorConfig(device="cpu", threshold=0.5))
    samples, skipped = collect_samples(rec, rep, 1, cfg)
    assert not skipped and set(samples) == {"box", "near"}
    near = samples["near"]
    assert len(near["p"]) == 1000 and 0.25 < near["y"].mean() < 0.75
    assert samples["box"]["y"].mean() < 0.6
    assert ((samples["box"]["p"] >= 0) & (samples["box"]["p"] <= 1)).all()


@pytest.mark.slow
def test_calibrate_cli_fits_a_map_writes_it_and_reuses_samples(tmp_path, monkeypatch, capsys):
    """occnet_calibrate on the octahedron TEST DOUBLE network, two procedural shapes per split: the map is
    written into a copy, and runs on the same network (another method, the calibrated copy) read the cached
    samples instead of reconstructing again."""
    import occnet_ros.evaluation.probability_samples as ps
    from occnet_ros.cli.calibrate import main
    from fixtures_geometry import octahedron_checkpoint

    ckpt = octahedron_checkpoint(tmp_path / "oct.pt")
    common = ["--fit-views", "1", "--report-views", "1", "--fit-objects", "0", "2", "--report-objects", "0", "2",
              "--points", "400", "400", "--samples-dir", str(tmp_path / "samples"), "--no-progress"]
    out = tmp_path / "cal.pt"
    assert main([str(ckpt), "--write", str(out), "--out", str(tmp_path / "r1"), *common]) == 0
    assert "logit map with" in capsys.readouterr().out
    assert len(list((tmp_path / "samples").glob("samples_*.npz"))) == 2  # fit and report
    _, meta, _ = load_checkpoint(out)
    cal = meta.calibration_for(1)
    assert len(cal.knots_in) >= 2 and meta.metrics["probability_calibration"]["fit"][1]["method"] == "map"

    def no_reconstruction(*a, **k):
        raise AssertionError("samples should come from the cache")

    monkeypatch.setattr(ps, "collect_samples", no_reconstruction)
    assert main([str(ckpt), "--method", "temperature", *common]) == 0
    assert "temperature" in capsys.readouterr().out
    assert main([str(out), "--report-only", "--out", str(tmp_path / "r2"), *common]) == 0
    import json
    first = json.loads((tmp_path / "r1" / "calibration.json").read_text())["record"]["ece"]
    again = json.loads((tmp_path / "r2" / "calibration.json").read_text())["record"]["ece"]
    # the calibrated copy, measured on the cached report samples, scores what the fit run reported as "after"
    for region in first["1"]:
        assert again["1"][region]["before"] == pytest.approx(first["1"][region]["after"], abs=1e-12)
