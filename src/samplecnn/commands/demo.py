"""`samplecnn demo`: the whole pipeline on synthetic data, on a CPU, in one run folder."""
from __future__ import annotations

import argparse

from ._common import finite_float


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo", help="generate data, train, evaluate and tag: the whole pipeline offline",
        description="Generate the synthetic tagged-music data set, prepare it, train a "
                    "sample-level model sized for a CPU, evaluate it on the test split, tag a "
                    "few clips and draw the plots; everything goes under --out. About 8 "
                    "minutes on 2 cores; rerunning the command resumes an interrupted demo.",
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="run folder (default runs/demo)")
    p.add_argument("--compare", action="store_true",
                   help="also train the frame-level raw and mel-spectrogram baselines, same budget")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 48 clips of 3 s, narrow model, 1 epoch (figures mean little)")
    p.add_argument("--clips", type=int, default=800, help="synthetic clips (default 800)")
    p.add_argument("--seconds", type=finite_float(0, 3600), default=10.0, help="clip length (default 10 s)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recipe's)")
    p.add_argument("--difficulty", default="medium", help="synthetic data difficulty (default medium)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="processes for data generation/decoding")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--no-filters", action="store_true", help="skip the filter visualisation")
    bars = p.add_mutually_exclusive_group()
    bars.add_argument("--progress", dest="progress", action="store_const", const=True,
                      help="progress bars on stderr even when it is not a terminal")
    bars.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                      help="no progress bars (default: training bars on a terminal only)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="training-config overrides, e.g. optim.lr=0.002")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samplecnn.demo import format_summary, run_demo

    summary = run_demo(args.out, clips=args.clips, seconds=args.seconds, epochs=args.epochs,
                       seed=args.seed, difficulty=args.difficulty, compare=args.compare,
                       quick=args.quick, workers=args.workers, threads=args.threads,
                       filters=not args.no_filters,
                       progress=args.progress, overrides=args.overrides)
    print(format_summary(summary))
    return 0
