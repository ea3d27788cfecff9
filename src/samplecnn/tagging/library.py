"""Tagging the items of a music library: the engine half of the beets plugin
(`beetsplug.samplecnn`), free of beets so that it is tested and reused on its own.

    from samplecnn.tagging.library import LibraryTagger, score_fields
    lt = LibraryTagger("model.ckpt", threshold=None, workers=1)
    lt.check()                            # the model file or name exists (no loading)
    for index, record in lt.tag(paths):   # the local engine of `samplecnn tag`
        record["labels"], record["tags"]
    lt.identity                           # "model.ckpt@1a2b3c4d5e6f": name and weights digest

Nothing here imports torch or ONNX Runtime at import time: the plugin is loaded by
every `beet` call (`beet ls` included) and the model only when items are tagged.
"""
from __future__ import annotations

import os
import re
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from samplecnn.paths import unique_name

__all__ = ["LibraryTagger", "score_fields", "genres_for", "merge_genres", "genre_map",
           "DEFAULT_GENRES", "FIELD_PREFIX", "LABELS_FIELD", "MODEL_FIELD", "FILE_TAG"]

FIELD_PREFIX = "samplecnn_"
#: The decided tags of an item (a list field), written to files as `FILE_TAG`.
LABELS_FIELD = "samplecnn_labels"
#: What tagged the item: "<model name>@<first 12 hex digits of the weights' sha256>".
MODEL_FIELD = "samplecnn_model"
FILE_TAG = "SAMPLECNN_TAGS"
_DIGEST_CHARS = 12

#: The model's tags -> beets genres, for the MagnaTagATune and Million Song Dataset tag
#: sets (`samplecnn.data.mtat.MTAT_TOP50`, `samplecnn.data.msd.MSD_TOP50`). Keys are
#: matched case-insensitively; instruments, moods, decades and voices are not genres.
DEFAULT_GENRES: dict[str, str] = {
    # MagnaTagATune
    "classical": "Classical", "classic": "Classical", "techno": "Techno",
    "electronic": "Electronic", "rock": "Rock", "ambient": "Ambient", "indian": "Indian",
    "opera": "Opera", "pop": "Pop", "new age": "New Age", "dance": "Dance",
    "country": "Country", "metal": "Metal", "choral": "Choral",
    # Million Song Dataset (Last.fm)
    "alternative": "Alternative", "indie": "Indie", "alternative rock": "Alternative Rock",
    "jazz": "Jazz", "chillout": "Chillout", "classic rock": "Classic Rock", "soul": "Soul",
    "indie rock": "Indie Rock", "electronica": "Electronica", "folk": "Folk", "punk": "Punk",
    "blues": "Blues", "hard rock": "Hard Rock", "experimental": "Experimental",
    "hip-hop": "Hip-Hop", "easy listening": "Easy Listening", "funk": "Funk",
    "electro": "Electro", "heavy metal": "Heavy Metal", "progressive rock": "Progressive Rock",
    "rnb": "R&B", "indie pop": "Indie Pop", "house": "House",
}


# -- field names ------------------------------------------------------------------------


def _slug(tag: str) -> str:
    ascii_ = unicodedata.normalize("NFKD", tag).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^0-9a-z]+", "_", ascii_.lower()).strip("_")


def score_fields(tags: Sequence[str]) -> dict[str, str]:
    """Tag names -> the item fields holding their scores: `samplecnn_` + the name in
    lower-case ASCII letters, digits and `_` ("no vocals" -> `samplecnn_no_vocals`,
    "Hip-Hop" -> `samplecnn_hip_hop`). Names that collide (with each other, or with the
    plugin's own `samplecnn_labels` / `samplecnn_model`) get `_2`, `_3`, ... in tag order,
    so every tag keeps its own field and the same tag list always gives the same names."""
    taken = {LABELS_FIELD, MODEL_FIELD}
    out: dict[str, str] = {}
    for i, tag in enumerate(tags):
        out[tag] = unique_name(FIELD_PREFIX + (_slug(str(tag)) or f"tag{i}"), taken)
    return out


# -- genres -----------------------------------------------------------------------------


def genre_map(setting) -> dict[str, str] | None:
    """The `genres` setting -> tag (case-folded) -> genre, or None when off.

    False/None: off. True: `DEFAULT_GENRES`. A mapping: the default map with the user's
    entries over it (an empty or null genre drops a tag from the map).
    """
    if setting is None or setting is False:
        return None
    mapping = {k.casefold(): v for k, v in DEFAULT_GENRES.items()}
    if setting is True:
        return mapping
    if not isinstance(setting, Mapping):
        raise ValueError(f"genres must be yes, no or a map of tag: genre, got {setting!r}")
    for tag, genre in setting.items():
        if genre is not None and not isinstance(genre, str):
            raise ValueError(f"genres: the genre of {tag!r} must be text, got {genre!r}")
        if genre is None or not genre.strip():
            mapping.pop(str(tag).casefold(), None)
        else:
            mapping[str(tag).casefold()] = genre.strip()
    return mapping


