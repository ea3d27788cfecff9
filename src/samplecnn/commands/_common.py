"""Checks every command runs on its arguments before any work.

A command that would fail when it writes its result must fail before it reads the first
file: each check raises ValueError naming the option and the reason, which the CLI
prints as one line with exit status 2 (see docs/errors.md). Nothing is created here;
the writers create missing parent folders later.
"""
from __future__ import annotations

import os

from samplecnn.atomic import resolve_output
from samplecnn.paths import escape_path

__all__ = ["check_output_file", "check_output_dir", "check_device", "add_scoring_options", "scoring_options",
           "add_run_options", "finite_float"]

_SCORING_HELP = {
    "hop": "hop between windows in seconds (default: one window, no overlap)",
    "aggregate": "how window scores are combined per file (default {default}; mean: the mean of "
                 "the windows' scores; max; logit_mean: sigmoid of the mean logit)",
    "last": "the samples after the last full window: pad = score them in one zero-padded "
            "window, drop = full windows only (default {default})",
    "top_k": "tags listed in `top` (default {default})",
    "max_windows": "score only each clip's first N windows (default: all; validation uses 10)",
    "threshold": "decide every tag at score >= X (0..1) in `labels`, instead of the model's "
                 "stored per-tag thresholds (`samplecnn thresholds`)",
    "at_least_one": "`labels` holds at least the top tag when no tag reaches its threshold",
    "backend": "what runs the model: auto (default: ONNX Runtime on the CPU, the fused PyTorch "
               "twin on a GPU; exact fp32), onnxruntime (onnx), torch, plain (the PyTorch model "
               "as trained); ONNX files run on onnxruntime",
}


def finite_float(low: float | None = None, high: float | None = None, low_inclusive: bool = False):
    """An argparse `type=` for a float option: a finite number in (low, high] (`[low, high]`
    with `low_inclusive`), checked by `samplecnn.options.check_float`, the one float check
    of the CLI, the service and the API. `inf`, `nan` and `1e308` never reach the code
    (exit 2, one line naming the option)."""
    import argparse

    from samplecnn.options import check_float

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        try:
            return check_float(value, "the value", low=low, high=high, low_inclusive=low_inclusive)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = "number"  # argparse names the type in some messages
    return parse


def add_scoring_options(parser, fields=("hop", "aggregate", "last", "top_k", "backend"), **defaults) -> None:
    """The flags of `samplecnn.options.ScoringOptions` fields (`--hop`, `--aggregate`,
    `--last`, `--top-k`, `--max-windows`, `--backend`, `--threshold`, `--at-least-one`), with choices read from where each
    concept lives and `defaults` overriding the options' own (`last="drop"` for evaluate)."""
    import dataclasses

    from samplecnn.options import BACKEND_ALIASES, MAX_HOP_S, ScoringOptions
    from samplecnn.inference.backends import BACKENDS
    from samplecnn.metrics import AGGREGATIONS
    from samplecnn.windows import LAST_WINDOW_POLICIES

    base = {f.name: f.default for f in dataclasses.fields(ScoringOptions)} | defaults
    kinds = {"hop": dict(type=finite_float(0, MAX_HOP_S), metavar="SECONDS"), "aggregate": dict(choices=AGGREGATIONS),
             "last": dict(choices=LAST_WINDOW_POLICIES), "top_k": dict(type=int, metavar="K"),
             "max_windows": dict(type=int, metavar="N"),
             "backend": dict(choices=(*BACKENDS, *BACKEND_ALIASES)),
             "threshold": dict(type=float, metavar="X"), "at_least_one": dict(action="store_true")}
    for name in fields:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=base[name],
                            help=_SCORING_HELP[name].format(default=base[name]), **kinds[name])


