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
from samplecnn.metrics import check_aggregation, sigmoid
from samplecnn.windows import WindowGrid, chunks

from .sources import StreamInfo, iter_file_messages, iter_windows, worker_messages
from .writers import record_path, record_text

# What a source that is a file name can be; anything else is an array of samples.
_PATH_TYPES = (str, bytes, os.PathLike)


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
    paths: Sequence[str],
    compute: Callable[[np.ndarray], np.ndarray],
    *,
    sample_rate: int,
    grid: WindowGrid,
    batch_size: int,
    workers: int = 0,
    chunk: int = 8,
) -> Iterator[FileResult]:
    """Files -> `FileResult`s through the one batching loop
    (`samplecnn.inference.batching.score_messages`).

    `compute`: `(B, window)` float32 -> `(B, D)`. Yields one `FileResult` per path as
    files finish (input order with `workers=0`, completion order otherwise). Decoding
    runs in `workers` processes (0: in this process) while this process computes.
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    if workers > 0:
        messages = worker_messages(paths, sample_rate, grid, workers, chunk)
    else:
        messages = iter_file_messages(paths, sample_rate, grid, chunk)
    for res in score_messages(messages, compute, batch_size):
        yield FileResult(res.key, str(paths[res.key]), res.info, res.starts, res.outputs, res.error)


def _times(starts: np.ndarray, window: int, sample_rate: int, duration_s: float | None):
    start_s = starts.astype(np.float64) / sample_rate
    end_s = start_s + window / sample_rate
    if duration_s is not None:
        end_s = np.minimum(end_s, max(duration_s, 0.0))
    return start_s, end_s


class Tagger:
    """Scores, taggrams and embeddings from a model loaded once.

    Every method accepts a path (`str`, `bytes` or path-like) or an array; an array
    needs its `sample_rate` (it is
    resampled to the model's rate, never assumed to be at it). Windows follow the one
    window grid (`samplecnn.windows`, `last` = "pad" or "drop") and clip scores the one
    clip aggregation (`samplecnn.metrics.aggregate`: "mean", "max" or "logit_mean").

    The low-level pair that every engine (CLI, service, cluster) builds on:
    `logits(windows)` runs the model, `make_record(...)` turns a file's window logits
    into its output record.
    """

    def __init__(self, runner, batch_size: int = 16):
        if int(batch_size) < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.runner = runner
        self.batch_size = int(batch_size)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_model(cls, model, device: str = "cpu", backend: str = "auto", precision: str = "fp32",
                   batch_size: int = 16, optimize: bool | None = None) -> "Tagger":
        """A `SampleCNN` run by `backend` ("auto": ONNX Runtime on the CPU, the fused twin
        on a GPU; "onnxruntime", "torch", "plain"); `optimize=False` means "plain"."""
        from samplecnn.inference.runners import optimize_for_inference

        if optimize is False:
            backend = "plain"
        return cls(optimize_for_inference(model, backend, precision, device=device), batch_size)

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu", backend: str = "auto",
                        precision: str = "fp32", batch_size: int = 16,
                        optimize: bool | None = None) -> "Tagger":
        """Load a samplecnn (or Lightning training) checkpoint."""
        from samplecnn.checkpoint import load_model

        return cls.from_model(load_model(path, map_location="cpu"), device, backend, precision,
                              batch_size, optimize)

    @classmethod
    def from_pretrained(cls, name: str, device: str = "cpu", backend: str = "auto",
                        precision: str = "fp32", batch_size: int = 16,
                        optimize: bool | None = None) -> "Tagger":
        """Public weights by name (`samplecnn.pretrained`, e.g. "sota-mtat-sample"):
        downloaded, verified, converted and cached on first use, then loaded."""
        from samplecnn.pretrained import resolve

        return cls.from_checkpoint(resolve(name), device, backend, precision, batch_size, optimize)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, providers: Sequence[str] | None = None,
                  batch_size: int = 16) -> "Tagger":
        """Load an ONNX model written by `samplecnn export` (run by ONNX Runtime)."""
        from samplecnn.inference.runners import OrtRunner

        return cls(OrtRunner.from_file(path, providers=list(providers) if providers else None), batch_size)

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str | None = None, device: str = "cpu",
             optimize: bool | None = None, batch_size: int = 16, precision: str = "fp32") -> "Tagger":
        """A checkpoint or an ONNX file (by its `.onnx` extension). `backend`: "auto"
        (default), "onnxruntime" ("onnx"), "torch" or "plain"; ONNX files run on ONNX
        Runtime only."""
        from samplecnn.inference.runners import load_runner

        backend = backend or "auto"
        if optimize is False:
            if str(path).lower().endswith(".onnx"):
                raise ValueError("--no-optimize (the plain PyTorch model) needs a checkpoint, not an ONNX file")
            backend = "plain"
        return cls(load_runner(path, backend, device, precision), batch_size)

    @property
    def backend(self):
        """The runner (kept under its older name)."""
        return self.runner

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
    def window_s(self) -> float:
        return self.input_samples / self.sample_rate

    def grid(self, hop: float | None = None, last: str = "pad") -> WindowGrid:
        """The window grid for a hop in seconds (None: one window) and a last-window policy;
        unpadded windows for a whole-clip model (`WindowGrid.whole_clip`)."""
        return WindowGrid.of_seconds(self.input_samples, self.sample_rate, hop, last,
                                     whole_clip=getattr(self.runner, "whole_clip", False))

    def hop_samples(self, hop_s: float | None) -> int:
        return self.grid(hop_s).hop

    # -- the model call ----------------------------------------------------------------
    def logits(self, windows: np.ndarray) -> np.ndarray:
        """float32 windows `(B, input_samples)` at the model's rate -> logits `(B, n_tags)`."""
        return np.asarray(self.runner.logits(windows), dtype=np.float32)

    def embeddings(self, windows: np.ndarray, layer: str = "features", pool: str = "mean") -> np.ndarray:
        """float32 windows `(B, input_samples)` -> `(B, C)`: `layer` pooled over time."""
        return np.asarray(self.runner.embed(windows, layer, pool), dtype=np.float32)

    # -- single sources --------------------------------------------------------------
    def _windows_apply(self, source, sample_rate, grid: WindowGrid, fn) -> tuple[np.ndarray, np.ndarray, StreamInfo]:
        if not isinstance(source, _PATH_TYPES) and sample_rate is None:
            raise ValueError(
                "an audio array needs its sample rate: pass sample_rate=<Hz> "
                f"(the model expects {self.sample_rate} Hz; the rate is never assumed)"
            )
        if isinstance(source, _PATH_TYPES) and sample_rate is not None:
            raise ValueError("sample_rate is for arrays; a file's rate is read from the file")
        info = StreamInfo()
        starts, outs = [], []
        pairs = iter_windows(source, self.sample_rate, grid, source_sample_rate=sample_rate, info=info)
        for batch_s, batch_x in chunks(pairs, self.batch_size):
            outs.append(fn(batch_x))
            starts.append(batch_s)
        return np.concatenate(starts), np.concatenate(outs).astype(np.float32), info

    def taggram(self, source, sample_rate: int | None = None, *, hop: float | None = None,
                last: str = "pad") -> Taggram:
        """Per-window scores `(windows, n_tags)` with start/end times in seconds.

        `hop` in seconds (default: one window, no overlap).
        """
        starts, logits, info = self._windows_apply(source, sample_rate, self.grid(hop, last), self.logits)
        start_s, end_s = _times(starts, self.input_samples, self.sample_rate, info.duration_s)
        return Taggram(self.tags, start_s, end_s, sigmoid(logits).astype(np.float32),
                       float(info.duration_s), self.sample_rate)

    def tag(self, source, sample_rate: int | None = None, *, hop: float | None = None,
            aggregate: str = "mean", top_k: int = 5, last: str = "pad") -> dict:
        """The JSON record of one source: `path`, `duration_s`, `sample_rate`, `segments`,
        `tags` (every tag -> score), `top` (the `top_k` `[tag, score]` pairs), `error`.

        Raises for unusable input (batch runs report it in `error` instead).
        """
        check_aggregation(aggregate)
        grid = self.grid(hop, last)
        starts, logits, info = self._windows_apply(source, sample_rate, grid, self.logits)
        path = os.fsdecode(source) if isinstance(source, _PATH_TYPES) else None
        return self.make_record(path, logits, info.as_dict(), aggregate=aggregate, top_k=top_k,
                                hop_s=grid.hop / self.sample_rate, last=last)

    def embed(self, source, sample_rate: int | None = None, *, layer: str = "features",
              hop: float | None = None, pool: str = "mean", last: str = "pad") -> Embedding:
        """Per-window embeddings `(windows, C)` of `layer` (pooled over time by `pool`)
        and their mean over windows `(C,)`."""
        self.check_layer(layer, pool)
        starts, emb, info = self._windows_apply(
            source, sample_rate, self.grid(hop, last), lambda x: self.embeddings(x, layer, pool))
        start_s, end_s = _times(starts, self.input_samples, self.sample_rate, info.duration_s)
        return Embedding(layer, emb, emb.mean(axis=0), start_s, end_s, float(info.duration_s))

    def check_layer(self, layer: str, pool: str = "mean") -> None:
        self.runner.check_layer(layer, pool)

    # -- records -----------------------------------------------------------------------
    def make_record(self, path: str | None, logits: np.ndarray | None, info: dict, *,
                    aggregate: str = "mean", top_k: int = 5, hop_s: float | None = None,
                    last: str = "pad", error: str | None = None,
                    warnings: Sequence[str] = ()) -> dict:
        """A file's window logits `(windows, n_tags)` -> its output record (the JSON
        object of `samplecnn tag`; `error` set and `logits` None for a failed file).

        `path` is recorded as `writers.record_path(path)` (absolute, escaped: every file
        name is written as UTF-8 and found again by `--resume`); None stays None (arrays).
        """
        check_aggregation(aggregate)
        if top_k < 0:
            raise ValueError(f"top-k must be 0 or more, got {top_k}")
        rec = {
            "path": None if path is None else record_path(path),
            "duration_s": None,
            "sample_rate": self.sample_rate,
            "source_sample_rate": info.get("source_sample_rate"),
            "source_channels": info.get("source_channels"),
            "segments": 0,
            "window_s": round(self.window_s, 6),
            "hop_s": None if hop_s is None else round(hop_s, 6),
            "last_window": last,
            "aggregate": aggregate,
            "tags": None,
            "top": [],
            "warnings": [record_text(str(w)) for w in [*warnings, *(info.get("warnings") or [])]],
            "error": None if error is None else record_text(error),
        }
        if error is not None or logits is None:
            return rec
        clip = aggregate_windows(logits, aggregate)
        order = np.argsort(-clip, kind="stable")[: min(top_k, len(clip))]
        rec["duration_s"] = None if info.get("duration_s") is None else round(float(info["duration_s"]), 6)
        rec["segments"] = int(len(logits))
        rec["tags"] = {t: round(float(s), 6) for t, s in zip(self.tags, clip)}
        rec["top"] = [[self.tags[i], round(float(clip[i]), 6)] for i in order]
        return rec

    # -- many files ------------------------------------------------------------------
    def tag_files(self, paths: Sequence[str], *, hop: float | None = None, aggregate: str = "mean",
                  top_k: int = 5, workers: int = 0, batch_size: int | None = None,
                  last: str = "pad") -> Iterator[FileResult]:
        """Tag many files with cross-file batches; yields `FileResult`s (with `.record`
        set, and `.outputs` the per-window logits) as files finish."""
        check_aggregation(aggregate)
        grid = self.grid(hop, last)
        for res in run_batched(paths, self.logits, sample_rate=self.sample_rate, grid=grid,
                               batch_size=batch_size or self.batch_size, workers=workers):
            res.record = self.make_record(res.path, res.outputs, res.info, aggregate=aggregate,
                                          top_k=top_k, hop_s=grid.hop / self.sample_rate,
                                          last=last, error=res.error)
            yield res

    def embed_files(self, paths: Sequence[str], *, layer: str = "features", pool: str = "mean",
                    hop: float | None = None, workers: int = 0,
                    batch_size: int | None = None, last: str = "pad") -> Iterator[FileResult]:
        """Embeddings of many files; `FileResult.outputs` is `(n_windows, C)`."""
        self.check_layer(layer, pool)
        return run_batched(paths, lambda x: self.embeddings(x, layer, pool),
                           sample_rate=self.sample_rate, grid=self.grid(hop, last),
                           batch_size=batch_size or self.batch_size, workers=workers)

    def taggram_of(self, result: FileResult) -> Taggram:
        """The taggram of a successful `FileResult` from `tag_files`."""
        if result.error is not None or result.outputs is None:
            raise ValueError(f"{result.path}: no taggram ({result.error})")
        start_s, end_s = _times(result.starts, self.input_samples, self.sample_rate,
                                result.info.get("duration_s"))
        return Taggram(self.tags, start_s, end_s, sigmoid(result.outputs).astype(np.float32),
                       float(result.info.get("duration_s") or 0.0), self.sample_rate)

