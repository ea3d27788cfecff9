"""Accuracy of the inference paths on a trained model: test ROC-AUC / PR-AUC per path.

The fp32 paths must not change results. This measures each on a real trained checkpoint
and its store through `evaluate` (the one scoring path), e.g. the demo's:

    samplecnn demo --out runs/demo
    python benchmarks/bench_precision.py runs/demo/run/checkpoints/last.ckpt runs/demo/store
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from samplecnn.checkpoint import load_model
from samplecnn.evaluation import evaluate

PATHS = {
    "plain eager fp32": dict(backend="plain"),
    "onnxruntime fp32 (Tagger default)": dict(backend="onnxruntime"),
    "fused torch fp32": dict(backend="torch"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("--split", default="test")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    model = load_model(args.checkpoint)
    print(f"{args.checkpoint}: {args.split} split of {args.store}, {len(model.tags)} tags, "
          f"torch threads {torch.get_num_threads()}")
    print(f"  {'path':<36} {'ROC-AUC':>8} {'PR-AUC':>8} {'max |score diff|':>17} {'seconds':>8}")
    ref = None
    for name, kw in PATHS.items():
        t = time.perf_counter()
        r = evaluate(args.checkpoint, args.store, args.split, batch_size=args.batch, device="cpu", **kw)
        secs = time.perf_counter() - t
        diff = 0.0 if ref is None else float(np.abs(r.clip_scores - ref).max())
        ref = r.clip_scores if ref is None else ref
        print(f"  {name:<36} {r.roc_auc:8.4f} {r.pr_auc:8.4f} {diff:17.2e} {secs:8.1f}")


if __name__ == "__main__":
    main()
