"""The one set of scoring options, built once (CLI, service query, Python call) and passed
down to every scorer: validation, `evaluate`, `tag`, the service and the cluster engine.

    from samplecnn.options import ScoringOptions
    opts = ScoringOptions(hop=0.5, aggregate="max")      # validated here, once
    grid = opts.grid(window=59049, sample_rate=22050)    # THE window grid for a model
    opts.replace(top_k=10)                               # a changed copy (validated again)
    opts = ScoringOptions(threshold=0.3, at_least_one=True)  # how `labels` are decided

Every value is checked at construction, so a bad option fails before any file is read,
with one line naming the option (`ValueError`; the CLI exits 2, the service answers 422).
Floats must be finite: `--hop inf` or `nan` would otherwise reach `int(round(...))` deep
in the grid. The choice lists are the constants where each concept lives
(`windows.LAST_WINDOW_POLICIES`, `metrics.AGGREGATIONS`, `inference.backends.BACKENDS`);
argparse choices and the service's parameter types read them from there too.

NumPy/stdlib only (decoding workers and cluster actors import it without torch).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from samplecnn.checks import MAX_HOP_S, check_float, check_int
from samplecnn.inference.backends import BACKEND_ALIASES, BACKENDS
from samplecnn.metrics import AGGREGATIONS
from samplecnn.windows import LAST_WINDOW_POLICIES, WindowGrid

__all__ = ["ScoringOptions", "BACKEND_ALIASES", "MAX_HOP_S", "check_float", "check_int",
           "check_threshold"]


def check_threshold(value, name: str = "threshold") -> float:
    """A decision threshold: a finite float in [0, 1], else a one-line ValueError."""
    return check_float(value, name, low=0.0, high=1.0, low_inclusive=True)


def _choice(value, name: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


@dataclass(frozen=True)
class ScoringOptions:
    """How clips are scored: the same fields wherever a clip is scored.

    hop: seconds between window starts (None: one window, no overlap); last: the
    last-window policy (`windows.LAST_WINDOW_POLICIES`); aggregate: the clip aggregation
    (`metrics.AGGREGATIONS`); top_k: tags listed in a record's `top`; max_windows: score
    only a clip's first windows (None: all; validation uses 10, the paper's protocol);
    backend: what runs the model (`inference.backends.BACKENDS`; "onnx" is "onnxruntime");
    threshold: one decision threshold in [0, 1] for every tag, overriding the model's
    stored ones (None: the stored ones; `samplecnn.thresholds`); at_least_one: a record's
    `labels` holds at least its top tag when no tag passes.
    """

    hop: float | None = None
    last: str = "pad"
    aggregate: str = "mean"
    top_k: int = 5
    max_windows: int | None = None
    backend: str = "auto"
    threshold: float | None = None
    at_least_one: bool = False

    def __post_init__(self) -> None:
        if self.hop is not None:
            object.__setattr__(self, "hop", check_float(self.hop, "hop (seconds)", low=0.0, high=MAX_HOP_S))
        _choice(self.last, "last-window policy", LAST_WINDOW_POLICIES)
        _choice(self.aggregate, "aggregation", AGGREGATIONS)
        object.__setattr__(self, "top_k", check_int(self.top_k, "top-k", low=0))
        if self.max_windows is not None:
            object.__setattr__(self, "max_windows", check_int(self.max_windows, "max windows", low=1))
        backend = BACKEND_ALIASES.get(self.backend, self.backend)
        object.__setattr__(self, "backend", _choice(backend, "backend", BACKENDS))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", check_threshold(self.threshold))
        if not isinstance(self.at_least_one, bool):
            raise ValueError(f"at-least-one must be true or false, got {self.at_least_one!r}")

    @classmethod
    def build(cls, options: "ScoringOptions | None" = None, **fields) -> "ScoringOptions":
        """`options` (None: the defaults) with `fields` applied: how a call with loose
        keywords (`Tagger.tag(x, hop=0.5)`, a CLI's flags, a query) becomes options."""
        if options is None:
            return cls(**fields)
        if not isinstance(options, cls):
            raise TypeError(f"options must be a ScoringOptions, got {type(options).__name__}")
        return options.replace(**fields) if fields else options

    def replace(self, **changes) -> "ScoringOptions":
        """A copy with `changes` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def grid(self, window: int, sample_rate: int, whole_clip: bool = False) -> WindowGrid:
        """THE window grid for a model of `window` samples at `sample_rate` Hz; `whole_clip`
        (the model's `ModelConfig.whole_clip`): windows are never padded."""
        return WindowGrid.of_seconds(window, sample_rate, self.hop, self.last, self.max_windows,
                                     whole_clip)

    def hop_s(self, window: int, sample_rate: int) -> float:
        """The hop in seconds as the grid rounds it (one window when `hop` is None)."""
        return self.grid(window, sample_rate).hop / sample_rate

    def to_dict(self) -> dict:
        """JSON-safe fields (recorded in outputs and run configs)."""
        return dataclasses.asdict(self)
