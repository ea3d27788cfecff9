"""Decode a data set once into a segment store: parallel, resumable, atomic.

Work happens in `<store>.partial/`: `plan.json` fixes the clip list and the decoding
parameters; each worker writes `clips/<i>.npy` (int16) and then `clips/<i>.json` (its
status), both via a temporary name and `os.replace`, so a clip is done exactly when its
JSON exists. A rerun after a kill decodes only the clips without a JSON. Assembly writes
`audio.i16`, `index.npz`, `labels.npy` and finally `meta.json`, then renames the folder
to `<store>`: a store without `meta.json` is never mistaken for a complete one.

One `prepare` at a time per store: the store is held with `samplecnn.locks.exclusive`
for the whole run. `meta.json` records a fingerprint of the inputs and options (clip
paths with their sizes and modification times, labels, splits, tags, sample rate, minimum
length and duration): rerunning on a complete store with the same fingerprint does
nothing and reports the store; with another fingerprint it is refused (`--overwrite`
replaces the store).

Why one module of this size: planning, the worker step, resume and assembly share the
plan's file layout and its invariants (a clip is done exactly when its JSON exists);
splitting them would spread one on-disk contract over several files.

File names are written with `samplecnn.paths.escape_path` (plan.json, meta.json,
index.npz), so any name a POSIX file system allows can be stored; `SegmentStore.source_path`
gives the name back.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, write_json
from ..audio import AudioError, load_audio
from ..locks import exclusive
from ..paths import escape_path
from .manifest import SPLITS, Manifest
from .store import INT16_SCALE, STORE_FORMAT, STORE_VERSION, float_to_int16

DEFAULT_SAMPLE_RATE = 22_050
#: One 3^9 segment: shorter clips are zero-padded up to it (and flagged `padded`).
DEFAULT_MIN_SAMPLES = 59_049


@dataclass
class PrepareReport:
    """What `prepare_store` did. `skipped`/`dropped`/`warnings` are `(path, text)` lists,
    paths escaped (`samplecnn.paths.escape_path`). `reused`: the store was already
    complete for these inputs and options, and nothing was done."""

    store: Path
    counts: dict[str, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    resumed: int = 0
    decoded: int = 0
    seconds: float = 0.0
    warnings: list[tuple[str, str]] = field(default_factory=list)
    reused: bool = False

    def summary(self, max_listed: int = 20) -> str:
        """Multi-line human summary: counts, notes, then skipped files with reasons."""
        lines = [f"store: {escape_path(self.store)}"]
        if self.reused:
            lines.append("already complete for these inputs and options: nothing to do")
        lines.append("clips: " + ", ".join(f"{s} {n}" for s, n in self.counts.items())
                     + f" (total {sum(self.counts.values())})")
        if self.resumed:
            lines.append(f"resumed: {self.resumed} clips were already decoded")
        lines += [f"note: {n}" for n in self.notes]
        if self.dropped:
            lines.append(f"dropped by filters: {len(self.dropped)}")
            lines += [f"  {p}: {r}" for p, r in self.dropped[:max_listed]]
            if len(self.dropped) > max_listed:
                lines.append(f"  ... and {len(self.dropped) - max_listed} more (see meta.json)")
        if self.warnings:
            n_files = len({p for p, _ in self.warnings})
            lines.append(f"files with warnings (stored): {n_files}")
            lines += [f"  {p}: {w}" for p, w in self.warnings[:max_listed]]
            if len(self.warnings) > max_listed:
                lines.append(f"  ... and {len(self.warnings) - max_listed} more (see meta.json)")
        lines.append(f"skipped files: {len(self.skipped)}")
        lines += [f"  {p}: {r}" for p, r in self.skipped[:max_listed]]
        if len(self.skipped) > max_listed:
            lines.append(f"  ... and {len(self.skipped) - max_listed} more (see meta.json)")
        return "\n".join(lines)


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)


def _one_line(text: str) -> str:
    # An exception's text may carry an undecodable file name: keep it writable as UTF-8.
    text = str(text).encode("utf-8", errors="backslashreplace").decode("utf-8")
    return " ".join(text.split())


def decode_clip(task: tuple) -> tuple[int, dict]:
    """Worker: decode clip `i` into `clips/<i>.npy` + `clips/<i>.json`. Never raises for
    bad input: the failure is recorded as the clip's status."""
    i, path, clip_dir, sample_rate, min_samples, min_duration_s = task
    clip_dir = Path(clip_dir)
    try:
        with warnings.catch_warnings():
            # Silence is recorded in the store (`silent`), one warning per file is noise.
            warnings.simplefilter("ignore")
            a = load_audio(path, sample_rate, min_samples=min_samples)
        if min_duration_s is not None and a.duration_s < min_duration_s:
            info = {"status": "dropped",
                    "reason": f"shorter than {min_duration_s:g} s ({a.duration_s:.3f} s)"}
        else:
            _save_npy(clip_dir / f"{i}.npy", float_to_int16(a.samples))
            info = {"status": "ok", "length": int(len(a.samples)), "padded": bool(a.padded),
                    "silent": bool(a.silent), "duration": float(a.duration_s),
                    "warnings": [_one_line(w) for w in a.warnings]}
    except AudioError as err:
        info = {"status": "skipped", "reason": _one_line(err.reason)}
    except Exception as err:  # a bad file must never take the other clips down
        info = {"status": "skipped",
                "reason": _one_line(f"unexpected error: {type(err).__name__}: {err}")}
    write_json(clip_dir / f"{i}.json", info)
    return i, info


