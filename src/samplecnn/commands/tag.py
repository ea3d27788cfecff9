"""`samplecnn tag`: tag files, folders and globs with a model loaded once."""
from __future__ import annotations

import argparse
import sys

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
    p.add_argument("--top-k", type=int, default=5, help="tags listed in `top` (default 5)")
    p.add_argument("--threshold", type=float, default=None, metavar="X",
                   help="decide every tag at score >= X (0..1) in `labels`, instead of the "
                        "model's stored per-tag thresholds (`samplecnn thresholds`)")
    p.add_argument("--at-least-one", action="store_true",
                   help="`labels` holds at least the top tag when no tag reaches its threshold")
    p.add_argument("--hop", type=float, default=None, metavar="SECONDS",
                   help="hop between windows in seconds (default: one window, no overlap)")
    p.add_argument("--aggregate", choices=["mean", "max", "logit_mean"], default="mean",
                   help="how window scores are combined per file (default mean: the mean of "
                        "the windows' scores; logit_mean: sigmoid of the mean logit)")
    p.add_argument("--last", choices=["pad", "drop"], default="pad",
                   help="the samples after the last full window: pad = score them in one "
                        "zero-padded window (default), drop = full windows only")
    p.add_argument("--format", choices=["json", "jsonl", "csv", "parquet"], default=None,
                   help="output format (default json; parquet: a folder of part files, one row "
                        "per file, needs --output DIR; the Ray engine writes parquet by default)")
    p.add_argument("--output", "-o", default=None, metavar="FILE",
                   help="output file, or folder for parquet (default stdout)")
    p.add_argument("--resume", action="store_true",
                   help="with --format jsonl or parquet and --output: skip files already tagged "
                        "there (failed files are retried)")
    ray = p.add_argument_group("cluster engine (Ray Data; pip install 'samplecnn[ray]')")
    ray.add_argument("--engine", choices=["local", "ray"], default="local",
                     help="local (default): this machine; ray: decode in Ray tasks, score in a "
                          "pool of Ray actors (formats parquet, jsonl)")
    ray.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="the Ray cluster to join, e.g. ray://head:10001 or auto (default: "
                          "$RAY_ADDRESS, else a local Ray instance)")
    ray.add_argument("--num-workers", type=int, default=1, metavar="N",
                     help="scoring actors, each holding the model once (default 1)")
    ray.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                     help="GPUs per scoring actor (default 0: CPU; fractions share a GPU)")
    p.add_argument("--taggram-dir", default=None, metavar="DIR",
                   help="write per-window scores (CSV) and a taggram image (PNG) per file")
    p.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default 16)")
    p.add_argument("--workers", type=int, default=1,
                   help="decoding processes (default 1; 0 decodes in this process)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    p.add_argument("--backend", choices=["auto", "onnxruntime", "torch", "plain", "onnx"], default="auto",
                   help="what runs the model: auto (default: ONNX Runtime on the CPU, the fused "
                        "PyTorch twin on a GPU; exact fp32), onnxruntime, torch, plain (the "
                        "PyTorch model as trained); ONNX files run on onnxruntime")
    p.add_argument("--optimize", action=argparse.BooleanOptionalAction, default=None,
                   help="--no-optimize is --backend plain")
    p.add_argument("--quiet", "-q", action="store_true",
                   help="no per-file error or warning lines on stderr (the output keeps them), "
                        "and no note about missing thresholds")
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
    if args.top_k < 0:
        raise ValueError(f"--top-k must be 0 or more, got {args.top_k}")
    if args.threshold is not None:
        from samplecnn.options import check_threshold

        check_threshold(args.threshold, "--threshold")
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
        return _tag(args)


