"""`samplecnn import`: public SampleCNN weights -> a samplecnn checkpoint."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import", help="convert public SampleCNN weights to a samplecnn checkpoint",
        description="Convert sota-music-tagging-models SampleCNN state dicts (.pth, 16 kHz) or "
                    "the authors' Keras HDF5 weights (.h5, Theano kernels flipped) into a "
                    "samplecnn checkpoint. The architecture is read from the weight shapes; "
                    "tag names come from --tags (their order must be the training order).",
    )
    p.add_argument("source", help="the downloaded weights (.pth / .h5)")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint to write")
    p.add_argument("--from", dest="kind", choices=["auto", "sota", "keras"], default="auto",
                   help="source layout (default: by extension, .h5/.hdf5 = keras)")
    p.add_argument("--tags", default=None, metavar="PRESET|FILE",
                   help="tag names: mtat, mtat-sota, msd or a file with one tag per line "
                        "(default: mtat-sota for sota weights, mtat for Keras weights)")
    p.add_argument("--sample-rate", type=int, default=None,
                   help="rate the weights were trained at (default 16000 sota, 22050 keras)")
    p.add_argument("--kernel-flip", choices=["auto", "yes", "no"], default="auto",
                   help="Keras only: reverse conv kernels (Theano convolution; default auto)")
    p.add_argument("--bn-eps", type=float, default=None,
                   help="BatchNorm epsilon (default: from the file's config, else 1e-5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from samplecnn.importers import import_weights

    kind = args.kind
    if kind == "auto":
        kind = "keras" if Path(args.source).suffix.lower() in (".h5", ".hdf5", ".keras") else "sota"
    kwargs = {"tags": args.tags, "bn_eps": args.bn_eps}
    if args.sample_rate is not None:
        kwargs["sample_rate"] = args.sample_rate
    if kind == "keras":
        kwargs["flip"] = args.kernel_flip
    model = import_weights(args.source, args.out, kind=kind, **kwargs)
    c = model.config
    origin = c.extra.get("imported_from", {})
    flipped = " (kernels flipped)" if origin.get("kernels_flipped") else ""
    print(f"wrote {args.out}: {c.m}^{c.n} model, {c.input_samples} samples at {c.sample_rate} Hz, "
          f"{c.n_tags} tags, head kernel {c.head_kernel}, first-layer padding "
          f"{c.frontend_padding}{flipped}")
    return 0
