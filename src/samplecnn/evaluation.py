"""Checkpoint + store -> clip-level metrics, per-tag tables and plots.

Evaluation scores every clip of a split on the toolkit's one scoring path, the same one
`samplecnn tag` uses: the one window grid (`samplecnn.windows`; by default every full
segment, consecutive, at least one per clip: `last="drop"`, the paper's protocol), the
same runner (ONNX Runtime on the CPU by default, exact fp32), the one batching loop
(`samplecnn.inference.batching`) and the one clip aggregation (`samplecnn.metrics`,
mean of the segments' sigmoid scores by default); then per-tag ROC-AUC and PR-AUC,
and, at the model's stored decision thresholds (`samplecnn.thresholds`), per-tag
precision, recall and F1 with their macro and micro averages.
For the same audio and options, `evaluate` and `tag` give the same clip scores (tested);
`fit_checkpoint_thresholds` fits thresholds on the same clip scores, so they decide like
`tag` on the same files.
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
from .thresholds import DecisionMetrics, Thresholds, decision_metrics, fit_thresholds
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
    decisions: DecisionMetrics | None = None
    thresholds: str | None = None  # where the decision thresholds came from (one line)

    @property
    def macro_f1(self) -> float | None:
        return None if self.decisions is None else _num(self.decisions.macro_f1)

    @property
    def micro_f1(self) -> float | None:
        return None if self.decisions is None else _num(self.decisions.micro_f1)

    def rows(self) -> list[dict]:
        """Per tag: `TagMetrics.rows()` plus threshold, precision, recall, f1 (None without
        thresholds)."""
        empty = {"threshold": None, "precision": None, "recall": None, "f1": None}
        return [{**r, **(empty if self.decisions is None else self.decisions.row(j))}
                for j, r in enumerate(self.metrics.rows())]

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
        d.update({"macro_f1": self.macro_f1, "micro_f1": self.micro_f1, "thresholds": self.thresholds,
                  "per_tag": self.rows()})
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
        if self.decisions is None:
            lines.append(f"F1: no decision thresholds ({self.thresholds})")
        else:
            lines.append(f"macro F1 {_fmt(self.macro_f1)}  micro F1 {_fmt(self.micro_f1)} "
                         f"(at {self.thresholds})")
        return "\n".join(lines)

    def table(self) -> str:
        """The per-tag table: `metrics.format_table` with threshold, precision, recall, F1."""
        return format_table(self.metrics, decisions=None if self.decisions is None else self.rows())

    def write(self, out_dir: str | os.PathLike, plots: bool = True) -> dict[str, Path]:
        """Write metrics.json, per_tag.csv, clip_scores.csv (and tag_roc_auc.png)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "metrics.json", "per_tag": out / "per_tag.csv",
                 "scores": out / "clip_scores.csv"}
        write_json(paths["json"], self.to_dict())
        cols = ["roc_auc", "pr_auc", "threshold", "precision", "recall", "f1"]
        _write_csv(paths["per_tag"], ["tag", "positives", "prevalence", *cols],
                    [[r["tag"], r["positives"], r["prevalence"],
                      *("" if r[c] is None else f"{r[c]:.6f}" for c in cols)] for r in self.rows()])
        _write_csv(paths["scores"], ["clip_id", *self.tags],
                    [[str(c), *(f"{v:.6f}" for v in s)] for c, s in zip(self.clip_ids, self.clip_scores)])
        if plots:
            paths["plot"] = plot_tag_auc(self.metrics, out / "tag_roc_auc.png",
                                         title=f"per-tag ROC-AUC ({self.split})")
        return paths


@dataclass
class SplitScores:
    """The clip scores of one split: `clip_scores` float64 `(n_clips, n_tags)` and
    `labels` uint8 `(n_clips, n_tags)` for `tags` (the model's tags the store has, at
    model positions `keep`), in the order of `clip_ids`."""

    tags: list[str]
    keep: list[int]
    clip_ids: np.ndarray
    clip_scores: np.ndarray
    labels: np.ndarray
    n_segments: int
    notes: list[str]


