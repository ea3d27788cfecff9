"""`samplecnn serve`: the HTTP tagging service and its web page.

    from samplecnn.service import create_app
    app = create_app(Tagger.load("model.ckpt"), api_key="...")   # any ASGI server runs it

`create_app` is resolved lazily so that decoding worker processes, which import
`samplecnn.service.decode`, never pay for the web stack or torch.
"""
from __future__ import annotations

import importlib

__all__ = ["create_app", "STATIC_DIR"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("samplecnn.service.app"), name)
    raise AttributeError(f"module 'samplecnn.service' has no attribute {name!r}")
