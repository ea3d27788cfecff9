"""Checkpoints that carry everything inference needs.

A checkpoint is a `torch.save` dict with

- `"samplecnn"`: `{"format": 1, "model_config": ModelConfig.to_dict(), ...}` -- the
  architecture, tag names in output order, sample rate and segment length
  (`input_samples`), plus whatever the writer adds (training config, metrics), and
  `"thresholds"` (`samplecnn.thresholds.Thresholds.to_dict()`: per-tag decision
  thresholds, objective, split, store fingerprint) once they are fitted;
- `"state_dict"`: the weights. Lightning checkpoints written by `samplecnn train` carry
  the same `"samplecnn"` entry and prefix their keys with `model.`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_path
from .models import ModelConfig, SampleCNN, model_from_config

FORMAT_VERSION = 1
LIGHTNING_PREFIX = "model."


def checkpoint_info(model: SampleCNN, **extra: Any) -> dict[str, Any]:
    """The `"samplecnn"` entry for a model (used by `save_checkpoint` and training); the
    model's `thresholds` (set by `load_model`) travel with it."""
    info = {"format": FORMAT_VERSION, "model_config": model.config.to_dict()}
    thresholds = getattr(model, "thresholds", None)
    if thresholds is not None:
        info["thresholds"] = thresholds.to_dict()
    info.update(extra)
    return info


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save` to a temporary file beside `path`, then rename: never a torn file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(path: str | os.PathLike, model: SampleCNN, **extra: Any) -> Path:
    """Write an inference checkpoint of `model` atomically; returns the path."""
    if model.config.tags is None:
        raise ValueError(
            f"{path}: refusing to save a checkpoint without tag names; "
            "build the model with tags=[...] so that inference can name its outputs"
        )
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({"samplecnn": checkpoint_info(model, **extra), "state_dict": state}, path)
    return Path(path)


def _read(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        # Our checkpoints hold tensors, dicts, lists, numbers and strings only; Lightning
        # adds a few plain objects (hyper-parameters), hence weights_only=False fallback.
        try:
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
        except Exception:
            ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torn, truncated or not a torch file
        raise ValueError(f"{path}: not a readable checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(ckpt, dict) or "samplecnn" not in ckpt or "state_dict" not in ckpt:
        raise ValueError(
            f"{path}: not a samplecnn checkpoint (no 'samplecnn' entry); "
            "convert public weights with `samplecnn import`, or use `--pretrained NAME`"
        )
    return ckpt


def read_checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """The `"samplecnn"` entry of a checkpoint (model config, tags, rate, extras)."""
    return _read(path)["samplecnn"]


def read_thresholds(info: dict[str, Any], tags: list[str] | None, label: str):
    """The stored `Thresholds` of a `"samplecnn"` entry, or None."""
    from .thresholds import Thresholds

    if info.get("thresholds") is None:
        return None
    return Thresholds.from_dict(info["thresholds"], tags, label=label)


def set_thresholds(path: str | os.PathLike, thresholds, out: str | os.PathLike | None = None) -> Path:
    """Write the checkpoint at `path` with `thresholds` (a `Thresholds`, or None to remove
    them) to `out` (default: `path` itself, atomically); every other entry is kept."""
    ckpt = _read(path)
    info = dict(ckpt["samplecnn"])
    tags = (info.get("model_config") or {}).get("tags")
    if thresholds is None:
        info.pop("thresholds", None)
    else:
        if tags is not None and list(tags) != list(thresholds.tags):
            raise ValueError(f"{path}: thresholds for other tags than the checkpoint's")
        info["thresholds"] = thresholds.to_dict()
    ckpt["samplecnn"] = info
    out = Path(out if out is not None else path)
    atomic_torch_save(ckpt, out)
    return out


def load_model(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> SampleCNN:
    """Rebuild the model of a checkpoint, weights loaded, in eval mode; its stored
    thresholds (or None) are `model.thresholds`."""
    ckpt = _read(path, map_location)
    info = ckpt["samplecnn"]
    if info.get("format", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format {info['format']} is newer than this "
                         f"samplecnn understands ({FORMAT_VERSION}); upgrade samplecnn")
    try:
        config = ModelConfig.from_dict(info["model_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: invalid model config: {err}") from None
    model = model_from_config(config)
    state = ckpt["state_dict"]
    if any(k.startswith(LIGHTNING_PREFIX) for k in state):
        state = {k[len(LIGHTNING_PREFIX):]: v for k, v in state.items() if k.startswith(LIGHTNING_PREFIX)}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: weights do not match the stored model config: "
                         f"{str(err).splitlines()[0]}") from None
    model.thresholds = read_thresholds(info, config.tags, str(path))
    return model.eval()
