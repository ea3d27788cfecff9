"""The cluster engine: `samplecnn tag --engine ray` on Ray Data.

    paths (a list, and/or a manifest read in chunks into the object store)
      -> decode + cut windows         Ray tasks (CPU), `sources` + the one window grid
      -> score + aggregate per file   an actor pool: a `Tagger` loaded once per actor (on a
                                      GPU when asked), the one batching loop
                                      (`score_messages`), `Tagger.make_record`
      -> records streamed to the driver, written as Parquet parts (or JSONL lines)

The listing (the paths given, then the manifest's `path` column) is read in chunks and
put into Ray's object store as Arrow tables, filtered by `--resume` on the way; with a
manifest, the driver never walks the catalog or keeps its paths. A file travels as one
row from decoding to scoring (its windows, float32 bytes), so the record is made where its last window is scored, by the same `make_record` as the local
engine: same files and options, same scores. The driver iterates the results as they come
(Ray Data's streaming executor bounds what is in flight), so it never holds the catalog's
audio or all its records.

Faults: Ray restarts a scoring actor that dies and retries the batch it was scoring
(`max_restarts=-1`, `max_task_retries=-1`), and retries decode tasks whose worker died, so
a dead worker loses nothing; a row it had already sent is at worst written again, and
outputs are read back deduplicated by path (`tagging.parquet.read_output`). A killed
driver leaves whole part files; `--resume` tags what is missing.

Ray is optional: `pip install 'samplecnn[ray]'`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from typing import Callable, Sequence

import numpy as np

from samplecnn.options import ScoringOptions
from samplecnn.paths import escape_path, path_key, unescape_path
from samplecnn.windows import chunks as window_chunks

__all__ = ["run_ray", "require_ray", "RAY_INSTALL_HINT"]

RAY_INSTALL_HINT = "the Ray engine needs Ray Data: pip install 'samplecnn[ray]'"

# Test hook: when this names a file holding a number N, the first scoring actor to reach
# its N-th batch claims the file (rename) and exits at once, as a killed worker would.
FAULT_ENV = "SAMPLECNN_RAY_FAULT_FILE"

# CPUs a decode task asks Ray for: decoding costs a few per cent of scoring, and a small
# share lets it run beside actors that hold most of a machine's CPUs.
DECODE_CPUS = 0.25
_LOG_ENV = "RAY_BACKEND_LOG_LEVEL"
BLOCK_BYTES = 8 << 20


def require_ray():
    """`ray` (with Ray Data), or ValueError with the install command."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ValueError(RAY_INSTALL_HINT) from None
    return ray


# -- worker side ------------------------------------------------------------------------


def _decode_row(row: dict, *, sample_rate: int, grid) -> dict:
    """One file (`path`: escaped name) -> its windows as bytes, or its error."""
    from .sources import window_messages

    out = {"path": row["path"], "starts": b"", "windows": b"", "info": "{}", "error": ""}
    name = unescape_path(row["path"])  # "" (a blank manifest row) fails in iter_windows
    starts, wins = [], []
    for msg in window_messages(0, name, sample_rate, grid, chunk=64):
        if msg[0] == "windows":
            starts.append(msg[2])
            wins.append(msg[3])
        elif msg[0] == "done":
            out["info"] = json.dumps(msg[2], ensure_ascii=False)
        else:
            out["error"] = msg[2] or "unknown error"
            return out
    out["starts"] = np.concatenate(starts).astype(np.int64).tobytes()
    # Flat: a whole-clip grid's last window is shorter (the scorer splits by grid.lengths).
    out["windows"] = np.concatenate([w.ravel() for w in wins]).astype(np.float32).tobytes()
    return out


def _maybe_fault(calls: int) -> None:
    spec = os.environ.get(FAULT_ENV)
    if not spec or not os.path.exists(spec):
        return
    try:
        with open(spec) as f:
            after = int(f.read().strip() or "1")
    except (OSError, ValueError):
        return
    if calls >= after:
        try:
            os.rename(spec, spec + ".fired")  # only one actor wins, once
        except OSError:
            return
        os._exit(1)


