"""The `Tagger`: a model loaded once, applied to files, folders and arrays.

Audio is cut into windows of the model's `input_samples` at the model's rate (see
`samplecnn.tagging.sources` for the grid and the zero-padded last window); each window is
scored with sigmoid(logits); a file's score per tag is the mean (or max) over its windows,
as in the paper's evaluation (mean of the segments' scores).

Backends: a PyTorch model (checkpoint) or an ONNX model written by `samplecnn export`;
both take `(batch, input_samples)` float32 windows.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .sources import StreamInfo, iter_file_messages, iter_windows, worker_messages

__all__ = ["Tagger", "Taggram", "Embedding", "FileResult", "TorchBackend", "OnnxBackend"]

AGGREGATES = ("mean", "max")


class TorchBackend:
    """A `SampleCNN` on a torch device. `predict`: `(B, input_samples)` -> scores `(B, n_tags)`."""

    name = "torch"

    def __init__(self, model, device: str = "cpu", optimize: bool | None = None):
        import torch

        if model.config.tags is None:
            raise ValueError("the model has no tag names (config.tags is None); "
                             "tagging needs them to name its outputs")
        self.torch = torch
        self.device = torch.device(device)
        self.config = model.config
        self.model = self.prepare_model(model, self.device, optimize)

    @staticmethod
    def prepare_model(model, device, optimize: bool | None):
        """The one place where a model is made ready for inference: eval mode, device
        and, with `optimize` (default: on for the CPU), `samplecnn.perf`'s exact fp32
        fast path (ONNX Runtime on CPU; scores agree with eager to ~1e-6)."""
        model = model.eval().to(device)
        if optimize is None:
            optimize = device.type == "cpu"
        if optimize:
            from samplecnn.perf import optimize_for_inference

            model = optimize_for_inference(model)
        return model

    @property
    def tags(self) -> list[str]:
        return list(self.config.tags)

    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_rate)

    @property
    def input_samples(self) -> int:
        return int(self.config.input_samples)

    def _tensor(self, x: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device).unsqueeze(1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            logits = self.model(self._tensor(x))
            return self.torch.sigmoid(logits.float()).cpu().numpy()

    def layer_names(self) -> list[str]:
        return list(self.model.layer_names)

    def embed(self, x: np.ndarray, layer: str, pool: str) -> np.ndarray:
        """`(B, input_samples)` -> `(B, C)` of `layer`, pooled over its time axis."""
        with self.torch.inference_mode():
            return self.model.embed(self._tensor(x), layer=layer, pool=pool).float().cpu().numpy()


class OnnxBackend:
    """An ONNX model from `samplecnn export`, run with ONNX Runtime.

    Tag names, sample rate and segment length come from the model's metadata.
    """

    name = "onnx"

    def __init__(self, path: str | os.PathLike, providers: Sequence[str] | None = None):
        from samplecnn.export import read_onnx_metadata

        import onnxruntime as ort

        self.path = Path(path)
        meta = read_onnx_metadata(self.path)
        self._tags = meta["tags"]
        self._sample_rate = meta["sample_rate"]
        self._input_samples = meta["input_samples"]
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), opts,
                                            providers=list(providers or ["CPUExecutionProvider"]))
        self.input_name = self.session.get_inputs()[0].name

    @property
    def tags(self) -> list[str]:
        return list(self._tags)

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def input_samples(self) -> int:
        return self._input_samples

    def predict(self, x: np.ndarray) -> np.ndarray:
        (scores,) = self.session.run(["scores"], {self.input_name: np.ascontiguousarray(x, np.float32)})
        return scores

    def layer_names(self) -> list[str]:
        return []

    def embed(self, x, layer, pool):
        raise ValueError(f"{self.path}: embeddings need the PyTorch checkpoint; the ONNX "
                         "export only outputs tag scores")


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


class _FileState:
    __slots__ = ("starts", "outputs", "received", "computed", "decoded", "info")

    def __init__(self) -> None:
        self.starts: list[np.ndarray] = []
        self.outputs: dict[int, np.ndarray] = {}
        self.received = 0
        self.computed = 0
        self.decoded = False
        self.info: dict = {}


def run_batched(
    paths: Sequence[str],
    compute: Callable[[np.ndarray], np.ndarray],
    *,
    sample_rate: int,
    window: int,
    hop: int,
    batch_size: int,
    workers: int = 0,
    chunk: int = 8,
) -> Iterator[FileResult]:
    """Run `compute` over the windows of many files, batched across files.

    `compute`: `(B, window)` float32 -> `(B, D)`. Yields one `FileResult` per path as
    files finish (input order with `workers=0`, completion order otherwise). Decoding
    runs in `workers` processes (0: in this process) while this process computes; what
    is in flight is bounded by the batch size and the workers' queue, never by file
    length.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    if workers > 0:
        messages = worker_messages(paths, sample_rate, window, hop, workers, chunk)
    else:
        messages = iter_file_messages(paths, sample_rate, window, hop, chunk)
    states: dict[int, _FileState] = {}
    # Pending windows: a list of (file index, position in file, window array) chunks.
    pend_x: list[np.ndarray] = []
    pend_owner: list[tuple[int, int]] = []  # (file index, window ordinal)
    pend_count = 0

    def run(n: int) -> None:
        nonlocal pend_x, pend_owner, pend_count
        x = np.concatenate(pend_x) if len(pend_x) > 1 else pend_x[0]
        batch, rest = x[:n], x[n:]
        owners, pend_owner = pend_owner[:n], pend_owner[n:]
        pend_x = [rest] if len(rest) else []
        pend_count = len(rest)
        out = np.asarray(compute(batch), dtype=np.float32)
        for (fi, k), row in zip(owners, out):
            st = states.get(fi)
            if st is not None:  # None: the file failed after these windows were queued
                st.outputs[k] = row
                st.computed += 1

    def finished() -> Iterator[FileResult]:
        for fi in [fi for fi, st in states.items() if st.decoded and st.computed == st.received]:
            st = states.pop(fi)
            starts = np.concatenate(st.starts) if st.starts else np.zeros(0, np.int64)
            outputs = np.stack([st.outputs[k] for k in range(st.received)])
            yield FileResult(fi, str(paths[fi]), st.info, starts, outputs)

    try:
        for msg in messages:
            kind = msg[0]
            if kind == "idle":
                if pend_count:
                    run(pend_count)
                    yield from finished()
                continue
            fi = msg[1]
            if kind == "windows":
                st = states.setdefault(fi, _FileState())
                starts, wins = msg[2], msg[3]
                st.starts.append(starts)
                pend_x.append(wins)
                pend_owner.extend((fi, st.received + j) for j in range(len(wins)))
                st.received += len(wins)
                pend_count += len(wins)
                while pend_count >= batch_size:
                    run(batch_size)
            elif kind == "done":
                st = states.setdefault(fi, _FileState())
                st.decoded = True
                st.info = msg[2]
            elif kind == "error":
                states.pop(fi, None)
                if any(o[0] == fi for o in pend_owner):
                    keep = [i for i, o in enumerate(pend_owner) if o[0] != fi]
                    x = np.concatenate(pend_x) if pend_x else np.zeros((0, window), np.float32)
                    pend_x = [x[keep]] if keep else []
                    pend_owner = [pend_owner[i] for i in keep]
                    pend_count = len(keep)
                yield FileResult(fi, str(paths[fi]), {}, None, None, error=msg[2])
            yield from finished()
        while pend_count:
            run(min(pend_count, batch_size))
        yield from finished()
    finally:
        close = getattr(messages, "close", None)
        if close:
            close()


