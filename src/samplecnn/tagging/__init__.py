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

from samplecnn.lazy import lazy_exports

_EXPORTS = {
    "Tagger": "tagger",
    "Taggram": "tagger",
    "Embedding": "tagger",
    "FileResult": "tagger",
    "run_batched": "tagger",
    "expand_paths": "sources",
    "iter_windows": "sources",
    "window_messages": "sources",
    "StreamInfo": "sources",
    "open_writer": "writers",
    "read_done_paths": "writers",
    "write_taggram": "writers",
    "tag_catalog": "catalog",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
