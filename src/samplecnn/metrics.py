"""Tagging metrics: clip aggregation of segment scores, per-tag and macro ROC-AUC / PR-AUC.

The paper's protocol: a clip's score for a tag is the mean of its segments' sigmoid
scores (`aggregate_clips`, which takes the segments' logits); ROC-AUC is computed per
tag over the clips of the split and averaged over tags. PR-AUC is scikit-learn's average
precision, also macro-averaged.

A tag whose column in the split has no positive (or no negative) clip has no defined
ROC-AUC; such tags are reported in `TagMetrics.excluded` and left out of both macro
averages instead of raising or silently counting as 0.5.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

AGGREGATIONS = ("mean", "max", "logit_mean")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (float64)."""
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))


def check_aggregation(how: str) -> str:
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {how!r}")
    return how


def aggregate_clips(logits: np.ndarray, clip_index: np.ndarray,
                    how: str = "mean") -> tuple[np.ndarray, np.ndarray]:
    """Window (segment) logits -> clip scores: the one clip aggregation of the toolkit.

    Validation, `evaluate`, `tag`, the service and the cluster engine all call this (or
    `aggregate` for a single clip), so a clip gets the same score whichever scores it.

    Args:
        logits: float `(n_windows, n_tags)` model outputs (before the sigmoid).
        clip_index: int `(n_windows,)` clip of each window (any integer ids).
        how: "mean" (mean of the windows' sigmoid scores: the paper), "max" (the highest
            window score) or "logit_mean" (sigmoid of the mean logit: a geometric-style
            average in which one confident window counts for more).

    Returns:
        `(clips, scores)`: the sorted unique clip ids `(n_clips,)` and float64
        `(n_clips, n_tags)` scores in (0, 1), in that order.
    """
    check_aggregation(how)
    x = np.asarray(logits, dtype=np.float64)
    idx = np.asarray(clip_index).astype(np.int64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != len(idx):
        raise ValueError(f"logits {x.shape} and clip_index ({len(idx)},) do not match")
    if len(idx) == 0:
        return np.zeros(0, np.int64), np.zeros((0, x.shape[1]))
    clips, inverse = np.unique(idx, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    counts = np.bincount(inverse, minlength=len(clips))
    bounds = np.concatenate([[0], np.cumsum(counts)[:-1]])
    grouped = x[order]
    if how == "max":
        # sigmoid is monotone: the max of the scores is the sigmoid of the max logit.
        return clips, sigmoid(np.maximum.reduceat(grouped, bounds, axis=0))
    if how == "mean":
        return clips, np.add.reduceat(sigmoid(grouped), bounds, axis=0) / counts[:, None]
    return clips, sigmoid(np.add.reduceat(grouped, bounds, axis=0) / counts[:, None])


def aggregate(logits: np.ndarray, how: str = "mean") -> np.ndarray:
    """The windows of one clip `(n_windows, n_tags)` -> its scores `(n_tags,)` float64."""
    x = np.asarray(logits)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"expected logits of shape (n_windows >= 1, n_tags), got {x.shape}")
    return aggregate_clips(x, np.zeros(len(x), np.int64), how)[1][0]


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
        # Strict JSON: an undefined average is null, never a bare NaN.
        def defined(v: float) -> float | None:
            return None if np.isnan(v) else v

        return {
            "macro_roc_auc": defined(self.macro_roc_auc),
            "macro_pr_auc": defined(self.macro_pr_auc),
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
    from sklearn.metrics import average_precision_score, roc_auc_score

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


def format_table(metrics: TagMetrics, sort: str = "roc_auc", decisions: list[dict] | None = None) -> str:
    """The per-tag table as aligned text (excluded tags last, marked). `decisions`: one
    dict per tag (threshold, precision, recall, f1; values may be None) adds 4 columns."""
    rows = metrics.rows()
    if decisions is not None:
        rows = [{**r, **{k: d.get(k) for k in _DECISION_COLUMNS}} for r, d in zip(rows, decisions)]
    if sort in ("roc_auc", "pr_auc"):
        rows.sort(key=lambda r: (r[sort] is None, -(r[sort] or 0.0)))
    width = max([len("tag")] + [len(r["tag"]) for r in rows])
    extra = "" if decisions is None else "  " + "  ".join(f"{h:>6}" for h in _DECISION_COLUMNS.values())
    lines = [f"{'tag'.ljust(width)}  {'pos':>6}  {'ROC-AUC':>7}  {'PR-AUC':>7}{extra}",
             f"{'-' * width}  {'-' * 6}  {'-' * 7}  {'-' * 7}" + ("" if decisions is None else "  ------" * 4)]

    def cols(r):
        if decisions is None:
            return ""
        return "  " + "  ".join("     -" if r[k] is None else f"{r[k]:6.3f}" for k in _DECISION_COLUMNS)

    for r in rows:
        if r["roc_auc"] is None:
            lines.append(f"{r['tag'].ljust(width)}  {r['positives']:>6}  {'excluded':>7}  {'':>7}{cols(r)}")
        else:
            lines.append(f"{r['tag'].ljust(width)}  {r['positives']:>6}  {r['roc_auc']:7.4f}  "
                         f"{r['pr_auc']:7.4f}{cols(r)}")
    lines.append(f"{'macro'.ljust(width)}  {metrics.n_clips:>6}  {metrics.macro_roc_auc:7.4f}  "
                 f"{metrics.macro_pr_auc:7.4f}")
    if metrics.excluded:
        lines.append("excluded: no positive or no negative clip (no AUC)")
    return "\n".join(lines)


_DECISION_COLUMNS = {"threshold": "thresh", "precision": "prec", "recall": "recall", "f1": "F1"}
