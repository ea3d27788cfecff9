"""Run folders of `samplecnn train`: last.ckpt is the last epoch, resumes of moved runs keep
the best, one writer per run folder, typed config errors before anything is made, quiet
output, and the process-wide runtime settings (issue 10.5, issue 11.3-11.5)."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from samplecnn.cli import main
from samplecnn.locks import exclusive
from samplecnn.training import train
from training_helpers import make_learnable_store, tiny_config

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_learnable_store(tmp_path_factory.mktemp("runs"), n_clips=24, splits=(16, 4, 4))


def _ckpt(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def _val_losses(run: Path, name: str = "metrics.csv") -> dict[int, float]:
    with open(run / "logs/csv" / name, newline="", encoding="utf-8") as f:
        return {int(r["epoch"]): float(r["val_loss"]) for r in csv.DictReader(f) if r.get("val_loss")}


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), env.get("PYTHONPATH", "")])
    return env


def _write(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.mark.slow
def test_last_ckpt_is_the_last_epoch_and_moved_runs_keep_their_best(store, tmp_path, monkeypatch, capsys):
    # The paper recipe: its LR stages are read from the config on a resume, so a resume
    # with a huge rate makes the next epochs worse than the best, as a user's would.
    sections = dict(optim={"recipe": "paper", "lr_stages": [0.01], "patience": 5},
                    trainer={"max_epochs": 2, "limit_train_batches": 3, "limit_val_batches": 1})
    cfg = tiny_config(store, tmp_path / "a", **sections)
    monkeypatch.chdir(store.parent)
    cfg["data"]["store"] = store.name          # relative to the working directory at launch
    a = tmp_path / "a"
    train(cfg, log=None)
    assert yaml.safe_load((a / "config.yaml").read_text())["data"]["store"] == str(store)

    # Epoch 2 at a rate of 20: worse than the best epoch. The bars go to stderr.
    r = train(None, ["trainer.max_epochs=3", "optim.lr_stages=[20.0]"], resume=a, log=None,
              progress=True)
    captured = capsys.readouterr()
    assert "\r" not in captured.out and "Epoch 2" in captured.err
    losses = {**_val_losses(a, "metrics-1.csv"), **_val_losses(a)}
    assert sorted(losses) == [0, 1, 2] and losses[2] > min(losses[0], losses[1])  # the premise
    last = _ckpt(a / "checkpoints/last.ckpt")
    assert (last["epoch"], last["global_step"]) == (2, 9) == (r.epochs - 1, r.global_step)
    best = _ckpt(a / "checkpoints/best.ckpt")
    assert best["epoch"] == min(losses, key=losses.get) < 2
    assert r.best_val_loss == pytest.approx(min(losses.values()))

    # A copy of the run, resumed from elsewhere: it continues from epoch 2 (not from the
    # best epoch), keeps best.ckpt and reports the true best.
    b = tmp_path / "moved" / "b"
    shutil.copytree(a, b)
    monkeypatch.chdir(tmp_path)
    r = train(None, ["trainer.max_epochs=4"], resume=b, log=None)
    new = _val_losses(b)
    assert sorted(new) == [3]                    # only epoch 3 was trained
    assert new[3] > min(losses.values())         # the premise: a worse epoch
    assert r.global_step == 12 and _ckpt(b / "checkpoints/last.ckpt")["epoch"] == 3
    assert r.best_val_loss == pytest.approx(min(losses.values()))
    kept = _ckpt(b / "checkpoints/best.ckpt")
    assert kept["epoch"] == best["epoch"]
    for k, v in best["state_dict"].items():
        assert torch.equal(kept["state_dict"][k], v), k
    summary = yaml.safe_load((b / "train_summary.json").read_text())
    assert summary["best_val_loss"] == pytest.approx(min(losses.values()))


def test_run_checkpoint_reads_lightning_checkpoint_state(tmp_path):
    """Runs written before `RunCheckpoint` (plain ModelCheckpoint state) resume with their
    best score, and a moved folder's saved paths are rebased, not dropped."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from samplecnn.training import RunCheckpoint

    kw = dict(filename="best", monitor="val_loss", mode="min", save_top_k=1)
    old = ModelCheckpoint(dirpath=tmp_path / "old/checkpoints", **kw)
    new = RunCheckpoint(dirpath=tmp_path / "moved/checkpoints", **kw)
    assert new.state_key == old.state_key
    old.best_model_score = torch.tensor(0.25)
    old.best_model_path = str(tmp_path / "old/checkpoints/best.ckpt")
    old.best_k_models = {old.best_model_path: torch.tensor(0.25)}
    old.kth_best_model_path, old.kth_value = old.best_model_path, torch.tensor(0.25)
    new.load_state_dict(old.state_dict())
    moved = str(tmp_path / "moved/checkpoints/best.ckpt")
    assert float(new.best_model_score) == 0.25 and new.best_model_path == moved
    assert list(new.best_k_models) == [moved] and new.kth_best_model_path == moved


