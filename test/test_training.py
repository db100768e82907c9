"""Training loop on a tiny analytic test dataset: the loss falls, checkpoints resume, CLI export."""
import csv
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from occnet_ros.network.checkpoint import load_checkpoint, load_raw
from occnet_ros.network.model import ModelConfig
from occnet_ros.training.config import OptimConfig, TrainConfig
from occnet_ros.training.trainer import Trainer, iou_per_threshold

TINY_MODEL = ModelConfig(c_dim=32, encoder_hidden=32, encoder_blocks=2, decoder_hidden=32, decoder_blocks=2)
TINY_LOCAL = ModelConfig(kind="local", c_dim=16, encoder_hidden=16, encoder_blocks=2, decoder_hidden=16,
                         decoder_blocks=2, plane_resolution=8, unet_base=8, unet_levels=2)


class RandomSpheresTestDataset:
    """TEST DOUBLE: spheres of random centre/radius; inputs are points on the camera-facing half
    (x < centre), queries uniform in the box, labels analytic. Same sample_batch contract as
    occnet_ros.data.dataset.OccupancyDataset."""

    def sample_batch(self, rng, batch_size, n_input_points, n_query_points, input_noise=0.0):
        c = rng.uniform(-0.15, 0.15, (batch_size, 1, 3))
        r = rng.uniform(0.15, 0.4, (batch_size, 1, 1))
        d = rng.normal(size=(batch_size, n_input_points, 3))
        d /= np.linalg.norm(d, axis=2, keepdims=True)
        d[..., 0] = -np.abs(d[..., 0])
        inputs = c + r * d + rng.normal(scale=input_noise, size=d.shape) if input_noise else c + r * d
        q = rng.uniform(-0.55, 0.55, (batch_size, n_query_points, 3))
        occ = (np.linalg.norm(q - c, axis=2) <= r[..., 0]).astype(np.float32)
        return inputs.astype(np.float32), q.astype(np.float32), occ


def _cfg(tmp_path, **kw):
    base = TrainConfig(model=TINY_MODEL, optim=OptimConfig(lr=3e-3, warmup_steps=0, schedule="constant"),
                       batch_size=8, n_input_points=64, n_query_points=256, steps=40, val_every=20,
                       val_batches=2, log_every=10, num_threads=1, device="cpu", out_dir=str(tmp_path))
    return replace(base, **kw)


def test_iou_per_threshold_matches_numpy():
    rng = np.random.default_rng(0)
    logits = torch.as_tensor(rng.normal(size=(3, 50)), dtype=torch.float32)
    occ = torch.as_tensor(rng.random((3, 50)) < 0.4, dtype=torch.float32)
    got = iou_per_threshold(logits, occ, [0.3, 0.5])
    p = 1 / (1 + np.exp(-logits.numpy()))
    for k, t in enumerate([0.3, 0.5]):
        a, b = p >= t, occ.numpy() >= 0.5
        ref = np.mean([(a[i] & b[i]).sum() / (a[i] | b[i]).sum() for i in range(3)])
        assert got[k] == pytest.approx(ref)


@pytest.mark.parametrize("model", [TINY_MODEL, TINY_LOCAL], ids=["global", "local"])
def test_few_steps_lower_the_loss_on_a_fixed_batch(tmp_path, model):
    data = RandomSpheresTestDataset()
    tr = Trainer(_cfg(tmp_path, model=model), data, data, progress=False)
    batch = data.sample_batch(np.random.default_rng(123), 8, 64, 256)
    before = [tr.train_step(*batch) for _ in range(1)][0]
    losses = [tr.train_step(*batch) for _ in range(30)]
    assert losses[-1] < 0.7 * before


def test_run_writes_checkpoints_log_and_resumes(tmp_path):
    data = RandomSpheresTestDataset()
    cfg = _cfg(tmp_path, steps=20, val_every=10)
    summary = Trainer(cfg, data, data, progress=False).run()
    assert summary["step"] == 20 and not summary["stopped_by_time"]
    for name in ("last.pt", "best.pt", "log.csv", "config.yaml"):
        assert (tmp_path / name).exists()
    model, meta, _ = load_checkpoint(tmp_path / "best.pt")
    assert meta.threshold in cfg.val_thresholds and 0.0 <= meta.metrics["val_iou"] <= 1.0
    assert not model.training
    # resume: continues from step 20 with the same optimiser state, then runs to 30
    tr2 = Trainer(replace(cfg, steps=30), data, data, progress=False)
    assert tr2.resume() == 20
    raw = load_raw(tmp_path / "last.pt")
    assert torch.equal(tr2.optimizer.state_dict()["state"][0]["exp_avg"], raw["training"]["optimizer"]["state"][0]["exp_avg"])
    assert tr2.run()["step"] == 30
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    steps = [int(r["step"]) for r in rows]
    assert steps == sorted(steps) and steps[-1] == 30 and 20 in steps
    assert any(r["val_iou"] for r in rows)


