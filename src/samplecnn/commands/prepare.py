"""`samplecnn prepare {mtat,msd,csv}`: decode a data set once into a segment store."""
from __future__ import annotations

import argparse
import sys

from ._common import finite_float


def _common(p: argparse.ArgumentParser) -> None:
    from samplecnn.data.prepare import DEFAULT_MIN_SAMPLES, DEFAULT_SAMPLE_RATE

    p.add_argument("--root", required=True, help="data set folder")
    p.add_argument("--out", required=True, help="store folder to create")
    p.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE,
                   help="target sample rate in Hz (default: %(default)s, the paper's)")
    p.add_argument("--min-samples", type=int, default=DEFAULT_MIN_SAMPLES,
                   help="zero-pad shorter clips up to this many samples (default: "
                        "%(default)s, one 3^9 segment)")
    p.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: CPU count; 1: no subprocesses)")
    p.add_argument("--limit", type=int, default=None,
                   help="keep at most N clips of each split (quick experiments)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing store made from other inputs or options")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare", help="decode a data set into a segment store",
        description="Decode every clip once (parallel, resumable) into a segment store "
                    "that training reads without decoding again. Rerun the same command "
                    "after an interruption to resume; on a complete store it does nothing "
                    "and prints the store's summary.")
    sub = parser.add_subparsers(dest="dataset", metavar="DATASET")
    sub.required = True

    p = sub.add_parser("mtat", help="MagnaTagATune (annotations_final.csv + folders 0-f)")
    _common(p)
    p.add_argument("--no-duration-filter", action="store_true",
                   help="keep clips shorter than 29.1 s")
    p.add_argument("--split-lists", nargs="+", metavar="PATH",
                   help="TRAIN VALID TEST files of clip paths, or a folder holding them")
    p.set_defaults(func=run)

    p = sub.add_parser("msd", help="Million Song Dataset audio with Last.fm tags")
    _common(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--lastfm-db", help="Last.fm tag SQLite database (lastfm_tags.db)")
    src.add_argument("--tags-csv", help="CSV with track_id,tag[,score] columns")
    p.add_argument("--threshold", type=finite_float(0, 100, low_inclusive=True), default=50.0,
                   help="a tag is positive when its score is above this (default: 50)")
    p.add_argument("--splits", nargs="+", metavar="PATH",
                   help="TRAIN VALID TEST files of track ids, or a folder holding them")
    p.add_argument("--min-duration", type=finite_float(0, 86400, low_inclusive=True), default=None,
                   help="drop clips shorter than this many seconds (e.g. 29.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split without --splits")
    p.set_defaults(func=run)

    p = sub.add_parser("csv", help="a folder with annotations.csv (see docs/data.md)")
    _common(p)
    p.add_argument("--csv", help="annotations CSV (default: ROOT/annotations.csv)")
    p.add_argument("--valid-fraction", type=finite_float(0, 1, low_inclusive=True), default=0.1,
                   help="share of clips for validation when the CSV has no split column")
    p.add_argument("--test-fraction", type=finite_float(0, 1, low_inclusive=True), default=0.1,
                   help="share of clips for test when the CSV has no split column")
    p.add_argument("--seed", type=int, default=0, help="seed of the split")
    p.add_argument("--min-duration", type=finite_float(0, 86400, low_inclusive=True), default=None,
                   help="drop clips shorter than this many seconds")
    p.set_defaults(func=run)


def run(args) -> int:
    from samplecnn import data
    from samplecnn.data.prepare import check_out_path
    from samplecnn.paths import escape_path

    check_out_path(args.out, args.overwrite)  # fail before reading a large data set
    if args.dataset == "mtat":
        split_lists = args.split_lists
        if split_lists is not None and len(split_lists) not in (1, 3):
            raise ValueError("--split-lists takes a folder or three files (train valid test)")
        manifest = data.read_mtat(args.root, split_lists=split_lists,
                                  duration_filter=not args.no_duration_filter)
    elif args.dataset == "msd":
        if args.splits is not None and len(args.splits) not in (1, 3):
            raise ValueError("--splits takes a folder or three files (train valid test)")
        manifest = data.read_msd(args.root, lastfm_db=args.lastfm_db, tags_csv=args.tags_csv,
                                 threshold=args.threshold, splits=args.splits, seed=args.seed,
                                 min_duration_s=args.min_duration)
    else:
        manifest = data.read_csv_folder(args.root, csv_path=args.csv,
                                        valid_fraction=args.valid_fraction,
                                        test_fraction=args.test_fraction, seed=args.seed,
                                        min_duration_s=args.min_duration)
    manifest = manifest.limit(args.limit)
    for msg in manifest.warnings:  # likely mistakes in the annotations: said before the work
        print(f"samplecnn prepare: warning: {msg}", file=sys.stderr)
    counts = manifest.split_counts()
    print(f"{manifest.name}: {len(manifest)} clips (train {counts['train']}, "
          f"valid {counts['valid']}, test {counts['test']}), {len(manifest.tags)} tags, "
          f"-> {escape_path(args.out)} at {args.sample_rate} Hz", file=sys.stderr)
    report = data.prepare_store(
        manifest, args.out, sample_rate=args.sample_rate, min_samples=args.min_samples,
        workers=args.workers, overwrite=args.overwrite,
        progress=False if args.quiet else None,
        log=lambda msg: print(msg, file=sys.stderr))
    print(report.summary())
    print(f"done in {report.seconds:.1f} s ({report.decoded} clips decoded)")
    return 0
