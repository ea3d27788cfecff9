"""ONNX export of a tagging model, preprocessing included.

The exported graph takes raw audio windows at the checkpoint's rate, `audio` float32
`(batch, input_samples)` (dynamic batch), and returns `logits` and `scores` (sigmoid),
both `(batch, n_tags)`. Everything a user needs to feed it right travels in the model's
metadata (`metadata_props`):

- `samplecnn.tags`: JSON list of tag names in output order;
- `samplecnn.sample_rate`, `samplecnn.input_samples`: the rate (Hz) and window length;
- `samplecnn.model_config`: the full `ModelConfig` as JSON;
- `samplecnn.format`: version of this metadata layout (1);
- `samplecnn.input`: a one-line description of the expected input.

The mel front end (nnAudio's STFT as a fixed convolution) exports like the raw one.
"""
from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path

__all__ = ["export_onnx", "check_onnx", "read_onnx_metadata", "ExportReport", "ONNX_OPSET"]

ONNX_OPSET = 17
META_FORMAT = 1


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how closely ONNX Runtime matched PyTorch."""

    path: Path
    max_abs_diff_logits: float | None
    max_abs_diff_scores: float | None
    atol: float
    n_tags: int
    sample_rate: int
    input_samples: int


def _wrapper(model):
    import torch

    class _Export(torch.nn.Module):
        """`(B, input_samples)` -> (logits, scores)."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, audio):
            logits = self.m(audio.unsqueeze(1))
            return logits, torch.sigmoid(logits)

    return _Export(model).eval()


def _export(torch, model, dummy, path, kwargs) -> None:
    try:
        # The TorchScript exporter: the dynamo one needs onnxscript, which is not a
        # dependency, and gives nothing more for this plain convolutional graph.
        torch.onnx.export(_wrapper(model), (dummy,), path, dynamo=False, **kwargs)
    except TypeError:  # torch without the dynamo switch
        torch.onnx.export(_wrapper(model), (dummy,), path, **kwargs)


def _load(model_or_path):
    from samplecnn.checkpoint import load_model

    if isinstance(model_or_path, (str, os.PathLike)):
        return load_model(model_or_path, map_location="cpu")
    return model_or_path.eval()


def export_onnx(model_or_path, out: str | os.PathLike, *, opset: int = ONNX_OPSET,
                check: bool = True, atol: float = 1e-4, seed: int = 0) -> ExportReport:
    """Export a checkpoint (path) or a `SampleCNN` to ONNX at `out`, atomically.

    With `check`, ONNX Runtime and PyTorch are run on random audio (batch 3, uniform in
    +-1 at the model's rate) and the export is refused (ValueError, nothing written) if
    logits or scores differ by more than `atol`.
    """
    import onnx
    import torch

    model = _load(model_or_path).cpu()
    cfg = model.config
    if cfg.tags is None:
        raise ValueError("refusing to export a model without tag names (config.tags is None)")
    out = Path(out)
    # The file appears only once it is complete and, with `check`, verified.
    with atomic_path(out) as tmp:
        dummy = torch.zeros(2, cfg.input_samples)
        kwargs = dict(
            input_names=["audio"], output_names=["logits", "scores"],
            dynamic_axes={"audio": {0: "batch"}, "logits": {0: "batch"}, "scores": {0: "batch"}},
            opset_version=opset, do_constant_folding=True,
        )
        with warnings.catch_warnings():
            # The input-shape checks of SampleCNN are constants for a fixed window length;
            # the tracer's warnings about them are expected.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            # torch >= 2.9 flags the TorchScript exporter as legacy; it is still supported
            # and needs no extra dependency (see _export).
            warnings.simplefilter("ignore", DeprecationWarning)
            _export(torch, model, dummy, tmp, kwargs)
        proto = onnx.load(tmp)
        meta = {
            "samplecnn.format": str(META_FORMAT),
            "samplecnn.tags": json.dumps(list(cfg.tags), ensure_ascii=False),
            "samplecnn.sample_rate": str(int(cfg.sample_rate)),
            "samplecnn.input_samples": str(int(cfg.input_samples)),
            "samplecnn.model_config": json.dumps(cfg.to_dict(), ensure_ascii=False),
            "samplecnn.input": (f"audio: float32 (batch, {cfg.input_samples}) mono waveform at "
                                f"{cfg.sample_rate} Hz, no normalisation; scores = sigmoid(logits)"),
        }
        del proto.metadata_props[:]
        for k, v in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = k, v
        proto.producer_name = "samplecnn"
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)
        diff_l = diff_s = None
        if check:
            diff_l, diff_s = check_onnx(model, tmp, seed=seed)
            if max(diff_l, diff_s) > atol:
                raise ValueError(f"{out}: ONNX Runtime and PyTorch disagree (max abs diff "
                                 f"logits {diff_l:.3g}, scores {diff_s:.3g} > {atol:g}); not written")
    return ExportReport(out, diff_l, diff_s, atol, cfg.n_tags, cfg.sample_rate, cfg.input_samples)


def check_onnx(model, onnx_path: str | os.PathLike, batch: int = 3, seed: int = 0) -> tuple[float, float]:
    """Max |ONNX Runtime - PyTorch| of (logits, scores) on random audio `(batch, input_samples)`."""
    import onnxruntime as ort
    import torch

    model = model.eval()
    x = np.random.default_rng(seed).uniform(-1, 1, (batch, model.config.input_samples)).astype(np.float32)
    with torch.inference_mode():
        logits = model(torch.from_numpy(x).unsqueeze(1)).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    o_logits, o_scores = sess.run(["logits", "scores"], {"audio": x})
    scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return float(np.abs(o_logits - logits).max()), float(np.abs(o_scores - scores).max())


def read_onnx_metadata(path: str | os.PathLike) -> dict:
    """`tags`, `sample_rate`, `input_samples`, `model_config` of a samplecnn ONNX export.

    Raises ValueError naming the file when it is not readable or not ours.
    """
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise ValueError(f"{path}: not a readable ONNX model ({type(err).__name__})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if "samplecnn.tags" not in props:
        raise ValueError(f"{path}: not a samplecnn ONNX export (no samplecnn.tags metadata); "
                         "export with `samplecnn export`")
    try:
        return {
            "tags": json.loads(props["samplecnn.tags"]),
            "sample_rate": int(props["samplecnn.sample_rate"]),
            "input_samples": int(props["samplecnn.input_samples"]),
            "model_config": json.loads(props.get("samplecnn.model_config", "null")),
            "format": int(props.get("samplecnn.format", "1")),
        }
    except (KeyError, ValueError) as err:
        raise ValueError(f"{path}: broken samplecnn metadata ({err})") from None
