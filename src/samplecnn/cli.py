"""The `samplecnn` command: a thin layer over the Python API.

Each sub-command lives in `samplecnn.commands.<module>` and exposes
`register(subparsers)`, which adds its parser and sets `func` to a callable taking the
parsed arguments and returning an exit status.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order of `samplecnn --help`.
COMMAND_MODULES = [
    "models",
    "synth",
    "prepare",
    "train",
    "evaluate",
    "thresholds",
    "visualize",
    "demo",
    "tag",
    "embed",
    "serve",
    "export",
    "import_weights",
    "pretrained",
    "bench",
]


class _Parser(argparse.ArgumentParser):
    """Usage errors (a bad option value, `--hop inf`) are one line, like every other
    error (docs/errors.md), with a pointer to `--help` instead of the usage block.
    Sub-command parsers are made of the same class."""

    def error(self, message: str):
        msg = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {msg} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from samplecnn import __version__

    parser = _Parser(
        prog="samplecnn",
        description="Music auto-tagging with sample-level deep CNNs on raw waveforms.",
    )
    parser.add_argument("--version", action="version", version=f"samplecnn {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"samplecnn.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("samplecnn: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as err:
        # User-facing errors are one line; tracebacks are for bugs (a KeyError is a bug:
        # code that reads user input raises ValueError naming the input).
        msg = " ".join(str(err).split()) or type(err).__name__
        print(f"samplecnn {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