def _hop_samples(hop_s: float | None, sample_rate: int, window: int) -> int:
    if hop_s is None:
        return window
    hop = int(round(float(hop_s) * sample_rate))
    if hop < 1:
        raise ValueError(f"hop must be at least one sample (1/{sample_rate} s), got {hop_s} s")
    return hop


def _times(starts: np.ndarray, window: int, sample_rate: int, duration_s: float | None):
    start_s = starts.astype(np.float64) / sample_rate
    end_s = start_s + window / sample_rate
    if duration_s is not None:
        end_s = np.minimum(end_s, max(duration_s, 0.0))
    return start_s, end_s


class Tagger:
    """Scores, taggrams and embeddings from a model loaded once.

    Every method accepts a path or an array; an array needs its `sample_rate` (it is
    resampled to the model's rate, never assumed to be at it).
    """

    def __init__(self, backend: TorchBackend | OnnxBackend, batch_size: int = 16):
        self.backend = backend
        self.batch_size = int(batch_size)

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "cpu",
                        optimize: bool | None = None, batch_size: int = 16) -> "Tagger":
        """Load a samplecnn (or Lightning training) checkpoint. `optimize=None` uses
        the fast inference path on the CPU (see `TorchBackend.prepare_model`)."""
        from samplecnn.checkpoint import load_model

        return cls(TorchBackend(load_model(path, map_location="cpu"), device, optimize), batch_size)

    @classmethod
    def from_model(cls, model, device: str = "cpu", optimize: bool | None = None,
                   batch_size: int = 16) -> "Tagger":
        return cls(TorchBackend(model, device, optimize), batch_size)

    @classmethod
    def from_onnx(cls, path: str | os.PathLike, providers: Sequence[str] | None = None,
                  batch_size: int = 16) -> "Tagger":
        """Load an ONNX model written by `samplecnn export`."""
        return cls(OnnxBackend(path, providers), batch_size)

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str | None = None, device: str = "cpu",
             optimize: bool | None = None, batch_size: int = 16) -> "Tagger":
        """A checkpoint (`backend="torch"`) or an ONNX file (`"onnx"`; the default for a
        `.onnx` path)."""
        backend = backend or ("onnx" if str(path).lower().endswith(".onnx") else "torch")
        if backend == "onnx":
            if optimize:
                raise ValueError("optimize applies to the torch backend only")
            if device not in ("cpu", None):
                raise ValueError("the onnx backend runs on the CPU here; use --device cpu")
            return cls.from_onnx(path, batch_size=batch_size)
        if backend != "torch":
            raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
        return cls.from_checkpoint(path, device=device, optimize=optimize, batch_size=batch_size)

    # -- metadata ----------------------------------------------------------------------
    @property
    def tags(self) -> list[str]:
        return self.backend.tags

    @property
    def sample_rate(self) -> int:
        return self.backend.sample_rate

    @property
    def input_samples(self) -> int:
        return self.backend.input_samples

    @property
    def window_s(self) -> float:
        return self.input_samples / self.sample_rate

    def hop_samples(self, hop_s: float | None) -> int:
        return _hop_samples(hop_s, self.sample_rate, self.input_samples)

    # -- single sources --------------------------------------------------------------
    def _windows_apply(self, source, sample_rate, hop_s, fn) -> tuple[np.ndarray, np.ndarray, StreamInfo]:
        if not isinstance(source, (str, os.PathLike)) and sample_rate is None:
            raise ValueError(
                "an audio array needs its sample rate: pass sample_rate=<Hz> "
                f"(the model expects {self.sample_rate} Hz; the rate is never assumed)"
            )
        if isinstance(source, (str, os.PathLike)) and sample_rate is not None:
            raise ValueError("sample_rate is for arrays; a file's rate is read from the file")
        info = StreamInfo()
        hop = self.hop_samples(hop_s)
        starts, outs, batch_s, batch_x = [], [], [], []
        for start, w in iter_windows(source, self.sample_rate, self.input_samples, hop,
                                     source_sample_rate=sample_rate, info=info):
            batch_s.append(start)
            batch_x.append(w)
            if len(batch_x) == self.batch_size:
                outs.append(fn(np.stack(batch_x)))
                starts.extend(batch_s)
                batch_s, batch_x = [], []
        if batch_x:
            outs.append(fn(np.stack(batch_x)))
            starts.extend(batch_s)
        return np.asarray(starts, np.int64), np.concatenate(outs).astype(np.float32), info

    def taggram(self, source, sample_rate: int | None = None, *, hop: float | None = None) -> Taggram:
        """Per-window scores `(windows, n_tags)` with start/end times in seconds.

        `hop` in seconds (default: one window, no overlap).
        """
        starts, scores, info = self._windows_apply(source, sample_rate, hop, self.backend.predict)
        start_s, end_s = _times(starts, self.input_samples, self.sample_rate, info.duration_s)
        return Taggram(self.tags, start_s, end_s, scores, float(info.duration_s), self.sample_rate)

    def tag(self, source, sample_rate: int | None = None, *, hop: float | None = None,
            aggregate: str = "mean", top_k: int = 5) -> dict:
        """The JSON record of one source: `path`, `duration_s`, `sample_rate`, `segments`,
        `tags` (every tag -> score), `top` (the `top_k` `[tag, score]` pairs), `error`.

        Raises for unusable input (batch runs report it in `error` instead).
        """
        starts, scores, info = self._windows_apply(source, sample_rate, hop, self.backend.predict)
        path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        return self.make_record(path, scores, info.as_dict(), aggregate=aggregate, top_k=top_k,
                                hop_s=self.hop_samples(hop) / self.sample_rate)

    def embed(self, source, sample_rate: int | None = None, *, layer: str = "features",
              hop: float | None = None, pool: str = "mean") -> Embedding:
        """Per-window embeddings `(windows, C)` of `layer` (pooled over time by `pool`)
        and their mean over windows `(C,)`."""
        self.check_layer(layer, pool)
        starts, emb, info = self._windows_apply(
            source, sample_rate, hop, lambda x: self.backend.embed(x, layer, pool))
        start_s, end_s = _times(starts, self.input_samples, self.sample_rate, info.duration_s)
        return Embedding(layer, emb, emb.mean(axis=0), start_s, end_s, float(info.duration_s))

    def check_layer(self, layer: str, pool: str = "mean") -> None:
        if pool not in AGGREGATES:
            raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")
        names = self.backend.layer_names()
        if self.backend.name == "torch" and layer not in names:
            raise ValueError(f"unknown layer {layer!r}; choose from {', '.join(names)}")

    # -- records -----------------------------------------------------------------------
    def make_record(self, path: str | None, scores: np.ndarray | None, info: dict, *,
                    aggregate: str = "mean", top_k: int = 5, hop_s: float | None = None,
                    error: str | None = None) -> dict:
        """Aggregate per-window scores `(windows, n_tags)` into the output record."""
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
        if top_k < 0:
            raise ValueError(f"top-k must be 0 or more, got {top_k}")
        rec = {
            "path": path,
            "duration_s": None,
            "sample_rate": self.sample_rate,
            "source_sample_rate": info.get("source_sample_rate"),
            "source_channels": info.get("source_channels"),
            "segments": 0,
            "window_s": round(self.window_s, 6),
            "hop_s": None if hop_s is None else round(hop_s, 6),
            "aggregate": aggregate,
            "tags": None,
            "top": [],
            "error": error,
        }
        if error is not None or scores is None:
            return rec
        clip = scores.mean(axis=0) if aggregate == "mean" else scores.max(axis=0)
        order = np.argsort(-clip, kind="stable")[: min(top_k, len(clip))]
        rec["duration_s"] = None if info.get("duration_s") is None else round(float(info["duration_s"]), 6)
        rec["segments"] = int(len(scores))
        rec["tags"] = {t: round(float(s), 6) for t, s in zip(self.tags, clip)}
        rec["top"] = [[self.tags[i], round(float(clip[i]), 6)] for i in order]
        return rec

    # -- many files ------------------------------------------------------------------
    def tag_files(self, paths: Sequence[str], *, hop: float | None = None, aggregate: str = "mean",
                  top_k: int = 5, workers: int = 0, batch_size: int | None = None) -> Iterator[FileResult]:
        """Tag many files with cross-file batches; yields `FileResult`s (with `.record`
        set, and `.outputs` the per-window scores for taggrams) as files finish."""
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
        hop_n = self.hop_samples(hop)
        for res in run_batched(paths, self.backend.predict, sample_rate=self.sample_rate,
                               window=self.input_samples, hop=hop_n,
                               batch_size=batch_size or self.batch_size, workers=workers):
            res.record = self.make_record(res.path, res.outputs, res.info, aggregate=aggregate,
                                          top_k=top_k, hop_s=hop_n / self.sample_rate, error=res.error)
            yield res

    def embed_files(self, paths: Sequence[str], *, layer: str = "features", pool: str = "mean",
                    hop: float | None = None, workers: int = 0,
                    batch_size: int | None = None) -> Iterator[FileResult]:
        """Embeddings of many files; `FileResult.outputs` is `(n_windows, C)`."""
        self.check_layer(layer, pool)
        return run_batched(paths, lambda x: self.backend.embed(x, layer, pool),
                           sample_rate=self.sample_rate, window=self.input_samples,
                           hop=self.hop_samples(hop), batch_size=batch_size or self.batch_size,
                           workers=workers)

    def taggram_of(self, result: FileResult) -> Taggram:
        """The taggram of a successful `FileResult` from `tag_files`."""
        if result.error is not None or result.outputs is None:
            raise ValueError(f"{result.path}: no taggram ({result.error})")
        start_s, end_s = _times(result.starts, self.input_samples, self.sample_rate,
                                result.info.get("duration_s"))
        return Taggram(self.tags, start_s, end_s, result.outputs,
                       float(result.info.get("duration_s") or 0.0), self.sample_rate)