def test_a_run_folder_has_one_writer(store, tmp_path, capsys):
    cfg = _write(tiny_config(store, tmp_path / "run"), tmp_path / "tiny.yaml")
    with exclusive(tmp_path / "run", "a run folder"):
        assert main(["train", "--config", str(cfg)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""                  # refused before any note about the store
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "in use by another samplecnn process" in err[0] and "run" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_finished_run_is_not_overwritten_by_a_plain_train(store, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "notes").mkdir(parents=True)     # the user's own file beside the run stays
    (run / "notes" / "why.txt").write_text("kept", encoding="utf-8")
    cfg = _write(tiny_config(store, run, trainer={"max_epochs": 1, "limit_train_batches": 2,
                                                   "limit_val_batches": 1}), tmp_path / "t.yaml")
    assert main(["train", "--config", str(cfg)]) == 0
    ckpts = {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*.ckpt")}
    assert sorted(ckpts) == ["best.ckpt", "last.ckpt"]
    summary = (run / "train_summary.json").read_bytes()
    capsys.readouterr()

    assert main(["train", "--config", str(cfg), "trainer.max_epochs=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a training run" in err[0]
    assert "--resume" in err[0] and "--overwrite" in err[0] and str(run) in err[0]
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*.ckpt")} == ckpts
    assert (run / "train_summary.json").read_bytes() == summary
    with pytest.raises(ValueError, match="exclude each other"):
        train(str(cfg), resume=run, overwrite=True, log=None)

    # --overwrite with a store that cannot be read keeps the earlier run.
    assert main(["train", "--config", str(cfg), "--overwrite", f"data.store={tmp_path}/none"]) == 2
    assert "none" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").glob("*.ckpt")} == ckpts

    # --overwrite starts over: a fresh 2-epoch run whose metrics begin at epoch 0.
    (run / "logs" / "csv" / "metrics-1.csv").write_text("stale", encoding="utf-8")
    assert main(["train", "--config", str(cfg), "trainer.max_epochs=2", "--overwrite"]) == 0
    assert sorted(_val_losses(run)) == [0, 1]
    assert not (run / "logs" / "csv" / "metrics-1.csv").exists()
    assert _ckpt(run / "checkpoints/last.ckpt")["epoch"] == 1
    assert (run / "notes" / "why.txt").read_text(encoding="utf-8") == "kept"


@pytest.mark.parametrize("value, words", [("abc", "must be an integer, got 'abc'"),
                                          ("2.5", "must be an integer, got 2.5"),
                                          ("0", "must be at least 1")])
def test_typed_config_errors_name_the_key_and_make_no_run_folder(store, tmp_path, capsys, value, words):
    cfg = _write(tiny_config(store, tmp_path / "run"), tmp_path / "tiny.yaml")
    assert main(["train", "--config", str(cfg), f"trainer.max_epochs={value}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"trainer.max_epochs {words}" in err[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides, words", [
    (["trainer.accelerator=tpu"], "trainer options: "),
    (["trainer.devices=abc"], "trainer options: "),
    (["optim.recipe=paper", "optim.lr_stages=[0.1, a]"], "optim.lr_stages must be a non-empty list"),
])
def test_options_lightning_or_the_recipe_refuse_are_one_line_errors_before_any_folder(
        store, tmp_path, capsys, overrides, words):
    cfg = _write(tiny_config(store, tmp_path / "run"), tmp_path / "tiny.yaml")
    assert main(["train", "--config", str(cfg), *overrides]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    assert not (tmp_path / "run").exists()


def test_numbers_in_exponent_form_are_numbers(tmp_path):
    from samplecnn.training import load_config

    cfg = load_config(None, ["optim.recipe=adam", "optim.lr=3e-4"], base={"model": {"name": "samplecnn"}})
    assert cfg["optim"]["lr"] == 3e-4
    cfg = load_config(None, ["optim.lr_stages=[1e-2, 2e-3]"], base={"model": {"name": "samplecnn"}})
    assert cfg["optim"]["lr_stages"] == [0.01, 0.002]
    with pytest.raises(ValueError, match="data.num_workers must be at least 0"):
        load_config(None, ["data.num_workers=-1"], base={"model": {"name": "samplecnn"}})
    with pytest.raises(ValueError, match="trainer.deterministic must be true or false"):
        load_config(None, ["trainer.deterministic=yes please"], base={"model": {"name": "samplecnn"}})


@pytest.mark.slow
def test_cli_train_redirected_is_quiet_and_retain_trains_as_plain(store, tmp_path):
    """`samplecnn train > file 2> file`: no progress bars, no Lightning lines, only
    samplecnn's; "retain" (run in its own process: it changes the process) gives the
    plain run's weights."""
    sections = dict(optim={"recipe": "paper", "lr_stages": [0.01], "patience": 3},
                    trainer={"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1})
    plain = train(tiny_config(store, tmp_path / "plain", **sections), log=None)
    cfg = tiny_config(store, tmp_path / "fast", **sections)
    del cfg["trainer"]["progress_bar"]           # the default: bars on a terminal only
    cfg["trainer"]["fast_steps"] = "retain"
    path = _write(cfg, tmp_path / "fast.yaml")
    p = subprocess.run([sys.executable, "-m", "samplecnn.cli", "train", "--config", str(path)],
                       capture_output=True, text=True, env=_env(), timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    both = p.stdout + p.stderr
    assert "\r" not in both
    for noise in ("GPU available", "TPU available", "litlogger", "Tip:", "deprecated", "Warning"):
        assert noise not in both, both
    assert p.stderr.strip() == ""
    lines = p.stdout.strip().splitlines()
    assert all(line.startswith(("note:", "trained 1 epochs", "best:", "last:", "thresholds:")) for line in lines), lines
    a = _ckpt(Path(plain.last_checkpoint))["state_dict"]
    b = _ckpt(tmp_path / "fast/checkpoints/last.ckpt")["state_dict"]
    assert a.keys() == b.keys()
    for k in a:  # another process, another thread count: equal up to summation order
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5, msg=k)


_RETAIN_PROBE = textwrap.dedent("""
    import os, sys
    import torch
    from samplecnn.runtime import Runtime

    Runtime(num_threads=1, retain_freed_memory=sys.argv[1] == "1").apply()
    page = os.sysconf("SC_PAGE_SIZE")
    rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
    before = rss()
    x = torch.ones(64 * 2**20)          # 256 MiB, above glibc's mmap threshold
    del x
    print(rss() - before, torch.get_num_threads())
""")


def test_runtime_retain_keeps_freed_memory_in_a_subprocess():
    """The allocator switch is irreversible, so it is only ever flipped in a child
    process; there, freed memory stays with the process, as it must for "retain"."""
    kept = {}
    for flag in ("0", "1"):
        p = subprocess.run([sys.executable, "-c", _RETAIN_PROBE, flag], capture_output=True,
                           text=True, env=_env(), timeout=120)
        assert p.returncode == 0, p.stderr
        grown, threads = p.stdout.split()
        kept[flag] = int(grown)
        assert threads == "1"
    assert kept["0"] < 64 * 2**20      # plain glibc: the block went back to the OS
    assert kept["1"] > 200 * 2**20     # retained: the heap keeps it for reuse


def test_retain_mode_needs_the_runtime_applied_at_the_entry_point():
    from samplecnn.runtime import retaining_freed_memory
    from samplecnn.training.fast import prepare_for_training, runtime_for_mode
    from samplecnn.models import create_model

    assert not retaining_freed_memory()   # nothing in the test process flipped it
    model = create_model("samplecnn_small", n=5, input_samples=729, width=0.125, n_tags=2)
    with pytest.raises(ValueError, match="runtime_for_mode"):
        prepare_for_training(model, "retain")
    r = runtime_for_mode("retain-compile", num_threads=2)
    assert (r.retain_freed_memory, r.cudnn_benchmark, r.num_threads) == (True, True, 2)
    assert runtime_for_mode("plain").retain_freed_memory is False


def test_training_steps_leave_the_global_rng_alone(store):
    """Dropout of a step is seeded by (seed, epoch, batch, rank) on a forked RNG: the
    global RNG is neither reseeded nor advanced by a step."""
    from samplecnn.data import SegmentDataset
    from samplecnn.training import TaggingModule, load_config
    from samplecnn.training.run import build_model_config
    from samplecnn.data import SegmentStore

    cfg = load_config(None, None, base=tiny_config(store, store.parent / "unused"))
    cfg["model"]["dropout"] = 0.5
    module = TaggingModule(build_model_config(cfg, SegmentStore(store), warn=lambda *a: None), cfg["optim"], seed=3)
    module.log = lambda *a, **k: None
    module.train()
    ds = SegmentDataset(store, "train", 729, segments_per_clip=1)
    batch = {"audio": torch.stack([ds[i]["audio"] for i in range(8)]),
             "target": torch.stack([ds[i]["target"] for i in range(8)])}
    torch.manual_seed(123)
    state = torch.get_rng_state()
    loss0 = module.training_step(batch, 0)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(999)                            # another global state ...
    assert torch.equal(module.training_step(batch, 0), loss0)   # ... the same step
    assert not torch.equal(module.training_step(batch, 1), loss0)  # another step's dropout
