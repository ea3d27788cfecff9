"""`train(config)`: config -> model + data + Trainer -> checkpoints and logs in a run folder.

Run folder layout (`out_dir`):

    config.yaml                 the resolved config (what `--resume` reads back); its
                                data.store is absolute, so it reads the same from any
                                working directory
    checkpoints/best.ckpt       lowest validation loss (Lightning checkpoint, loads with
                                `samplecnn.checkpoint.load_model`); kept when the run
                                folder is moved or copied and then resumed
    checkpoints/last.ckpt       the end of the last finished epoch, rewritten (atomically)
                                after every epoch: what `--resume` continues from
    logs/csv/metrics.csv        per-step / per-epoch metrics (earlier parts of a resumed
                                run are kept as metrics-<n>.csv)
    logs/tb/                    TensorBoard events
    train_summary.json          best/last paths, best validation loss, epochs run

At the end of a run, per-tag decision thresholds are fitted on the validation split
(max F1, `samplecnn.evaluation.fit_checkpoint_thresholds`) for best.ckpt and last.ckpt
each and stored in them, so a trained checkpoint decides (`labels`) out of the box.

One process trains into a run folder at a time (`samplecnn.locks.exclusive`); a second
one is refused with `OutputBusy`. A run folder that already holds checkpoints is
continued with `resume=` or started over with `overwrite=True` (which first removes the
files listed above); a plain `train` into it is refused rather than overwriting a
finished run's checkpoints. Only samplecnn's own lines are printed: Lightning's
info lines and adverts are silenced, and progress bars (on stderr) are shown on a
terminal only unless asked for.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from ..atomic import write_json
from ..checkpoint import atomic_torch_save
from ..data import SegmentStore
from ..locks import exclusive
from ..paths import escape_path
from ..models import get_model_config
from .config import load_config, write_config
from .fast import runtime_for_mode
from .datamodule import SegmentDataModule
from .module import TaggingModule
from .schedule import LRStageSchedule


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary name, then renamed: a kill during
    a save never leaves a torn `last.ckpt` behind."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path)


@dataclass
class TrainResult:
    out_dir: str
    best_checkpoint: str
    last_checkpoint: str
    best_val_loss: float | None
    epochs: int
    global_step: int
    stopped_by_schedule: bool

    def to_dict(self) -> dict:
        return asdict(self)


def build_model_config(config: dict, store: SegmentStore, warn=print) -> dict:
    """The model config for a run: registry entry + overrides + the store's tags and rate."""
    m = dict(config["model"])
    name = m.pop("name")
    registered = get_model_config(name, **{k: v for k, v in m.items() if k not in ("tags", "n_tags")})
    if registered.sample_rate != store.sample_rate:
        warn(f"note: {name} is set up for {registered.sample_rate} Hz but the store "
             f"{store.path} is at {store.sample_rate} Hz; the model is trained at "
             f"{store.sample_rate} Hz, so one {registered.input_samples}-sample segment lasts "
             f"{registered.input_samples / store.sample_rate:.3f} s instead of "
             f"{registered.duration_s:.3f} s")
    if store.sample_rate < 8000:
        raise ValueError(f"{store.path}: sample rate {store.sample_rate} Hz is too low for "
                         "music tagging (expected 16000 or 22050 Hz)")
    m["tags"] = list(store.tags)
    m["n_tags"] = len(store.tags)
    m["sample_rate"] = store.sample_rate
    return get_model_config(name, **m).to_dict()


def _find_resume(resume: str | os.PathLike) -> tuple[Path, Path]:
    """`--resume RUN_DIR` or `--resume CKPT` -> (run folder, checkpoint to resume)."""
    p = Path(resume)
    if p.is_dir():
        ckpt = p / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise FileNotFoundError(f"{p}: no checkpoints/last.ckpt to resume from")
        return p, ckpt
    if p.is_file():
        run = p.parent.parent if p.parent.name == "checkpoints" else p.parent
        return run, p
    raise FileNotFoundError(f"{p}: no such run folder or checkpoint")


RUN_FILES = ("config.yaml", "checkpoints", "logs", "train_summary.json")


def _holds_run(out: Path) -> bool:
    return any((out / "checkpoints").glob("*.ckpt"))


