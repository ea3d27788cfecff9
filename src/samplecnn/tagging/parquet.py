"""Parquet output of `samplecnn tag --format parquet`: a folder of part files.

One row per file, columns (see docs/cluster.md for each one):

    path, duration_s, sample_rate, segments, <one float64 column per tag>, top, labels,
    error, warnings, model, source_sample_rate, source_channels, window_s, hop_s, last_window,
    aggregate

Rows are gathered `rows_per_part` at a time and each batch is written as one part file
(`part-<run>-<seq>.parquet`), atomically (`samplecnn.atomic`): a run that is killed
leaves whole part files only, and whatever it had not written yet is tagged again by
`--resume`. The folder has one writer at a time (`samplecnn.locks.exclusive`). A file can
appear in more than one part (a retried failed file, a worker that died after its rows
were sent); `read_output` keeps one row per path: a successful row over a failed one, and
otherwise the last written.

`path` is the record's, written by `Tagger.make_record` with `writers.record_path` (the
absolute path spelled by `samplecnn.paths.escape_path`, as every samplecnn output names
files); the tag names are in the schema metadata (`samplecnn.tags`, a JSON list) in the
model's order.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Iterable

from samplecnn.atomic import atomic_path
from samplecnn.locks import exclusive
from samplecnn.paths import escape_path, path_key, unescape_path

__all__ = ["ParquetOutput", "read_output", "done_keys", "tag_columns", "FIXED_COLUMNS"]

# Columns before the tag columns, and after them.
_HEAD = ["path", "duration_s", "sample_rate", "segments"]
_TAIL = ["top", "labels", "error", "warnings", "model", "source_sample_rate", "source_channels",
         "window_s", "hop_s", "last_window", "aggregate"]
FIXED_COLUMNS = _HEAD + _TAIL
_PART_GLOB = "part-*.parquet"


def tag_columns(tags: Iterable[str]) -> list[str]:
    """The column of each tag: its name, or `tag:<name>` when the name is a fixed column."""
    return [f"tag:{t}" if t in FIXED_COLUMNS else t for t in tags]


def _schema(tags: list[str]):
    import pyarrow as pa

    fields = [pa.field("path", pa.string(), nullable=False),
              pa.field("duration_s", pa.float64()),
              pa.field("sample_rate", pa.int32()),
              pa.field("segments", pa.int32())]
    fields += [pa.field(c, pa.float64()) for c in tag_columns(tags)]
    fields += [pa.field("top", pa.list_(pa.struct([("tag", pa.string()), ("score", pa.float64())]))),
               pa.field("labels", pa.list_(pa.string())),
               pa.field("error", pa.string()),
               pa.field("warnings", pa.list_(pa.string())),
               pa.field("model", pa.string()),
               pa.field("source_sample_rate", pa.int32()),
               pa.field("source_channels", pa.int32()),
               pa.field("window_s", pa.float64()),
               pa.field("hop_s", pa.float64()),
               pa.field("last_window", pa.string()),
               pa.field("aggregate", pa.string())]
    return pa.schema(fields, metadata={"samplecnn.tags": json.dumps(list(tags), ensure_ascii=False)})


def _parts(folder: Path) -> list[Path]:
    # Temporary files of atomic writes start with "." and never match.
    return sorted(folder.glob(_PART_GLOB))


def _check_folder(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{escape_path(folder)}: --format parquet writes a folder of part "
                         "files, and this is a file; choose a folder")


class ParquetOutput:
    """A writer with `write(record)` and `close()` (the records of `Tagger.make_record`,
    whose `path` is already escaped: `writers.record_path`); use as a context manager or
    call `close()`.

    `append=False` removes the folder's earlier part files first; `append=True` (resume)
    keeps them and checks that they hold the same tags.
    """

    def __init__(self, folder: str | os.PathLike, tags: Iterable[str], model: str,
                 append: bool = False, rows_per_part: int = 1000):
        if int(rows_per_part) < 1:
            raise ValueError(f"rows per part must be at least 1, got {rows_per_part}")
        self.folder = Path(folder)
        _check_folder(self.folder)
        self.tags = list(tags)
        self.columns = tag_columns(self.tags)
        self.model = str(model)
        self.rows_per_part = int(rows_per_part)
        self.schema = _schema(self.tags)
        self.rows: list[dict] = []
        self.written = 0
        self._run = f"{time.time_ns():020d}"
        self._seq = 0
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(exclusive(self.folder, "the Parquet output"))
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if append:
                _check_tags(self.folder, self.tags)
            else:
                for part in _parts(self.folder):
                    part.unlink()
        except BaseException:
            self._stack.close()
            raise

    def __enter__(self) -> "ParquetOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, rec: dict) -> None:
        scores = rec.get("tags") or {}
        row = {
            "path": rec["path"],  # already escaped by Tagger.make_record (writers.record_path)
            "duration_s": rec.get("duration_s"),
            "sample_rate": rec.get("sample_rate"),
            "segments": rec.get("segments"),
            "top": [{"tag": t, "score": float(s)} for t, s in rec.get("top") or []],
            "labels": None if rec.get("labels") is None else [str(t) for t in rec["labels"]],
            "error": rec.get("error"),
            "warnings": [str(w) for w in rec.get("warnings") or []],
            "model": self.model,
            "source_sample_rate": rec.get("source_sample_rate"),
            "source_channels": rec.get("source_channels"),
            "window_s": rec.get("window_s"),
            "hop_s": rec.get("hop_s"),
            "last_window": rec.get("last_window"),
            "aggregate": rec.get("aggregate"),
        }
        for tag, col in zip(self.tags, self.columns):
            row[col] = scores.get(tag)
        self.rows.append(row)
        if len(self.rows) >= self.rows_per_part:
            self.flush()

    def flush(self) -> None:
        """Write the gathered rows as one part file (atomically)."""
        if not self.rows:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        name = f"part-{self._run}-{self._seq:06d}.parquet"
        with atomic_path(self.folder / name) as tmp:
            pq.write_table(table, tmp)
        self._seq += 1
        self.written += len(self.rows)
        self.rows = []

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._stack.close()


def _check_tags(folder: Path, tags: list[str]) -> None:
    import pyarrow.parquet as pq

    for part in _parts(folder)[:1]:
        meta = pq.read_schema(part).metadata or {}
        found = json.loads(meta.get(b"samplecnn.tags", b"null"))
        if found != tags:
            raise ValueError(f"{escape_path(folder)}: the output holds scores for other tags "
                             f"({len(found or [])} tags, not this model's {len(tags)}); "
                             "write to another folder")


def _read(folder: Path, columns: list[str] | None = None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = _parts(folder)
    if not parts:
        return None
    tables = []
    for part in parts:
        try:
            tables.append(pq.read_table(part, columns=columns))
        except Exception as err:  # a part written by something else: name it
            raise ValueError(f"{escape_path(part)}: not a readable Parquet part ({err})") from None
    return pa.concat_tables(tables, promote_options="default")


def _keep(table) -> list[int]:
    """Row indices to keep: one per path key, a success over a failure, then the last."""
    paths = table.column("path").to_pylist()
    errors = table.column("error").to_pylist()
    best: dict[str, int] = {}
    for i, (p, e) in enumerate(zip(paths, errors)):
        key = path_key(unescape_path(p))
        j = best.get(key)
        if j is None or e is None or errors[j] is not None:
            best[key] = i
    return sorted(best.values())


def read_output(folder: str | os.PathLike):
    """The rows of a Parquet output folder as one `pyarrow.Table`, one row per path
    (deduplicated as the module docstring says), in the order they were written.
    Raises ValueError when the folder holds no part files."""
    folder = Path(folder)
    table = _read(folder)
    if table is None:
        raise ValueError(f"{escape_path(folder)}: no Parquet part files ({_PART_GLOB}) here")
    return table.take(_keep(table))


def done_keys(folder: str | os.PathLike) -> set[str]:
    """`paths.path_key`s of the files tagged successfully in an output folder (for
    `--resume`: failed files are tagged again); empty when there is no output yet."""
    folder = Path(folder)
    _check_folder(folder)
    if not folder.exists():
        return set()
    table = _read(folder, columns=["path", "error"])
    if table is None:
        return set()
    return {path_key(unescape_path(p))
            for p, e in zip(table.column("path").to_pylist(), table.column("error").to_pylist())
            if e is None}
