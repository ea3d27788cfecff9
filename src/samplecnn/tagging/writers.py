"""Output writers for `samplecnn tag`: JSON, JSONL, CSV, taggram files, resume.

- JSON: one list of records, written atomically when the run ends, in input order.
- JSONL: one record per line, streamed as files finish; each line is written with a
  single `write` and flushed, so a killed run leaves whole lines (plus at most one torn
  last line, which `--resume` discards).
- CSV: one row per file, one column per tag (empty for failed files); atomic, in input
  order.

Every record names its file by `record_path`: the absolute, normalised path in the
reversible text spelling of `samplecnn.paths.escape_path`, so any name a POSIX file
system allows is written (as UTF-8) and found again by `--resume` from any working
directory.
"""
from __future__ import annotations

import csv
import io
import json
import os
import stat
import sys
from pathlib import Path
from typing import IO, Iterable

import numpy as np

from samplecnn.atomic import OutputError, resolve_output, save_figure, write_text
from samplecnn.paths import escape_path, path_key, unescape_path, unique_name

__all__ = ["open_writer", "read_done_paths", "write_taggram", "path_key", "record_path",
           "record_key", "FORMATS"]

FORMATS = ("json", "jsonl", "csv")
CSV_FIELDS = ["path", "duration_s", "sample_rate", "segments", "error", "labels"]
# `labels` in a CSV cell: the decided tags joined as the data CSVs join tags.
LABEL_SEPARATOR = ";"


def record_path(path: str | os.PathLike) -> str:
    """The `path` a record carries for a file: absolute, normalised, escaped
    (`samplecnn.paths.escape_path`); always valid UTF-8 on one line. An empty path (a
    blank manifest row) stays empty rather than naming the working directory."""
    if not os.fspath(path):
        return ""
    return escape_path(path_key(path))