def genres_for(labels: Iterable[str], mapping: Mapping[str, str]) -> list[str]:
    """The genres of decided tags, in the labels' order (highest score first), each once."""
    out: list[str] = []
    for tag in labels:
        genre = mapping.get(str(tag).casefold())
        if genre and genre.casefold() not in {g.casefold() for g in out}:
            out.append(genre)
    return out


def merge_genres(existing: Sequence[str] | None, new: Sequence[str], replace: bool) -> list[str]:
    """An item's genres after tagging: `new` appended to `existing` (those it lacks,
    compared case-insensitively), or `new` instead of them with `replace` (when `new` is
    not empty: a model that maps to no genre leaves the genres alone)."""
    existing = [g for g in (existing or []) if g]
    if replace and new:
        return list(new)
    have = {g.casefold() for g in existing}
    return existing + [g for g in new if g.casefold() not in have]


# -- the model --------------------------------------------------------------------------


class LibraryTagger:
    """A model given by file (checkpoint, ONNX, int8 ONNX) or public weights' name,
    loaded on first use and kept: one load per command or import session.

    `threshold` (one for every tag) overrides the model's stored thresholds;
    `at_least_one` labels a file's top tag when none passes. Files go through
    `Tagger.tag_files`, the local engine of `samplecnn tag` (decoding in `workers`
    processes, windows of many files batched `batch_size` at a time).
    """

    def __init__(self, model: str | os.PathLike, *, threshold: float | None = None,
                 at_least_one: bool = False, batch_size: int = 16, workers: int = 1,
                 device: str = "cpu"):
        from samplecnn.options import ScoringOptions, check_int

        if model is None or not str(model).strip():
            raise ValueError("no model: set samplecnn.model to a checkpoint, an ONNX file "
                             "or public weights' name (see `samplecnn pretrained list`)")
        self.spec = os.fspath(model)
        # How files are scored and decided: `samplecnn tag`'s defaults, with the threshold
        # override and the at-least-one rule (validated here, before any file is read).
        self.options = ScoringOptions(threshold=threshold, at_least_one=bool(at_least_one))
        self.batch_size = check_int(batch_size, "samplecnn.batch_size", low=1)
        self.workers = check_int(workers, "samplecnn.workers", low=0)
        self.device = str(device)
        self._path: Path | None = None
        self._tagger = None
        self._identity: str | None = None

    # -- what the model is (no loading) ------------------------------------------------
    @property
    def pretrained(self) -> bool:
        """Whether `model` names public weights rather than a file."""
        return not os.path.exists(self.spec) and os.sep not in self.spec \
            and not self.spec.lower().endswith((".ckpt", ".pt", ".onnx"))

    def check(self) -> None:
        """Raise ValueError (one line) when the model file is missing or the name unknown;
        nothing is loaded or downloaded."""
        if self.pretrained:
            from samplecnn.pretrained import get_pretrained

            get_pretrained(self.spec)
        elif not os.path.isfile(self.spec):
            raise ValueError(f"{self.spec}: model file not found (samplecnn.model)")

    @property
    def name(self) -> str:
        return self.spec if self.pretrained else os.path.basename(self.spec.rstrip("/\\"))

    def path(self) -> Path:
        """The model file (public weights are downloaded and converted on first use)."""
        if self._path is None:
            self.check()
            if self.pretrained:
                from samplecnn.pretrained import resolve

                self._path = Path(resolve(self.spec))
            else:
                self._path = Path(self.spec)
        return self._path

    @property
    def identity(self) -> str:
        """`<name>@<sha256 of the weights file, 12 hex digits>`: what tagged an item."""
        if self._identity is None:
            from samplecnn.pretrained import _sha256

            self._identity = f"{self.name}@{_sha256(self.path())[:_DIGEST_CHARS]}"
        return self._identity

    # -- loading and tagging -----------------------------------------------------------
    @property
    def tagger(self):
        """The loaded `Tagger` (loaded once, on first use); ValueError if it decides nothing:
        a model without stored thresholds needs `threshold`."""
        if self._tagger is None:
            from samplecnn.tagging.tagger import Tagger

            tagger = Tagger.load(self.path(), backend=self.options.backend, device=self.device,
                                 batch_size=self.batch_size)
            if self.options.threshold is None and tagger.thresholds is None:
                raise ValueError(
                    f"{self.spec}: the model carries no thresholds, so it decides no labels: "
                    "set samplecnn.threshold (one for every tag), or fit them with "
                    "`samplecnn thresholds`")
            self._tagger = tagger
        return self._tagger

    @property
    def tags(self) -> list[str]:
        return self.tagger.tags

    def tag(self, paths: Sequence[str], workers: int | None = None) -> Iterator[tuple[int, dict]]:
        """`(index into paths, record)` as files finish (completion order); a failed file's
        record has its `error` set. Records carry `labels` (the one decision rule).
        `workers` overrides the decoding processes (0: decode in this thread)."""
        tagger = self.tagger
        workers = min(self.workers if workers is None else workers, len(paths))
        for res in tagger.tag_files(list(paths), self.options, workers=workers,
                                    batch_size=self.batch_size):
            yield res.index, res.record
