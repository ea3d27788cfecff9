"""`samplecnn visualize filters`: the paper's filter-spectrum images of a checkpoint."""
from __future__ import annotations

import argparse

from ._common import finite_float


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("visualize", help="visualisations of a trained model",
                              description="Visualisations of a trained model.")
    sub = p.add_subparsers(dest="what", metavar="WHAT")
    sub.required = True
    f = sub.add_parser(
        "filters", help="spectra of inputs that maximise each filter of the lower layers",
        description="Gradient ascent from short random inputs (729 samples, +-0.015) to each "
                    "filter of the lower layers; one image per layer with the filters' "
                    "magnitude spectra sorted by peak frequency (as in the paper). The "
                    "strided front end shows its learned kernels' spectra instead.",
    )
    f.add_argument("checkpoint")
    f.add_argument("--out", required=True, metavar="DIR")
    f.add_argument("--layers", nargs="+", metavar="LAYER",
                   help="layer names (default: frontend block1 block2 block3)")
    f.add_argument("--steps", type=int, default=18)
    f.add_argument("--step-size", type=finite_float(0, 1e6), default=1.0)
    f.add_argument("--length", type=int, default=729, help="input samples (default 729)")
    f.add_argument("--seed", type=int, default=0)
    f.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samplecnn.visualize import visualize_filters

    if args.steps < 1 or args.length < 1:
        raise ValueError("--steps and --length must be positive")
    visualize_filters(args.checkpoint, args.out, layers=args.layers, steps=args.steps,
                      step_size=args.step_size, length=args.length, seed=args.seed, log=print)
    return 0
