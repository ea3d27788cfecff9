"""One registry for the whole family: names -> configs -> models.

Every variant is a config over the one builder (`SampleCNN`); registering a variant is a
row in a table, never a copy of a network. Names are stable and shell-friendly:

- `m{m}n{n}_{input}`: the 42 rows of the paper's variant table (raw waveform; sample-level
  when the first filter equals m, frame-level otherwise), e.g. `m3n9_59049`;
- `samplecnn`: the paper's 3^9 model (= `m3n9_59049`), and its follow-ups
  `samplecnn_se`, `samplecnn_rese2`, `samplecnn_ml`, `samplecnn_se_ml`, `samplecnn_rese2_ml`;
- `mel_f{frame}`: the frame-level mel-spectrogram baselines on 59,049-sample segments;
- `*_small`: narrow 16 kHz models sized for CPU training (the offline demo);
- `leenet11`, `leenet24`: PANNs' LeeNets (the m^n-DCNN as Kong et al. 2020 trained it on
  AudioSet: 32 kHz, 10 s windows, scored on whole clips).
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import ModelConfig
from .samplecnn import SampleCNN

# (m, input_samples): list of (n, MTAT ROC-AUC) -- the paper's table, notes section 2.
PAPER_TABLE: dict[tuple[int, int], list[tuple[int, float]]] = {
    (2, 16384): [(6, .8839), (7, .8899), (8, .8968), (9, .8994), (10, .9011), (11, .9031), (12, .9036), (13, .9032)],
    (2, 32768): [(7, .8834), (8, .8872), (9, .8980), (10, .8988), (11, .9017), (12, .9031), (13, .9039), (14, .9040)],
    (3, 19683): [(3, .8655), (4, .8753), (5, .8961), (6, .9012), (7, .9033), (8, .9039)],
    (3, 59049): [(4, .8655), (5, .8823), (6, .8936), (7, .9002), (8, .9030), (9, .9055)],
    (4, 16384): [(3, .8828), (4, .8968), (5, .9010), (6, .9021)],
    (4, 65536): [(4, .8813), (5, .8950), (6, .9001), (7, .9026)],
    (5, 15625): [(3, .8901), (4, .9005), (5, .9024)],
    (5, 78125): [(4, .8870), (5, .9004), (6, .9041)],
}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    config: dict[str, Any]
    description: str
    paper_auc: float | None = None
    aliases: tuple[str, ...] = field(default=())


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, description: str, paper_auc: float | None = None, **config: Any) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    ModelConfig(**config)  # fail at import time, not at first use, on a bad table row
    _REGISTRY[name] = ModelEntry(name, dict(config), description, paper_auc)


def _register_defaults() -> None:
    for (m, input_samples), rows in PAPER_TABLE.items():
        for n, auc in rows:
            first = input_samples // m**n
            level = "sample" if first == m else "frame"
            register_model(
                f"m{m}n{n}_{input_samples}",
                f"{m}^{n}-DCNN, {level}-level raw waveform, first filter {first} (paper table)",
                paper_auc=auc, m=m, n=n, input_samples=input_samples,
            )
    paper = dict(m=3, n=9, input_samples=59049)
    register_model("samplecnn", "the paper's 3^9 sample-level model (= m3n9_59049)", .9055, **paper)
    register_model("samplecnn_se", "3^9 with squeeze-excitation after every module", None, block="se", **paper)
    register_model("samplecnn_rese2", "3^9 with ReSE-2 residual SE modules", None, block="rese2", **paper)
    register_model("samplecnn_ml", "3^9 with the multi-level head", None, multi_level=True, **paper)
    register_model("samplecnn_se_ml", "3^9 SE modules + multi-level head", None,
                   block="se", multi_level=True, **paper)
    register_model("samplecnn_rese2_ml", "3^9 ReSE-2 modules + multi-level head (Kim et al. 2018)", None,
                   block="rese2", multi_level=True, **paper)
    register_model("samplecnn_resse", "3^9 residual-SE in every layer + MLP output, 16 kHz "
                   "(sota-music-tagging-models' SampleCNNSE)", None, block="resse", se_reduction=1,
                   classifier="mlp", frontend_padding=1, sample_rate=16000, **paper)
    # Frame-level mel baselines on the 3^9 segment: frame = window = hop; frames = 3^n.
    for frame, n in ((729, 4), (243, 5), (81, 6), (27, 7)):
        register_model(f"mel_f{frame}", f"frame-level log-mel ({frame}-sample window = hop), {3**n} frames",
                       .9059 if frame == 729 else None, m=3, n=n, input_samples=59049, frontend="mel")
    # CPU-sized models for the offline demo: 19,683 samples = 1.23 s at 16 kHz.
    small = dict(m=3, input_samples=19683, sample_rate=16000, width=0.25)
    register_model("samplecnn_small", "sample-level 3^8, quarter width, 16 kHz (CPU demo)", None, n=8, **small)
    register_model("framecnn_small", "frame-level raw 3^5 (filter 81), quarter width, 16 kHz (CPU demo)", None,
                   n=5, **small)
    register_model("melcnn_small", "frame-level log-mel (frame 81, 64 bands) 3^5, quarter width, 16 kHz",
                   None, n=5, frontend="mel", n_mels=64, **small)
    # PANNs (Kong et al. 2020, pytorch/models.py): 32 kHz, 10 s training windows.
    leenet = dict(arch="leenet", m=3, n=8, input_samples=320000, sample_rate=32000, frontend_padding=1)
    register_model("leenet11", "PANNs' LeeNet11: 9 conv blocks 64..256, max+mean head, fc1 512 "
                   "(AudioSet mAP 0.266)", None, block="leenet", frontend_channels=64,
                   channels=[64, 64, 128, 128, 128, 128, 128, 256], features=512, dropout=0.5,
                   block_dropout=0.0, **leenet)
    register_model("leenet24", "PANNs' LeeNet24: 9 double-conv blocks 64..1024, max+mean head, "
                   "fc1 1024 (AudioSet mAP 0.336)", None, block="leenet2", frontend_channels=64,
                   channels=[96, 128, 128, 256, 256, 512, 512, 1024], features=1024, dropout=0.5,
                   block_dropout=0.1, last_pool=False, **leenet)


_register_defaults()


def list_models(pattern: str | None = None) -> list[str]:
    """Registered names in registration order, optionally filtered by a glob pattern."""
    names = list(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see `samplecnn models`"
        raise ValueError(f"unknown model {name!r}{hint}") from None


def get_model_config(name: str, **overrides: Any) -> ModelConfig:
    """The registered config of `name` with `overrides` applied (e.g. n_tags, tags)."""
    entry = get_model_entry(name)
    values = dict(entry.config)
    tags = overrides.get("tags")
    if tags is not None:
        overrides["tags"] = list(tags)
        overrides.setdefault("n_tags", len(tags))
    values.update(overrides)
    base = ModelConfig()
    unknown = sorted(set(values) - set(base.to_dict()))
    if unknown:
        raise ValueError(f"unknown model option(s) for {name!r}: {', '.join(unknown)}")
    config = ModelConfig(**values)
    config.extra.setdefault("registry_name", name)
    return config


def model_from_config(config: ModelConfig | dict[str, Any], seed: int | None = None) -> SampleCNN:
    """Build the model a config (or its dict form, as stored in checkpoints) describes."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    if seed is None:
        return SampleCNN(config)
    # A private RNG stream so that seeding the init does not disturb the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SampleCNN(config)