def test_resume_reproduces_uninterrupted_run(tmp_path):
    """Stopping after 6 steps and resuming gives the same weights as 12 straight steps (RNG restored)."""
    data = RandomSpheresTestDataset()
    a = Trainer(_cfg(tmp_path / "a", steps=12, val_every=100), data, data, progress=False)
    a.run()
    b = Trainer(_cfg(tmp_path / "b", steps=6, val_every=100), data, data, progress=False)
    b.run()
    b2 = Trainer(_cfg(tmp_path / "b", steps=12, val_every=100), data, data, progress=False)
    b2.resume()
    b2.run()
    for (k, va), vb in zip(a.model.state_dict().items(), b2.model.state_dict().values()):
        assert torch.allclose(va, vb, atol=1e-6), k


def test_init_from_warm_starts_a_new_branch_and_rejects_mismatches(tmp_path):
    """A fine-tuning stage: the local model with the new global-context branch starts from a plain
    local checkpoint with identical outputs and a fresh step counter; the checkpoint's origin is kept
    across a resume; a checkpoint of another architecture is refused with the parameter named."""
    data = RandomSpheresTestDataset()
    Trainer(_cfg(tmp_path / "a", model=TINY_LOCAL, steps=4, val_every=100), data, data, progress=False).run()
    src = tmp_path / "a" / "last.pt"
    cfg = _cfg(tmp_path / "b", model=replace(TINY_LOCAL, global_context=True), steps=3, val_every=100)
    tr = Trainer(cfg, data, data, progress=False)
    assert tr.init_weights(src) == ["encoder.fc_global.bias", "encoder.fc_global.weight"]
    old, _, _ = load_checkpoint(src)
    pts = torch.as_tensor(data.sample_batch(np.random.default_rng(5), 2, 64, 8)[0])
    tr.model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(tr.model.encode(pts), old.encode(pts))
    assert tr.step == 0 and tr.run()["step"] == 3
    tr2 = Trainer(replace(cfg, steps=5), data, data, progress=False)
    tr2.resume()
    assert tr2.init_meta["init_from"] == str(src) and tr2.init_meta["init_step"] == 4
    assert load_raw(tmp_path / "b" / "last.pt")["meta"]["extra"]["init_step"] == 4
    glob = Trainer(_cfg(tmp_path / "c"), data, data, progress=False)
    with pytest.raises(ValueError, match="does not exist in the model|has shape"):
        glob.init_weights(src)


def test_train_rejects_missing_init_file_before_generating_data(tmp_path):
    from occnet_ros.training.trainer import train

    with pytest.raises(FileNotFoundError, match="nope.pt"):
        train(_cfg(tmp_path, init_from=str(tmp_path / "nope.pt")), progress=False)


def test_time_budget_stops_cleanly(tmp_path):
    data = RandomSpheresTestDataset()
    s = Trainer(_cfg(tmp_path, steps=10_000), data, data, progress=False).run(max_seconds=0.0)
    assert s["stopped_by_time"] and s["step"] == 0 and (tmp_path / "last.pt").exists()


def test_export_cli_strips_training_state(tmp_path):
    from occnet_ros.cli.train import main

    data = RandomSpheresTestDataset()
    Trainer(_cfg(tmp_path, steps=2, val_every=1), data, data, progress=False).run()
    assert main(["--export", str(tmp_path / "last.pt"), str(tmp_path / "w.pt")]) == 0
    assert "training" not in load_raw(tmp_path / "w.pt") and "training" in load_raw(tmp_path / "last.pt")
    assert main(["--export", str(tmp_path / "nope.pt"), str(tmp_path / "w2.pt")]) == 2


def test_config_files_load():
    from occnet_ros.config_io import load_config

    root = Path(__file__).resolve().parents[1]
    for name in ("default.yaml", "smoke.yaml", "context.yaml", "context64.yaml", "global.yaml", "relabel.yaml",
                 "walls.yaml", "hollow.yaml", "finetune.yaml", "household.yaml"):
        cfg = load_config(TrainConfig, root / "config" / "train" / name)
        assert cfg.steps >= 1


