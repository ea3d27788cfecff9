"""Checkpoint + store -> clip-level metrics, per-tag tables and plots.

Evaluation scores every clip of a split on the toolkit's one scoring path, the same one
`samplecnn tag` uses: the one window grid (`samplecnn.windows`; by default every full
segment, consecutive, at least one per clip: `last="drop"`, the paper's protocol), the
same runner (ONNX Runtime on the CPU by default, exact fp32), the one batching loop
(`samplecnn.inference.batching`) and the one clip aggregation (`samplecnn.metrics`,
mean of the segments' sigmoid scores by default); then per-tag ROC-AUC and PR-AUC.
For the same audio and options, `evaluate` and `tag` give the same clip scores (tested).
"""
from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from .atomic import save_figure, write_json, write_text
from .data import SegmentStore
from .inference.batching import score_messages
from .options import ScoringOptions
from .metrics import TagMetrics, format_table, tag_metrics
from .metrics import aggregate as aggregate_windows
from .windows import WindowGrid


# `evaluate`'s defaults: full segments only (the paper's protocol), every segment of a
# clip. `tag` pads the tail instead (`ScoringOptions()`); docs/tagging.md has both.
EVALUATE_OPTIONS = ScoringOptions(last="drop")


def store_messages(store: SegmentStore, clips: np.ndarray, grid: WindowGrid,
                   chunk: int = 16) -> Iterator[tuple]:
    """The batching loop's messages for clips of a store, keyed by clip index: each clip's
    samples (float32, the store's int16 scale) through the one feeder
    (`tagging.sources.window_messages`) on `grid`."""
    from .tagging.sources import window_messages

    for c in clips:
        c = int(c)
        yield from window_messages(c, store.clip_float(c), store.sample_rate, grid,
                                   source_sample_rate=store.sample_rate, chunk=chunk, errors="raise")


