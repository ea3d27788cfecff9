"""`samplecnn export`: a checkpoint -> ONNX (raw audio in, tag scores out)."""
from __future__ import annotations

import argparse

from ._common import finite_float
from .pretrained import add_pretrained_option, take_pretrained


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export", help="export a checkpoint to ONNX",
        description="Write an ONNX model whose input is raw mono audio at the checkpoint's "
                    "sample rate, `audio` (batch, input_samples), with outputs `logits` and "
                    "`scores`; tag names, rate and model config are in its metadata. The "
                    "export is checked against PyTorch with ONNX Runtime on random input.",
    )
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="samplecnn or training checkpoint (or --pretrained)")
    p.add_argument("--onnx", required=True, metavar="FILE", help="output .onnx file")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--atol", type=finite_float(0, 1e3, low_inclusive=True), default=1e-4,
                   help="largest accepted |ONNX - PyTorch| difference (default 1e-4)")
    p.add_argument("--no-check", action="store_true", help="skip the ONNX Runtime comparison")
    add_pretrained_option(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samplecnn.export import export_onnx
    from samplecnn.locks import exclusive

    from ._common import check_output_file

    check_output_file(args.onnx, "--onnx")  # before weights are downloaded
    with exclusive(args.onnx, "ONNX output"):
        take_pretrained(args, "checkpoint")
        return _export(args, export_onnx)


def _export(args: argparse.Namespace, export_onnx) -> int:

    rep = export_onnx(args.checkpoint, args.onnx, opset=args.opset, check=not args.no_check,
                      atol=args.atol)
    msg = (f"wrote {rep.path}: {rep.n_tags} tags, input (batch, {rep.input_samples}) at "
           f"{rep.sample_rate} Hz")
    if rep.max_abs_diff_logits is not None:
        msg += (f"; ONNX Runtime vs PyTorch max abs diff: logits {rep.max_abs_diff_logits:.2e}, "
                f"scores {rep.max_abs_diff_scores:.2e} (atol {rep.atol:g})")
    print(msg)
    return 0
