"""`samplecnn tag`: tag files, folders and globs with a model loaded once."""
from __future__ import annotations

import argparse
import sys

from samplecnn.tagging.catalog import ENGINES
from samplecnn.tagging.outputs import OUTPUT_FORMATS

from ._common import add_run_options, add_scoring_options, finite_float, scoring_options
from .pretrained import add_pretrained_option, take_pretrained


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tag", help="tag audio files with a checkpoint or an ONNX export",
        description="Tag audio files, folders (recursive) and globs. Each file is read as a "
                    "stream of windows of the model's segment length at the model's sample "
                    "rate (the last partial window is zero-padded, not dropped); a file's "
                    "score per tag is the mean (or max) over its windows. Failed files are "
                    "reported in the output and on stderr; exit status 1 if any failed.",
    )
    p.add_argument("model", nargs="?", default=None,
                   help="checkpoint (.ckpt/.pt) or ONNX file from `samplecnn export` (or --pretrained)")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="audio files, folders or globs (optional with --manifest)")
    p.add_argument("--manifest", default=None, metavar="FILE",
                   help="also tag the files a CSV or Parquet manifest lists in its 'path' column "
                        "(relative paths are under the manifest's folder)")
    add_scoring_options(p, ("hop", "aggregate", "last", "top_k", "threshold", "at_least_one", "backend"))
    p.add_argument("--format", choices=OUTPUT_FORMATS, default=None,
                   help="output format (default json; parquet: a folder of part files, one row "
                        "per file, needs --output DIR; the Ray engine writes parquet by default)")
    p.add_argument("--output", "-o", default=None, metavar="FILE",
                   help="output file, or folder for parquet (default stdout)")
    p.add_argument("--resume", action="store_true",
                   help="with --format jsonl or parquet and --output: skip files already tagged "
                        "there (failed files are retried)")
    ray = p.add_argument_group("cluster engine (Ray Data; pip install 'samplecnn[ray]')")
    ray.add_argument("--engine", choices=ENGINES, default="local",
                     help="local (default): this machine; ray: decode in Ray tasks, score in a "
                          "pool of Ray actors (formats parquet, jsonl)")
    ray.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="the Ray cluster to join, e.g. ray://head:10001 or auto (default: "
                          "$RAY_ADDRESS, else a local Ray instance)")
    ray.add_argument("--num-workers", type=int, default=1, metavar="N",
                     help="scoring actors, each holding the model once (default 1)")
    ray.add_argument("--gpus-per-worker", type=finite_float(0, 1024, low_inclusive=True), default=0.0, metavar="G",
                     help="GPUs per scoring actor (default 0: CPU; fractions share a GPU)")
    p.add_argument("--taggram-dir", default=None, metavar="DIR",
                   help="write per-window scores (CSV) and a taggram image (PNG) per file")
    add_run_options(p, "the output, and no note about missing decision thresholds")
    add_pretrained_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import contextlib

    from samplecnn.locks import exclusive

    from ._common import check_device, check_output_dir, check_output_file

    if args.format is None:
        args.format = "parquet" if args.engine == "ray" else "json"
    if args.resume and (args.format not in ("jsonl", "parquet") or not args.output):
        raise ValueError("--resume needs --format jsonl or parquet and --output")
    if args.format == "parquet" and not args.output:
        raise ValueError("--format parquet writes a folder of part files: give --output DIR")
    options = scoring_options(args)  # every option checked before any work
    # Every output is checked, and held, before any file is read or weights downloaded: a
    # bad --output must not cost a whole run, and a second `tag` on the same output must
    # not interleave with us.
    if args.format == "parquet":
        check_output_dir(args.output, "--output")
    else:
        check_output_file(args.output, "--output")
    check_output_dir(args.taggram_dir, "--taggram-dir")
    check_device(args.device)
    with contextlib.ExitStack() as held:
        if args.output and args.format != "parquet":  # a Parquet folder's writer holds it itself
            held.enter_context(exclusive(args.output, "tag output"))
        if args.taggram_dir:
            held.enter_context(exclusive(args.taggram_dir, "taggram folder"))
        take_pretrained(args, "model", "paths")
        if not args.paths and not args.manifest:
            raise ValueError("give PATHs to tag, or --manifest FILE")
        return _tag(args, options)


def _tag(args: argparse.Namespace, options) -> int:
    """Both engines: `tag_catalog` (the one local engine, or Ray)."""
    from samplecnn.tagging.catalog import tag_catalog

    def warn(msg: str) -> None:
        print(f"samplecnn tag: warning: {msg}", file=sys.stderr)

    def on_record(rec: dict) -> None:
        if args.quiet:
            return
        shown = rec["path"] or "(blank manifest row)"
        for w in rec["warnings"]:  # a file that was tagged but not cleanly (truncated, damaged)
            warn(f"{shown}: {w}")
        if rec.get("error") is not None:
            print(f"samplecnn tag: {shown}: {rec['error']}", file=sys.stderr)

    run = tag_catalog(args.model, args.paths, manifest=args.manifest, output=args.output,
                      fmt=args.format, engine=args.engine, resume=args.resume, options=options,
                      batch_size=args.batch_size, device=args.device, workers=args.workers,
                      taggram_dir=args.taggram_dir, ray_address=args.ray_address,
                      num_workers=args.num_workers, gpus_per_worker=args.gpus_per_worker,
                      on_record=on_record, warn=warn,
                      note=None if args.quiet else (lambda m: print(f"samplecnn tag: note: {m}", file=sys.stderr)))
    if args.resume and run.skipped:
        print(f"samplecnn tag: resuming, {run.skipped} file(s) already done", file=sys.stderr)
    if run.failed:
        print(f"samplecnn tag: {run.failed} of {run.tagged} file(s) failed", file=sys.stderr)
    return 1 if run.failed else 0
