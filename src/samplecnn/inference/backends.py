"""The names of what can run a model, in one place (stdlib only).

`samplecnn.options` (the scoring options, which every scorer imports, torch-free) and
`inference.runners` (which builds the runners) both read them here, so the options never
import the runners and no import circle forms.
"""
from __future__ import annotations

__all__ = ["BACKENDS", "PRECISIONS", "BACKEND_ALIASES"]

BACKENDS = ("auto", "onnxruntime", "torch", "plain")
PRECISIONS = ("fp32", "bf16")
# Other names users type for a backend (`--backend onnx`), accepted wherever one is chosen.
BACKEND_ALIASES = {"onnx": "onnxruntime"}
