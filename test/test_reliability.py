"""Probability calibration: the ECE against a slow per-point reference and on synthetic predictors with a known
answer, the temperature / bias fit, the reliability diagram, the checkpoint's stored calibrations (old files
load as the identity), the field's calibrated queries and unchanged meshes, and the held-out sampling."""
import numpy as np
import pytest
import torch

from occnet_ros.evaluation.reliability import (N_BINS, expected_calibration_error, fit_calibration,
                                               reliability_bins, reliability_diagram)
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
    for bad in ({"temperature": 0.0}, {"temperature": float("nan")}, {"bias": float("inf")}):
        with pytest.raises(ValueError):
            ProbabilityCalibration(**bad)


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
