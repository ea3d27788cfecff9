"""A tiny learnable tagged data set for the training / evaluation tests.

Tags are exact functions of the audio (a low tone, a high tone, noise, clicks), so a
small model trained for a minute separates them well above chance.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from samplecnn.data import prepare_csv
from samplecnn.testing.datasets import write_audio

TAGS = ("low", "high", "noise", "clicks")


def clip_audio(labels: np.ndarray, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.01 * rng.standard_normal(n)
    if labels[0]:
        x += 0.3 * np.sin(2 * np.pi * rng.uniform(150, 300) * t + rng.uniform(0, 6.3))
    if labels[1]:
        x += 0.2 * np.sin(2 * np.pi * rng.uniform(2500, 4000) * t + rng.uniform(0, 6.3))
    if labels[2]:
        x += 0.15 * rng.standard_normal(n)
    if labels[3]:
        period = int(sr / rng.uniform(4, 8))
        x[::period] += 0.9
    return np.clip(x, -1, 1).astype(np.float32)


def make_learnable_store(tmp: Path, n_clips: int = 48, seconds: float = 2.0, sr: int = 8000,
                         seed: int = 0, splits: tuple[int, int, int] = (32, 8, 8),
                         test_missing_tag: str | None = None) -> Path:
    """Write a CSV-folder data set and prepare it into `tmp/store`; returns the store path.

    `test_missing_tag` makes that tag absent from every test clip (an evaluation split
    without positives for a tag).
    """
    rng = np.random.default_rng(seed)
    root = Path(tmp) / "csv"
    rows = []
    split_names = ["train"] * splits[0] + ["valid"] * splits[1] + ["test"] * splits[2]
    assert len(split_names) == n_clips
    for k in range(n_clips):
        labels = (rng.random(len(TAGS)) < 0.45).astype(int)
        if test_missing_tag and split_names[k] == "test":
            labels[TAGS.index(test_missing_tag)] = 0
        rel = f"audio/{k:04d}.wav"
        write_audio(root / rel, clip_audio(labels, seconds, sr, rng), sr)
        rows.append([rel, *labels.tolist(), split_names[k]])
    with open(root / "annotations.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", *TAGS, "split"])
        w.writerows(rows)
    store = Path(tmp) / "store"
    prepare_csv(root, store, sample_rate=sr, min_samples=0, workers=1, progress=False)
    return store


def tiny_config(store: Path, out: Path, **sections) -> dict:
    """A config for a very small sample-level model on `make_learnable_store` data.

    3^5 over 729 samples (91 ms at 8 kHz), width 1/8: trains at hundreds of segments/s.
    """
    cfg = {
        "seed": 0,
        "out_dir": str(out),
        "model": {"name": "samplecnn_small", "n": 5, "input_samples": 729, "width": 0.125},
        "data": {"store": str(store), "segments_per_clip": 8, "valid_segments_per_clip": 8,
                 "batch_size": 16, "eval_batch_size": 64, "num_workers": 0},
        "optim": {"recipe": "adam", "lr": 3e-3, "schedule": "constant"},
        "trainer": {"max_epochs": 3, "accelerator": "cpu", "devices": 1, "progress_bar": False,
                    "log_every_n_steps": 5, "deterministic": True},
    }
    for k, v in sections.items():
        if k == "optim" and v.get("recipe", "adam") != "adam":
            cfg[k] = dict(v)  # another recipe: none of the adam settings apply
        else:
            cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) else v
    return cfg
