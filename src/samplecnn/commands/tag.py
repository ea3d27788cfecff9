"""`samplecnn tag`: tag files, folders and globs with a model loaded once."""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "tag", help="tag audio files with a checkpoint or an ONNX export",
        description="Tag audio files, folders (recursive) and globs. Each file is read as a "
                    "stream of windows of the model's segment length at the model's sample "
                    "rate (the last partial window is zero-padded, not dropped); a file's "
                    "score per tag is the mean (or max) over its windows. Failed files are "
                    "reported in the output and on stderr; exit status 1 if any failed.",
    )
    p.add_argument("model", help="checkpoint (.ckpt/.pt) or ONNX file from `samplecnn export`")
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files, folders or globs")
    p.add_argument("--top-k", type=int, default=5, help="tags listed in `top` (default 5)")
    p.add_argument("--hop", type=float, default=None, metavar="SECONDS",
                   help="hop between windows in seconds (default: one window, no overlap)")
    p.add_argument("--aggregate", choices=["mean", "max", "logit_mean"], default="mean",
                   help="how window scores are combined per file (default mean: the mean of "
                        "the windows' scores; logit_mean: sigmoid of the mean logit)")
    p.add_argument("--last", choices=["pad", "drop"], default="pad",
                   help="the samples after the last full window: pad = score them in one "
                        "zero-padded window (default), drop = full windows only")
    p.add_argument("--format", choices=["json", "jsonl", "csv"], default="json",
                   help="output format (default json)")
    p.add_argument("--output", "-o", default=None, metavar="FILE", help="output file (default stdout)")
    p.add_argument("--resume", action="store_true",
                   help="with --format jsonl --output FILE: skip files already tagged in FILE "
                        "(failed files are retried)")
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
    p.add_argument("--quiet", "-q", action="store_true", help="no per-file error lines on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samplecnn.tagging import Tagger, expand_paths
    from samplecnn.tagging.writers import open_writer, path_key, read_done_paths, taggram_names, write_taggram

    if args.resume and (args.format != "jsonl" or not args.output):
        raise ValueError("--resume needs --format jsonl and --output FILE")
    if args.top_k < 0:
        raise ValueError(f"--top-k must be 0 or more, got {args.top_k}")

    def warn(msg: str) -> None:
        print(f"samplecnn tag: warning: {msg}", file=sys.stderr)

    paths = expand_paths(args.paths, warn=warn)
    tagger = Tagger.load(args.model, backend=args.backend, device=args.device,
                         optimize=args.optimize, batch_size=args.batch_size)
    tagger.hop_samples(args.hop)  # validate before any work
    todo = paths
    if args.resume:
        done = read_done_paths(args.output)
        todo = [p for p in paths if path_key(p) not in done]
        if len(todo) < len(paths):
            print(f"samplecnn tag: resuming, {len(paths) - len(todo)} file(s) already done",
                  file=sys.stderr)
    names = taggram_names(paths) if args.taggram_dir else {}
    writer = open_writer(args.format, args.output, tagger.tags, paths, append=args.resume)
    failed = 0
    try:
        for res in tagger.tag_files(todo, hop=args.hop, aggregate=args.aggregate, top_k=args.top_k,
                                    workers=args.workers, batch_size=args.batch_size, last=args.last):
            if res.error is not None:
                failed += 1
                if not args.quiet:
                    print(f"samplecnn tag: {res.path}: {res.error}", file=sys.stderr)
            elif args.taggram_dir:
                write_taggram(tagger.taggram_of(res), args.taggram_dir, names[res.path])
            writer.write(res.record)
    finally:
        writer.close()
    if failed:
        print(f"samplecnn tag: {failed} of {len(todo)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0