def _plan(manifest: Manifest, sample_rate: int, min_samples: int) -> dict:
    plan = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "sample_rate": int(sample_rate),
        "min_samples": int(min_samples),
        "min_duration_s": manifest.min_duration_s,
        "paths": [escape_path(p) for p in manifest.paths],
    }
    # Per-clip results depend only on the paths and decoding parameters; labels and
    # splits are taken from the current manifest at assembly time.
    plan["fingerprint"] = hashlib.sha256(
        json.dumps(plan, sort_keys=True).encode("utf-8")).hexdigest()
    return plan


def _inputs_fingerprint(manifest: Manifest, plan: dict) -> str:
    """What a complete store was made from: the plan (paths, decoding options), each
    file's size and modification time, and the labels, splits, clip ids and tags."""
    h = hashlib.sha256(plan["fingerprint"].encode("ascii"))
    for p in manifest.paths:
        try:
            st = os.stat(p)
            h.update(f"{st.st_size}:{st.st_mtime_ns};".encode("ascii"))
        except OSError:
            h.update(b"-;")
    rest = {"tags": list(manifest.tags), "clip_ids": list(manifest.clip_ids),
            "splits": list(manifest.splits), "dataset": manifest.name}
    h.update(json.dumps(rest, sort_keys=True).encode("utf-8", errors="backslashreplace"))
    h.update(np.ascontiguousarray(manifest.labels, dtype=np.uint8).tobytes())
    h.update(str(manifest.labels.shape).encode("ascii"))
    return h.hexdigest()


def _report_from_meta(out: Path, meta: dict, **extra) -> PrepareReport:
    return PrepareReport(
        store=out,
        counts=dict(meta["counts"]),
        skipped=[tuple(x) for x in meta["skipped"]],
        dropped=[tuple(x) for x in meta["dropped"]],
        notes=list(meta["notes"]),
        warnings=[tuple(x) for x in meta.get("warnings", [])],
        **extra,
    )


