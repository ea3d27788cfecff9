"""`samplecnn models`: the registered variants as a table or JSON."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models", help="list the registered model variants",
        description="List every registered model variant with its size and cost "
                    "(parameters counted for --n-tags outputs; GFLOPs of one forward pass).",
    )
    p.add_argument("pattern", nargs="?", help="glob filter on names, e.g. 'm3n*'")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--n-tags", type=int, default=50, help="output tags for the counts (default 50)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samplecnn.models import describe_model, get_model_entry, list_models

    names = list_models(args.pattern)
    if args.pattern and not names:
        if not any(ch in args.pattern for ch in "*?["):
            get_model_entry(args.pattern)  # raises with the closest names
        raise ValueError(f"no model matches {args.pattern!r}")
    rows = [describe_model(name, n_tags=args.n_tags) for name in names]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ["name", "family", "m", "n", "input", "ms", "frames", "first", "layers",
              "params", "GFLOPs", "paper AUC"]
    table = [[r["name"], r["family"], r["m"], r["n"], r["input_samples"], r["duration_ms"],
              r["frames"], r["first_filter"], r["layers"], f"{r['params']:,}",
              f"{r['gflops']:.3f}", "" if r["paper_mtat_auc"] is None else f"{r['paper_mtat_auc']:.4f}"]
             for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *table)]
    for i, row in enumerate([header] + table):
        print("  ".join(str(x).ljust(w) if j < 2 else str(x).rjust(w)
                        for j, (x, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    return 0
