"""Tagging metrics: clip aggregation of segment scores, per-tag and macro ROC-AUC / PR-AUC.

The paper's protocol: a clip's score for a tag is the mean of its segments' sigmoid
scores; ROC-AUC is computed per tag over the clips of the split and averaged over tags.
PR-AUC is scikit-learn's average precision, also macro-averaged.

A tag whose column in the split has no positive (or no negative) clip has no defined
ROC-AUC; such tags are reported in `TagMetrics.excluded` and left out of both macro
averages instead of raising or silently counting as 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

AGGREGATIONS = ("mean", "max", "logit_mean")


def aggregate_clips(scores: np.ndarray | torch.Tensor, clip_index: np.ndarray | torch.Tensor,
                    how: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Segment scores -> clip scores, vectorised.

    Args:
        scores: float `(n_segments, n_tags)` sigmoid scores (probabilities in (0, 1)).
        clip_index: int `(n_segments,)` clip of each segment (any integer ids).
        how: "mean" (the paper), "max", or "logit_mean" (mean of the logits, then
            sigmoid: a geometric-style average that lets one confident segment count more).

    Returns:
        `(clips, clip_scores)`: the sorted unique clip ids `(n_clips,)` and float64
        `(n_clips, n_tags)` scores in that order.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {how!r}")
    s = torch.as_tensor(np.asarray(scores), dtype=torch.float64)
    idx = np.asarray(clip_index).astype(np.int64)
    if s.dim() != 2 or s.shape[0] != len(idx):
        raise ValueError(f"scores {tuple(s.shape)} and clip_index ({len(idx)},) do not match")
    clips, inverse = np.unique(idx, return_inverse=True)
    inv = torch.from_numpy(inverse.reshape(-1))
    n, t = len(clips), s.shape[1]
    if how == "max":
        out = torch.full((n, t), -torch.inf, dtype=torch.float64)
        out.scatter_reduce_(0, inv[:, None].expand(-1, t), s, reduce="amax")
        return clips, out.numpy()
    if how == "logit_mean":
        eps = 1e-7
        s = torch.logit(s.clamp(eps, 1 - eps))
    counts = torch.bincount(inv, minlength=n).to(torch.float64)
    out = torch.zeros((n, t), dtype=torch.float64).index_add_(0, inv, s) / counts[:, None]
    if how == "logit_mean":
        out = torch.sigmoid(out)
    return clips, out.numpy()


@dataclass
class TagMetrics:
    """Per-tag ROC-AUC / PR-AUC (NaN where undefined), macro averages, excluded tags."""

    tags: list[str]
    roc_auc: np.ndarray
    pr_auc: np.ndarray
    positives: np.ndarray
    n_clips: int
    excluded: list[str] = field(default_factory=list)

    @property
    def macro_roc_auc(self) -> float:
        v = self.roc_auc[~np.isnan(self.roc_auc)]
        return float(v.mean()) if len(v) else float("nan")

    @property
    def macro_pr_auc(self) -> float:
        v = self.pr_auc[~np.isnan(self.pr_auc)]
        return float(v.mean()) if len(v) else float("nan")

    def rows(self) -> list[dict]:
        """One dict per tag: tag, positives, prevalence, roc_auc, pr_auc (None if excluded)."""
        out = []
        for i, tag in enumerate(self.tags):
            out.append({
                "tag": tag,
                "positives": int(self.positives[i]),
                "prevalence": round(float(self.positives[i]) / max(self.n_clips, 1), 6),
                "roc_auc": None if np.isnan(self.roc_auc[i]) else float(self.roc_auc[i]),
                "pr_auc": None if np.isnan(self.pr_auc[i]) else float(self.pr_auc[i]),
            })
        return out

    def to_dict(self) -> dict:
        return {
            "macro_roc_auc": self.macro_roc_auc,
            "macro_pr_auc": self.macro_pr_auc,
            "n_clips": self.n_clips,
            "n_tags_scored": int(np.sum(~np.isnan(self.roc_auc))),
            "excluded_tags": list(self.excluded),
            "per_tag": self.rows(),
        }


def tag_metrics(y_true: np.ndarray, y_score: np.ndarray, tags: list[str] | None = None) -> TagMetrics:
    """Per-tag metrics of clip-level scores.

    Args:
        y_true: `(n_clips, n_tags)` 0/1 labels.
        y_score: `(n_clips, n_tags)` scores (any monotone scale).
        tags: names of the columns (default "tag0", "tag1", ...).

    Tags whose column is constant (no positive or no negative clip) get NaN and are
    listed in `excluded`; the macro averages skip them.
    """
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape != y_score.shape:
        raise ValueError(f"labels {y_true.shape} and scores {y_score.shape} must be equal 2-D shapes")
    n, t = y_true.shape
    tags = list(tags) if tags is not None else [f"tag{i}" for i in range(t)]
    if len(tags) != t:
        raise ValueError(f"{len(tags)} tag names for {t} columns")
    if not np.all(np.isfinite(y_score)):
        raise ValueError("scores contain NaN or infinite values (did training diverge?)")
    y = (y_true > 0).astype(np.int64)
    pos = y.sum(axis=0)
    roc = np.full(t, np.nan)
    pr = np.full(t, np.nan)
    excluded = []
    for i in range(t):
        if pos[i] == 0 or pos[i] == n:
            excluded.append(tags[i])
            continue
        roc[i] = roc_auc_score(y[:, i], y_score[:, i])
        pr[i] = average_precision_score(y[:, i], y_score[:, i])
    return TagMetrics(tags, roc, pr, pos, n, excluded)


def format_table(metrics: TagMetrics, sort: str = "roc_auc") -> str:
    """The per-tag table as aligned text (excluded tags last, marked)."""
    rows = metrics.rows()
    if sort in ("roc_auc", "pr_auc"):
        rows.sort(key=lambda r: (r[sort] is None, -(r[sort] or 0.0)))
    width = max([len("tag")] + [len(r["tag"]) for r in rows])
    lines = [f"{'tag'.ljust(width)}  {'pos':>6}  {'ROC-AUC':>7}  {'PR-AUC':>7}",
             f"{'-' * width}  {'-' * 6}  {'-' * 7}  {'-' * 7}"]
    for r in rows:
        if r["roc_auc"] is None:
            lines.append(f"{r['tag'].ljust(width)}  {r['positives']:>6}  {'excluded (no positive or no negative)'}")
        else:
            lines.append(f"{r['tag'].ljust(width)}  {r['positives']:>6}  {r['roc_auc']:7.4f}  {r['pr_auc']:7.4f}")
    lines.append(f"{'macro'.ljust(width)}  {metrics.n_clips:>6}  {metrics.macro_roc_auc:7.4f}  "
                 f"{metrics.macro_pr_auc:7.4f}")
    return "\n".join(lines)