class _Scorer:
    """The scoring actor: a `Tagger` loaded once; a batch of decoded files -> records."""

    def __init__(self, model: str, options, device: str, threads: int, batch_size: int,
                 graph: bytes | None = None):
        from samplecnn.inference.runners import OrtRunner, load_runner
        from samplecnn.runtime import Runtime

        from .tagger import Tagger

        if graph is not None:
            # The driver's export of the checkpoint (the local engine's graph, so the same
            # scores): the actor starts without importing torch or reading the checkpoint,
            # and ONNX Runtime takes its thread count from the session.
            runner = OrtRunner.from_file(graph, threads=threads, label=model)
        else:
            # The actor's process is an entry point of its own: torch's settings go here.
            Runtime(num_threads=threads).apply()
            runner = load_runner(model, options.backend, device, threads=threads)
        self.tagger = Tagger(runner, batch_size)
        self.options = options
        self.grid = self.tagger.grid(options)  # the decoders' grid: splits unpadded windows
        self.calls = 0

    def __call__(self, batch: dict) -> dict:
        from samplecnn.inference.batching import score_messages

        self.calls += 1
        _maybe_fault(self.calls)
        paths = list(batch["path"])
        window = self.tagger.input_samples
        messages = []
        for i, (err, starts, wins, info) in enumerate(zip(batch["error"], batch["starts"],
                                                          batch["windows"], batch["info"])):
            if err:
                messages.append(("error", i, str(err)))
                continue
            s = np.frombuffer(starts, np.int64)
            info = json.loads(info)
            flat = np.frombuffer(wins, np.float32)
            if self.grid.whole_clip:  # unpadded windows: the shorter last one goes alone
                ends = np.cumsum(self.grid.lengths(s, int(info["samples"])))
                for part, x in window_chunks(zip(s, np.split(flat, ends[:-1])), len(s)):
                    messages.append(("windows", i, part, x))
            else:
                messages.append(("windows", i, s, flat.reshape(len(s), window)))
            messages.append(("done", i, info))
        records: list = [None] * len(paths)
        for scored in score_messages(messages, self.tagger.logits, self.tagger.batch_size):
            records[scored.key] = self.tagger.make_record(
                unescape_path(str(paths[scored.key])), scored.outputs, scored.info,
                self.options, error=scored.error)
        return {"record": np.array([json.dumps(r, ensure_ascii=False, allow_nan=False)
                                    for r in records], dtype=object)}


# -- driver side ------------------------------------------------------------------------


_SETTINGS = {
    # A decoded 30 s clip is ~2.6 MB of windows at 22,050 Hz: a few files per block, so
    # that every actor gets work even from a small catalog (Ray's default is 128 MiB).
    "target_max_block_size": BLOCK_BYTES,
    # Only samplecnn's lines on the terminal.
    "enable_progress_bars": False,
    "print_on_execution_start": False,
    "verbose_stats_logs": False,
}


