"""Tag a catalog: inputs or a manifest -> one output, on the local engine or on Ray.

    from samplecnn.tagging.catalog import tag_catalog
    run = tag_catalog("model.ckpt", manifest="catalog.parquet", output="tags/",
                      engine="ray", num_workers=8, gpus_per_worker=1)
    run.failed        # files that failed (each is a row with an `error`)

A **manifest** is a CSV or Parquet file with a `path` column (other columns are
ignored); relative paths are relative to the manifest's folder, so a catalog listing and
its audio can move together. Entries are names as samplecnn writes them
(`samplecnn.paths.escape_path`: `\\xHH` for bytes that are not UTF-8, `\\\\` for a
backslash), so an output's `path` column is a manifest, whatever its names. On Ray the
manifest is read by the cluster (the driver never walks or lists the catalog).

Both engines score files the same way (the one window grid, runner, batching loop and
`Tagger.make_record`), so the same files and options give the same records.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from samplecnn.paths import escape_path, path_key, unescape_path

__all__ = ["CatalogRun", "tag_catalog", "read_manifest", "iter_manifest", "check_manifest", "resolve_manifest_path",
           "ENGINES", "OUTPUT_FORMATS"]

ENGINES = ("local", "ray")
OUTPUT_FORMATS = ("parquet", "jsonl")
_PARQUET_SUFFIXES = (".parquet", ".pq")


@dataclass
class CatalogRun:
    """What a run did: `total` files asked for, `skipped` (already in the output, with
    `resume`), `tagged` (records written, failed ones included) and `failed`."""

    total: int
    skipped: int
    tagged: int
    failed: int


# -- manifests ----------------------------------------------------------------------------


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


# -- outputs ------------------------------------------------------------------------------


def done_keys(fmt: str, output: str | os.PathLike) -> set[str]:
    """`path_key`s already tagged in `output` (for `resume`); prepares a JSONL output."""
    if fmt == "parquet":
        from .parquet import done_keys as parquet_done

        return parquet_done(output)
    if fmt == "jsonl":
        from .writers import read_done_paths

        return read_done_paths(output)
    raise ValueError(f"resume needs a parquet or jsonl output, not {fmt!r}")


def open_output(fmt: str, output: str | os.PathLike, tags: list[str], model: str, append: bool,
                rows_per_part: int = 1000):
    """A writer (`write(record)`, `close()`) for a catalog output: a Parquet folder or a
    JSONL file."""
    if fmt == "parquet":
        from .parquet import ParquetOutput

        return ParquetOutput(output, tags, model, append=append, rows_per_part=rows_per_part)
    if fmt == "jsonl":
        from .writers import open_writer

        return open_writer("jsonl", os.fspath(output), tags, [], append=append)
    raise ValueError(f"a catalog output is one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")


def model_name(model: str | os.PathLike) -> str:
    """The `model` column: the model file's name (no folders)."""
    return os.path.basename(os.fspath(model).rstrip("/\\")) or os.fspath(model)


# -- the entry point ----------------------------------------------------------------------


def tag_catalog(
    model: str | os.PathLike,
    inputs: Sequence[str | os.PathLike] = (),
    *,
    manifest: str | os.PathLike | None = None,
    output: str | os.PathLike,
    fmt: str = "parquet",
    engine: str = "local",
    resume: bool = False,
    hop: float | None = None,
    aggregate: str = "mean",
    top_k: int = 5,
    last: str = "pad",
    batch_size: int = 16,
    backend: str = "auto",
    device: str = "cpu",
    workers: int = 1,
    ray_address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float | None = None,
    files_per_batch: int = 4,
    rows_per_part: int = 1000,
    on_record: Callable[[dict], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> CatalogRun:
    """Tag `inputs` (files, folders, globs) and/or the files a `manifest` lists into
    `output` (a Parquet folder, or a JSONL file with `fmt="jsonl"`).

    `engine="local"`: this process scores, `workers` processes decode. `engine="ray"`:
    Ray Data decodes in CPU tasks and scores in `num_workers` actors (each with
    `gpus_per_worker` GPUs, `cpus_per_worker` CPUs), on the cluster at `ray_address` (or a
    Ray instance already started in this process, or a new local one). `resume` skips the
    files `output` already holds without an error. `on_record(record)` sees every record
    as it is written. Raises ValueError for unusable options or inputs; failed files are
    records with an `error` and counted in `CatalogRun.failed`.
    """
    from .sources import expand_paths

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"a catalog output is one of {', '.join(OUTPUT_FORMATS)}, got {fmt!r}")
    if top_k < 0:
        raise ValueError(f"top-k must be 0 or more, got {top_k}")
    if not inputs and manifest is None:
        raise ValueError("nothing to tag: give paths or a manifest")
    paths = list(expand_paths(inputs, warn=warn)) if inputs else []
    if manifest is not None:
        check_manifest(manifest)
    if engine == "ray":
        from .ray_engine import run_ray

        return run_ray(model, paths, manifest=manifest, output=output, fmt=fmt, resume=resume,
                       hop=hop, aggregate=aggregate, top_k=top_k, last=last, batch_size=batch_size,
                       backend=backend, ray_address=ray_address, num_workers=num_workers,
                       gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker,
                       files_per_batch=files_per_batch, rows_per_part=rows_per_part,
                       on_record=on_record, warn=warn)
    from .tagger import Tagger

    if manifest is not None:
        paths += read_manifest(manifest, seen={path_key(p) for p in paths}, warn=warn)
    tagger = Tagger.load(model, backend=backend, device=device, batch_size=batch_size)
    tagger.grid(hop, last)  # validate before any work
    skipped, todo = 0, paths
    if resume:
        done = done_keys(fmt, output)
        todo = [p for p in paths if path_key(p) not in done]
        skipped = len(paths) - len(todo)
    records = (res.record for res in tagger.tag_files(
        todo, hop=hop, aggregate=aggregate, top_k=top_k, workers=workers,
        batch_size=batch_size, last=last))
    writer = open_output(fmt, output, tagger.tags, model_name(model), append=resume,
                         rows_per_part=rows_per_part)
    tagged, failed = write_records(records, writer, on_record)
    return CatalogRun(len(paths), skipped, tagged, failed)


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
