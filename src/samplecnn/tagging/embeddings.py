"""The `.npz` file of `samplecnn embed`.

Arrays (n = files, W = windows over all files, C = layer width):

- `paths` `(n,)` str: each file's absolute path, escaped (`writers.record_path`: any
  file name, valid UTF-8; `samplecnn.paths.unescape_path` gives the name back);
- `errors` `(n,)` str ("" when the file succeeded), `ok` `(n,)` bool, `warnings` `(n,)`
  str (the file's warnings joined by "; ", "" for none);
- `file_embeddings` float32 `(n, C)`: mean over the file's windows (NaN rows for failures);
- `window_embeddings` float32 `(W, C)`, `window_file` int64 `(W,)` (row in `paths`),
  `window_start_s` / `window_end_s` float64 `(W,)`; windows are grouped by file in input
  order and sorted by time;
- scalars `layer`, `pool`, `sample_rate`, `window_s`, `hop_s`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from samplecnn.atomic import atomic_path

from .tagger import FileResult, window_times
from .writers import record_path, record_text


def write_embeddings(out: str | os.PathLike, tagger, paths: Sequence[str], results: Iterable[FileResult],
                     *, layer: str, pool: str, hop: float | None) -> dict:
    """Collect `results` (from `Tagger.embed_files`) and write them atomically to `out`."""
    by_index: dict[int, FileResult] = {}
    for res in results:
        by_index[res.index] = res
    dim = None
    for res in by_index.values():
        if res.outputs is not None:
            dim = res.outputs.shape[1]
            break
    n = len(paths)
    if dim is None:
        dim = 0
    file_emb = np.full((n, dim), np.nan, np.float32)
    errors = np.array([""] * n, dtype=object)
    notes = np.array([""] * n, dtype=object)
    win_parts, owner_parts, start_parts, end_parts = [], [], [], []
    for i in range(n):
        res = by_index.get(i)
        if res is None:
            errors[i] = "not processed"
            continue
        notes[i] = "; ".join(record_text(str(w)) for w in res.info.get("warnings") or [])
        if res.error is not None:
            errors[i] = record_text(res.error)
            continue
        file_emb[i] = res.outputs.mean(axis=0)
        s, e = window_times(res.starts, tagger.input_samples, tagger.sample_rate, res.info.get("duration_s"))
        win_parts.append(res.outputs)
        owner_parts.append(np.full(len(res.outputs), i, np.int64))
        start_parts.append(s)
        end_parts.append(e)
    windows = np.concatenate(win_parts) if win_parts else np.zeros((0, dim), np.float32)
    arrays = {
        "paths": np.array([record_path(p) for p in paths]),
        "errors": errors.astype(str),
        "ok": np.array([e == "" for e in errors]),
        "warnings": notes.astype(str),
        "file_embeddings": file_emb,
        "window_embeddings": windows.astype(np.float32),
        "window_file": np.concatenate(owner_parts) if owner_parts else np.zeros(0, np.int64),
        "window_start_s": np.concatenate(start_parts) if start_parts else np.zeros(0),
        "window_end_s": np.concatenate(end_parts) if end_parts else np.zeros(0),
        "layer": np.array(layer),
        "pool": np.array(pool),
        "sample_rate": np.array(tagger.sample_rate),
        "window_s": np.array(tagger.window_s),
        "hop_s": np.array(tagger.grid(hop).hop / tagger.sample_rate),
    }
    out = Path(out)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)  # a file object, so no ".npz" is appended to the name
    return {"errors": [(str(paths[i]), errors[i]) for i in range(n) if errors[i]],
            "windows": int(len(windows)), "dim": int(dim)}