def create_model(name: str, n_tags: int = 50, seed: int | None = None, **overrides: Any) -> SampleCNN:
    """Build a registered variant.

    Args:
        name: a name from `list_models()`.
        n_tags: number of output logits (ignored when `tags` is given: its length wins).
        seed: seeds the weight initialisation only (same seed, same weights).
        **overrides: any `ModelConfig` field, e.g. `tags=[...]`, `sample_rate=16000`,
            `width=0.5`, `block="se"`.
    """
    if overrides.get("tags") is None:
        overrides["n_tags"] = n_tags
    return model_from_config(get_model_config(name, **overrides), seed=seed)


def describe_model(name: str, n_tags: int = 50) -> dict[str, Any]:
    """The row `samplecnn models --json` prints for one variant."""
    entry = get_model_entry(name)
    config = get_model_config(name, n_tags=n_tags)
    model = SampleCNN(config)
    return {
        "name": name,
        "family": config.family,
        "m": config.m,
        "n": config.n,
        "input_samples": config.input_samples,
        "sample_rate": config.sample_rate,
        "duration_ms": round(1000 * config.duration_s, 1),
        "frames": config.frames,
        "first_filter": config.first_filter,
        "layers": config.layers,
        "params": model.num_params(),
        "gflops": round(model.flops() / 1e9, 4),
        "paper_mtat_auc": entry.paper_auc,
        "description": entry.description,
    }