def load_scorer(model, options: ScoringOptions = EVALUATE_OPTIONS, device: str | None = None):
    """The runner that scores for `evaluate` and threshold fitting: `model` is a loaded
    `SampleCNN`, a checkpoint path, or an ONNX file of `samplecnn export` (fp32 or int8,
    run as it is by ONNX Runtime on the CPU). Runners carry the tags, rate, window,
    `whole_clip` and stored `thresholds` of what they run."""
    from .inference.runners import load_runner, optimize_for_inference

    if isinstance(model, (str, os.PathLike)):
        if str(model).lower().endswith(".onnx"):
            return load_runner(model, options.backend, device)
        from .checkpoint import load_model

        model = load_model(model)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return optimize_for_inference(model, options.backend, device=device)


def score_split(runner, store: SegmentStore, split: str, options: ScoringOptions = EVALUATE_OPTIONS,
                batch_size: int = 64, progress: bool = False, label: str = "model") -> SplitScores:
    """Score every clip of `split` with `runner` (`load_scorer`) on the one scoring path:
    `options`' window grid (`hop`, `last`, `max_windows`; whole-clip windows for a
    whole-clip model), the runner and the clip aggregation (`aggregate`). The model's
    tags are matched to the store's by name (tags the store lacks: a note); a store at
    another sample rate is refused. `label` names the model in errors."""
    rate, window, model_tags = int(runner.sample_rate), int(runner.input_samples), list(runner.tags or [])
    if store.sample_rate != rate:
        raise ValueError(f"{store.path}: store is at {store.sample_rate} Hz but {label} expects "
                         f"{rate} Hz; prepare the store with --sample-rate {rate}")
    if not model_tags:
        raise ValueError(f"{label}: the checkpoint has no tag names; cannot match them to the store")
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
    grid = options.grid(window, rate, whole_clip=bool(getattr(runner, "whole_clip", False)))
    scored = score_messages(store_messages(store, clips, grid), runner.logits, batch_size)
    if progress:
        from tqdm import tqdm

        scored = tqdm(scored, total=len(clips), desc=f"score {split}", unit="clip", leave=False,
                      file=sys.stderr)
    by_clip, n_segments = {}, 0
    for res in scored:
        by_clip[res.key] = aggregate_windows(res.outputs[:, keep], options.aggregate)
        n_segments += len(res.outputs)
    tags = [model_tags[i] for i in keep]
    return SplitScores(tags, keep, np.asarray(store.clip_ids)[clips],
                       np.stack([by_clip[int(c)] for c in clips]),
                       store.labels[clips][:, [store_pos[t] for t in tags]], n_segments, notes)


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
    sample rate is refused. Decisions (precision, recall, F1) use `options.threshold`
    for every tag when given, else the model's stored thresholds; without either
    they are None and `EvalResult.thresholds` says why.
    """
    if aggregate is not None:
        scoring["aggregate"] = aggregate
    options = ScoringOptions.build(options if options is not None else EVALUATE_OPTIONS, **scoring)
    runner = load_scorer(checkpoint, options, device)
    store = store if isinstance(store, SegmentStore) else SegmentStore(store)
    sc = score_split(runner, store, split, options, batch_size, progress, label=str(checkpoint))
    metrics = tag_metrics(sc.labels, sc.clip_scores, sc.tags)
    if not np.any(~np.isnan(metrics.roc_auc)):  # every AUC undefined: no result to report
        raise ValueError(f"{store.path}: split {split!r}: no tag can be scored (each of the "
                         f"{len(sc.tags)} tag(s) has no positive or no negative clip among its "
                         f"{len(sc.clip_ids)} clip(s)); evaluate on a split with both")
    if options.threshold is not None:
        limits, source = options.threshold, f"threshold {options.threshold:g} for every tag"
    elif getattr(runner, "thresholds", None) is not None:
        limits, source = runner.thresholds.values[sc.keep], f"stored thresholds: {runner.thresholds.describe()}"
    else:
        limits, source = None, f"{checkpoint} has none; fit them with `samplecnn thresholds` or pass --threshold"
    decisions = None if limits is None else decision_metrics(sc.clip_scores, sc.labels, limits, sc.tags)
    return EvalResult(str(checkpoint), str(store.path), split, options.aggregate, sc.tags, sc.clip_ids,
                      sc.clip_scores, sc.labels, metrics, sc.n_segments, sc.notes, decisions, source)


def fit_checkpoint_thresholds(checkpoint, store: str | os.PathLike | SegmentStore,
                              split: str = "valid", objective: str = "f1", *,
                              options: ScoringOptions | None = None, batch_size: int = 64,
                              device: str | None = None, progress: bool = False) -> "ThresholdFit":
    """Fit one threshold per tag of `checkpoint` (a path, or a loaded `SampleCNN`) on the
    clip scores of `split` (`score_split` with `options`, default `EVALUATE_OPTIONS`: the
    scores `evaluate` computes) for `objective` (`samplecnn.thresholds.fit_thresholds`).
    Tags the store lacks are unfitted ("not in the store"). The store's inputs
    fingerprint is recorded. Returns the thresholds and their precision / recall / F1 on
    the fitting split."""
    from .checkpoint import load_model
    from .thresholds import FALLBACK_THRESHOLD, parse_objective

    parse_objective(objective)  # before the split is scored
    options = options if options is not None else EVALUATE_OPTIONS
    model = checkpoint if not isinstance(checkpoint, (str, os.PathLike)) else load_model(checkpoint)
    store = store if isinstance(store, SegmentStore) else SegmentStore(store)
    sc = score_split(load_scorer(model, options, device), store, split, options, batch_size, progress,
                     label=str(checkpoint))
    part = fit_thresholds(sc.clip_scores, sc.labels, sc.tags, objective)
    tags = list(model.config.tags)
    values = np.full(len(tags), FALLBACK_THRESHOLD, np.float32)
    values[sc.keep] = part.values
    unfitted = {t: "not in the store" for i, t in enumerate(tags) if i not in set(sc.keep)}
    unfitted.update(part.unfitted)
    th = Thresholds(values, tags, part.objective, split, store.meta.get("inputs_fingerprint"),
                    {t: unfitted[t] for t in tags if t in unfitted}, FALLBACK_THRESHOLD)
    return ThresholdFit(th, decision_metrics(sc.clip_scores, sc.labels, part.values, sc.tags),
                        len(sc.clip_ids), sc.notes)


@dataclass
class ThresholdFit:
    """Fitted `thresholds` (every model tag) and `decisions` on the fitting split (the
    tags the store has), over `n_clips` clips."""

    thresholds: Thresholds
    decisions: DecisionMetrics
    n_clips: int
    notes: list[str]

    def table(self) -> str:
        """Per tag: threshold (or why it is unfitted), precision, recall, F1 on the split."""
        d = self.decisions
        pos = {t: j for j, t in enumerate(d.tags)}
        width = max(len("tag"), *(len(t) for t in self.thresholds.tags))
        lines = [f"{'tag'.ljust(width)}  thresh    prec  recall      F1",
                 f"{'-' * width}  ------  ------  ------  ------"]
        for i, t in enumerate(self.thresholds.tags):
            head = f"{t.ljust(width)}  {self.thresholds.values[i]:6.3f}"
            if t in self.thresholds.unfitted:
                lines.append(f"{head}  unfitted ({self.thresholds.unfitted[t]}): fallback")
                continue
            r = d.row(pos[t])
            lines.append(head + "".join("       -" if r[k] is None else f"  {r[k]:6.3f}"
                                        for k in ("precision", "recall", "f1")))
        lines.append(f"macro F1 {_fmt(_num(d.macro_f1))}  micro F1 {_fmt(_num(d.micro_f1))} "
                     f"on {self.n_clips} {self.thresholds.split} clips ({self.thresholds.objective})")
        return "\n".join(lines)


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


def _num(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    write_text(path, buf.getvalue())


__all__ = ["EVALUATE_OPTIONS", "EvalResult", "SplitScores", "ThresholdFit", "epoch_curves", "evaluate",
           "fit_checkpoint_thresholds", "format_table", "plot_tag_auc", "plot_training_curves",
           "read_metrics_csv", "score_split", "store_messages"]