def _tag(args: argparse.Namespace) -> int:
    from samplecnn.paths import escape_path, path_key
    from samplecnn.tagging import Tagger, expand_paths
    from samplecnn.tagging.catalog import done_keys, model_name, open_output, read_manifest
    from samplecnn.tagging.writers import open_writer, taggram_names, write_taggram

    def warn(msg: str) -> None:
        print(f"samplecnn tag: warning: {msg}", file=sys.stderr)

    if args.engine == "ray":
        return _run_ray(args, warn)
    paths = expand_paths(args.paths, warn=warn) if args.paths else []
    if args.manifest:
        paths += read_manifest(args.manifest)
    tagger = Tagger.load(args.model, backend=args.backend, device=args.device,
                         optimize=args.optimize, batch_size=args.batch_size)
    tagger.hop_samples(args.hop)  # validate before any work
    if not args.quiet:
        note_missing_thresholds(tagger, args.threshold, "samplecnn tag")
    todo = paths
    if args.resume:
        done = done_keys(args.format, args.output)
        todo = [p for p in paths if path_key(p) not in done]
        if len(todo) < len(paths):
            print(f"samplecnn tag: resuming, {len(paths) - len(todo)} file(s) already done",
                  file=sys.stderr)
    names = taggram_names(paths) if args.taggram_dir else {}
    if args.format == "parquet":
        writer = open_output("parquet", args.output, tagger.tags, model_name(args.model),
                             append=args.resume)
    else:
        writer = open_writer(args.format, args.output, tagger.tags, paths, append=args.resume)
    failed = 0
    try:
        for res in tagger.tag_files(todo, hop=args.hop, aggregate=args.aggregate, top_k=args.top_k,
                                    workers=args.workers, batch_size=args.batch_size, last=args.last,
                                    threshold=args.threshold, at_least_one=args.at_least_one):
            shown = escape_path(res.path)
            if not args.quiet:  # a file that was tagged but not cleanly (truncated, damaged)
                for w in res.record["warnings"]:
                    warn(f"{shown}: {w}")
            if res.error is not None:
                failed += 1
                if not args.quiet:
                    print(f"samplecnn tag: {shown}: {res.record['error']}", file=sys.stderr)
            elif args.taggram_dir:
                write_taggram(tagger.taggram_of(res), args.taggram_dir, names[res.path])
            writer.write(res.record)
    finally:
        writer.close()
    if failed:
        print(f"samplecnn tag: {failed} of {len(todo)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


def note_missing_thresholds(tagger, threshold: float | None, prog: str) -> None:
    """One stderr line when records will carry `labels: null` (no stored thresholds, no
    --threshold), saying how to get them."""
    if threshold is None and tagger.thresholds is None:
        print(f"{prog}: note: the model has no decision thresholds, so `labels` is null; fit "
              "them with `samplecnn thresholds MODEL --data STORE --out OUT`, or pass "
              "--threshold X", file=sys.stderr)


def _run_ray(args: argparse.Namespace, warn) -> int:
    from samplecnn.tagging.catalog import tag_catalog

    if args.format not in ("parquet", "jsonl") or not args.output:
        raise ValueError("--engine ray writes --format parquet (or jsonl) to --output")
    if args.taggram_dir:
        raise ValueError("--taggram-dir is for the local engine (--engine local)")
    if args.device != "cpu":
        raise ValueError("--device is for the local engine; on Ray use --gpus-per-worker")

    def on_record(rec: dict) -> None:
        if rec.get("error") is not None and not args.quiet:
            print(f"samplecnn tag: {rec['path']}: {rec['error']}", file=sys.stderr)

    run = tag_catalog(args.model, args.paths, manifest=args.manifest, output=args.output,
                      fmt=args.format, engine="ray", resume=args.resume, hop=args.hop,
                      aggregate=args.aggregate, top_k=args.top_k, last=args.last,
                      batch_size=args.batch_size, backend=args.backend,
                      ray_address=args.ray_address, num_workers=args.num_workers,
                      gpus_per_worker=args.gpus_per_worker, on_record=on_record, warn=warn)
    if args.resume and run.skipped:
        print(f"samplecnn tag: resuming, {run.skipped} file(s) already done", file=sys.stderr)
    if run.failed:
        print(f"samplecnn tag: {run.failed} of {run.tagged} file(s) failed", file=sys.stderr)
    return 1 if run.failed else 0