def _clear_run(out: Path) -> None:
    """Remove what a run wrote into `out` (only those files: the folder may hold others)."""
    import shutil

    for name in RUN_FILES:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()


def _rotate_csv(log_dir: Path) -> None:
    # CSVLogger deletes an existing metrics.csv; keep the earlier part of a resumed run.
    f = log_dir / "metrics.csv"
    if f.is_file():
        n = 1
        while (log_dir / f"metrics-{n}.csv").exists():
            n += 1
        os.replace(f, log_dir / f"metrics-{n}.csv")


def _trainer_kwargs(t: dict) -> dict:
    # Values are typed and checked by load_config.
    kw = dict(
        max_epochs=int(t["max_epochs"]),
        accelerator=t["accelerator"],
        devices=t["devices"],
        num_nodes=int(t["num_nodes"]),
        strategy=t["strategy"],
        precision=t["precision"],
        sync_batchnorm=bool(t["sync_batchnorm"]),
        gradient_clip_val=t["gradient_clip_val"],
        log_every_n_steps=int(t["log_every_n_steps"]),
        deterministic=bool(t["deterministic"]),
    )
    for key in ("limit_train_batches", "limit_val_batches"):
        if t[key] is not None:
            kw[key] = t[key]
    return kw


class RunCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` that keeps its state when the run folder was moved or copied.

    Lightning drops the best score (and the top-k bookkeeping) when a checkpoint is
    resumed from another folder than it was written in, so the next epoch, however
    bad, would replace `best.ckpt`. The saved paths are rebased onto the new folder
    instead (the file names inside `checkpoints/` are the same).
    """

    @property
    def state_key(self) -> str:
        # Lightning's own key, so that run folders written with a plain ModelCheckpoint
        # resume with their best score too.
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("dirpath")
        if saved is not None and self.dirpath is not None and saved != self.dirpath:
            state_dict = _rebase(state_dict, str(saved), str(self.dirpath))
        super().load_state_dict(state_dict)


def _rebase(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    def move(path: Any) -> Any:
        if isinstance(path, str) and path and os.path.dirname(path) == old:
            return os.path.join(new, os.path.basename(path))
        return path

    state = dict(state, dirpath=new)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in state:
            state[key] = move(state[key])
    if isinstance(state.get("best_k_models"), dict):
        state["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}
    return state


class StderrProgressBar(TQDMProgressBar):
    """Lightning's tqdm bars, written to stderr (stdout is for results)."""

    def init_train_tqdm(self):
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_train_tqdm()

    def init_validation_tqdm(self):
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_validation_tqdm()

    def init_sanity_tqdm(self):
        with contextlib.redirect_stdout(sys.stderr):
            return super().init_sanity_tqdm()


# Warnings of the installed libraries that say nothing to a samplecnn user (advice that
# does not apply, deprecations inside torch / Lightning); everything else is shown.
_QUIET_WARNINGS = (
    ".*does not have many workers.*",            # a memory-mapped store needs none
    ".*Checkpoint directory .* exists and is not empty.*",   # a resumed run's own folder
    ".*Experiment logs directory.*",             # _rotate_csv moved the earlier log aside
    ".*The dirpath has changed from.*",          # RunCheckpoint rebases the paths
    ".*LeafSpec.*is deprecated.*",               # Lightning's own use of torch's _pytree
    ".*smaller than the logging interval.*",     # per-epoch metrics are logged anyway
)
_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Silence Lightning's info lines ("GPU available: ...", tips for its cloud
    products, DDP start-up) and the known warnings, for the duration of a fit."""
    loggers = [logging.getLogger(name) for name in _LIGHTNING_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            for pattern in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _launched_worker() -> bool:
    """True in a process that a launcher started for a rank above 0 (Lightning's DDP
    subprocesses, torchrun, SLURM): rank 0 holds the run folder for all of them."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return True
    return False


def train(config: dict | str | os.PathLike | None = None, overrides: list[str] | None = None,
          resume: str | os.PathLike | None = None, progress: bool | None = None,
          log=print, overwrite: bool = False) -> TrainResult:
    """Train a tagging model as a config describes; see the module docstring for outputs.

    An entry point: it applies the run's process-wide settings (`trainer.num_threads`,
    the allocator of `trainer.fast_steps`) through `samplecnn.runtime.Runtime`.

    Args:
        config: a resolved config dict, a YAML path, or None with `resume` (the run's
            own config.yaml is used).
        overrides: dotted `key=value` strings applied on top (e.g. "trainer.max_epochs=3").
        resume: a run folder or a checkpoint: continue it exactly (weights, optimizer,
            schedule, epoch counters) from the end of its last finished epoch.
        progress: progress bars on stderr (default: the config's `trainer.progress_bar`;
            null there means on a terminal only).
        log: receives one-line notes (None: silent).
        overwrite: start over in an `out_dir` that already holds a run (its checkpoints,
            logs, config.yaml and summary are removed first). Without it such a folder is
            refused (ValueError), since training would replace its checkpoints.
    """
    log = log or (lambda *a, **k: None)
    if overwrite and resume is not None:
        raise ValueError("overwrite and resume exclude each other: resume continues a run, "
                         "overwrite starts it over")
    resume_ckpt = None
    if resume is not None:
        run_dir, resume_ckpt = _find_resume(resume)
        if config is None:
            if not (run_dir / "config.yaml").is_file():
                raise FileNotFoundError(f"{run_dir}: no config.yaml to resume with; pass --config")
            config = run_dir / "config.yaml"
    if config is None:
        raise ValueError("a config is required (--config FILE)")
    # Everything is checked before anything is created (a typo makes no run folder).
    if isinstance(config, dict):
        cfg = load_config(None, overrides, base=config)
    else:
        cfg = load_config(config, overrides)
    if resume is not None and "out_dir=" not in " ".join(overrides or []):
        cfg["out_dir"] = str(run_dir)
    if not cfg["data"]["store"]:
        raise ValueError("data.store is not set: pass data.store=PATH (a store made by `samplecnn prepare`)")
    # Absolute in the run's config.yaml: a resume from another working directory reads
    # the same store.
    cfg["data"]["store"] = os.path.abspath(os.path.expanduser(cfg["data"]["store"]))
    # The run folder too: config.yaml and train_summary.json name every path absolutely
    # (a resume of a moved run, given relatively, must not mix the two spellings).
    cfg["out_dir"] = os.path.abspath(os.path.expanduser(cfg["out_dir"]))
    out = Path(cfg["out_dir"])
    worker = _launched_worker()  # rank 0 holds and checks the run folder for all ranks
    hold = contextlib.nullcontext() if worker else exclusive(out, "the run folder")
    with hold:
        replace = resume is None and not worker and _holds_run(out)
        if replace and not overwrite:
            shown = escape_path(out)
            raise ValueError(
                f"{shown}: already holds a training run (checkpoints/); continue it with "
                f"--resume {shown}, start it over with --overwrite, or choose another out_dir")
        store = SegmentStore(cfg["data"]["store"])
        model_config = build_model_config(cfg, store, warn=log)
        if replace:  # only once the store and the model config are known to be good
            log(f"overwrite: removing the earlier run in {escape_path(out)}")
            _clear_run(out)
        t = cfg["trainer"]
        runtime_for_mode(t["fast_steps"], t["num_threads"]).apply()
        with _quiet_lightning():
            return _fit(cfg, store, model_config, out, resume_ckpt, progress, log)


def _fit(cfg: dict, store: SegmentStore, model_config: dict, out: Path,
         resume_ckpt: Path | None, progress: bool | None, log=print) -> TrainResult:
    t, d = cfg["trainer"], cfg["data"]
    seed = int(cfg["seed"])
    # No reseeding of the global RNGs (this is library code): weights, crops, order and
    # dropout each draw from generators seeded from `seed` (model_from_config,
    # epoch_plan, TaggingModule.step_seed), and dataset items draw nothing.
    on_gpu = t["accelerator"] in ("gpu", "cuda") or (t["accelerator"] == "auto" and torch.cuda.is_available())
    dm = SegmentDataModule(
        store.path, model_config["input_samples"], seed=seed, train_mode=d["train_mode"],
        segments_per_clip=d["segments_per_clip"], valid_segments_per_clip=d["valid_segments_per_clip"],
        batch_size=d["batch_size"], eval_batch_size=d["eval_batch_size"], num_workers=d["num_workers"],
        pin_memory=on_gpu if d["pin_memory"] is None else bool(d["pin_memory"]),
        device_resident=bool(d["device_resident"]),
    )
    module = TaggingModule(model_config, cfg["optim"], training_config=cfg, seed=seed,
                           fast_steps=t["fast_steps"])

    ckpt_dir = out / "checkpoints"
    best_cb = RunCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_loss", mode="min",
                            save_top_k=1, save_last=False, enable_version_counter=False)
    # Lightning's save_last only rewrites last.ckpt when a new best is saved; a second
    # checkpoint without a monitor rewrites it after every epoch. Lightning runs
    # checkpoint callbacks last, in this order, so last.ckpt holds the updated best score
    # and the LR schedule's step of the epoch.
    last_cb = RunCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1,
                            enable_version_counter=False)
    callbacks: list[L.Callback] = [best_cb, last_cb]
    schedule = None
    if cfg["optim"]["recipe"] == "paper":
        o = cfg["optim"]
        schedule = LRStageSchedule(o["lr_stages"], patience=o["patience"], min_delta=o["min_delta"],
                                   reset_momentum=o["reset_momentum"])
        callbacks.append(schedule)
    show = t["progress_bar"] if progress is None else progress
    if show is None:
        show = sys.stderr.isatty()
    if show:
        callbacks.append(StderrProgressBar(refresh_rate=max(1, int(t["log_every_n_steps"]) // 10)))

    loggers = [CSVLogger(str(out), name="logs", version="csv"),
               TensorBoardLogger(str(out), name="logs", version="tb", default_hp_metric=False)]
    try:
        trainer = L.Trainer(
            **_trainer_kwargs(t),
            callbacks=callbacks,
            logger=loggers,
            enable_progress_bar=bool(show),
            enable_model_summary=False,
            use_distributed_sampler=False,   # EpochSampler shards by rank itself
            plugins=[AtomicCheckpointIO()],
            default_root_dir=str(out),
            num_sanity_val_steps=0,
        )
    except (MisconfigurationException, TypeError, ImportError) as err:
        # A trainer option Lightning refuses (accelerator, devices, strategy, precision;
        # an accelerator whose package is missing): a user error, before the run folder
        # is made.
        raise ValueError(f"trainer options: {err}") from None
    if resume_ckpt is not None:
        _rotate_csv(out / "logs" / "csv")
    if trainer.is_global_zero:
        write_config(cfg, out / "config.yaml")
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume_ckpt) if resume_ckpt else None)

    best_score = best_cb.best_model_score
    result = TrainResult(
        out_dir=str(out),
        # In this run folder, spelled like the others (Lightning's own path is resolved
        # through symlinks).
        best_checkpoint=str(ckpt_dir / (os.path.basename(best_cb.best_model_path) or "best.ckpt")),
        last_checkpoint=str(ckpt_dir / "last.ckpt"),
        best_val_loss=None if best_score is None else float(best_score),
        epochs=int(trainer.current_epoch),
        global_step=int(trainer.global_step),
        stopped_by_schedule=bool(schedule is not None and schedule.finished),
    )
    if trainer.is_global_zero:
        store_thresholds([result.best_checkpoint, result.last_checkpoint], store,
                         cfg["data"]["eval_batch_size"], "cuda" if on_gpu else "cpu", log)
        write_json(out / "train_summary.json", result.to_dict())
    return result


def store_thresholds(checkpoints: list[str], store: SegmentStore, batch_size: int = 64,
                     device: str = "cpu", log=print) -> None:
    """Fit decision thresholds on the validation split into each checkpoint (a run's
    best.ckpt and last.ckpt; missing ones are skipped)."""
    from ..checkpoint import set_thresholds
    from ..evaluation import fit_checkpoint_thresholds

    if len(store.split_indices("valid")) == 0:
        log("thresholds: the store has no validation clips; checkpoints carry no decision "
            "thresholds (fit them with `samplecnn thresholds`)")
        return
    for ckpt in dict.fromkeys(checkpoints):
        if not Path(ckpt).is_file():
            continue
        fit = fit_checkpoint_thresholds(ckpt, store, "valid", batch_size=batch_size, device=device)
        set_thresholds(ckpt, fit.thresholds)
        th = fit.thresholds
        unfitted = f"; unfitted: {', '.join(th.unfitted)}" if th.unfitted else ""
        log(f"thresholds: {Path(ckpt).name}: {th.describe()}, valid macro F1 "
            f"{fit.decisions.macro_f1:.4f}{unfitted}")