@contextlib.contextmanager
def _configured():
    """Ray Data settings for one run (the caller's own are put back after it), with
    Ray's info logs off."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in _SETTINGS if hasattr(ctx, k)}
    for k in saved:
        setattr(ctx, k, _SETTINGS[k])
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _connect(ray, address: str | None) -> bool:
    """Join `address` (see `ray_connect.connect`: one line, in bounded time, on failure).
    `RAY_BACKEND_LOG_LEVEL`, which it sets for Ray's start (read then, also by the
    processes Ray starts), is put back as the caller had it."""
    from .ray_connect import connect

    saved = os.environ.get(_LOG_ENV)
    try:
        return connect(ray, address)
    finally:
        if saved is None:
            os.environ.pop(_LOG_ENV, None)


def _actor_cpus(cluster_cpus: float, num_workers: int, gpus: float) -> float:
    """Default CPUs per scoring actor: one beside a GPU; on CPUs, the cluster's CPUs less
    room for decoding, shared between the actors (in quarters, at least one quarter)."""
    if gpus > 0:
        return 1.0
    share = (cluster_cpus - 2 * DECODE_CPUS) / num_workers
    return max(0.25, np.floor(share * 4) / 4)


def _path_blocks(paths: Sequence[str], manifest, done: set[str], rows: int = 256, warn=None):
    """The files to tag as Arrow tables of `rows` escaped absolute names (a `path`
    column), from the list and then the manifest read in chunks (its duplicates left out,
    see `iter_manifest`); files in `done` left out. Yields (table, skipped)."""
    import pyarrow as pa

    from .manifest import iter_manifest

    def chunks():
        for i in range(0, len(paths), rows):
            yield paths[i:i + rows]
        if manifest is not None:
            yield from iter_manifest(manifest, rows, seen={path_key(p) for p in paths if p}, warn=warn)

    for chunk in chunks():
        keys = [path_key(p) if p else "" for p in chunk]
        kept = [escape_path(k) for k in keys if not (k and k in done)]
        yield pa.table({"path": pa.array(kept, pa.string())}), len(chunk) - len(kept)


def run_ray(model, paths: Sequence[str], *, manifest=None, output, fmt: str = "parquet",
            resume: bool = False, options: ScoringOptions | None = None, batch_size: int = 16,
            ray_address: str | None = None, num_workers: int = 1, gpus_per_worker: float = 0.0,
            cpus_per_worker: float | None = None, files_per_batch: int = 4,
            rows_per_part: int = 1000, on_record: Callable[[dict], None] | None = None,
            warn: Callable[[str], None] | None = None, note: Callable[[str], None] | None = None):
    """The Ray engine behind `tagging.catalog.tag_catalog(engine="ray")` (see there)."""
    from .manifest import check_manifest
    from .outputs import CatalogRun, done_keys, model_name, open_output, write_records
    from .tagger import Tagger

    options = options if options is not None else ScoringOptions()
    backend = options.backend

    ray = require_ray()
    if int(num_workers) < 1:
        raise ValueError(f"--num-workers must be at least 1, got {num_workers}")
    if gpus_per_worker < 0:
        raise ValueError(f"--gpus-per-worker must be 0 or more, got {gpus_per_worker}")
    if cpus_per_worker is not None and cpus_per_worker <= 0:
        raise ValueError(f"CPUs per worker must be positive, got {cpus_per_worker}")
    if int(batch_size) < 1 or int(files_per_batch) < 1:
        raise ValueError(f"batch sizes must be at least 1, got {batch_size} windows, "
                         f"{files_per_batch} files")
    model = os.fspath(model)
    if os.path.exists(model):
        model = os.path.abspath(model)  # actors run elsewhere: same file, any working directory
    is_onnx = model.lower().endswith(".onnx")
    # The driver only needs the metadata (tags, rate, window): the plain model is the
    # cheapest to load; the actors build the runner asked for.
    meta = Tagger.load(model, backend=backend if is_onnx else "plain", device="cpu")
    grid = meta.grid(options)  # unpadded windows for a whole-clip model
    from samplecnn.thresholds import missing_note

    if note is not None and (line := missing_note(meta.threshold_info, options.threshold)):
        note(line)
    device = "cuda" if gpus_per_worker > 0 else "cpu"
    if manifest is not None:
        check_manifest(manifest)
    graph = None
    from pathlib import Path

    from samplecnn.inference.runners import resolve_backend

    if is_onnx and device == "cpu":
        # An ONNX file (fp32 or int8) goes to the actors as it is, as bytes: never
        # re-exported or re-quantized, and other nodes need not see the file.
        graph = Path(model).read_bytes()
    elif device == "cpu" and resolve_backend(backend) == "onnxruntime":
        # Exported once here (or taken from the export cache) and shipped to the actors
        # as bytes: the driver's cache folder need not be visible from other nodes.
        from samplecnn.inference.onnx import cached_graph

        graph = cached_graph(meta.runner.module, "scores")
        graph = graph if isinstance(graph, bytes) else Path(graph).read_bytes()

    done = done_keys(fmt, output) if resume else set()
    with contextlib.ExitStack() as stack:
        # Settings first, so that what Ray's start changes (its loggers) is put back too.
        stack.enter_context(_configured())
        started = _connect(ray, ray_address)
        if started:
            stack.callback(ray.shutdown)
        cluster_cpus = float(ray.cluster_resources().get("CPU", 1.0))
        actor_cpus = cpus_per_worker or _actor_cpus(cluster_cpus, int(num_workers), gpus_per_worker)
        if started and actor_cpus * int(num_workers) + DECODE_CPUS > cluster_cpus:
            raise ValueError(f"{num_workers} worker(s) x {actor_cpus:g} CPU(s) leave no CPU for "
                             f"decoding on this machine's {cluster_cpus:g}; use fewer workers")
        threads = max(1, int(round(actor_cpus)))

        # The listing goes to the object store chunk by chunk (the driver keeps references);
        # a chunk is one block, decoded by one task.
        refs, total, skipped = [], 0, 0
        for table, n_skipped in _path_blocks(list(paths), manifest, done, warn=warn):
            total += table.num_rows + n_skipped
            skipped += n_skipped
            if table.num_rows:
                refs.append(ray.put(table))
        writer = open_output(fmt, output, meta.tags, model_name(model), append=resume,
                             rows_per_part=rows_per_part)
        if not refs:
            write_records([], writer)
            return CatalogRun(total, skipped, 0, 0)
        ds = ray.data.from_arrow_refs(refs)
        ds = ds.map(_decode_row, fn_kwargs={"sample_rate": meta.sample_rate, "grid": grid},
                    num_cpus=DECODE_CPUS)
        ds = ds.map_batches(
            _Scorer,
            fn_constructor_kwargs=dict(model=model, options=options, device=device, threads=threads,
                                       batch_size=int(batch_size), graph=graph),
            batch_size=int(files_per_batch), batch_format="numpy", concurrency=int(num_workers),
            num_cpus=actor_cpus, **({"num_gpus": gpus_per_worker} if gpus_per_worker > 0 else {}))
        with warnings.catch_warnings():
            # Ray Data's advice (block counts, deprecations) is for Ray users, not ours.
            warnings.filterwarnings("ignore", module=r"ray(\.|$)")
            records = (json.loads(row["record"]) for row in ds.iter_rows())
            tagged, failed = write_records(records, writer, on_record)
    return CatalogRun(total, skipped, tagged, failed)
