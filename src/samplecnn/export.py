"""`samplecnn export`: a checkpoint -> an ONNX file (raw audio in, tag scores out).

The file is the "scores" graph of the one exporter (`samplecnn.inference.onnx`): input
`audio` float32 `(batch, input_samples)` at the checkpoint's rate (dynamic batch), outputs
`logits` and `scores` (sigmoid), both `(batch, n_tags)`; tag names, rate, segment length
and the model config travel in its metadata (see that module). The mel front end
(nnAudio's STFT as a fixed convolution) exports like the raw one. The export is checked
against PyTorch with ONNX Runtime before it is written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .inference.onnx import ONNX_OPSET, export_graph, session

__all__ = ["export_onnx", "check_onnx", "ExportReport", "ONNX_OPSET"]


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
    model = _load(model_or_path).cpu()
    cfg = model.config
    data = export_graph(model, "scores", opset)
    out = Path(out)
    # The file appears only once it is complete and, with `check`, verified.
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        diff_l = diff_s = None
        if check:
            diff_l, diff_s = check_onnx(model, tmp, seed=seed)
            if max(diff_l, diff_s) > atol:
                raise ValueError(f"{out}: ONNX Runtime and PyTorch disagree (max abs diff "
                                 f"logits {diff_l:.3g}, scores {diff_s:.3g} > {atol:g}); not written")
    return ExportReport(out, diff_l, diff_s, atol, cfg.n_tags, cfg.sample_rate, cfg.input_samples)


def check_onnx(model, onnx_path: str | os.PathLike, batch: int = 3, seed: int = 0) -> tuple[float, float]:
    """Max |ONNX Runtime - PyTorch| of (logits, scores) on random audio `(batch, input_samples)`."""
    import torch

    model = model.eval()
    x = np.random.default_rng(seed).uniform(-1, 1, (batch, model.config.input_samples)).astype(np.float32)
    with torch.inference_mode():
        logits = model(torch.from_numpy(x).unsqueeze(1)).numpy()
    o_logits, o_scores = session(onnx_path).run(["logits", "scores"], {"audio": x})
    scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return float(np.abs(o_logits - logits).max()), float(np.abs(o_scores - scores).max())
