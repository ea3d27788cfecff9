"""Inference: the runners and the one batching loop every scorer shares.

- `batching.score_messages`: windows of many sources (files, store clips, service
  requests) batched into one model call, results handed back per source (NumPy only);
- `runners`: `optimize_for_inference(model, backend)`, `load_runner(path)`,
  `OrtRunner` (ONNX Runtime), `TorchRunner` (the fused twin or the plain model);
- `onnx`: the one exporter (`export_graph`, cached per model) and session helper.

Names are resolved lazily: decoding workers import `batching` and must not pay for torch.
"""
from __future__ import annotations

from samplecnn.lazy import lazy_exports

_EXPORTS = {
    "IDLE": "batching", "Scored": "batching", "score_messages": "batching",
    "BACKENDS": "backends", "PRECISIONS": "backends", "BACKEND_ALIASES": "backends", "Runner": "runners", "OrtRunner": "runners",
    "TorchRunner": "runners", "optimize_for_inference": "runners", "resolve_backend": "runners",
    "load_runner": "runners",
    "check_device": "runners",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