def test_stage_configs_chain_from_scratch_and_finetune_starts_from_the_shipped_weights():
    """The stage configs need nothing but each other's run folders: every init_from names the run folder of
    another config in config/train (default -> context -> relabel -> walls -> hollow -> household), except
    finetune.yaml (make train), which starts from the shipped weights, with the model, data and optimiser of
    stage 6 (household)."""
    from occnet_ros.config_io import load_config
    from occnet_ros.network.checkpoint import DEFAULT_WEIGHTS
    from occnet_ros.network.model import OccupancyNetwork

    root = Path(__file__).resolve().parents[1]
    cfgs = {p.stem: load_config(TrainConfig, p) for p in sorted((root / "config" / "train").glob("*.yaml"))}
    run_of = {Path(c.out_dir): name for name, c in cfgs.items()}
    parent = {name: run_of.get(Path(c.init_from).parent) for name, c in cfgs.items() if c.init_from}
    assert parent == {"context": "default", "context64": "context", "relabel": "context", "walls": "relabel",
                      "hollow": "walls", "finetune": None, "household": "hollow"}
    assert {Path(cfgs[n].init_from).name for n in ("relabel", "walls", "hollow", "household")} == {"best.pt"}
    fine, stage6 = cfgs["finetune"], cfgs["household"]
    assert (root / fine.init_from).resolve() == DEFAULT_WEIGHTS.resolve()
    assert fine.out_dir not in {c.out_dir for n, c in cfgs.items() if n != "finetune"}
    assert replace(fine, init_from="", out_dir="", seed=0, max_minutes=0) == \
        replace(stage6, init_from="", out_dir="", seed=0, max_minutes=0)
    state = load_raw(DEFAULT_WEIGHTS)["state_dict"]
    own = OccupancyNetwork(fine.model).state_dict()
    assert state.keys() == own.keys() and all(state[k].shape == own[k].shape for k in own)


def test_extra_data_files_add_their_samples_and_key_the_checkpoint(tmp_path, monkeypatch):
    """train() with extra_data_files trains on the concatenated train splits (and validates on the
    concatenated val splits); the checkpoint's data hash covers both configs, so a resume with other
    data is refused. The hashes of the committed data configs are pinned: that of stages 1-4 (multiview.yaml
    alone) was recorded before the hollow_box family and extra_data_files existed, and adding them must not
    change it; that of stage 5 (with hollow_boxes.yaml) is the one stage 5 carried, and that of stage 6 (with the
    household data as well) the one the shipped weights carry."""
    import yaml

    from occnet_ros.config_io import load_config
    from occnet_ros.data import generate as gen
    from occnet_ros.data.dataset import DataConfig
    from occnet_ros.training import trainer as trainer_mod

    small = dict(seed=7, n_objects=2, n_val_objects=1, views_per_object=1, mesh_fraction=0.0, mesh_resolution=24,
                 n_input_points=64, n_query_uniform=64, n_query_near_surface=64, shard_size=2)
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({**small, "family_weights": {"sphere": 1.0}}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump({**small, "family_weights": {"hollow_box": 1.0}}))
    seen = {}

    class Spy(trainer_mod.Trainer):
        def __init__(self, cfg, train_set, val_set, **kw):
            seen.update(train=train_set, val=val_set)
            super().__init__(cfg, train_set, val_set, **kw)

    monkeypatch.setattr(trainer_mod, "Trainer", Spy)
    cfg = _cfg(tmp_path / "run", data_file=str(tmp_path / "a.yaml"), extra_data_files=[str(tmp_path / "b.yaml")],
               steps=2, val_every=100, n_input_points=32, n_query_points=64, batch_size=2,
               cache_dir=str(tmp_path / "cache"))
    trainer_mod.train(cfg, progress=False)
    codes = {gen.FAMILY_CODES[i] for i in seen["train"].family}
    assert codes == {"sphere", "hollow_box"} and len(seen["train"]) == 4 and len(seen["val"]) == 2
    a, b = (load_config(DataConfig, tmp_path / f) for f in ("a.yaml", "b.yaml"))
    stored = load_raw(tmp_path / "run" / "last.pt")["meta"]["data_config_hash"]
    assert stored == trainer_mod.data_hash(a, (b,)) != trainer_mod.data_hash(a)
    with pytest.raises(ValueError, match="another data config"):
        trainer_mod.train(replace(cfg, extra_data_files=[], steps=3), resume=True, progress=False)
    root = Path(__file__).resolve().parents[1] / "config" / "data"
    multiview, hollow = (load_config(DataConfig, root / f) for f in ("multiview.yaml", "hollow_boxes.yaml"))
    assert trainer_mod.data_hash(multiview) == "2bf096fb3e032504"
    assert trainer_mod.data_hash(multiview, (hollow,)) == "fe5e229673b967fa"
    from occnet_ros.network.checkpoint import DEFAULT_WEIGHTS

    household, large = (load_config(DataConfig, root / f) for f in ("household.yaml", "household_large.yaml"))
    assert trainer_mod.data_hash(multiview, (hollow, household, large)) == "81ffd9118ff5d837" == \
        load_raw(DEFAULT_WEIGHTS)["meta"]["data_config_hash"]
