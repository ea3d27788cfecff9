"""`samplecnn export`: a checkpoint -> ONNX (raw audio in, tag scores out), fp32 or int8."""
from __future__ import annotations

import argparse

from ._common import finite_float
from .pretrained import add_pretrained_option, take_pretrained


def register(subparsers: argparse._SubParsersAction) -> None:
    # NumPy and stdlib only: the choices come from where they are defined.
    from samplecnn.quantize import ACTIVATION_TYPES, CALIBRATION_METHODS, DEFAULT_WINDOWS, FP32_PARTS

    p = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX (fp32, or int8 with --int8)",
        description="Write an ONNX model whose input is raw mono audio at the checkpoint's "
                    "sample rate, `audio` (batch, input_samples), with outputs `logits` and "
                    "`scores`; tag names, rate and model config are in its metadata. The "
                    "export is checked against PyTorch with ONNX Runtime on random input. "
                    "With --int8 the file is quantized with ONNX Runtime's static "
                    "quantization, calibrated on --calibration (a store's train split or "
                    "audio files), and checked against the fp32 graph.",
    )
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="samplecnn or training checkpoint (or --pretrained)")
    p.add_argument("--onnx", required=True, metavar="FILE", help="output .onnx file")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--atol", type=finite_float(0, 1e3, low_inclusive=True), default=1e-4,
                   help="largest accepted |ONNX - PyTorch| difference (default 1e-4)")
    p.add_argument("--no-check", action="store_true",
                   help="skip the ONNX Runtime comparison (and, with --int8, the fp32 comparison "
                        "and validation ROC-AUC)")
    q = p.add_argument_group("int8")
    q.add_argument("--int8", action="store_true",
                   help="write an int8 graph (2-3x faster on CPUs; see docs/performance.md)")
    q.add_argument("--calibration", metavar="SOURCE",
                   help="a store (windows from its train split; its validation split measures "
                        "the ROC-AUC change) or audio files, a folder or a glob")
    q.add_argument("--calibration-windows", type=int, default=DEFAULT_WINDOWS, metavar="N",
                   help=f"calibration windows, drawn with --seed (default {DEFAULT_WINDOWS})")
    q.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="percentile",
                   help="how activation ranges are set (default percentile)")
    q.add_argument("--percentile", type=float, default=99.999,
                   help="with the percentile method: the share of |activations| kept (default 99.999)")
    q.add_argument("--activations", choices=ACTIVATION_TYPES, default="uint8",
                   help="activation type (default uint8: the fast u8 x s8 kernels on x86)")
    q.add_argument("--keep-fp32", default="none", metavar="PARTS",
                   help=f"parts left in fp32, comma-separated ({', '.join(FP32_PARTS)}) or none "
                        "(default none)")
    q.add_argument("--weight-bits", type=int, choices=[7, 8], default=7,
                   help="7 (default: no int16 overflow in the x86 kernels of CPUs without VNNI) "
                        "or 8")
    q.add_argument("--seed", type=int, default=0, help="seed of the calibration draw (default 0)")
    add_pretrained_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samplecnn.locks import exclusive

    from ._common import check_output_file

    check_output_file(args.onnx, "--onnx")  # before weights are downloaded
    recipe = _recipe(args)
    with exclusive(args.onnx, "ONNX output"):
        take_pretrained(args, "checkpoint")
        return _export(args, recipe)


def _recipe(args: argparse.Namespace):
    """The int8 recipe, or None; every int8 option checked before any work."""
    import os

    from samplecnn.paths import escape_path
    from samplecnn.quantize import QuantRecipe

    if not args.int8:
        if args.calibration is not None:
            raise ValueError("--calibration is for --int8 exports")
        return None
    if args.calibration is None:
        raise ValueError("--int8 needs --calibration SOURCE: a store, or audio files of the "
                         "music you will tag")
    if not any(ch in args.calibration for ch in "*?[") and not os.path.exists(args.calibration):
        raise ValueError(f"--calibration {escape_path(args.calibration)}: no such store, audio "
                         "file or folder")
    return QuantRecipe(method=args.calibration_method, windows=args.calibration_windows,
                       activations=args.activations, keep_fp32=_parts(args.keep_fp32),
                       percentile=args.percentile, reduce_range=args.weight_bits == 7, seed=args.seed)


def _parts(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    return () if parts == ("none",) else parts


def _export(args: argparse.Namespace, recipe) -> int:
    import sys

    from samplecnn.export import export_onnx

    rep = export_onnx(args.checkpoint, args.onnx, opset=args.opset, check=not args.no_check,
                      atol=args.atol, int8=recipe, calibration=args.calibration)
    msg = (f"wrote {rep.path}: {rep.precision}, {rep.n_tags} tags, input (batch, "
           f"{rep.input_samples}) at {rep.sample_rate} Hz")
    if rep.max_abs_diff_logits is not None:
        msg += (f"; ONNX Runtime vs PyTorch max abs diff: logits {rep.max_abs_diff_logits:.2e}, "
                f"scores {rep.max_abs_diff_scores:.2e} (atol {rep.atol:g})")
    print(msg)
    for note in rep.notes:
        print(f"samplecnn export: warning: {note}", file=sys.stderr)
    if rep.recipe is not None:
        cal = rep.calibration
        print(f"int8 ({rep.recipe.describe()}): calibrated on {cal['windows']} windows from "
              f"{cal['files']} {'clip' if cal['kind'] == 'store' else 'file'}(s) of {cal['source']}")
    if rep.int8_max_abs_diff_scores is not None:
        print(f"int8 vs fp32 max abs score diff on the calibration windows: "
              f"{rep.int8_max_abs_diff_scores:.4f}")
    if rep.roc_auc is not None:
        r = rep.roc_auc
        print(f"{r['split']} ROC-AUC fp32 {r['fp32']:.4f} -> int8 {r['int8']:.4f} "
              f"({r['int8'] - r['fp32']:+.4f}); PR-AUC {r['pr_fp32']:.4f} -> {r['pr_int8']:.4f} "
              f"({r['pr_int8'] - r['pr_fp32']:+.4f})")
    return 0

