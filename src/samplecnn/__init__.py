"""samplecnn: music auto-tagging with sample-level deep CNNs on raw waveforms.

The public API is re-exported here lazily, so that `import samplecnn` stays cheap and a
command only pays for the parts it uses.
"""
from __future__ import annotations

from samplecnn.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "models",
    "list_models": "models",
    "model_from_config": "models",
    "get_model_config": "models",
    "ModelConfig": "models",
    "SampleCNN": "models",
    "load_model": "checkpoint",
    "save_checkpoint": "checkpoint",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