@dataclass
class EvalResult:
    """Clip-level evaluation of one checkpoint on one split.

    `clip_scores` float64 `(n_clips, n_tags)` and `labels` uint8 `(n_clips, n_tags)` are
    in the order of `clip_ids`; `metrics` holds the per-tag and macro figures.
    """

    checkpoint: str
    store: str
    split: str
    aggregate: str
    tags: list[str]
    clip_ids: np.ndarray
    clip_scores: np.ndarray
    labels: np.ndarray
    metrics: TagMetrics
    n_segments: int
    notes: list[str] = field(default_factory=list)

    @property
    def roc_auc(self) -> float:
        return self.metrics.macro_roc_auc

    @property
    def pr_auc(self) -> float:
        return self.metrics.macro_pr_auc

    def to_dict(self) -> dict:
        d = {"checkpoint": self.checkpoint, "store": self.store, "split": self.split,
             "aggregate": self.aggregate, "n_segments": self.n_segments, "notes": list(self.notes)}
        d.update(self.metrics.to_dict())
        return d

    def summary(self) -> str:
        lines = [f"{self.split}: {self.metrics.n_clips} clips, {self.n_segments} segments, "
                 f"{len(self.tags)} tags, aggregation {self.aggregate}"]
        if self.metrics.excluded:
            lines.append(f"excluded (no positive or no negative clip in {self.split}): "
                         + ", ".join(self.metrics.excluded))
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"ROC-AUC {self.roc_auc:.4f}")
        lines.append(f"PR-AUC {self.pr_auc:.4f}")
        return "\n".join(lines)

    def write(self, out_dir: str | os.PathLike, plots: bool = True) -> dict[str, Path]:
        """Write metrics.json, per_tag.csv, clip_scores.csv (and tag_roc_auc.png)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "metrics.json", "per_tag": out / "per_tag.csv",
                 "scores": out / "clip_scores.csv"}
        write_json(paths["json"], self.to_dict())
        rows = self.metrics.rows()
        _write_csv(paths["per_tag"], ["tag", "positives", "prevalence", "roc_auc", "pr_auc"],
                    [[r["tag"], r["positives"], r["prevalence"],
                      "" if r["roc_auc"] is None else f"{r['roc_auc']:.6f}",
                      "" if r["pr_auc"] is None else f"{r['pr_auc']:.6f}"] for r in rows])
        _write_csv(paths["scores"], ["clip_id", *self.tags],
                    [[str(c), *(f"{v:.6f}" for v in s)] for c, s in zip(self.clip_ids, self.clip_scores)])
        if plots:
            paths["plot"] = plot_tag_auc(self.metrics, out / "tag_roc_auc.png",
                                         title=f"per-tag ROC-AUC ({self.split})")
        return paths


def evaluate(checkpoint: str | os.PathLike, store: str | os.PathLike | SegmentStore,
             split: str = "test", aggregate: str | None = None, batch_size: int = 64,
             device: str | None = None, progress: bool = False, *,
             options: ScoringOptions | None = None, **scoring) -> EvalResult:
    """Evaluate a checkpoint, or an ONNX file of `samplecnn export` (fp32 or int8, run
    by ONNX Runtime on the CPU), on one split of a store.

    `options` (a `ScoringOptions`, or its fields as keywords; default `EVALUATE_OPTIONS`):
    windows of the model's segment length every `hop` seconds (default: one segment,
    consecutive) under the last-window policy `last` ("drop": full segments only, at
    least one per clip; "pad": the tail too), at most `max_windows` per clip (validation
    uses 10), run by `backend` (see `samplecnn.inference.runners`), aggregated per clip by
    `aggregate` ("mean", "max", "logit_mean"). The model's tags are matched to the
    store's by name; tags the store lacks are left out with a note. A store at another
    sample rate is refused.
    """
    if aggregate is not None:
        scoring["aggregate"] = aggregate
    options = ScoringOptions.build(options if options is not None else EVALUATE_OPTIONS, **scoring)
    aggregate = options.aggregate
    onnx_file = str(checkpoint).lower().endswith(".onnx")
    if onnx_file:
        # An export (fp32 or int8) runs as it is, on ONNX Runtime on the CPU.
        from .inference.runners import load_runner

        runner = load_runner(checkpoint, options.backend, device)
        rate, window, model_tags = runner.sample_rate, runner.input_samples, list(runner.tags)
        whole_clip = bool(runner.whole_clip)
    else:
        from .checkpoint import load_model

        model = load_model(checkpoint)
        cfg = model.config
        rate, window, model_tags = cfg.sample_rate, cfg.input_samples, list(cfg.tags or [])
        whole_clip = bool(cfg.whole_clip)
    store = store if isinstance(store, SegmentStore) else SegmentStore(store)
    if store.sample_rate != rate:
        raise ValueError(f"{store.path}: store is at {store.sample_rate} Hz but {checkpoint} expects "
                         f"{rate} Hz; prepare the store with --sample-rate {rate}")
    if not model_tags:
        raise ValueError(f"{checkpoint}: the checkpoint has no tag names; cannot match them to the store")
    store_pos = {t: i for i, t in enumerate(store.tags)}
    keep = [i for i, t in enumerate(model_tags) if t in store_pos]
    if not keep:
        raise ValueError(f"{store.path}: none of the checkpoint's {len(model_tags)} tags is in the store")
    notes = []
    missing = [t for t in model_tags if t not in store_pos]
    if missing:
        notes.append(f"{len(missing)} model tag(s) not in the store, not evaluated: {', '.join(missing)}")
    clips = store.split_indices(split)
    if len(clips) == 0:
        raise ValueError(f"{store.path}: split {split!r} has no clips")
    grid = options.grid(window, rate, whole_clip=whole_clip)
    if not onnx_file:
        import torch

        from .inference.runners import optimize_for_inference

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        runner = optimize_for_inference(model, options.backend, device=device)
    scored = score_messages(store_messages(store, clips, grid), runner.logits, batch_size)
    if progress:
        from tqdm import tqdm

        scored = tqdm(scored, total=len(clips), desc="evaluate", unit="clip", leave=False,
                      file=sys.stderr)
    by_clip, n_segments = {}, 0
    for res in scored:
        by_clip[res.key] = aggregate_windows(res.outputs[:, keep], aggregate)
        n_segments += len(res.outputs)
    clip_scores = np.stack([by_clip[int(c)] for c in clips])
    tags = [model_tags[i] for i in keep]
    labels = store.labels[clips][:, [store_pos[t] for t in tags]]
    metrics = tag_metrics(labels, clip_scores, tags)
    if not np.any(~np.isnan(metrics.roc_auc)):  # every AUC undefined: no result to report
        raise ValueError(f"{store.path}: split {split!r}: no tag can be scored (each of the "
                         f"{len(tags)} tag(s) has no positive or no negative clip among its "
                         f"{len(clips)} clip(s)); evaluate on a split with both")
    return EvalResult(str(checkpoint), str(store.path), split, aggregate, tags,
                      np.asarray(store.clip_ids)[clips], clip_scores, labels, metrics,
                      n_segments, notes)


# ------------------------------------------------------------------------------ plots
def plot_tag_auc(metrics: TagMetrics, path: str | os.PathLike, title: str = "per-tag ROC-AUC") -> Path:
    """Horizontal bars of each tag's ROC-AUC (sorted), the macro mean as a line."""
    from matplotlib.figure import Figure  # no pyplot, no backend: the caller's is left alone

    rows = [r for r in metrics.rows() if r["roc_auc"] is not None]
    rows.sort(key=lambda r: r["roc_auc"])
    fig = Figure(figsize=(6.5, max(2.5, 0.22 * len(rows) + 1)))
    ax = fig.add_subplot(1, 1, 1)
    ax.barh([r["tag"] for r in rows], [r["roc_auc"] for r in rows], color="#4878a8")
    ax.axvline(metrics.macro_roc_auc, color="k", ls="--", lw=1, label=f"macro {metrics.macro_roc_auc:.4f}")
    ax.axvline(0.5, color="#c44", lw=0.8, label="chance")
    ax.set_xlim(min(0.4, min((r["roc_auc"] for r in rows), default=0.4)), 1.0)
    ax.set_xlabel("ROC-AUC")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    return save_figure(fig, path)