def add_run_options(parser, kept_in: str) -> None:
    """`--batch-size`, `--workers`, `--device`, `--quiet` of the commands that score files
    (`tag`, `embed`); `kept_in` names what keeps the per-file errors with `--quiet`."""
    parser.add_argument("--batch-size", type=int, default=16, help="windows per forward pass (default 16)")
    parser.add_argument("--workers", type=int, default=1,
                        help="decoding processes (default 1; 0 decodes in this process)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help=f"no per-file error or warning lines on stderr ({kept_in} keeps them)")


def add_split_options(parser, split: str, fields, split_help: str | None = None) -> None:
    """`--data STORE --split`, the scoring options (evaluate's defaults: `--last drop`),
    `--batch-size`, `--device`, `--no-progress` of the commands that score one split of a
    store (`evaluate`, `thresholds`: thresholds are fitted on evaluate's clip scores)."""
    parser.add_argument("--data", required=True, metavar="STORE", help="a store made by `samplecnn prepare`")
    parser.add_argument("--split", default=split, choices=["train", "valid", "test"], help=split_help)
    add_scoring_options(parser, fields, last="drop")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    parser.add_argument("--no-progress", action="store_true")


def split_options(args):
    """`scoring_options` of a command registered with `add_split_options`, its batch size
    checked too."""
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    return scoring_options(args)


def scoring_options(args, **fixed):
    """The `ScoringOptions` of a command's parsed flags (ValueError naming the bad one,
    before any work)."""
    import dataclasses

    from samplecnn.options import ScoringOptions

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(ScoringOptions) if hasattr(args, f.name)}
    return ScoringOptions(**(given | fixed))


def _nearest_existing(path: str) -> str:
    """The path itself or its closest ancestor that exists (as a link or anything else)."""
    p = os.path.abspath(path)
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def _check_parent(path: str, option: str) -> None:
    """The folder `path` would be written in exists or can be made, and is writable."""
    parent = os.path.dirname(os.path.abspath(path))
    base = _nearest_existing(parent)
    shown = escape_path(path)
    if not os.path.isdir(base):
        raise ValueError(f"{option} {shown}: {escape_path(base)} is a file, not a folder; "
                         "the output cannot be written under it")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {shown}: folder {escape_path(base)} is not writable")


def check_output_file(path: str | os.PathLike | None, option: str = "--output") -> None:
    """`path` can be written as a file: not a folder, not under a file, in a writable
    folder (None: stdout, nothing to check). Raises ValueError naming `option`."""
    if path is None:
        return
    path = os.fspath(path)
    shown = escape_path(path)
    if path == "" or path.endswith(os.sep) or os.path.isdir(path):
        raise ValueError(f"{option} {shown}: is a folder; {option} needs a file name")
    try:
        target, kind = resolve_output(path)  # refuses sockets, block devices, link loops
    except ValueError as err:
        raise ValueError(f"{option} {err}") from None
    if kind == "stream":  # written through in place: only the device itself matters
        if not os.access(path, os.W_OK):
            raise ValueError(f"{option} {shown}: is not writable")
        return
    _check_parent(os.fspath(target), option)  # a symlink is written at its real target
    if os.path.isfile(path) and not os.access(path, os.W_OK):
        # Written atomically by replacing it, which needs the folder only, but an existing
        # read-only file is a sign the user did not mean it to be overwritten.
        raise ValueError(f"{option} {shown}: file is read-only")


def check_output_dir(path: str | os.PathLike | None, option: str = "--out") -> None:
    """`path` can be used as an output folder: a folder or nothing yet, under folders
    only, writable (None: no output folder asked for)."""
    if path is None:
        return
    path = os.fspath(path)
    shown = escape_path(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{option} {shown}: is a file; {option} needs a folder")
    if os.path.isdir(path):
        if not os.access(path, os.W_OK | os.X_OK):
            raise ValueError(f"{option} {shown}: folder is not writable")
        return
    _check_parent(path, option)


def check_device(device: str | None, option: str = "--device") -> None:
    """`device` names a torch device this machine has (None: the command's default); the
    one check, `inference.runners.check_device`."""
    if device is None:
        return
    from samplecnn.inference.runners import check_device as check

    check(device, option)
