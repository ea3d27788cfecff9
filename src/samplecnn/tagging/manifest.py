"""Catalog manifests: a CSV or Parquet file with a `path` column (other columns ignored).

Relative entries are relative to the manifest's folder, so a catalog listing and its
audio can move together. Entries are names as samplecnn writes them
(`samplecnn.paths.escape_path`: `\\xHH` for bytes that are not UTF-8, `\\\\` for a
backslash), so an output's `path` column is a manifest, whatever its names.

Read by both engines (`tagging.catalog`'s local engine and `tagging.ray_engine`); imports
neither.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

from samplecnn.paths import escape_path, path_key, unescape_path

__all__ = ["check_manifest", "resolve_manifest_path", "iter_manifest", "read_manifest"]

_PARQUET_SUFFIXES = (".parquet", ".pq")


def check_manifest(manifest: str | os.PathLike) -> str:
    """Validate a manifest before any work; returns its kind, "csv" or "parquet".

    Raises ValueError (one line, naming the file) when it is missing, of another kind, or
    has no `path` column.
    """
    name = escape_path(manifest)
    p = Path(manifest)
    if not p.is_file():
        raise ValueError(f"{name}: manifest not found")
    kind = "parquet" if p.suffix.lower() in _PARQUET_SUFFIXES else "csv" if p.suffix.lower() == ".csv" else None
    if kind is None:
        raise ValueError(f"{name}: a manifest is a .csv or .parquet file with a 'path' column")
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            columns = pq.read_schema(p).names
        else:
            import csv

            with open(p, newline="", encoding="utf-8") as f:
                columns = next(csv.reader(f), [])
    except Exception as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(f"{name}: unreadable manifest ({reason})") from None
    if "path" not in columns:
        shown = ", ".join(columns[:8]) + (", ..." if len(columns) > 8 else "")
        raise ValueError(f"{name}: the manifest has no 'path' column (columns: {shown or 'none'})")
    return kind


def resolve_manifest_path(path: str | None, base: str) -> str:
    """A manifest's `path` entry (escaped, see the module docstring) as a file name:
    relative entries are under `base` (the manifest's folder, absolute)."""
    path = "" if path is None else unescape_path(str(path))
    if not path:
        return path
    return path if os.path.isabs(path) else os.path.join(base, path)


def iter_manifest(manifest: str | os.PathLike, rows: int = 65_536, *, seen: set[str] | None = None,
                  warn: Callable[[str], None] | None = None) -> Iterator[list[str]]:
    """The file names a manifest lists, in its order, `rows` at a time (never the whole
    catalog in memory); relative entries are resolved against its folder; empty entries
    are kept so that they are reported as failed files.

    Duplicates are tagged once: a row naming a file (same `path_key`) already listed
    above it, or in `seen` (the `path_key`s of paths given beside the manifest; updated),
    is left out, and `warn` says how many were."""
    kind = check_manifest(manifest)
    seen = set() if seen is None else seen
    dropped = 0
    base = os.path.dirname(os.path.abspath(manifest))
    if kind == "parquet":
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(manifest).iter_batches(batch_size=rows, columns=["path"])
    else:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        batches = pacsv.open_csv(manifest, read_options=pacsv.ReadOptions(block_size=1 << 22),
                                 convert_options=pacsv.ConvertOptions(
                                     include_columns=["path"], column_types={"path": pa.string()}))
    for batch in batches:
        chunk = []
        for p in batch.column("path").to_pylist():
            p = resolve_manifest_path(p, base)
            key = path_key(p) if p else None
            if key is not None and key in seen:
                dropped += 1
                continue
            if key is not None:
                seen.add(key)
            chunk.append(p)
        yield chunk
    if dropped and warn is not None:
        warn(f"{escape_path(manifest)}: {dropped} duplicate row(s) name a file listed before; "
             "each file is tagged once")


def read_manifest(manifest: str | os.PathLike, *, seen: set[str] | None = None,
                  warn: Callable[[str], None] | None = None) -> list[str]:
    """Every file name a manifest lists (see `iter_manifest`: duplicates left out), as one list."""
    return [p for chunk in iter_manifest(manifest, seen=seen, warn=warn) for p in chunk]
