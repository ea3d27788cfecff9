"""`samplecnn train`: train a tagging model from a recipe config."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train", help="train a model on a segment store (recipes in configs/)",
        description="Train a model as a YAML recipe describes; dotted key=value overrides "
                    "change any setting, e.g. `data.store=stores/mtat trainer.max_epochs=3`. "
                    "Writes config.yaml, checkpoints/{best,last}.ckpt and CSV + TensorBoard "
                    "logs into out_dir; one process trains into a run folder at a time.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. data.store=PATH optim.lr=3e-4 trainer.devices=2")
    p.add_argument("--config", "-c", help="recipe YAML (not needed with --resume RUN_DIR)")
    p.add_argument("--resume", metavar="RUN_DIR|CKPT",
                   help="continue a run exactly from the end of its last finished epoch "
                        "(RUN_DIR/checkpoints/last.ckpt); add trainer.max_epochs=N to extend it")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an out_dir that already holds a run (removes its "
                        "checkpoints, logs and config.yaml first); without it such a folder "
                        "is refused")
    bars = p.add_mutually_exclusive_group()
    bars.add_argument("--progress", dest="progress", action="store_const", const=True,
                      help="progress bars on stderr even when it is not a terminal")
    bars.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                      help="no progress bars (default: on a terminal only)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config and exit without training")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samplecnn.training import dump_config, load_config, train

    if args.config is None and args.resume is None:
        raise ValueError("give --config FILE (a recipe from configs/) or --resume RUN_DIR")
    if args.print_config:
        if args.config is None:
            raise ValueError("--print-config needs --config")
        print(dump_config(load_config(args.config, args.overrides)), end="")
        return 0
    result = train(args.config, args.overrides, resume=args.resume, progress=args.progress,
                   overwrite=args.overwrite)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        loss = "n/a" if result.best_val_loss is None else f"{result.best_val_loss:.4f}"
        print(f"trained {result.epochs} epochs ({result.global_step} steps); best val_loss {loss}")
        print(f"best: {result.best_checkpoint}")
        print(f"last: {result.last_checkpoint}")
    return 0
