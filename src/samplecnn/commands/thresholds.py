"""`samplecnn thresholds`: fit per-tag decision thresholds for a checkpoint on a store
split and write the checkpoint with them (`samplecnn.thresholds`)."""
from __future__ import annotations

import argparse
import json

from ._common import add_split_options
from .pretrained import add_pretrained_option, take_pretrained


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "thresholds", help="fit per-tag decision thresholds (max F1 on the validation split)",
        description="Score every clip of a split on the one scoring path (the clip scores "
                    "`evaluate` computes), fit per tag the threshold that maximises F1 (or "
                    "another --objective), and write the checkpoint with them to --out. Every "
                    "output of `tag`, `serve` and `export` then carries `labels`: the tags at "
                    "or above their threshold. Fit on the validation split: fitted on the "
                    "test split, the test figures become optimistic.",
    )
    p.add_argument("model", nargs="?", default=None,
                   help="a checkpoint (trained, imported, or from before thresholds), or --pretrained")
    # evaluate's scoring options and defaults: the thresholds are fitted on its clip scores
    add_split_options(p, "valid", ("hop", "aggregate", "last", "max_windows", "backend"),
                      split_help="the split to fit on (default valid)")
    p.add_argument("--objective", default="f1", metavar="OBJ",
                   help="f1 (default: the threshold of maximal F1 per tag) or precision:P "
                        "(the lowest threshold reaching precision P, e.g. precision:0.8)")
    p.add_argument("--out", required=True, metavar="OUT",
                   help="the checkpoint to write (the model with its thresholds; may be MODEL itself)")
    p.add_argument("--json", action="store_true", help="print the thresholds as JSON")
    add_pretrained_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from samplecnn.thresholds import parse_objective

    from ._common import check_device, check_output_file, split_options

    options = split_options(args)
    parse_objective(args.objective)
    check_output_file(args.out, "--out")
    if str(args.out).lower().endswith(".onnx"):
        raise ValueError(f"--out {args.out}: thresholds are written into a checkpoint; "
                         "`samplecnn export` it afterwards (the ONNX file carries them)")
    check_device(args.device)
    take_pretrained(args, "model")
    if str(args.model).lower().endswith(".onnx"):
        raise ValueError(f"{args.model}: fit thresholds on the checkpoint, then export it")
    if args.split == "test":
        print("samplecnn thresholds: warning: fitting on the test split makes the test "
              "figures optimistic (fit on valid, evaluate on test)", file=sys.stderr)
    from samplecnn.checkpoint import set_thresholds
    from samplecnn.evaluation import fit_checkpoint_thresholds

    fit = fit_checkpoint_thresholds(args.model, args.data, args.split, args.objective, options=options,
                                    batch_size=args.batch_size, device=args.device,
                                    progress=not args.no_progress and sys.stderr.isatty())
    set_thresholds(args.model, fit.thresholds, args.out)
    th = fit.thresholds
    if args.json:
        print(json.dumps(th.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(fit.table())
        for n in fit.notes:
            print(f"note: {n}")
        if th.unfitted:
            print(f"unfitted ({len(th.unfitted)}, deciding at the fallback {th.fallback:g}): "
                  + ", ".join(f"{t} ({why})" for t, why in th.unfitted.items()))
        print(f"{th.describe()}; written to {args.out}")
    return 0
