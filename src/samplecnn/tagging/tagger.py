"""The `Tagger`: a model loaded once, applied to files, folders and arrays.

Audio is cut into windows of the model's `input_samples` at the model's rate on the one
window grid (`samplecnn.windows`); the model gives each window's logits; a file's score
per tag is the one clip aggregation of them (`samplecnn.metrics.aggregate`: by default
the mean of the windows' sigmoid scores, as in the paper's evaluation).

The model is run by a runner (`samplecnn.inference.runners`: ONNX Runtime on the CPU by
default, the fused PyTorch twin on GPUs, or the plain model), from a checkpoint or from an
ONNX file written by `samplecnn export`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from samplecnn.inference.batching import score_messages
from samplecnn.metrics import aggregate as aggregate_windows
from samplecnn.metrics import sigmoid
from samplecnn.options import ScoringOptions, check_threshold
from samplecnn.thresholds import decide
from samplecnn.windows import WindowGrid

from .sources import PATH_TYPES, window_messages, worker_messages
from .writers import record_path, record_text


@dataclass
class Taggram:
    """Per-window scores of one source.

    scores: float32 `(windows, n_tags)`; start_s / end_s: `(windows,)` seconds (end is
    capped at the audio's end for the padded last window).
    """

    tags: list[str]
    start_s: np.ndarray
    end_s: np.ndarray
    scores: np.ndarray
    duration_s: float
    sample_rate: int


@dataclass
class Embedding:
    """Embeddings of one source at one layer.

    windows: float32 `(n_windows, C)`, each pooled over the layer's time axis;
    clip: `(C,)` the mean over windows; start_s / end_s: `(n_windows,)` seconds.
    """

    layer: str
    windows: np.ndarray
    clip: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    duration_s: float


@dataclass
class FileResult:
    """The outcome for one file of a batch run.

    `outputs` is `(n_windows, D)` (scores or embeddings) and `starts` `(n_windows,)` in
    samples at the model's rate; both are None when `error` is set.
    """

    index: int
    path: str
    info: dict
    starts: np.ndarray | None
    outputs: np.ndarray | None
    error: str | None = None
    record: dict | None = field(default=None)


def run_batched(
    sources: Sequence,
    compute: Callable[[np.ndarray], np.ndarray],
    *,
    sample_rate: int,
    grid: WindowGrid,
    batch_size: int,
    workers: int = 0,
    chunk: int = 8,
    source_sample_rate: int | None = None,
    errors: str = "report",
) -> Iterator[FileResult]:
    """Sources -> `FileResult`s through the one feeder (`sources.window_messages`) and
    the one batching loop (`samplecnn.inference.batching.score_messages`).

    `sources`: file names, or arrays at `source_sample_rate` (in this process only).
    `compute`: `(B, window)` float32 -> `(B, D)`. Yields one `FileResult` per source as
    it finishes (input order with `workers=0`, completion order otherwise). Decoding runs
    in `workers` processes (0: in this process) while this process computes. A source
    that cannot be read is a `FileResult` with `error` (`errors="report"`) or raises
    (`errors="raise"`, in this process).
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    sources = list(sources)
    if workers > 0:
        if source_sample_rate is not None or errors != "report":
            raise ValueError("decoding workers take file names and report errors")
        messages = worker_messages(sources, sample_rate, grid, workers, chunk)
    else:
        messages = (msg for i, src in enumerate(sources)
                    for msg in window_messages(i, src, sample_rate, grid, chunk=chunk,
                                               source_sample_rate=source_sample_rate, errors=errors))
    for res in score_messages(messages, compute, batch_size):
        src = sources[res.key]
        path = os.fsdecode(src) if isinstance(src, PATH_TYPES) else None
        yield FileResult(res.key, path, res.info, res.starts, res.outputs, res.error)


def window_times(starts: np.ndarray, window: int, sample_rate: int,
                 duration_s: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Window starts `(n,)` in samples -> `(start_s, end_s)` seconds `(n,)`, each end capped
    at the audio's end (the padded last window)."""
    start_s = np.asarray(starts).astype(np.float64) / sample_rate
    end_s = start_s + window / sample_rate
    if duration_s is not None:
        end_s = np.minimum(end_s, max(duration_s, 0.0))
    return start_s, end_s


class Tagger:
    """Scores, taggrams and embeddings from a model loaded once.

    Every method accepts a path (`str`, `bytes` or path-like) or an array; an array
    needs its `sample_rate` (it is resampled to the model's rate, never assumed to be at
    it). How a clip is scored is a `samplecnn.options.ScoringOptions` (the one window
    grid's hop and last-window policy, the one clip aggregation, top-k, max windows),
    given as `options=` or as its fields (`tag(x, hop=0.5)`). Single inputs and many
    files go through the same feeder and batching loop (`run_batched`).

    The low-level pieces that every engine (CLI, service, cluster) builds on:
    `logits(windows)` runs the model; `make_record`, `taggram_from` and `embedding_from`
    turn a source's window outputs into its record, taggram and embedding.
    """

    def __init__(self, runner, batch_size: int = 16):
        if int(batch_size) < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.runner = runner
        self.batch_size = int(batch_size)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_model(cls, model, device: str = "cpu", backend: str = "auto", precision: str = "fp32",
                   batch_size: int = 16) -> "Tagger":
        """A `SampleCNN` run by `backend` ("auto": ONNX Runtime on the CPU, the fused twin
        on a GPU; "onnxruntime" ("onnx"), "torch", "plain")."""
        from samplecnn.inference.runners import optimize_for_inference

        return cls(optimize_for_inference(model, backend, precision, device=device), batch_size)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu", backend: str = "auto",
                        precision: str = "fp32", batch_size: int = 16) -> "Tagger":
        """Load a samplecnn (or Lightning training) checkpoint."""
        from samplecnn.checkpoint import load_model

        return cls.from_model(load_model(path, map_location="cpu"), device, backend, precision, batch_size)

    @classmethod
    def from_pretrained(cls, name: str, device: str = "cpu", backend: str = "auto",
                        precision: str = "fp32", batch_size: int = 16) -> "Tagger":
        """Public weights by name (`samplecnn.pretrained`, e.g. "sota-mtat-sample"):
        downloaded, verified, converted and cached on first use, then loaded."""
        from samplecnn.pretrained import resolve

        return cls.from_checkpoint(resolve(name), device, backend, precision, batch_size)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, providers: Sequence[str] | None = None,
                  batch_size: int = 16) -> "Tagger":
        """Load an ONNX model written by `samplecnn export` (run by ONNX Runtime)."""
        from samplecnn.inference.runners import OrtRunner

        return cls(OrtRunner.from_file(path, providers=list(providers) if providers else None), batch_size)

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str | None = None, device: str = "cpu",
             batch_size: int = 16, precision: str = "fp32") -> "Tagger":
        """A checkpoint or an ONNX file (by its `.onnx` extension). `backend`: "auto"
        (default), "onnxruntime" ("onnx"), "torch" or "plain"; ONNX files run on ONNX
        Runtime only."""
        from samplecnn.inference.runners import load_runner

        return cls(load_runner(path, backend or "auto", device, precision), batch_size)

    @property
    def layer_names(self) -> list[str]:
        return list(self.runner.layer_names)

    # -- metadata ----------------------------------------------------------------------
    @property
    def tags(self) -> list[str]:
        return list(self.runner.tags)

    @property
    def sample_rate(self) -> int:
        return int(self.runner.sample_rate)

    @property
    def input_samples(self) -> int:
        return int(self.runner.input_samples)

    @property
    def thresholds(self) -> np.ndarray | None:
        """The model's stored decision thresholds, float32 `(n_tags,)`, or None."""
        th = getattr(self.runner, "thresholds", None)
        return None if th is None else th.values.astype(np.float32)

    @property
    def threshold_info(self):
        """The stored `samplecnn.thresholds.Thresholds` (objective, split, store, unfitted
        tags), or None."""
        return getattr(self.runner, "thresholds", None)

    def decide(self, scores: np.ndarray, threshold: float | None = None,
               at_least_one: bool = False) -> list[str] | None:
        """Clip scores `(n_tags,)` -> the decided tag names, highest score first (THE
        decision, `samplecnn.thresholds.decide`): `threshold` for every tag, else the stored
        thresholds; None when there are neither."""
        if threshold is not None:
            limits = check_threshold(threshold)
        else:
            limits = self.thresholds
            if limits is None:
                return None
        return [self.tags[i] for i in decide(scores, limits, at_least_one)]

    @property
    def window_s(self) -> float:
        return self.input_samples / self.sample_rate

    def grid(self, hop: float | ScoringOptions | None = None, last: str = "pad") -> WindowGrid:
        """The window grid of `options` (a `ScoringOptions`), or of a hop in seconds (None:
        one window) and a last-window policy."""
        options = hop if isinstance(hop, ScoringOptions) else ScoringOptions(hop=hop, last=last)
        # Unpadded windows for a whole-clip model (LeeNet): the model decides.
        return options.grid(self.input_samples, self.sample_rate,
                            whole_clip=getattr(self.runner, "whole_clip", False))

    # -- the model call ----------------------------------------------------------------
    def logits(self, windows: np.ndarray) -> np.ndarray:
        """float32 windows `(B, input_samples)` at the model's rate -> logits `(B, n_tags)`."""
        return np.asarray(self.runner.logits(windows), dtype=np.float32)

    def embeddings(self, windows: np.ndarray, layer: str = "features", pool: str = "mean") -> np.ndarray:
        """float32 windows `(B, input_samples)` -> `(B, C)`: `layer` pooled over time."""
        return np.asarray(self.runner.embed(windows, layer, pool), dtype=np.float32)

    def check_layer(self, layer: str, pool: str = "mean") -> None:
        self.runner.check_layer(layer, pool)

    # -- single sources: the batching loop over one source --------------------------------
    def _one(self, source, sample_rate, options: ScoringOptions, compute) -> FileResult:
        if sample_rate is not None and not isinstance(source, PATH_TYPES):
            # An int in the range a file's header may announce ("16000" and 1 are bugs).
            from samplecnn.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
            from samplecnn.options import check_int

            check_int(sample_rate, "sample_rate (Hz)", low=MIN_SAMPLE_RATE, high=MAX_SAMPLE_RATE)
        return next(run_batched([source], compute, sample_rate=self.sample_rate,
                                grid=self.grid(options), batch_size=self.batch_size,
                                source_sample_rate=sample_rate, errors="raise"))

    def tag(self, source, sample_rate: int | None = None, options: ScoringOptions | None = None,
            **scoring) -> dict:
        """The JSON record of one source: `path`, `duration_s`, `sample_rate`, `segments`,
        `tags` (every tag -> score), `top` (the `top_k` `[tag, score]` pairs), `error`.

        `options` or its fields as keywords (`hop=`, `aggregate=`, `top_k=`, `last=`,
        `max_windows=`). Raises for unusable input (batch runs report it in `error`).
        """
        options = ScoringOptions.build(options, **scoring)
        res = self._one(source, sample_rate, options, self.logits)
        return self.make_record(res.path, res.outputs, res.info, options)

    def taggram(self, source, sample_rate: int | None = None, options: ScoringOptions | None = None,
                **scoring) -> Taggram:
        """Per-window scores `(windows, n_tags)` with start/end times in seconds."""
        options = ScoringOptions.build(options, **scoring)
        res = self._one(source, sample_rate, options, self.logits)
        return self.taggram_from(res.starts, res.outputs, res.info)

    def embed(self, source, sample_rate: int | None = None, options: ScoringOptions | None = None, *,
              layer: str = "features", pool: str = "mean", **scoring) -> Embedding:
        """Per-window embeddings `(windows, C)` of `layer` (pooled over time by `pool`)
        and their mean over windows `(C,)`."""
        self.check_layer(layer, pool)
        options = ScoringOptions.build(options, **scoring)
        res = self._one(source, sample_rate, options, lambda x: self.embeddings(x, layer, pool))
        return self.embedding_from(layer, res.starts, res.outputs, res.info)

    # -- window outputs -> what users get ----------------------------------------------------
    def taggram_from(self, starts: np.ndarray, logits: np.ndarray, info: dict) -> Taggram:
        """Window starts `(n,)` (samples) and logits `(n, n_tags)` of one source -> its
        `Taggram` (sigmoid scores, window times capped at `info["duration_s"]`)."""
        duration = info.get("duration_s")
        start_s, end_s = window_times(starts, self.input_samples, self.sample_rate, duration)
        return Taggram(self.tags, start_s, end_s, sigmoid(logits).astype(np.float32),
                       float(duration or 0.0), self.sample_rate)

    def embedding_from(self, layer: str, starts: np.ndarray, outputs: np.ndarray, info: dict) -> Embedding:
        """Window starts `(n,)` and embeddings `(n, C)` of one source -> its `Embedding`
        (`clip`: the mean over windows `(C,)`)."""
        duration = info.get("duration_s")
        start_s, end_s = window_times(starts, self.input_samples, self.sample_rate, duration)
        windows = np.asarray(outputs, np.float32)
        return Embedding(layer, windows, windows.mean(axis=0), start_s, end_s, float(duration or 0.0))

    def make_record(self, path: str | None, logits: np.ndarray | None, info: dict,
                    options: ScoringOptions | None = None, *, error: str | None = None,
                    warnings: Sequence[str] = (), hop_s: float | None = None, **scoring) -> dict:
        """A file's window logits `(windows, n_tags)` -> its output record (the JSON
        object of `samplecnn tag`; `error` set and `logits` None for a failed file).

        `options` (or its fields as keywords; `hop_s=` is `hop=`) say how the windows were
        cut and how they are aggregated. `path` is recorded as `writers.record_path(path)`
        (absolute, escaped: every file name is written as UTF-8 and found again by
        `--resume`); None stays None (arrays).

        `labels`: the tags whose clip score is at or above their threshold, highest score
        first (`options.threshold` for every tag, else the model's stored thresholds; with
        `options.at_least_one`, the top tag when none passes); None when the model has no
        stored thresholds and no `threshold` is given, and for a failed file.
        """
        if hop_s is not None:
            scoring["hop"] = hop_s
        options = ScoringOptions.build(options, **scoring)
        rec = {
            "path": None if path is None else record_path(path),
            "duration_s": None,
            "sample_rate": self.sample_rate,
            "source_sample_rate": info.get("source_sample_rate"),
            "source_channels": info.get("source_channels"),
            "segments": 0,
            "window_s": round(self.window_s, 6),
            "hop_s": round(options.hop_s(self.input_samples, self.sample_rate), 6),
            "last_window": options.last,
            "aggregate": options.aggregate,
            "tags": None,
            "top": [],
            "labels": None,
            "warnings": [record_text(str(w)) for w in [*warnings, *(info.get("warnings") or [])]],
            "error": None if error is None else record_text(error),
        }
        if error is not None or logits is None:
            return rec
        clip = aggregate_windows(logits, options.aggregate)
        order = np.argsort(-clip, kind="stable")[: min(options.top_k, len(clip))]
        rec["duration_s"] = None if info.get("duration_s") is None else round(float(info["duration_s"]), 6)
        rec["segments"] = int(len(logits))
        rec["tags"] = {t: round(float(s), 6) for t, s in zip(self.tags, clip)}
        rec["top"] = [[self.tags[i], round(float(clip[i]), 6)] for i in order]
        rec["labels"] = self.decide(clip, options.threshold, options.at_least_one)
        return rec

    # -- many files ------------------------------------------------------------------
    def tag_files(self, paths: Sequence[str], options: ScoringOptions | None = None, *, workers: int = 0,
                  batch_size: int | None = None, **scoring) -> Iterator[FileResult]:
        """Tag many files with cross-file batches; yields `FileResult`s (with `.record`
        set, and `.outputs` the per-window logits) as files finish."""
        options = ScoringOptions.build(options, **scoring)
        for res in run_batched(paths, self.logits, sample_rate=self.sample_rate, grid=self.grid(options),
                               batch_size=batch_size or self.batch_size, workers=workers):
            res.record = self.make_record(res.path, res.outputs, res.info, options, error=res.error)
            yield res

    def embed_files(self, paths: Sequence[str], options: ScoringOptions | None = None, *,
                    layer: str = "features", pool: str = "mean", workers: int = 0,
                    batch_size: int | None = None, **scoring) -> Iterator[FileResult]:
        """Embeddings of many files; `FileResult.outputs` is `(n_windows, C)`."""
        self.check_layer(layer, pool)
        options = ScoringOptions.build(options, **scoring)
        return run_batched(paths, lambda x: self.embeddings(x, layer, pool),
                           sample_rate=self.sample_rate, grid=self.grid(options),
                           batch_size=batch_size or self.batch_size, workers=workers)

    def taggram_of(self, result: FileResult) -> Taggram:
        """The taggram of a successful `FileResult` from `tag_files`."""
        if result.error is not None or result.outputs is None:
            raise ValueError(f"{result.path}: no taggram ({result.error})")
        return self.taggram_from(result.starts, result.outputs, result.info)
