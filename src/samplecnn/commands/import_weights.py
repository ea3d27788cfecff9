"""`samplecnn import`: public SampleCNN weights -> a samplecnn checkpoint."""
from __future__ import annotations

import argparse

from ._common import finite_float


def register(subparsers: argparse._SubParsersAction) -> None:
    from samplecnn.importers import PRESET_ALIASES, TAG_PRESETS

    p = subparsers.add_parser(
        "import", help="convert public SampleCNN weights to a samplecnn checkpoint",
        description="Convert sota-music-tagging-models SampleCNN / SampleCNNSE state dicts (.pth, "
                    "16 kHz), the authors' Keras HDF5 weights (.h5, Theano kernels flipped), a "
                    "CLMR encoder (+ --head, its linear-evaluation checkpoint) or a PANNs LeeNet11 / "
                    "LeeNet24 AudioSet checkpoint (--from panns, 32 kHz) into a samplecnn "
                    "checkpoint. The architecture is read from the weight shapes; tag names come "
                    "from --tags (their order must be the training order). For the published "
                    "weights by name, see `samplecnn pretrained`.",
    )
    p.add_argument("source", help="the downloaded weights (.pth / .h5 / CLMR .ckpt, .pt or .zip)")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint to write")
    p.add_argument("--from", dest="kind", choices=["auto", "sota", "keras", "clmr", "panns"], default="auto",
                   help="source layout (default: by extension, .h5/.hdf5 = keras, else sota)")
    p.add_argument("--head", default=None, metavar="FILE",
                   help="CLMR only: the linear-evaluation (finetuner) checkpoint; without it the "
                        "encoder becomes an embedding model")
    p.add_argument("--tags", default=None, metavar="PRESET|FILE",
                   help=f"tag names: {', '.join(list(TAG_PRESETS) + list(PRESET_ALIASES))} or a file "
                        "with one tag per line (default: sota-mtat for sota, keras-mtat for Keras, "
                        "clmr-mtat for CLMR, panns-audioset for PANNs)")
    p.add_argument("--sample-rate", type=int, default=None,
                   help="rate the weights were trained at (default 16000 sota, 22050 keras and clmr, "
                        "32000 panns)")
    p.add_argument("--kernel-flip", choices=["auto", "yes", "no"], default="auto",
                   help="Keras only: reverse conv kernels (Theano convolution; default auto)")
    p.add_argument("--bn-eps", type=finite_float(0, 1), default=None,
                   help="BatchNorm epsilon (default: Keras: from the file's config, else the default "
                        "of the Keras version that wrote it; others 1e-5)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samplecnn.importers import import_weights

    model = import_weights(args.source, args.out, kind=args.kind, head=args.head, tags=args.tags,
                           bn_eps=args.bn_eps, sample_rate=args.sample_rate, flip=args.kernel_flip)
    c = model.config
    origin = c.extra.get("imported_from", {})
    flipped = " (kernels flipped)" if origin.get("kernels_flipped") else ""
    what = "embedding model" if c.extra.get("embedding_only") else f"{c.n_tags} tags"
    if c.arch == "leenet":
        print(f"wrote {args.out}: {c.extra.get('registry_name', 'leenet')} ({c.family}), trained on "
              f"{c.input_samples}-sample windows at {c.sample_rate} Hz, {what}")
        return 0
    print(f"wrote {args.out}: {c.m}^{c.n} {c.family} model, {c.input_samples} samples at "
          f"{c.sample_rate} Hz, {what}, head kernel {c.head_kernel}, first-layer padding "
          f"{c.frontend_padding}, BN epsilon {c.bn_eps:g}{flipped}")
    return 0
