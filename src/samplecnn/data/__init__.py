"""Data sets, the segment store and segment datasets.

Readers turn a data set on disk into a `Manifest` (clip list, labels, splits);
`prepare_store` decodes it once into a `SegmentStore`; `SegmentDataset` draws training
and evaluation segments from the store without decoding again.
"""
from __future__ import annotations

from samplecnn.lazy import lazy_exports

# Names are resolved lazily: `samplecnn prepare --help` and the CLI's parser read the
# defaults of `prepare` without paying for torch (which `segments` imports).
_EXPORTS = {
    "read_csv_folder": "csvfolder",
    "SPLITS": "manifest", "Manifest": "manifest", "group_split": "manifest",
    "read_split_lists": "manifest",
    "MSD_TOP50": "msd", "msd_audio_path": "msd", "read_msd": "msd",
    "MTAT_BROKEN": "mtat", "MTAT_TOP50": "mtat", "read_mtat": "mtat",
    "DEFAULT_MIN_SAMPLES": "prepare", "DEFAULT_SAMPLE_RATE": "prepare",
    "PrepareReport": "prepare", "prepare_store": "prepare",
    "SegmentDataset": "segments",
    "SegmentStore": "store",
}

__all__ = sorted([*_EXPORTS, "prepare_mtat", "prepare_msd", "prepare_csv"])

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


_DECODE_KEYS = ("sample_rate", "min_samples", "workers", "overwrite", "progress", "log",
                "limit")


def _split_kwargs(kwargs: dict) -> tuple[dict, dict, int | None]:
    store_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in _DECODE_KEYS}
    limit = store_kw.pop("limit", None)
    return kwargs, store_kw, limit


def prepare_mtat(root, out, **kwargs):
    """`read_mtat(root, ...)` then `prepare_store(..., out)`; kwargs go to either.
    Returns the `PrepareReport`."""
    from .mtat import read_mtat
    from .prepare import prepare_store

    read_kw, store_kw, limit = _split_kwargs(dict(kwargs))
    return prepare_store(read_mtat(root, **read_kw).limit(limit), out, **store_kw)


def prepare_msd(root, out, **kwargs):
    """`read_msd(root, ...)` then `prepare_store(..., out)`; kwargs go to either.
    Returns the `PrepareReport`."""
    from .msd import read_msd
    from .prepare import prepare_store

    read_kw, store_kw, limit = _split_kwargs(dict(kwargs))
    return prepare_store(read_msd(root, **read_kw).limit(limit), out, **store_kw)


def prepare_csv(root, out, **kwargs):
    """`read_csv_folder(root, ...)` then `prepare_store(..., out)`; kwargs go to either.
    Returns the `PrepareReport`."""
    from .csvfolder import read_csv_folder
    from .prepare import prepare_store

    read_kw, store_kw, limit = _split_kwargs(dict(kwargs))
    return prepare_store(read_csv_folder(root, **read_kw).limit(limit), out, **store_kw)
