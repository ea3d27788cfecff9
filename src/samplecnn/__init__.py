"""samplecnn: music auto-tagging with sample-level deep CNNs on raw waveforms.

The public API is re-exported here lazily, so that `import samplecnn` stays cheap and a
command only pays for the parts it uses.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "samplecnn.models",
    "list_models": "samplecnn.models",
    "model_from_config": "samplecnn.models",
    "get_model_config": "samplecnn.models",
    "ModelConfig": "samplecnn.models",
    "SampleCNN": "samplecnn.models",
    "load_model": "samplecnn.checkpoint",
    "save_checkpoint": "samplecnn.checkpoint",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'samplecnn' has no attribute {name!r}")
