"""Tagging: audio files or arrays -> per-tag scores, taggrams and embeddings.

    from samplecnn.tagging import Tagger
    tagger = Tagger.from_checkpoint("model.ckpt")
    tagger.tag("song.mp3")            # {"tags": {...every tag...}, "top": [[tag, score], ...], ...}
    tagger.taggram("song.mp3")        # per-window scores with timestamps
    tagger.embed("song.mp3", layer="block7")

Exports are resolved lazily: the decoding workers import `samplecnn.tagging.sources`
and must not pay for torch.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "Tagger": "samplecnn.tagging.tagger",
    "Taggram": "samplecnn.tagging.tagger",
    "Embedding": "samplecnn.tagging.tagger",
    "FileResult": "samplecnn.tagging.tagger",
    "expand_paths": "samplecnn.tagging.sources",
    "iter_windows": "samplecnn.tagging.sources",
    "StreamInfo": "samplecnn.tagging.sources",
    "open_writer": "samplecnn.tagging.writers",
    "read_done_paths": "samplecnn.tagging.writers",
    "write_taggram": "samplecnn.tagging.writers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'samplecnn.tagging' has no attribute {name!r}")
