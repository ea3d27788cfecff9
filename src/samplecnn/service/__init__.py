"""`samplecnn serve`: the HTTP tagging service and its web page.

    from samplecnn.service import create_app
    app = create_app(Tagger.load("model.ckpt"), api_key="...")   # any ASGI server runs it

`create_app` is resolved lazily so that decoding worker processes, which import
`samplecnn.service.decode`, never pay for the web stack or torch.
"""
from __future__ import annotations

from samplecnn.lazy import lazy_exports

_EXPORTS = {"create_app": "app", "STATIC_DIR": "app", "Service": "runtime"}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
