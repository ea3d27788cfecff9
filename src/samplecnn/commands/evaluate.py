"""`samplecnn evaluate`: clip-level ROC-AUC / PR-AUC of a checkpoint on a store split, and
precision / recall / F1 at its decision thresholds."""
from __future__ import annotations

import argparse
import json

from ._common import add_split_options
from .pretrained import add_pretrained_option, take_pretrained


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="macro and per-tag ROC-AUC / PR-AUC of a checkpoint or ONNX file",
        description="Score every full segment of every clip of a split (the same scoring "
                    "path as `samplecnn tag`, but --last drop by default where tag pads), aggregate per clip (mean of segment scores by "
                    "default) and print per-tag and macro ROC-AUC and PR-AUC. Tags without a "
                    "positive clip in the split are reported and excluded from the averages. "
                    "At the checkpoint's stored thresholds (or --threshold), per-tag "
                    "precision, recall and F1 and their macro and micro averages. "
                    "An ONNX file of `samplecnn export` (fp32 or int8) is evaluated as it "
                    "is, on ONNX Runtime on the CPU.",
    )
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="a checkpoint from `samplecnn train` (best.ckpt / last.ckpt), an .onnx file "
                        "of `samplecnn export`, or --pretrained")
    add_split_options(p, "test", ("hop", "aggregate", "last", "max_windows", "backend", "threshold"))
    p.add_argument("--out", metavar="DIR", help="write metrics.json, per_tag.csv, clip_scores.csv, tag_roc_auc.png")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_pretrained_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from samplecnn.evaluation import evaluate
    from ._common import check_device, check_output_dir, split_options

    options = split_options(args)
    # Before weights are downloaded and the split is scored: a bad --out must not cost
    # the evaluation.
    check_output_dir(args.out, "--out")
    check_device(args.device)
    take_pretrained(args, "checkpoint")
    result = evaluate(args.checkpoint, args.data, split=args.split, options=options,
                      batch_size=args.batch_size, device=args.device,
                      progress=not args.no_progress and sys.stderr.isatty())
    if args.out:
        result.write(args.out)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False))  # strict JSON
        if result.decisions is None:
            print(f"samplecnn evaluate: no F1 figures: {result.thresholds}", file=sys.stderr)
    else:
        print(result.table())
        print(result.summary())
    return 0