def record_text(text: str) -> str:
    """A message (`error`, `warnings`) as UTF-8-safe text: bytes of an undecodable file
    name that reached it (an OS error quoting the name) become `\\xHH`."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def record_key(text: str) -> str:
    """The `path_key` of the file a record's `path` names (the inverse of `record_path`,
    also for records written with a relative path: resolved against this directory)."""
    return path_key(unescape_path(text))

def _dumps(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False, allow_nan=False)


class _Writer:
    def __init__(self, output: str | None, tags: list[str], order: list[str]):
        self.output = output
        self.tags = tags
        self.rank = {record_path(p): i for i, p in enumerate(order)}
        self.records: list[dict] = []

    def write(self, rec: dict) -> None:
        self.records.append(rec)

    def _sorted(self) -> list[dict]:
        return sorted(self.records, key=lambda r: self.rank.get(r["path"], len(self.rank)))

    def close(self) -> None:
        text = self.render(self._sorted())
        if self.output is None:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            write_text(self.output, text)

    def render(self, records: list[dict]) -> str:
        raise NotImplementedError


class _JsonWriter(_Writer):
    def render(self, records):
        return json.dumps(records, ensure_ascii=False, allow_nan=False, indent=2) + "\n"


class _CsvWriter(_Writer):
    def render(self, records):
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_FIELDS + self.tags)
        for r in records:
            row = ["" if r.get(k) is None else r.get(k) for k in CSV_FIELDS]
            row[CSV_FIELDS.index("labels")] = LABEL_SEPARATOR.join(r.get("labels") or [])
            scores = r.get("tags") or {}
            row += [scores.get(t, "") for t in self.tags]
            w.writerow(row)
        return buf.getvalue()


class _JsonlWriter:
    """Streams records to `output` (a file, or a character device or pipe written
    through); a write error is an `OutputError` naming the output, and fsync is skipped
    where the file type has none."""

    def __init__(self, output: str | None, append: bool):
        self.output = output
        self.failed = False
        if output is None:
            self.f: IO[str] = sys.stdout
            self.own = False
        else:
            resolve_output(output)  # refuses sockets, folders, symlink loops
            try:
                Path(output).parent.mkdir(parents=True, exist_ok=True)
                self.f = open(output, "a" if append else "w", encoding="utf-8")
            except OSError as err:
                raise OutputError(f"{escape_path(output)}: cannot write: {err.strerror or err}") from None
            self.own = True

    def _fail(self, err: OSError) -> OutputError:
        self.failed = True
        return OutputError(f"{escape_path(self.output or '<stdout>')}: cannot write: "
                           f"{err.strerror or err}")

    def write(self, rec: dict) -> None:
        try:
            self.f.write(_dumps(rec) + "\n")  # one write per record: never half a record
            self.f.flush()
        except OSError as err:
            raise self._fail(err) from None

    def close(self) -> None:
        if not self.own:
            return
        try:
            if not self.failed:
                self.f.flush()
                if stat.S_ISREG(os.fstat(self.f.fileno()).st_mode):
                    os.fsync(self.f.fileno())  # devices and pipes have nothing to sync
        except OSError as err:
            raise self._fail(err) from None
        finally:
            try:
                self.f.close()
            except OSError:
                pass  # the failure was reported above (buffered data of a failed write)


def open_writer(fmt: str, output: str | None, tags: list[str], order: list[str], append: bool = False):
    """A writer with `write(record)` and `close()`; `order` is the input order of paths."""
    if fmt == "jsonl":
        return _JsonlWriter(output, append)
    if fmt == "json":
        return _JsonWriter(output, tags, order)
    if fmt == "csv":
        return _CsvWriter(output, tags, order)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def read_done_paths(path: str | os.PathLike) -> set[str]:
    """Prepare a JSONL output for `--resume`; returns the keys of the files already done.

    Done = a whole line with `"error": null`. Failed files are retried: their lines are
    dropped, as is a torn last line from a killed run; the file is rewritten atomically
    with the kept lines only, so that the appended results leave one line per file.
    Keys are `path_key`s of the unescaped record paths (`record_key`): compare them with
    `path_key(input)`, whatever the working directory of either run.
    """
    path = Path(path)
    if not path.exists():
        return set()
    kept: list[str] = []
    done: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn by a kill mid-write
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(rec, dict) or "path" not in rec:
                continue
            if rec.get("error") is None:
                key = record_key(str(rec["path"]))
                if key not in done:
                    done.add(key)
                    kept.append(line)
    write_text(path, "".join(kept))
    return done


def taggram_names(paths: Iterable[str]) -> dict[str, str]:
    """Unique, readable file stems for taggram outputs (`dir/x.mp3` -> `dir__x.mp3`)."""
    paths = list(paths)
    if not paths:
        return {}
    absolute = [path_key(p) for p in paths]
    try:
        root = os.path.commonpath([os.path.dirname(a) for a in absolute])
    except ValueError:
        root = ""
    names: dict[str, str] = {}
    used: set[str] = set()
    for p, a in zip(paths, absolute):
        rel = os.path.relpath(a, root) if root else os.path.basename(a)
        names[p] = unique_name(rel.replace(os.sep, "__").replace("/", "__"), used, sep=".")
    return names


def write_taggram(taggram, directory: str | os.PathLike, stem: str, image: bool = True) -> list[Path]:
    """Write `<stem>.taggram.csv` (start_s, end_s, one column per tag) and
    `<stem>.taggram.png` (tags x time) into `directory`, atomically. Returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["start_s", "end_s"] + list(taggram.tags))
    for s, e, row in zip(taggram.start_s, taggram.end_s, taggram.scores):
        w.writerow([f"{s:.6f}", f"{e:.6f}"] + [f"{v:.6f}" for v in row])
    csv_path = directory / f"{stem}.taggram.csv"
    write_text(csv_path, buf.getvalue())
    out = [csv_path]
    if image:
        png = directory / f"{stem}.taggram.png"
        _plot_taggram(taggram, png, title=escape_path(stem))
        out.append(png)
    return out


def _plot_taggram(taggram, path: Path, title: str = "") -> None:
    from matplotlib.figure import Figure  # no pyplot, no backend: the caller's is left alone

    n_tags = len(taggram.tags)
    end = float(taggram.end_s[-1]) if len(taggram.end_s) else 1.0
    start = float(taggram.start_s[0]) if len(taggram.start_s) else 0.0
    fig = Figure(figsize=(min(4 + 0.08 * len(taggram.scores), 24), 1.5 + 0.18 * n_tags))
    ax = fig.add_subplot(1, 1, 1)
    # Windows are drawn at their start times; with overlapping hops the image shows one
    # column per window, left edge at its start.
    im = ax.imshow(np.asarray(taggram.scores).T, aspect="auto", origin="upper", vmin=0.0, vmax=1.0,
                   cmap="magma", interpolation="nearest", extent=(start, max(end, start + 1e-6), n_tags, 0))
    ax.set_yticks(np.arange(n_tags) + 0.5)
    ax.set_yticklabels(taggram.tags, fontsize=7)
    ax.set_xlabel("time (s)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="score")
    fig.tight_layout()
    save_figure(fig, path, dpi=100)
