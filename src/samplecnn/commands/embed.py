"""`samplecnn embed`: per-window and per-file embeddings of one layer, as NumPy."""
from __future__ import annotations

import argparse
import sys

from ._common import add_run_options, add_scoring_options, scoring_options
from .pretrained import add_pretrained_option, take_pretrained


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed", help="write per-window and per-file embeddings (.npz)",
        description="Embeddings of a named layer (see `layer_names`: frontend, block1..N, "
                    "features) for audio files, folders and globs. Each window's layer "
                    "output is pooled over time; a file's embedding is the mean of its "
                    "windows'. Output: a NumPy .npz (see docs/tagging.md for its arrays).",
    )
    p.add_argument("model", nargs="?", default=None,
                   help="checkpoint (.ckpt/.pt), or ONNX export (layer features only) (or --pretrained)")
    p.add_argument("paths", nargs="*", metavar="PATH", help="audio files, folders or globs")
    p.add_argument("--layer", default="features", help="layer name (default features)")
    p.add_argument("--pool", choices=["mean", "max"], default="mean",
                   help="pooling over the layer's time axis within a window (default mean)")
    p.add_argument("--out", "--output", "-o", dest="out", required=True, metavar="FILE",
                   help="output .npz file")
    add_scoring_options(p, ("hop", "last"))
    add_run_options(p, "the .npz")
    add_pretrained_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samplecnn.locks import exclusive

    from ._common import check_device, check_output_file

    # Before any file is read or weights downloaded.
    check_output_file(args.out, "--out")
    check_device(args.device)
    with exclusive(args.out, "embed output"):
        take_pretrained(args, "model", "paths")
        if not args.paths:
            raise ValueError("give PATHs to embed")
        return _embed(args)


def _embed(args: argparse.Namespace) -> int:
    from samplecnn.paths import escape_path
    from samplecnn.tagging import Tagger, expand_paths
    from samplecnn.tagging.embeddings import write_embeddings

    def warn(msg: str) -> None:
        print(f"samplecnn embed: warning: {msg}", file=sys.stderr)

    paths = expand_paths(args.paths, warn=warn)
    # A checkpoint, or an ONNX file (fp32 or int8): an export embeds `features` only (its
    # scores graph outputs that layer), other layers are a one-line error.
    tagger = Tagger.load(args.model, device=args.device, batch_size=args.batch_size)

    def reported(results):
        # Warnings as files finish; errors are listed once the file is written.
        for res in results:
            if not args.quiet:
                for w in res.info.get("warnings") or []:
                    warn(f"{escape_path(res.path)}: {w}")
            yield res

    results = tagger.embed_files(paths, scoring_options(args), layer=args.layer, pool=args.pool,
                                 workers=args.workers, batch_size=args.batch_size)
    summary = write_embeddings(args.out, tagger, paths, reported(results), layer=args.layer,
                               pool=args.pool, hop=args.hop)
    for path, err in summary["errors"]:
        if not args.quiet:
            print(f"samplecnn embed: {escape_path(path)}: {err}", file=sys.stderr)
    n_bad = len(summary["errors"])
    print(f"samplecnn embed: {len(paths) - n_bad} file(s), {summary['windows']} window(s), "
          f"dim {summary['dim']} -> {escape_path(args.out)}", file=sys.stderr)
    return 1 if n_bad else 0
