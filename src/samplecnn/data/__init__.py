"""Data sets, the segment store and segment datasets.

Readers turn a data set on disk into a `Manifest` (clip list, labels, splits);
`prepare_store` decodes it once into a `SegmentStore`; `SegmentDataset` draws training
and evaluation segments from the store without decoding again.
"""
from __future__ import annotations

from .csvfolder import read_csv_folder
from .manifest import SPLITS, Manifest, group_split, read_split_lists
from .msd import MSD_TOP50, msd_audio_path, read_msd
from .mtat import MTAT_BROKEN, MTAT_TOP50, read_mtat
from .prepare import (DEFAULT_MIN_SAMPLES, DEFAULT_SAMPLE_RATE, PrepareReport,
                      prepare_store)
from .segments import SegmentDataset
from .store import SegmentStore

__all__ = [
    "DEFAULT_MIN_SAMPLES", "DEFAULT_SAMPLE_RATE", "MSD_TOP50", "MTAT_BROKEN", "MTAT_TOP50",
    "Manifest", "PrepareReport", "SPLITS", "SegmentDataset", "SegmentStore", "group_split",
    "msd_audio_path", "prepare_mtat", "prepare_msd", "prepare_csv", "prepare_store",
    "read_csv_folder", "read_msd", "read_mtat", "read_split_lists",
]

_DECODE_KEYS = ("sample_rate", "min_samples", "workers", "overwrite", "progress", "log",
                "limit")


def _split_kwargs(kwargs: dict) -> tuple[dict, dict, int | None]:
    store_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in _DECODE_KEYS}
    limit = store_kw.pop("limit", None)
    return kwargs, store_kw, limit


def prepare_mtat(root, out, **kwargs) -> PrepareReport:
    """`read_mtat(root, ...)` then `prepare_store(..., out)`; kwargs go to either."""
    read_kw, store_kw, limit = _split_kwargs(dict(kwargs))
    return prepare_store(read_mtat(root, **read_kw).limit(limit), out, **store_kw)


def prepare_msd(root, out, **kwargs) -> PrepareReport:
    """`read_msd(root, ...)` then `prepare_store(..., out)`; kwargs go to either."""
    read_kw, store_kw, limit = _split_kwargs(dict(kwargs))
    return prepare_store(read_msd(root, **read_kw).limit(limit), out, **store_kw)


def prepare_csv(root, out, **kwargs) -> PrepareReport:
    """`read_csv_folder(root, ...)` then `prepare_store(..., out)`; kwargs go to either."""
    read_kw, store_kw, limit = _split_kwargs(dict(kwargs))
    return prepare_store(read_csv_folder(root, **read_kw).limit(limit), out, **store_kw)
