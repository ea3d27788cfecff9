"""Tag a catalog: inputs or a manifest -> one output, on the local engine or on Ray.

    from samplecnn.tagging.catalog import tag_catalog
    run = tag_catalog("model.ckpt", manifest="catalog.parquet", output="tags/",
                      engine="ray", num_workers=8, gpus_per_worker=1)
    run.failed        # files that failed (each is a row with an `error`)

`samplecnn tag` is this function for both engines. Manifests: `tagging.manifest`;
outputs and resume: `tagging.outputs`. On Ray the manifest is read by the cluster (the
driver never walks or lists the catalog).

Both engines score files the same way (the one window grid, runner, batching loop and
`Tagger.make_record`), so the same files and options give the same records.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

from samplecnn.options import ScoringOptions
from samplecnn.paths import path_key

from .manifest import check_manifest, iter_manifest, read_manifest, resolve_manifest_path
from .outputs import (CATALOG_FORMATS, OUTPUT_FORMATS, CatalogRun, done_keys, model_name, open_output,
                      write_records)

__all__ = ["CatalogRun", "tag_catalog", "read_manifest", "iter_manifest", "check_manifest", "resolve_manifest_path",
           "ENGINES", "OUTPUT_FORMATS", "CATALOG_FORMATS"]

ENGINES = ("local", "ray")


def tag_catalog(
    model: str | os.PathLike,
    inputs: Sequence[str | os.PathLike] = (),
    *,
    manifest: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    fmt: str = "parquet",
    engine: str = "local",
    resume: bool = False,
    options: ScoringOptions | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    workers: int = 1,
    taggram_dir: str | os.PathLike | None = None,
    ray_address: str | None = None,
    num_workers: int = 1,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float | None = None,
    files_per_batch: int = 4,
    rows_per_part: int = 1000,
    on_record: Callable[[dict], None] | None = None,
    warn: Callable[[str], None] | None = None,
    note: Callable[[str], None] | None = None,
    **scoring,
) -> CatalogRun:
    """Tag `inputs` (files, folders, globs) and/or the files a `manifest` lists into
    `output` (a Parquet folder; with `fmt` "jsonl", "json" or "csv" a file, or stdout when
    `output` is None).

    `options` (a `ScoringOptions`; or its fields as keywords: `hop=0.5, top_k=10`) say how
    files are scored, the same on both engines. `engine="local"`: this process scores,
    `workers` processes decode, `taggram_dir` gets each file's taggram. `engine="ray"`:
    Ray Data decodes in CPU tasks and scores in `num_workers` actors (each with
    `gpus_per_worker` GPUs, `cpus_per_worker` CPUs), on the cluster at `ray_address` (or a
    Ray instance already started in this process, or a new local one); it writes Parquet
    or JSONL. `resume` skips the files `output` already holds without an error.
    `on_record(record)` sees every record as it is written; `note(line)` gets one-line
    notes about the run (a model without decision thresholds: `labels` null). Raises ValueError for unusable
    options or inputs, before any file is read; failed files are records with an `error`
    and counted in `CatalogRun.failed`.
    """
    from .sources import expand_paths

    options = ScoringOptions.build(options, **scoring)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    formats = CATALOG_FORMATS if engine == "ray" else OUTPUT_FORMATS
    if fmt not in formats:
        raise ValueError(f"the {engine} engine writes one of {', '.join(formats)}, got {fmt!r}")
    if resume and (fmt not in CATALOG_FORMATS or output is None):
        raise ValueError("--resume needs --format jsonl or parquet and --output")
    if output is None and (engine == "ray" or fmt == "parquet"):
        raise ValueError(f"--format {fmt} writes a folder of part files: give --output DIR"
                         if fmt == "parquet" else "--engine ray writes --format parquet (or jsonl) to --output")
    if engine == "ray" and taggram_dir is not None:
        raise ValueError("--taggram-dir is for the local engine (--engine local)")
    if engine == "ray" and device != "cpu":
        raise ValueError("--device is for the local engine; on Ray use --gpus-per-worker")
    if not inputs and manifest is None:
        raise ValueError("nothing to tag: give paths or a manifest")
    paths = list(expand_paths(inputs, warn=warn)) if inputs else []
    if manifest is not None:
        check_manifest(manifest)
    if engine == "ray":
        from .ray_engine import run_ray

        return run_ray(model, paths, manifest=manifest, output=output, fmt=fmt, resume=resume,
                       options=options, batch_size=batch_size, ray_address=ray_address,
                       num_workers=num_workers, gpus_per_worker=gpus_per_worker,
                       cpus_per_worker=cpus_per_worker, files_per_batch=files_per_batch,
                       rows_per_part=rows_per_part, on_record=on_record, warn=warn, note=note)
    return _run_local(model, paths, manifest=manifest, output=output, fmt=fmt, resume=resume,
                      options=options, batch_size=batch_size, device=device, workers=workers,
                      taggram_dir=taggram_dir, rows_per_part=rows_per_part, on_record=on_record,
                      warn=warn, note=note)


def _run_local(model, paths: list[str], *, manifest, output, fmt: str, resume: bool,
               options: ScoringOptions, batch_size: int, device: str, workers: int, taggram_dir,
               rows_per_part: int, on_record, warn=None, note=None) -> CatalogRun:
    """The local engine: this process scores, `workers` processes decode."""
    from .tagger import Tagger
    from .writers import taggram_names, write_taggram

    if manifest is not None:
        paths = paths + read_manifest(manifest, seen={path_key(p) for p in paths}, warn=warn)
    tagger = Tagger.load(model, backend=options.backend, device=device, batch_size=batch_size)
    _note_thresholds(tagger, options, note)
    skipped, todo = 0, paths
    if resume:
        done = done_keys(fmt, output)
        todo = [p for p in paths if path_key(p) not in done]
        skipped = len(paths) - len(todo)
    names = taggram_names(paths) if taggram_dir is not None else {}

    def records():
        for res in tagger.tag_files(todo, options, workers=workers, batch_size=batch_size):
            if taggram_dir is not None and res.error is None:
                write_taggram(tagger.taggram_of(res), taggram_dir, names[res.path])
            yield res.record

    writer = open_output(fmt, output, tagger.tags, model_name(model), append=resume, order=paths,
                         rows_per_part=rows_per_part)
    tagged, failed = write_records(records(), writer, on_record)
    return CatalogRun(len(paths), skipped, tagged, failed)


def _note_thresholds(tagger, options: ScoringOptions, note) -> None:
    from samplecnn.thresholds import missing_note

    line = missing_note(tagger.threshold_info, options.threshold)
    if line and note is not None:
        note(line)