def _run_pool(todo: list[tuple], workers: int, progress: bool, initial: int, total: int):
    """Decode `todo` tasks; yields (i, info). Restarts a pool that a worker crash broke."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=initial, unit="clip", desc="decoding",
               disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1:
            for task in todo:
                yield decode_clip(task)
                bar.update(1)
            return
        pending = {t[0]: t for t in todo}
        restarts = 0
        while pending:
            try:
                with ProcessPoolExecutor(max_workers=workers) as ex:
                    futures = [ex.submit(decode_clip, t) for t in pending.values()]
                    for fut in as_completed(futures):
                        i, info = fut.result()
                        pending.pop(i, None)
                        bar.update(1)
                        yield i, info
            except BrokenProcessPool:
                # A worker died (e.g. a decoder crash on a hostile file): clips that have
                # a JSON are done, the rest are retried in a fresh pool.
                restarts += 1
                if restarts > 3:
                    raise RuntimeError(
                        f"decoding workers crashed {restarts} times; "
                        f"{len(pending)} clips left undecoded (rerun to resume)"
                    ) from None
                clip_dir = Path(next(iter(pending.values()))[2])
                for i in list(pending):
                    if (clip_dir / f"{i}.json").exists():
                        info = json.loads((clip_dir / f"{i}.json").read_text("utf-8"))
                        pending.pop(i)
                        yield i, info
    finally:
        bar.close()


def check_out_path(out: Path, overwrite: bool = False) -> None:
    """ValueError unless `out` can receive a store: absent, empty, or a store (which
    `prepare_store` reuses when it was made from the same inputs, and otherwise replaces
    only with `overwrite`)."""
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"{escape_path(out)}: exists and is not a folder")
        if not (out / "meta.json").exists() and any(out.iterdir()):
            raise ValueError(f"{escape_path(out)}: folder exists, is not empty and is not a store")


def prepare_store(
    manifest: Manifest,
    out: str | os.PathLike,
    *,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    log=None,
) -> PrepareReport:
    """Decode every clip of `manifest` once into a segment store at `out`.

    Clips are decoded in `workers` processes (default: CPU count; 1 = in this process),
    resampled to `sample_rate`, zero-padded to `min_samples`, stored as int16. A rerun
    after an interruption resumes from `<out>.partial`; a rerun on a complete store made
    from the same inputs and options does nothing (`report.reused`), one made from others
    raises ValueError unless `overwrite`. Files that cannot be decoded are skipped and
    listed (report and meta.json) with their reasons; files that decode with warnings
    (truncated, damaged frames) are stored and listed. Another process preparing the
    same `out` makes this one raise `samplecnn.locks.OutputBusy` (a ValueError).
    `log(str)` receives progress lines (default: nothing).
    """
    t0 = time.time()
    out = Path(out)
    if sample_rate <= 0 or min_samples < 0:
        raise ValueError(f"invalid sample_rate {sample_rate} or min_samples {min_samples}")
    if len(manifest) == 0:
        raise ValueError(f"{manifest.root}: no clips to prepare")
    check_out_path(out, overwrite)
    with exclusive(out, "store"):
        return _prepare_locked(manifest, out, t0, sample_rate, min_samples, workers,
                               overwrite, progress, log)


def _prepare_locked(manifest: Manifest, out: Path, t0: float, sample_rate: int,
                    min_samples: int, workers: int | None, overwrite: bool,
                    progress: bool | None, log) -> PrepareReport:
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if progress is None:
        progress = sys.stderr.isatty()
    log = log or (lambda msg: None)
    partial = out.with_name(out.name + ".partial")
    plan = _plan(manifest, sample_rate, min_samples)
    inputs = _inputs_fingerprint(manifest, plan)
    clip_dir = partial / "clips"
    if (out / "meta.json").is_file() and not overwrite:
        try:
            done = json.loads((out / "meta.json").read_text("utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            done = {}
        if done.get("inputs_fingerprint") != inputs:
            raise ValueError(f"{escape_path(out)}: a store made from other inputs or options "
                             "already exists (--overwrite replaces it)")
        return _report_from_meta(out, done, reused=True, seconds=time.time() - t0)

    if partial.exists():
        old = None
        if (partial / "plan.json").is_file():
            try:
                old = json.loads((partial / "plan.json").read_text("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                old = None
        if old is None:
            raise ValueError(f"{escape_path(partial)}: exists but was not made by samplecnn "
                             "prepare; remove it first")
        if old.get("fingerprint") != plan["fingerprint"]:
            log(f"removing {escape_path(partial)}: it was started with other clips or parameters")
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    clip_dir.mkdir(exist_ok=True)
    if not (partial / "plan.json").exists():
        write_json(partial / "plan.json", plan)

    n = len(manifest)
    results: dict[int, dict] = {}
    if not (partial / "meta.json").exists():
        for i in range(n):
            j = clip_dir / f"{i}.json"
            if j.exists():
                try:
                    results[i] = json.loads(j.read_text("utf-8"))
                except (json.JSONDecodeError, UnicodeDecodeError):
                    pass  # impossible with atomic writes, but then simply decode again
        resumed = len(results)
        if resumed:
            log(f"resuming: {resumed} of {n} clips already decoded")
        todo = [(i, manifest.paths[i], str(clip_dir), int(sample_rate), int(min_samples),
                 manifest.min_duration_s) for i in range(n) if i not in results]
        for i, info in _run_pool(todo, workers, progress, resumed, n):
            results[i] = info
        _assemble(manifest, partial, results, sample_rate, min_samples, inputs)
    else:
        resumed = n  # killed after assembly, before the rename: nothing left to decode
    meta = json.loads((partial / "meta.json").read_text("utf-8"))
    # meta.json is in place: the store is complete. Drop the work files, then publish.
    shutil.rmtree(clip_dir, ignore_errors=True)
    (partial / "plan.json").unlink(missing_ok=True)
    if out.exists():
        trash = out.with_name(f"{out.name}.old{os.getpid()}")
        os.replace(out, trash)
        os.replace(partial, out)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(partial, out)

    return _report_from_meta(out, meta, resumed=resumed, decoded=n - resumed,
                             seconds=time.time() - t0)


def _assemble(manifest: Manifest, partial: Path, results: dict[int, dict],
              sample_rate: int, min_samples: int, inputs: str) -> None:
    clip_dir = partial / "clips"
    keep = [i for i in range(len(manifest)) if results[i]["status"] == "ok"]
    lengths = np.array([results[i]["length"] for i in keep], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if keep \
        else np.zeros(0, np.int64)
    with atomic_path(partial / "audio.i16") as tmp, open(tmp, "wb") as f:
        for i, length in zip(keep, lengths):
            arr = np.load(clip_dir / f"{i}.npy", allow_pickle=False)
            if arr.dtype != np.dtype("<i2") or len(arr) != length:
                raise RuntimeError(f"{clip_dir / f'{i}.npy'}: damaged work file; "
                                   "delete it and its .json, then rerun")
            f.write(arr.tobytes())
    with atomic_path(partial / "index.npz", suffix=".npz") as tmp:
        np.savez(
            tmp,
            offsets=offsets,
            lengths=lengths,
            clip_ids=np.array([manifest.clip_ids[i] for i in keep], dtype=str),
            paths=np.array([escape_path(manifest.paths[i]) for i in keep], dtype=str),
            splits=np.array([manifest.splits[i] for i in keep], dtype=str),
            padded=np.array([results[i]["padded"] for i in keep], dtype=bool),
            silent=np.array([results[i]["silent"] for i in keep], dtype=bool),
            durations=np.array([results[i]["duration"] for i in keep], dtype=np.float64),
        )
    _save_npy(partial / "labels.npy", np.ascontiguousarray(manifest.labels[keep], dtype=np.uint8))

    skipped = [(escape_path(p), r) for p, r in manifest.skipped] + [
        (escape_path(manifest.paths[i]), results[i]["reason"]) for i in range(len(manifest))
        if results[i]["status"] == "skipped"]
    dropped = [(escape_path(p), r) for p, r in manifest.dropped] + [
        (escape_path(manifest.paths[i]), results[i]["reason"]) for i in range(len(manifest))
        if results[i]["status"] == "dropped"]
    file_warnings = [(escape_path(manifest.paths[i]), w) for i in range(len(manifest))
                     for w in results[i].get("warnings", ())]
    counts = {s: sum(1 for i in keep if manifest.splits[i] == s) for s in SPLITS}
    notes = list(manifest.notes) + ["WARNING: " + w for w in manifest.warnings]
    if manifest.expected_counts is not None:
        got = tuple(counts[s] for s in SPLITS)
        if got != tuple(manifest.expected_counts):
            msg = ("full copy of the data set, but the split counts "
                   f"{'/'.join(map(str, got))} differ from the expected "
                   f"{'/'.join(map(str, manifest.expected_counts))}")
            warnings.warn(msg, stacklevel=3)
            notes.append("WARNING: " + msg)
        else:
            notes.append("split counts match the expected "
                         + "/".join(map(str, manifest.expected_counts)))
    n_padded = sum(1 for i in keep if results[i]["padded"])
    n_silent = sum(1 for i in keep if results[i]["silent"])
    if n_padded:
        notes.append(f"{n_padded} clips shorter than {min_samples} samples were zero-padded")
    if n_silent:
        notes.append(f"{n_silent} clips are digital silence")
    meta = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "dataset": manifest.name,
        "source_root": escape_path(manifest.root),
        "sample_rate": int(sample_rate),
        "dtype": "int16",
        "int16_scale": int(INT16_SCALE),
        "tags": list(manifest.tags),
        "n_clips": len(keep),
        "total_samples": int(lengths.sum()) if keep else 0,
        "counts": counts,
        "min_samples": int(min_samples),
        "min_duration_s": manifest.min_duration_s,
        "padded": n_padded,
        "silent": n_silent,
        "skipped": [list(x) for x in skipped],
        "dropped": [list(x) for x in dropped],
        "warnings": [list(x) for x in file_warnings],
        "notes": notes,
        "inputs_fingerprint": inputs,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(partial / "meta.json", meta)
