"""Training configs: YAML files with a `base:` chain, dotted `key=value` overrides, defaults.

A config is a nested dict with the sections below; every key has a default here, so a
recipe file only states what differs (see `configs/*.yaml` and docs/training.md).

    seed: int                      seeds init, shuffling, crops and dropout
    out_dir: path                  the run folder (config, checkpoints, logs, plots)
    model: {name, <ModelConfig overrides>}
    data:  {store, train_mode, segments_per_clip, valid_segments_per_clip, batch_size,
            eval_batch_size, num_workers, pin_memory, device_resident}
    optim: {recipe: paper|adam, ...}  (see RECIPES)
    trainer: {max_epochs, accelerator, devices, num_nodes, strategy, precision, fast_steps, ...}

`base: other.yaml` (relative to the file) is loaded first and the file's keys merged
over it, recursively; overrides from the command line come last.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any

import yaml

from ..atomic import write_text

PAPER_LR_STAGES = [0.01, 0.002, 0.0004, 0.00008, 0.000016]

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "out_dir": "runs/default",
    "model": {"name": "samplecnn"},
    "data": {
        "store": None,
        "train_mode": "consecutive",       # or "random": fresh crops every epoch
        "segments_per_clip": 10,
        "valid_segments_per_clip": 10,
        "batch_size": 23,
        "eval_batch_size": 64,
        "num_workers": 4,
        "pin_memory": None,                # None: when training on a GPU
        "device_resident": False,          # keep the train split on the device (random crops)
    },
    "optim": {
        "recipe": "paper",
    },
    "trainer": {
        "max_epochs": 1000,
        "accelerator": "auto",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "precision": "32-true",
        "sync_batchnorm": False,
        "gradient_clip_val": None,
        "log_every_n_steps": 50,
        "limit_train_batches": None,
        "limit_val_batches": None,
        "deterministic": False,
        "progress_bar": None,              # None: on a terminal only (bars go to stderr)
        "num_threads": None,               # torch CPU threads; None: torch's default
        "fast_steps": "plain",             # training-step mode: a training.fast.TRAIN_MODES name
    },
}

# Defaults of each recipe; keys a user sets in `optim` override them.
RECIPES: dict[str, dict[str, Any]] = {
    # The authors' recipe: SGD + Nesterov, LR stages with patience on validation loss,
    # each stage restarting from the best weights (LRStageSchedule).
    "paper": {
        "recipe": "paper",
        "lr_stages": list(PAPER_LR_STAGES),
        "patience": 3,
        "momentum": 0.9,
        "nesterov": True,
        "weight_decay": 0.0,
        "reset_momentum": True,
        "min_delta": 0.0,
    },
    # A quick modern alternative: Adam(W) with a cosine (per step, with warm-up) or a
    # plateau schedule.
    "adam": {
        "recipe": "adam",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "decoupled_weight_decay": True,
        "betas": [0.9, 0.999],
        "schedule": "cosine",              # cosine | plateau | constant
        "warmup_epochs": 0.0,
        "min_lr": 0.0,
        "plateau_factor": 0.2,
        "plateau_patience": 3,
    },
}


def deep_merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`; nested dicts merge, everything else replaces."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    if path.resolve() in chain:
        raise ValueError(f"{path}: circular 'base:' chain")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a mapping of sections, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        base_path = Path(base)
        if not base_path.is_absolute():
            base_path = path.parent / base_path
        parent = _read_yaml(base_path, chain + (path.resolve(),))
        if _switches_recipe(parent, data.get("optim")):
            parent.pop("optim", None)  # the other recipe's settings would not apply
        data = deep_merge(parent, data)
    return data


def _switches_recipe(config: dict, optim: Any) -> bool:
    if not isinstance(optim, dict) or "recipe" not in optim:
        return False
    current = (config.get("optim") or {}).get("recipe", DEFAULTS["optim"]["recipe"])
    return optim["recipe"] != current


def parse_value(text: str) -> Any:
    """An override's value: YAML scalars and flow lists (`3`, `1e-3`, `null`, `[a, b]`)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(config: dict, overrides: list[str] | None) -> dict:
    """Apply `section.key=value` strings (dotted paths, YAML values) to a copy of config."""
    config = copy.deepcopy(config)
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. trainer.max_epochs=3)")
        key, value = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ValueError(f"override {item!r} has an empty key")
        if parts == ["optim", "recipe"] and _switches_recipe(config, {"recipe": parse_value(value)}):
            config["optim"] = {}  # start the new recipe from its own defaults
        node = config
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                if p in node and node[p] is not None:
                    raise ValueError(f"override {item!r}: {p!r} is not a section")
                node[p] = {}
            node = node[p]
        node[parts[-1]] = parse_value(value)
    return config


