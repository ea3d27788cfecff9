"""Catalog outputs, shared by both engines: the writer of each output format, resume's
done set, and the loop that writes records as they come (`write_records`).

Imports neither engine (`tagging.catalog`, `tagging.ray_engine`): both import it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Sequence

__all__ = ["CatalogRun", "OUTPUT_FORMATS", "CATALOG_FORMATS", "done_keys", "open_output", "model_name",
           "write_records"]

# Every output format of `samplecnn tag`; a catalog run on Ray writes the appendable,
# resumable ones (one row or line per file, written as files finish).
OUTPUT_FORMATS = ("json", "jsonl", "csv", "parquet")
CATALOG_FORMATS = ("parquet", "jsonl")


@dataclass
class CatalogRun:
    """What a run did: `total` files asked for, `skipped` (already in the output, with
    `resume`), `tagged` (records written, failed ones included) and `failed`."""

    total: int
    skipped: int
    tagged: int
    failed: int



def done_keys(fmt: str, output: str | os.PathLike) -> set[str]:
    """`path_key`s already tagged in `output` (for `resume`); prepares a JSONL output."""
    if fmt == "parquet":
        from .parquet import done_keys as parquet_done

        return parquet_done(output)
    if fmt == "jsonl":
        from .writers import read_done_paths

        return read_done_paths(output)
    raise ValueError(f"resume needs a parquet or jsonl output, not {fmt!r}")


def open_output(fmt: str, output: str | os.PathLike | None, tags: list[str], model: str, append: bool,
                order: Sequence[str] = (), rows_per_part: int = 1000):
    """A writer (`write(record)`, `close()`) for an output: a Parquet folder, a JSONL, JSON
    or CSV file (`output` None: stdout, not for Parquet). JSON and CSV list files in
    `order` (the input order), whatever order they finish in."""
    if fmt == "parquet":
        from .parquet import ParquetOutput

        if output is None:
            raise ValueError("--format parquet writes a folder of part files: give --output DIR")
        return ParquetOutput(output, tags, model, append=append, rows_per_part=rows_per_part)
    if fmt in OUTPUT_FORMATS:
        from .writers import open_writer

        return open_writer(fmt, None if output is None else os.fspath(output), tags, list(order),
                           append=append)
    raise ValueError(f"an output format is one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")


def model_name(model: str | os.PathLike) -> str:
    """The `model` column: the model file's name (no folders)."""
    return os.path.basename(os.fspath(model).rstrip("/\\")) or os.fspath(model)


def write_records(records: Iterable[dict], writer, on_record=None) -> tuple[int, int]:
    """Write records as they come (every engine's last step); returns (written, failed).
    The writer is closed however the loop ends, so what was written is kept."""
    tagged = failed = 0
    try:
        for rec in records:
            writer.write(rec)
            tagged += 1
            failed += rec.get("error") is not None
            if on_record is not None:
                on_record(rec)
    finally:
        writer.close()
    return tagged, failed