def read_metrics_csv(run_dir: str | os.PathLike) -> list[dict]:
    """The CSV logs of a run (all parts of a resumed run, later rows win), as dict rows."""
    log_dir = Path(run_dir) / "logs" / "csv"
    parts = sorted(log_dir.glob("metrics-*.csv"), key=lambda p: int(p.stem.split("-")[1]))
    if (log_dir / "metrics.csv").is_file():
        parts.append(log_dir / "metrics.csv")
    if not parts:
        raise FileNotFoundError(f"{log_dir}: no metrics.csv (not a `samplecnn train` run folder?)")
    rows = []
    for p in parts:
        with open(p, newline="", encoding="utf-8") as f:
            rows += list(csv.DictReader(f))
    return rows


def epoch_curves(run_dir: str | os.PathLike) -> dict[str, dict[int, float]]:
    """Per-epoch values {metric: {epoch: value}} of train_loss_epoch, val_loss, val_roc_auc, lr."""
    curves: dict[str, dict[int, float]] = {}
    for r in read_metrics_csv(run_dir):
        for key in ("train_loss_epoch", "val_loss", "val_roc_auc", "val_pr_auc", "lr"):
            v = r.get(key)
            if v not in (None, ""):
                curves.setdefault(key, {})[int(r["epoch"])] = float(v)
    return curves


def plot_training_curves(run_dir: str | os.PathLike, path: str | os.PathLike | None = None) -> Path:
    """Train / validation loss, validation ROC-AUC and learning rate per epoch."""
    from matplotlib.figure import Figure

    c = epoch_curves(run_dir)
    if not c.get("val_loss") and not c.get("train_loss_epoch"):
        raise ValueError(f"{run_dir}: the logs hold no finished epoch yet")
    fig = Figure(figsize=(12, 3.4))
    axes = fig.subplots(1, 3)
    panels = [("BCE loss", (("train_loss_epoch", "train"), ("val_loss", "valid"))),
              ("validation (clip level, macro)", (("val_roc_auc", "ROC-AUC"), ("val_pr_auc", "PR-AUC"))),
              ("learning rate", (("lr", None),))]
    for ax, (title, series) in zip(axes, panels):
        for key, label in series:
            if key in c:
                e = sorted(c[key])
                ax.plot(e, [c[key][i] for i in e], marker=".", label=label)
        ax.set(title=title, xlabel="epoch")
        if series[0][1] is not None:
            ax.legend()
    if "lr" in c:
        axes[2].set_yscale("log")
    fig.tight_layout()
    return save_figure(fig, path or Path(run_dir) / "plots" / "training_curves.png")


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    write_text(path, buf.getvalue())


__all__ = ["EVALUATE_OPTIONS", "EvalResult", "epoch_curves", "evaluate", "format_table", "plot_tag_auc",
           "plot_training_curves", "read_metrics_csv", "store_messages"]
