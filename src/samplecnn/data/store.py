"""The segment store: decoded clips on disk, read by training without decoding again.

A store is a folder (format documented in docs/data.md):

    meta.json     format, version, data set, sample rate, tags, counts, skipped files
    audio.i16     every clip concatenated, int16 little-endian, memory-mapped
    index.npz     offsets, lengths (samples), clip_ids, paths (escaped with
                  `samplecnn.paths.escape_path`), splits, padded, silent, durations (of
                  the decoded audio, seconds)
    labels.npy    uint8 (n_clips, n_tags)

A store is complete exactly when `meta.json` exists: `prepare` assembles it in
`<store>.partial/` and writes `meta.json` last, then renames the folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..paths import unescape_path
from .manifest import SPLITS

STORE_FORMAT = "samplecnn-segment-store"
STORE_VERSION = 1
#: int16 <-> float32 scale (symmetric, so a round trip of full-scale audio is exact).
INT16_SCALE = 32767.0


class SegmentStore:
    """Read-only view of a prepared store.

    Attributes: `tags` (list of names), `sample_rate`, `clip_ids`, `paths` (escaped file
    names, see `source_path`), `splits` (str arrays `(n_clips,)`), `labels` uint8 `(n_clips, n_tags)`, `lengths` and
    `offsets` int64 `(n_clips,)` (samples), `padded`, `silent` bool `(n_clips,)`,
    `durations` float64 `(n_clips,)`, `meta` (the parsed meta.json).

    The audio is memory-mapped lazily, once per process, so a store handed to DataLoader
    workers (fork or spawn) opens its own map in each worker.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not self.path.is_dir():
            raise ValueError(f"{self.path}: segment store not found")
        if not meta_path.is_file():
            raise ValueError(
                f"{self.path}: not a complete segment store (no meta.json; an interrupted "
                "`samplecnn prepare` leaves `<store>.partial`, rerun it to finish)"
            )
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{meta_path}: unreadable ({err})") from None
        if self.meta.get("format") != STORE_FORMAT:
            raise ValueError(f"{meta_path}: not a samplecnn segment store")
        if self.meta.get("version") != STORE_VERSION:
            raise ValueError(
                f"{meta_path}: store format version {self.meta.get('version')} is not "
                f"supported (this samplecnn reads version {STORE_VERSION})"
            )
        self.tags: list[str] = list(self.meta["tags"])
        self.sample_rate: int = int(self.meta["sample_rate"])
        self.dataset: str = str(self.meta.get("dataset", ""))
        with np.load(self.path / "index.npz", allow_pickle=False) as idx:
            self.offsets = idx["offsets"].astype(np.int64)
            self.lengths = idx["lengths"].astype(np.int64)
            self.clip_ids = idx["clip_ids"]
            self.paths = idx["paths"]
            self.splits = idx["splits"]
            self.padded = idx["padded"].astype(bool)
            self.silent = idx["silent"].astype(bool)
            self.durations = idx["durations"].astype(np.float64)
        self.labels = np.load(self.path / "labels.npy", allow_pickle=False)
        n = len(self.offsets)
        if self.labels.shape != (n, len(self.tags)):
            raise ValueError(f"{self.path}: labels.npy has shape {self.labels.shape}, "
                             f"expected {(n, len(self.tags))}")
        self._total = int(self.meta["total_samples"])
        expected_bytes = 2 * self._total
        actual = (self.path / "audio.i16").stat().st_size
        if actual != expected_bytes:
            raise ValueError(f"{self.path}: audio.i16 has {actual} bytes, "
                             f"expected {expected_bytes} (store damaged)")
        self._mm = None
        self._pid = None

    # Pickling drops the memory map; each process reopens it on first access.
    def __getstate__(self):
        state = dict(self.__dict__)
        state["_mm"] = None
        state["_pid"] = None
        return state

    @property
    def audio(self) -> np.memmap:
        """int16 `(total_samples,)` memory map of all clips (opened once per process)."""
        if self._mm is None or self._pid != os.getpid():
            self._mm = np.memmap(self.path / "audio.i16", dtype="<i2", mode="r",
                                 shape=(self._total,)) if self._total else np.zeros(0, "<i2")
            self._pid = os.getpid()
        return self._mm

    def __len__(self) -> int:
        return len(self.offsets)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s} {n}" for s, n in self.split_counts().items())
        return (f"SegmentStore({str(self.path)!r}, dataset={self.dataset!r}, "
                f"clips={len(self)} ({counts}), tags={len(self.tags)}, "
                f"sample_rate={self.sample_rate})")

    def split_counts(self) -> dict[str, int]:
        return {s: int(np.sum(self.splits == s)) for s in SPLITS}

    def split_indices(self, name: str | None) -> np.ndarray:
        """int64 clip indices of split `name` ("train", "valid", "test"; None: all)."""
        if name is None:
            return np.arange(len(self), dtype=np.int64)
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r} (expected one of {', '.join(SPLITS)})")
        return np.flatnonzero(self.splits == name).astype(np.int64)

    def source_path(self, i: int) -> str:
        """The audio file clip `i` was decoded from, as a name to open (`paths[i]` is its
        escaped, printable spelling: `samplecnn.paths.escape_path`)."""
        return unescape_path(str(self.paths[i]))

    def clip(self, i: int) -> np.ndarray:
        """int16 `(lengths[i],)` memmap view of clip `i`."""
        o = int(self.offsets[i])
        return self.audio[o : o + int(self.lengths[i])]

    def clip_float(self, i: int) -> np.ndarray:
        """float32 `(lengths[i],)` samples of clip `i` in [-1, 1]."""
        return self.clip(i).astype(np.float32) / np.float32(INT16_SCALE)

    def segment(self, i: int, start: int, length: int) -> np.ndarray:
        """float32 `(length,)` from clip `i` at `start`, zero-padded past the clip's end."""
        n = int(self.lengths[i])
        out = np.zeros(length, np.float32)
        start = max(0, int(start))
        stop = min(n, start + length)
        if stop > start:
            o = int(self.offsets[i])
            out[: stop - start] = self.audio[o + start : o + stop]
            out /= np.float32(INT16_SCALE)
        return out


def float_to_int16(x: np.ndarray) -> np.ndarray:
    """float32 `(n,)` in [-1, 1] -> int16 `(n,)` (clipped, rounded)."""
    y = np.clip(x, -1.0, 1.0) * INT16_SCALE
    return np.rint(y).astype("<i2")
