"""The demo end to end, in its --quick form: every step runs and writes its outputs."""
from __future__ import annotations

import json
import re

import pytest

from samplecnn.cli import main
from samplecnn.demo import demo_config


def test_packaged_demo_config_is_a_valid_recipe():
    from samplecnn.training import load_config

    from samplecnn.models import create_model

    demo = demo_config()
    cfg = load_config(None, ["data.store=x"], base=demo)
    # Every value the demo sets survives validation as given (none dropped, renamed or
    # replaced by a default), and its model builds.
    for section, values in demo.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if (section, key) != ("data", "store"):  # the demo fills it in per run
                    assert cfg[section][key] == value, f"{section}.{key}"
        elif section not in ("name", "description"):
            assert cfg[section] == values, section
    assert cfg["model"]["name"] == "samplecnn_small" and cfg["optim"]["recipe"] == "adam"
    model = create_model(cfg["model"]["name"], n_tags=3, seed=0)
    assert model.config.input_samples > 0


@pytest.mark.slow
def test_quick_demo_runs_every_step_and_reruns_from_its_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--workers", "1"]) == 0
    text = capsys.readouterr().out
    roc = re.search(r"^ROC-AUC (0\.\d{4}|1\.0000)$", text, re.M)
    pr = re.search(r"^PR-AUC (0\.\d{4}|1\.0000)$", text, re.M)
    f1 = re.search(r"^macro F1 (0\.\d{4}|1\.0000) ", text, re.M)
    assert roc and pr and f1, text
    s = json.loads((out / "summary.json").read_text())
    assert f"{s['roc_auc']:.4f}" == roc.group(1) and f"{s['macro_f1']:.4f}" == f1.group(1)
    assert all(isinstance(t["labels"], list) for t in s["tagged"])
    for rel in ("data/annotations.csv", "store/meta.json", "run/config.yaml",
                "run/checkpoints/last.ckpt", "run/logs/csv/metrics.csv", "eval/per_tag.csv",
                "plots/training_curves.png", "plots/tag_roc_auc.png", "plots/filters/frontend.png",
                "tags.json"):
        assert (out / rel).is_file(), rel
    tags = json.loads((out / "tags.json").read_text())
    assert len(tags) == 4 and all(len(t["tags"]) == len(json.loads(
        (out / "store/meta.json").read_text())["tags"]) for t in tags)
    # A rerun keeps the finished steps (no retraining) and prints the same figures.
    mtime = (out / "run/checkpoints/last.ckpt").stat().st_mtime_ns
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--workers", "1",
                 "--no-filters"]) == 0
    assert (out / "run/checkpoints/last.ckpt").stat().st_mtime_ns == mtime
    text = capsys.readouterr().out
    assert roc.group(0) in text and f1.group(0) in text
    # A run from before thresholds existed gets them fitted, not retrained.
    from samplecnn.checkpoint import read_checkpoint_info, set_thresholds

    for name in ("best.ckpt", "last.ckpt"):
        set_thresholds(out / "run/checkpoints" / name, None)
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--workers", "1",
                 "--no-filters"]) == 0
    assert f1.group(0) in capsys.readouterr().out
    assert read_checkpoint_info(out / "run/checkpoints/last.ckpt")["thresholds"]["split"] == "valid"
    mtime = (out / "run/checkpoints/last.ckpt").stat().st_mtime_ns
    # A rerun with other training settings never reports the old run as its own.
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--workers", "1",
                 "--no-filters", "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "trained with another configuration (trainer.max_epochs 1 -> 2)" in err
    assert (out / "run/checkpoints/last.ckpt").stat().st_mtime_ns == mtime


def test_demo_rejects_too_few_clips(tmp_path, capsys):
    assert main(["demo", "--clips", "3", "--out", str(tmp_path / "d")]) == 2
    assert "clips" in capsys.readouterr().err
