"""Model runners: the one interface every scorer calls, whatever runs the model.

A runner takes float32 windows `(B, input_samples)` (a whole-clip model, `whole_clip`:
`(B, any length >= 1)`) at the model's rate (NumPy) and
returns logits `(B, n_tags)` (`logits`) or one layer's pooled embedding `(B, C)`
(`embed`). Runners are named by what runs the model:

- `OrtRunner` ("onnxruntime"): ONNX Runtime on the CPU, from a `SampleCNN` (exported once
  and cached, `samplecnn.inference.onnx`) or from a file written by `samplecnn export`.
  ORT's graph optimiser fuses Conv + BN + ReLU and its convolutions beat PyTorch's on
  these CPUs: the CPU default (exact fp32; scores agree with the plain model to ~1e-6).
- `TorchRunner` ("torch"): the fused twin `model.fuse_for_inference(dtype)` on any torch
  device, in fp32 or bf16 (the GPU default); ("plain"): the model itself in eval mode.

`optimize_for_inference(model, backend, precision)` picks one; `load_runner(path)` reads a
checkpoint or an ONNX file.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .backends import BACKEND_ALIASES, BACKENDS, PRECISIONS

__all__ = ["BACKENDS", "PRECISIONS", "Runner", "TorchRunner", "OrtRunner",
           "optimize_for_inference", "resolve_backend", "load_runner", "check_device", "BACKEND_ALIASES"]


def check_device(device: str | None, option: str = "--device") -> str:
    """`device` (None: "cpu") as a torch device string this machine has; otherwise one
    line naming `option`: `cuda`/`cuda:N` without CUDA (or beyond the visible GPUs) and
    `mps` without MPS are refused here instead of an assertion deep in torch. The one
    device check of every command and runner."""
    import torch

    device = "cpu" if device is None else str(device)
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"{option} {device!r}: not a torch device, unknown device (use cpu, cuda, "
                         "cuda:1, ...)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{option} {device}: CUDA is not available on this machine "
                             "(no GPU, or a CPU-only torch build); use --device cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"{option} {device}: this machine has {count} CUDA device(s) "
                             f"(cuda:0..cuda:{count - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{option} {device}: MPS is not available on this machine; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"{option} {device}: samplecnn runs on cpu, cuda or mps")
    return device


class Runner:
    """What every runner offers: metadata and two calls on NumPy windows.

    `thresholds`: the model's stored decision thresholds (`samplecnn.thresholds.Thresholds`,
    from the checkpoint or the ONNX metadata) or None."""

    name = "runner"
    thresholds = None
    tags: list[str]
    sample_rate: int
    input_samples: int
    layer_names: list[str]
    whole_clip: bool = False  # the model takes windows of any length (LeeNet)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """float32 `(B, input_samples)` -> float32 logits `(B, n_tags)`."""
        raise NotImplementedError

    def embed(self, x: np.ndarray, layer: str = "features", pool: str = "mean") -> np.ndarray:
        """float32 `(B, input_samples)` -> float32 `(B, C)`: `layer` pooled over time."""
        raise NotImplementedError

    def check_layer(self, layer: str, pool: str = "mean") -> None:
        if pool not in ("mean", "max"):
            raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")
        if layer not in self.layer_names:
            names = ", ".join(self.layer_names) or "none: this model only outputs tag scores"
            raise ValueError(f"unknown layer {layer!r}; choose from {names}")

    def _windows(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.whole_clip:
            if x.ndim != 2 or x.shape[1] < 1:
                raise ValueError(f"expected windows of shape (batch, samples >= 1), got {x.shape}")
            return x
        if x.ndim != 2 or x.shape[1] != self.input_samples:
            raise ValueError(f"expected windows of shape (batch, {self.input_samples}), got {x.shape}")
        return x


def _meta_from_config(runner: Runner, config) -> None:
    if config.tags is None:
        raise ValueError("the model has no tag names (config.tags is None); "
                         "inference needs them to name its outputs")
    runner.tags = list(config.tags)
    runner.sample_rate = int(config.sample_rate)
    runner.input_samples = int(config.input_samples)
    runner.whole_clip = bool(config.whole_clip)


class TorchRunner(Runner):
    """A torch module with the forward contract (a `SampleCNN` or its `FusedSampleCNN`
    twin) on a torch device."""

    def __init__(self, module, device: str = "cpu", name: str = "torch"):
        import torch

        self.torch = torch
        self.name = name
        self.device = torch.device(check_device(device))
        self.module = module.eval().to(self.device)
        self.thresholds = getattr(module, "thresholds", None)
        self.config = module.config
        _meta_from_config(self, self.config)
        self.layer_names = list(module.layer_names)

    def _tensor(self, x: np.ndarray):
        return self.torch.from_numpy(self._windows(x)).to(self.device).unsqueeze(1)

    def logits(self, x: np.ndarray) -> np.ndarray:
        with self.torch.inference_mode():
            return self.module(self._tensor(x)).float().cpu().numpy()

    def embed(self, x: np.ndarray, layer: str = "features", pool: str = "mean") -> np.ndarray:
        self.check_layer(layer, pool)
        with self.torch.inference_mode():
            return self.module.embed(self._tensor(x), layer=layer, pool=pool).float().cpu().numpy()


class OrtRunner(Runner):
    """ONNX Runtime (CPU) sessions of samplecnn's exported graphs.

    `OrtRunner.from_model(model)` exports (or takes from the cache) the "scores" graph now
    and the "embeddings" graph on the first `embed` of a layer other than `features`
    (which the scores graph outputs); `OrtRunner.from_file(path)` runs a file written by
    `samplecnn export` (fp32 or int8): tag scores and the `features` embedding (none in a
    file exported before the scores graph output it).
    """

    name = "onnxruntime"

    def __init__(self, scores_graph, meta: dict, embeddings_graph=None, threads: int | None = None,
                 spin: bool = False, providers: list[str] | None = None, label: str = "model"):
        from .onnx import session

        self._session = session
        self.threads, self.spin, self.providers = threads, spin, providers
        self.label = label
        self.tags = list(meta["tags"])
        self.sample_rate = int(meta["sample_rate"])
        self.input_samples = int(meta["input_samples"])
        self.config = meta.get("model_config")
        self.whole_clip = bool(meta.get("whole_clip"))
        self._scores = session(scores_graph, threads, spin, providers)
        self._score_outputs = {o.name: o for o in self._scores.get_outputs()}
        self._embeddings_graph = embeddings_graph  # a path, or a callable making one
        self._embed_session = None
        self.layer_names = list(meta.get("layer_names") or [])
        if meta.get("thresholds") is not None:
            from samplecnn.thresholds import Thresholds

            self.thresholds = Thresholds.from_dict(meta["thresholds"], self.tags, label=label or "ONNX model")

    @classmethod
    def from_model(cls, model, threads: int | None = None, spin: bool = False) -> "OrtRunner":
        from .onnx import cached_graph

        model = model.eval().float().cpu()
        config = model.config
        probe = Runner()
        _meta_from_config(probe, config)
        meta = {"tags": probe.tags, "sample_rate": probe.sample_rate,
                "input_samples": probe.input_samples, "model_config": config.to_dict(),
                "layer_names": list(model.layer_names), "whole_clip": config.whole_clip}
        th = getattr(model, "thresholds", None)
        meta["thresholds"] = None if th is None else th.to_dict()
        runner = cls(cached_graph(model, "scores"), meta, lambda: cached_graph(model, "embeddings"),
                     threads=threads, spin=spin)
        runner.config = config
        return runner

    @classmethod
    def from_file(cls, path: str | os.PathLike | bytes, providers: list[str] | None = None,
                  threads: int | None = None, label: str | None = None) -> "OrtRunner":
        """`path`: a file written by `samplecnn export`, or its bytes (then `label` names
        it in errors)."""
        from .onnx import read_metadata

        label = label or ("ONNX model" if isinstance(path, bytes) else str(path))
        meta = read_metadata(path)
        if meta["graph"] != "scores" or "logits" not in meta["outputs"]:
            raise ValueError(f"{label}: not a tag-score graph (outputs {', '.join(meta['outputs'])})")
        graph = path if isinstance(path, bytes) else Path(path)
        return cls(graph, meta, None, threads=threads, providers=providers, label=label)

    def logits(self, x: np.ndarray) -> np.ndarray:
        (out,) = self._scores.run(["logits"], {"audio": self._windows(x)})
        return out

    def check_layer(self, layer: str, pool: str = "mean") -> None:
        if self._embeddings_graph is None and layer not in self.layer_names:
            if pool not in ("mean", "max"):
                raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")
            if not self.layer_names:
                raise ValueError(f"{self.label}: this ONNX export has no embedding outputs (an "
                                 "older export); export it again with `samplecnn export`, or "
                                 "embed with the PyTorch checkpoint")
            raise ValueError(f"{self.label}: an ONNX export holds the embeddings of layer "
                             f"{', '.join(self.layer_names)} only, not {layer!r}; embed other "
                             "layers with the PyTorch checkpoint")
        super().check_layer(layer, pool)

    def layer_width(self, layer: str = "features") -> int:
        """C of `embed(x, layer)` `(B, C)`, for a layer the scores graph outputs."""
        self.check_layer(layer)
        out = self._score_outputs.get(f"{layer}.mean")
        if out is None or not isinstance(out.shape[-1], int):
            return int(self.embed(np.zeros((1, self.input_samples), np.float32), layer).shape[-1])
        return int(out.shape[-1])

    def embed(self, x: np.ndarray, layer: str = "features", pool: str = "mean") -> np.ndarray:
        self.check_layer(layer, pool)
        name = f"{layer}.{pool}"
        if name in self._score_outputs:  # no second graph for what the scores graph has
            (out,) = self._scores.run([name], {"audio": self._windows(x)})
            return out
        if self._embed_session is None:
            graph = self._embeddings_graph
            self._embed_session = self._session(graph() if callable(graph) else graph,
                                                self.threads, self.spin, self.providers)
        (out,) = self._embed_session.run([name], {"audio": self._windows(x)})
        return out


def _ort_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str, on_cpu: bool = True, precision: str = "fp32") -> str:
    """The backend that runs: "onnx" is "onnxruntime"; "auto" is "onnxruntime" for fp32 on
    the CPU when ONNX Runtime is installed, else "torch"; the others are themselves."""
    backend = BACKEND_ALIASES.get(backend, backend)
    if backend == "auto":
        return "onnxruntime" if on_cpu and precision == "fp32" and _ort_available() else "torch"
    return backend


def optimize_for_inference(model, backend: str = "auto", precision: str = "fp32",
                           device: str | None = None, threads: int | None = None) -> Runner:
    """A runner for `model` (a `SampleCNN`).

    backend: "auto" (ONNX Runtime on the CPU for fp32 when installed, else "torch"),
    "onnxruntime", "torch" (the fused twin, any device) or "plain" (the eval model).
    precision: "fp32" (outputs equal the model's up to rounding) or "bf16" (torch only;
    faster on GPUs and CPUs with AVX512-BF16; outputs change). device: default the model's.
    """
    import torch

    backend = BACKEND_ALIASES.get(backend, backend)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not callable(getattr(model, "fuse_for_inference", None)):
        raise ValueError(f"optimize_for_inference needs a SampleCNN, got {type(model).__name__}")
    device = check_device(device if device is not None else str(next(model.parameters()).device))
    on_cpu = torch.device(device).type == "cpu"
    backend = resolve_backend(backend, on_cpu, precision)
    if backend == "onnxruntime":
        if precision != "fp32":
            raise ValueError("the onnxruntime backend runs fp32 only; use backend 'torch' for bf16")
        if not on_cpu:
            raise ValueError(f"the onnxruntime backend runs on the CPU; asked for {device}")
        return OrtRunner.from_model(model, threads=threads)
    if backend == "plain":
        if precision != "fp32":
            raise ValueError("the plain backend runs fp32 only; use backend 'torch' for bf16")
        runner = TorchRunner(model, device, name="plain")
    else:
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        runner = TorchRunner(model.eval().fuse_for_inference(dtype), device, name="torch")
    runner.thresholds = getattr(model, "thresholds", None)  # the fused twin has none of its own
    return runner


def load_runner(path: str | os.PathLike, backend: str = "auto", device: str | None = None,
                precision: str = "fp32", threads: int | None = None) -> Runner:
    """A runner for a checkpoint (any backend) or an ONNX file ("auto"/"onnxruntime")."""
    backend = BACKEND_ALIASES.get(backend, backend)  # "auto" stays for the device to decide
    if str(path).lower().endswith(".onnx"):
        if backend not in ("auto", "onnxruntime"):
            raise ValueError(f"{path}: an ONNX file runs with the onnxruntime backend, not {backend!r}")
        if device not in (None, "cpu"):  # torch is only imported to check another device
            check_device(device)
            raise ValueError("ONNX files run on the CPU here; use --device cpu")
        return OrtRunner.from_file(path, threads=threads)
    from samplecnn.checkpoint import load_model

    return optimize_for_inference(load_model(path, map_location="cpu"), backend, precision,
                                  device=device or "cpu", threads=threads)
