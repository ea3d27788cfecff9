"""Per-tag decision thresholds: from clip scores to the tags a file has.

A tag is decided for a file when its clip score (the one clip aggregation,
`samplecnn.metrics`) is at or above the tag's threshold. This module is THE decision
(`decide`), THE fit (`fit_thresholds`) and the decision metrics (`decision_metrics`);
everything that says "this file is rock, guitar, male vocal" calls them.

Fitting follows the MTG-Jamendo auto-tagging baseline: per tag, on a split's clip scores
(the validation split by default, never the test split whose figures it would inflate),
the threshold that maximises F1, found with scikit-learn's `precision_recall_curve`.
The fitted threshold is a clip score itself: the lowest score still called positive at
the best F1 (ties: the lowest such threshold, i.e. the higher recall), stored as float32
rounded down so that clip still passes.

Objectives (`OBJECTIVES`): ``"f1"`` (the default) and ``"precision:P"`` (the lowest
threshold whose precision on the split reaches P, i.e. the most recall at precision P).

A tag that cannot be fitted (no positive clip, no negative clip, or a precision target
never reached) keeps no fitted threshold: it is listed by name in `Thresholds.unfitted`
with the reason, and decides at `FALLBACK_THRESHOLD` (0.5: where a model trained with
binary cross-entropy puts even odds).

NumPy/stdlib only at import (scikit-learn is imported by the fit): decoding workers,
the service and cluster actors import it without torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from samplecnn.options import check_threshold

__all__ = ["FALLBACK_THRESHOLD", "OBJECTIVES", "Thresholds", "decide", "fit_thresholds",
           "decision_metrics", "parse_objective", "check_threshold", "missing_note"]

FALLBACK_THRESHOLD = 0.5
OBJECTIVES = ("f1", "precision:P")
THRESHOLDS_FORMAT = 1


def parse_objective(objective: str) -> tuple[str, float | None]:
    """"f1" -> ("f1", None); "precision:0.9" -> ("precision", 0.9). ValueError otherwise."""
    text = str(objective).strip().lower()
    if text == "f1":
        return "f1", None
    name, _, target = text.partition(":")
    if name == "precision" and target:
        try:
            p = float(target)
        except ValueError:
            p = float("nan")
        if 0.0 < p <= 1.0:
            return "precision", p
    raise ValueError(f"objective must be f1 or precision:P (P a target precision in (0, 1], "
                     f"e.g. precision:0.8), got {objective!r}")


def _as_float32_threshold(t: float) -> np.float32:
    """float32 at or below `t`, so that a clip scoring exactly `t` still passes."""
    f = np.float32(t)
    if float(f) > t:
        f = np.nextafter(f, np.float32(-np.inf))
    return np.float32(min(max(float(f), 0.0), 1.0))


@dataclass(frozen=True)
class Thresholds:
    """One threshold per tag and how they were fitted.

    values: float32 `(n_tags,)` in [0, 1], in the model's tag order (unfitted tags hold
    the fallback); tags: the names; objective: "f1" or "precision:P"; split: the split
    they were fitted on; store: the fingerprint of the store (its `inputs_fingerprint`);
    unfitted: {tag: reason} for tags that kept no fitted threshold; fallback: their value.
    """

    values: np.ndarray
    tags: list[str]
    objective: str = "f1"
    split: str | None = None
    store: str | None = None
    unfitted: dict[str, str] = field(default_factory=dict)
    fallback: float = FALLBACK_THRESHOLD

    def __post_init__(self) -> None:
        v = np.asarray(self.values, dtype=np.float32).reshape(-1)
        if len(v) != len(self.tags):
            raise ValueError(f"{len(v)} thresholds for {len(self.tags)} tags")
        if not np.all(np.isfinite(v)) or np.any(v < 0) or np.any(v > 1):
            raise ValueError("thresholds must be finite numbers in [0, 1]")
        v.setflags(write=False)
        object.__setattr__(self, "values", v)
        object.__setattr__(self, "tags", [str(t) for t in self.tags])

    def to_dict(self) -> dict:
        """JSON-safe (the checkpoint's `"thresholds"` entry and the ONNX metadata)."""
        return {"format": THRESHOLDS_FORMAT, "values": [float(x) for x in self.values],
                "tags": list(self.tags), "objective": self.objective, "split": self.split,
                "store": self.store, "unfitted": dict(self.unfitted), "fallback": float(self.fallback)}

    @classmethod
    def from_dict(cls, d: dict, tags: Sequence[str] | None = None, label: str = "model") -> "Thresholds":
        """Read `to_dict`'s output back; `tags` (the model's) must match. ValueError
        naming `label` for anything broken."""
        try:
            if int(d.get("format", 1)) > THRESHOLDS_FORMAT:
                raise ValueError(f"thresholds format {d['format']} is newer than this samplecnn understands")
            th = cls(np.asarray(d["values"], dtype=np.float64), list(d["tags"]),
                     str(d.get("objective", "f1")), d.get("split"), d.get("store"),
                     {str(k): str(v) for k, v in (d.get("unfitted") or {}).items()},
                     check_threshold(d.get("fallback", FALLBACK_THRESHOLD), "fallback threshold"))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{label}: broken stored thresholds ({err})") from None
        if tags is not None and list(tags) != th.tags:
            raise ValueError(f"{label}: the stored thresholds are for other tags than the model's")
        return th

    def describe(self) -> str:
        """One line: objective, split, how many fitted."""
        where = f" on the {self.split} split" if self.split else ""
        return (f"{len(self.tags) - len(self.unfitted)}/{len(self.tags)} thresholds fitted "
                f"({self.objective}{where})")


def missing_note(thresholds, threshold: float | None) -> str | None:
    """The one line a run prints when its records will carry `labels: null` (the model
    has no `thresholds` and no `threshold` override is given), else None."""
    if threshold is not None or thresholds is not None:
        return None
    return ("the model has no decision thresholds, so `labels` is null; fit them with "
            "`samplecnn thresholds MODEL --data STORE --out OUT`, or pass --threshold X")


def decide(scores: np.ndarray, thresholds: np.ndarray | float, at_least_one: bool = False) -> list[int]:
    """The decided tags of one file: indices `i` with `scores[i] >= thresholds[i]`,
    highest score first (ties: tag order). `scores` `(n_tags,)`; `thresholds` `(n_tags,)`
    or one number for every tag. `at_least_one`: the top tag when none passes."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), s.shape)
    passed = np.flatnonzero(s >= t)
    order = passed[np.argsort(-s[passed], kind="stable")]
    if len(order) == 0 and at_least_one and len(s):
        order = np.argsort(-s, kind="stable")[:1]
    return [int(i) for i in order]


def _fit_one(y: np.ndarray, s: np.ndarray, kind: str, target: float | None) -> tuple[float | None, str | None]:
    """(threshold, None) or (None, reason) for one tag's labels `y` and scores `s`."""
    from sklearn.metrics import precision_recall_curve

    n_pos = int(y.sum())
    if n_pos == 0:
        return None, "no positive clip"
    if n_pos == len(y):
        return None, "no negative clip"
    # precision[i], recall[i] belong to "score >= thresholds[i]" (thresholds increasing);
    # the last pair (precision 1, recall 0) has no threshold and is left out.
    precision, recall, thresholds = precision_recall_curve(y, s, drop_intermediate=False)
    precision, recall = precision[:-1], recall[:-1]
    if kind == "f1":
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
        return float(thresholds[int(np.argmax(f1))]), None  # argmax: the first, lowest threshold
    ok = np.flatnonzero(precision >= target - 1e-12)
    if len(ok) == 0:
        return None, f"precision {target:g} never reached"
    return float(thresholds[ok[0]]), None


def fit_thresholds(scores: np.ndarray, labels: np.ndarray, tags: Sequence[str],
                   objective: str = "f1", *, split: str | None = None,
                   store: str | None = None) -> Thresholds:
    """Fit one threshold per tag on clip `scores` float `(n_clips, n_tags)` and their
    0/1 `labels` `(n_clips, n_tags)` for `objective` ("f1" or "precision:P")."""
    kind, target = parse_objective(objective)
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    if s.ndim != 2 or s.shape != y.shape or s.shape[1] != len(tags):
        raise ValueError(f"scores {s.shape}, labels {y.shape} and {len(tags)} tags do not match")
    if len(s) == 0:
        raise ValueError("no clips to fit thresholds on")
    values = np.full(len(tags), FALLBACK_THRESHOLD, dtype=np.float32)
    unfitted = {}
    for j, tag in enumerate(tags):
        t, reason = _fit_one(y[:, j], s[:, j], kind, target)
        if t is None:
            unfitted[str(tag)] = reason
        else:
            values[j] = _as_float32_threshold(t)
    name = "f1" if kind == "f1" else f"precision:{target:g}"
    return Thresholds(values, list(tags), name, split, store, unfitted, FALLBACK_THRESHOLD)


@dataclass
class DecisionMetrics:
    """Precision, recall and F1 of the decisions at given thresholds.

    Per tag (`(n_tags,)`, float64; NaN where undefined): `threshold`, `precision`
    (0 when the tag is never decided: scikit-learn's zero_division=0), `recall`, `f1`
    (NaN for a tag with no positive clip: left out of `macro_f1`). `micro_f1` pools
    every tag's true/false positives and misses.
    """

    tags: list[str]
    threshold: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @property
    def macro_f1(self) -> float:
        ok = ~np.isnan(self.f1)
        return float(self.f1[ok].mean()) if ok.any() else float("nan")

    @property
    def micro_f1(self) -> float:
        tp, fp, fn = int(self.tp.sum()), int(self.fp.sum()), int(self.fn.sum())
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")

    def row(self, j: int) -> dict:
        def num(x):
            return None if np.isnan(x) else float(x)

        return {"threshold": num(self.threshold[j]), "precision": num(self.precision[j]),
                "recall": num(self.recall[j]), "f1": num(self.f1[j])}


def decision_metrics(scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray | float,
                     tags: Sequence[str]) -> DecisionMetrics:
    """Decide every clip (`scores >= thresholds`, as `decide`) and count against `labels`."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    t = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (s.shape[1],))
    pred = s >= t[None, :]
    tp = (pred & y).sum(0)
    fp = (pred & ~y).sum(0)
    fn = (~pred & y).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 0.0)
        recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), np.nan)
        f1 = np.where(tp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), np.nan)
    return DecisionMetrics(list(tags), t.astype(np.float64), precision, recall, f1, tp, fp, fn)