def resolve_config(config: dict) -> dict:
    """Defaults + recipe defaults + config; checks the sections and their keys."""
    config = dict(config)
    unknown = sorted(set(config) - set(DEFAULTS) - {"name", "description"})
    if unknown:
        raise ValueError(f"unknown config section(s): {', '.join(unknown)} "
                         f"(expected {', '.join(sorted(DEFAULTS))})")
    out = deep_merge(DEFAULTS, config)
    recipe = (out["optim"] or {}).get("recipe", "paper")
    if recipe not in RECIPES:
        raise ValueError(f"unknown optim.recipe {recipe!r} (expected {', '.join(RECIPES)})")
    out["optim"] = deep_merge(RECIPES[recipe], out["optim"])
    for section in ("data", "trainer"):
        bad = sorted(set(out[section]) - set(DEFAULTS[section]))
        if bad:
            raise ValueError(f"unknown {section} option(s): {', '.join(bad)}")
    bad = sorted(set(out["optim"]) - set(RECIPES[recipe]))
    if bad:
        raise ValueError(f"unknown option(s) for optim.recipe={recipe}: {', '.join(bad)}")
    if not isinstance(out["model"], dict) or not out["model"].get("name"):
        raise ValueError("config: model.name is required (see `samplecnn models`)")
    from .fast import TRAIN_MODES

    if out["trainer"]["fast_steps"] not in TRAIN_MODES:
        raise ValueError(f"trainer.fast_steps must be one of {', '.join(TRAIN_MODES)}, "
                         f"got {out['trainer']['fast_steps']!r}")
    d = out["data"]
    if d["train_mode"] not in ("consecutive", "random"):
        raise ValueError(f"data.train_mode must be 'consecutive' or 'random', got {d['train_mode']!r}")
    _check_types(out, recipe)
    o = out["optim"]
    if recipe != "paper" and o["schedule"] not in ("cosine", "plateau", "constant"):
        raise ValueError(f"optim.schedule must be cosine, plateau or constant, got {o['schedule']!r}")
    return out


# Typed keys: (kind, minimum) checked before anything is built or written, so that a
# typo such as `trainer.max_epochs=abc` or `=2.5` is one line naming the key, not a
# traceback (or a silent truncation) after a run folder was made.
_INT, _NUM, _BOOL, _STR = "an integer", "a number", "true or false", "a string"
_TYPES: dict[str, tuple[str, float | None, bool]] = {   # key: (kind, minimum, may be null)
    "seed": (_INT, 0, False),
    "out_dir": (_STR, None, False),
    "data.store": (_STR, None, True),
    "data.segments_per_clip": (_INT, 1, False),
    "data.valid_segments_per_clip": (_INT, 1, False),
    "data.batch_size": (_INT, 1, False),
    "data.eval_batch_size": (_INT, 1, False),
    "data.num_workers": (_INT, 0, False),
    "data.pin_memory": (_BOOL, None, True),
    "data.device_resident": (_BOOL, None, False),
    "trainer.max_epochs": (_INT, 1, False),
    "trainer.num_nodes": (_INT, 1, False),
    "trainer.sync_batchnorm": (_BOOL, None, False),
    "trainer.gradient_clip_val": (_NUM, 0, True),
    "trainer.log_every_n_steps": (_INT, 1, False),
    "trainer.limit_train_batches": (_NUM, 0, True),
    "trainer.limit_val_batches": (_NUM, 0, True),
    "trainer.deterministic": (_BOOL, None, False),
    "trainer.progress_bar": (_BOOL, None, True),
    "trainer.num_threads": (_INT, 1, True),
    "optim.lr": (_NUM, 0, False),
    "optim.weight_decay": (_NUM, 0, False),
    "optim.momentum": (_NUM, 0, False),
    "optim.nesterov": (_BOOL, None, False),
    "optim.reset_momentum": (_BOOL, None, False),
    "optim.min_delta": (_NUM, 0, False),
    "optim.patience": (_INT, 1, False),
    "optim.decoupled_weight_decay": (_BOOL, None, False),
    "optim.warmup_epochs": (_NUM, 0, False),
    "optim.min_lr": (_NUM, 0, False),
    "optim.plateau_factor": (_NUM, 0, False),
    "optim.plateau_patience": (_INT, 0, False),
}


_EXPONENT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+")


def _type_ok(value: Any, kind: str) -> bool:
    if kind == _BOOL:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # YAML's true is not the number 1 here
    if kind == _INT:
        return isinstance(value, int)
    if kind == _NUM:
        return isinstance(value, (int, float)) and value == value
    return isinstance(value, str) and value != ""


def _check_types(config: dict, recipe: str) -> None:
    for key, (kind, minimum, nullable) in _TYPES.items():
        section, _, name = key.rpartition(".")
        node = config[section] if section else config
        if name not in node:
            continue  # an option of the other optim recipe
        value = node[name]
        if value is None and nullable:
            continue
        if kind == _NUM and isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            value = node[name] = float(value)  # YAML 1.1 reads `3e-4` as a string
        if not _type_ok(value, kind):
            raise ValueError(f"{key} must be {kind}{' or null' if nullable else ''}, got {value!r}")
        if minimum is not None and value < minimum:
            raise ValueError(f"{key} must be at least {minimum:g}, got {value!r}")
    if recipe == "paper":
        stages = config["optim"]["lr_stages"]
        if isinstance(stages, list):
            stages = config["optim"]["lr_stages"] = [
                float(x) if isinstance(x, str) and _EXPONENT.fullmatch(x.strip()) else x for x in stages]
        if (not isinstance(stages, list) or not stages
                or not all(_type_ok(x, _NUM) and x > 0 for x in stages)):
            raise ValueError(f"optim.lr_stages must be a non-empty list of positive rates, got {stages!r}")
    if recipe == "adam":
        betas = config["optim"]["betas"]
        if (not isinstance(betas, list) or len(betas) != 2
                or not all(_type_ok(b, _NUM) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"optim.betas must be a list of two numbers in [0, 1), got {betas!r}")


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> dict:
    """Read a config file (or start from `base`), apply overrides, resolve defaults."""
    config = {} if base is None else copy.deepcopy(base)
    if path is not None:
        config = deep_merge(config, _read_yaml(Path(path)))
    return resolve_config(apply_overrides(config, overrides))


def dump_config(config: dict) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


def write_config(config: dict, path: str | os.PathLike) -> Path:
    """Atomic YAML write of a resolved config."""
    return write_text(path, dump_config(config))
