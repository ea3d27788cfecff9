"""`samplecnn bench infer|train`: segments per second of the toolkit's own paths."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench", help="measure inference / training speed of a model variant",
        description="Time the toolkit's inference path (what the Tagger runs) or training "
                    "step for a registered variant, with random weights on random input of "
                    "the variant's segment length, and print segments per second.",
    )
    sub = p.add_subparsers(dest="bench_mode", metavar="MODE")
    sub.required = True
    # The choices come from where they are defined, not from samplecnn.benchmarking (torch, Lightning):
    # every `samplecnn` call builds this parser.
    from samplecnn.inference.backends import BACKENDS as INFER_BACKENDS
    from samplecnn.inference.backends import PRECISIONS
    from samplecnn.quantize import CALIBRATION_METHODS
    from samplecnn.training.fast import TRAIN_MODES

    def common(q: argparse.ArgumentParser, precisions=PRECISIONS) -> None:
        q.add_argument("--model", default="samplecnn", help="registered variant (default samplecnn)")
        q.add_argument("--batch", type=int, default=16, help="segments per batch (default 16)")
        q.add_argument("--iters", type=int, default=5, help="timed batches (default 5)")
        q.add_argument("--warmup", type=int, default=1, help="untimed batches first (default 1)")
        q.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
        q.add_argument("--device", default="cpu", help="torch device (default cpu)")
        q.add_argument("--precision", choices=precisions, default="fp32",
                       help="bf16 changes results; fp32 (default) is exact"
                            + ("; int8: the ONNX Runtime int8 graph of `samplecnn export --int8`, "
                               "calibrated on random windows" if "int8" in precisions else ""))
        q.add_argument("--json", action="store_true", help="print one JSON object")

    q = sub.add_parser("infer", help="inference (tagging path)")
    common(q, PRECISIONS + ("int8",))
    q.add_argument("--backend", choices=INFER_BACKENDS, default="auto",
                   help="plain = eager model; auto (default) = what Tagger runs by default")
    q.add_argument("--calibration-windows", type=int, default=32, metavar="N",
                   help="with --precision int8: random calibration windows (default 32)")
    q.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="percentile",
                   help="with --precision int8 (default percentile)")
    q.set_defaults(func=run)
    q = sub.add_parser("train", help="training step (forward, backward, SGD update)")
    common(q)
    q.add_argument("--mode", choices=TRAIN_MODES, default="plain",
                   help="plain = eager step; retain = glibc keeps freed memory (same numbers, "
                        "no page faults; process-wide); compile = torch.compile'd forward; "
                        "retain-compile = both")
    q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samplecnn.models import get_model_entry
    from samplecnn.benchmarking import bench_inference, bench_training
    from samplecnn.runtime import Runtime
    from samplecnn.training.fast import runtime_for_mode

    from ._common import check_device

    get_model_entry(args.model)  # unknown names fail here with the closest matches
    check_device(args.device)
    if args.bench_mode == "infer":
        Runtime(num_threads=args.threads).apply()  # an entry point: process-wide settings here
        res = bench_inference(args.model, batch=args.batch, backend=args.backend,
                              precision=args.precision, iters=args.iters, warmup=args.warmup,
                              device=args.device,
                              calibration_windows=args.calibration_windows,
                              calibration_method=args.calibration_method)
        what = f"backend={res['backend']} ({res['module']})"
    else:
        runtime_for_mode(args.mode, num_threads=args.threads).apply()
        res = bench_training(args.model, batch=args.batch, mode=args.mode,
                             precision=args.precision, iters=args.iters, warmup=args.warmup,
                             device=args.device)
        what = f"mode={res['train_mode']}"
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{res['mode']} {res['model']} batch={res['batch']} {what} precision={res['precision']} "
          f"device={res['device']} threads={res['threads']}")
    print(f"  {res['segments_per_s']:.2f} segments/s (median of {res['iters']}; best "
          f"{res['best_segments_per_s']:.2f}), {res['gflops_per_s']:.1f} GFLOP/s, "
          f"setup {res['setup_s']:.1f} s")
    return 0
