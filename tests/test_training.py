"""Training: configs, the LR-stage schedule, an end-to-end tiny run, exact resume."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from samplecnn.checkpoint import load_model, read_checkpoint_info
from samplecnn.cli import main
from samplecnn.evaluation import evaluate
from samplecnn.training import (PAPER_LR_STAGES, EpochSampler, LRStageSchedule, load_config,
                                train)
from training_helpers import TAGS, make_learnable_store, tiny_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_learnable_store(tmp_path_factory.mktemp("learnable"))


# ---------------------------------------------------------------------------- configs
def test_config_base_chain_overrides_and_recipe_defaults(tmp_path):
    (tmp_path / "base.yaml").write_text("model: {name: samplecnn}\noptim: {recipe: paper}\n"
                                        "data: {batch_size: 23}\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ndata: {num_workers: 2}\n")
    cfg = load_config(tmp_path / "child.yaml", ["trainer.max_epochs=3", "optim.lr_stages=[0.1, 0.01]",
                                                "model.width=0.5"])
    assert cfg["data"]["batch_size"] == 23 and cfg["data"]["num_workers"] == 2
    assert cfg["trainer"]["max_epochs"] == 3
    assert cfg["optim"]["lr_stages"] == [0.1, 0.01]
    assert cfg["optim"]["nesterov"] is True and cfg["optim"]["momentum"] == 0.9
    assert cfg["model"] == {"name": "samplecnn", "width": 0.5}


def test_config_errors_are_one_line_and_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["trainer.max_epochs"], base={"model": {"name": "samplecnn"}})
    with pytest.raises(ValueError, match="unknown trainer option"):
        load_config(None, ["trainer.max_epoch=3"], base={"model": {"name": "samplecnn"}})
    with pytest.raises(ValueError, match="recipe"):
        load_config(None, ["optim.recipe=rmsprop"], base={"model": {"name": "samplecnn"}})
    with pytest.raises(ValueError, match="lr"):
        load_config(None, ["optim.recipe=paper", "optim.lr=0.1"], base={"model": {"name": "samplecnn"}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ValueError, match="bad.yaml"):
        load_config(bad)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml")


def test_every_shipped_config_resolves_and_builds_its_model():
    from samplecnn.models import get_model_config

    files = sorted((REPO / "configs").glob("*.yaml")) + sorted(
        (REPO / "src/samplecnn/configs").glob("*.yaml"))
    # The recipes (paper, adam; MTAT, MSD) and the demo's; variants are model.name= overrides.
    assert len(files) >= 5
    for f in files:
        cfg = load_config(f)
        m = dict(cfg["model"])
        get_model_config(m.pop("name"), **m)


# --------------------------------------------------------------------------- schedule
class _Trainer:
    """The few attributes LRStageSchedule reads from a Trainer."""

    def __init__(self, opt):
        self.optimizers = [opt]
        self.should_stop = False
        self.is_global_zero = True


def test_lr_stage_schedule_patience_restart_from_best_and_stop():
    net = nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    trainer = _Trainer(opt)
    sched = LRStageSchedule([0.1, 0.01, 0.001], patience=2, verbose=False)
    sched.on_train_start(trainer, net)

    def epoch(value):
        with torch.no_grad():  # "training" changes the weights every epoch
            net.weight.add_(1.0)
        opt.state[net.weight] = {"momentum_buffer": torch.ones(1, 2)}
        return sched.step(value, net, trainer)

    assert epoch(1.0) == "improved"
    best = net.weight.detach().clone()
    assert epoch(0.5) == "improved"
    best = net.weight.detach().clone()
    assert epoch(0.7) == "wait" and opt.param_groups[0]["lr"] == 0.1
    assert epoch(0.6) == "restart"
    assert opt.param_groups[0]["lr"] == 0.01 and sched.stage == 1
    assert torch.equal(net.weight, best)          # restarted from the best weights
    assert len(opt.state) == 0                    # momentum cleared at the restart
    assert epoch(0.4) == "improved"               # best so far carries across stages
    assert epoch(0.45) == "wait" and epoch(0.41) == "restart"
    assert opt.param_groups[0]["lr"] == 0.001
    assert epoch(0.5) == "wait" and not trainer.should_stop
    assert epoch(0.5) == "stop" and trainer.should_stop and sched.finished
    assert [h["action"] for h in sched.history].count("restart") == 2

    # The whole state survives a checkpoint round trip.
    again = LRStageSchedule([0.1, 0.01, 0.001], patience=2)
    again.load_state_dict(sched.state_dict())
    assert (again.stage, again.best, again.wait, again.best_epoch) == (3, 0.4, 0, 4)
    assert torch.equal(again.best_weights["weight"], sched.best_weights["weight"])


def test_lr_stage_schedule_min_delta_counts_tiny_gains_as_no_improvement():
    net = nn.Linear(1, 1)
    sched = LRStageSchedule([0.1, 0.01], patience=1, min_delta=0.01, verbose=False)
    assert sched.step(1.0, net) == "improved"
    assert sched.step(0.995, net) == "restart"


def test_paper_defaults():
    cfg = load_config(None, [], base={"model": {"name": "samplecnn"}})
    assert cfg["optim"]["lr_stages"] == PAPER_LR_STAGES == [0.01, 0.002, 0.0004, 0.00008, 0.000016]
    assert cfg["optim"]["patience"] == 3 and cfg["data"]["batch_size"] == 23


def test_epoch_sampler_shards_are_the_single_process_batches(store):
    from samplecnn.data import SegmentDataset

    ds = SegmentDataset(store, "train", 729, segments_per_clip=3)
    single = list(EpochSampler(ds, True, seed=5, rank=0, world_size=1))
    shards = [list(EpochSampler(ds, True, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    b = 4  # per-rank batch; the union of the k-th batches = single process batch of 8
    for k in range(len(ds) // 8):
        union = sorted(shards[0][k * b:(k + 1) * b] + shards[1][k * b:(k + 1) * b])
        assert union == sorted(single[k * 8:(k + 1) * 8])
    s = EpochSampler(ds, True, seed=5)
    s.set_epoch(1)
    assert list(s) != single and sorted(s) == sorted(single)


# ------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_tiny_run_beats_chance_and_checkpoints_carry_everything(store, tmp_path):
    out = tmp_path / "run"
    result = train(tiny_config(store, out, trainer={"max_epochs": 6}), log=None)
    assert result.epochs == 6
    for name in ("best.ckpt", "last.ckpt"):
        info = read_checkpoint_info(out / "checkpoints" / name)
        mc = info["model_config"]
        assert mc["tags"] == list(TAGS) and mc["sample_rate"] == 8000 and mc["input_samples"] == 729
        assert info["training_config"]["data"]["store"] == str(store)
    assert (out / "config.yaml").is_file() and (out / "logs/csv/metrics.csv").is_file()
    assert any((out / "logs/tb").iterdir())
    model = load_model(out / "checkpoints/best.ckpt")
    assert model.tags == list(TAGS)
    ev = evaluate(out / "checkpoints/best.ckpt", store, "test")
    # Tags are exact functions of the audio; chance is 0.5.
    assert ev.roc_auc > 0.8, ev.metrics.rows()
    # Decision thresholds were fitted on the validation split into both checkpoints.
    from samplecnn.data import SegmentStore
    from samplecnn.evaluation import fit_checkpoint_thresholds

    for name in ("best.ckpt", "last.ckpt"):
        th = read_checkpoint_info(out / "checkpoints" / name)["thresholds"]
        assert th["split"] == "valid" and th["objective"] == "f1"
        assert th["store"] == SegmentStore(store).meta["inputs_fingerprint"]
    refit = fit_checkpoint_thresholds(out / "checkpoints/best.ckpt", store, "valid")
    np.testing.assert_array_equal(model.thresholds.values, refit.thresholds.values)
    assert ev.micro_f1 is not None and ev.micro_f1 > 0.5, ev.rows()


def test_train_is_reproducible_without_reseeding_the_global_rngs(store, tmp_path):
    import random

    def run(out):
        train(tiny_config(store, out, trainer={"max_epochs": 1, "limit_train_batches": 3}), log=None)
        return _weights(out / "checkpoints/last.ckpt")

    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(7)
    np_state, py_state = np.random.get_state()[1].copy(), random.getstate()
    a = run(tmp_path / "a")
    assert torch.initial_seed() == 123  # never reseeded
    assert np.array_equal(np.random.get_state()[1], np_state) and random.getstate() == py_state
    torch.manual_seed(999)  # whatever the caller's RNGs hold, the run is the same
    np.random.seed(1)
    b = run(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
def test_resume_continues_exactly(store, tmp_path):
    # The paper recipe with short stages, so the schedule's state matters for the resume.
    sections = dict(optim={"recipe": "paper", "lr_stages": [0.05, 0.01, 0.002], "patience": 1},
                    trainer={"max_epochs": 5, "limit_train_batches": 6})
    full = tmp_path / "full"
    train(tiny_config(store, full, **sections), log=None)
    part = tmp_path / "part"
    train(tiny_config(store, part, **{**sections, "trainer": {"max_epochs": 2, "limit_train_batches": 6}}),
          log=None)
    result = train(None, ["trainer.max_epochs=5"], resume=part, log=None)
    assert result.epochs == 5
    a, b = _weights(full / "checkpoints/last.ckpt"), _weights(part / "checkpoints/last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ca = torch.load(full / "checkpoints/last.ckpt", weights_only=False)
    cb = torch.load(part / "checkpoints/last.ckpt", weights_only=False)
    sa = next(v for k, v in ca["callbacks"].items() if "LRStageSchedule" in k)
    sb = next(v for k, v in cb["callbacks"].items() if "LRStageSchedule" in k)
    assert sa["history"] == sb["history"] and sa["stage"] == sb["stage"]
    # Both parts of the resumed run's log are kept.
    assert (part / "logs/csv/metrics-1.csv").is_file()


def test_cli_train_print_config_and_errors(tmp_path, capsys):
    assert main(["train", "--config", str(REPO / "configs/paper_mtat.yaml"), "--print-config",
                 "data.batch_size=8"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["data"]["batch_size"] == 8 and cfg["optim"]["recipe"] == "paper"
    assert main(["train", "--config", str(REPO / "configs/paper_mtat.yaml"),
                 f"data.store={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_train_then_evaluate_json(store, tmp_path, capsys):
    import json

    cfg = tiny_config(store, tmp_path / "cli")
    cfg_path = tmp_path / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(cfg_path), "trainer.max_epochs=1", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "cli/checkpoints/last.ckpt"), "--data", str(store),
                 "--split", "valid", "--json", "--out", str(tmp_path / "ev")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["split"] == "valid" and len(d["per_tag"]) == len(TAGS)
    assert 0.0 <= d["macro_roc_auc"] <= 1.0 and not math.isnan(d["macro_pr_auc"])
    assert (tmp_path / "ev/per_tag.csv").is_file() and (tmp_path / "ev/tag_roc_auc.png").is_file()
