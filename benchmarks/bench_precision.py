"""Accuracy of the inference paths on a trained model: test ROC-AUC / PR-AUC per path.

The fp32 fast paths must not change results; bf16 (opt-in) may. This measures both on a
real trained checkpoint and its store, e.g. the demo's:

    samplecnn demo --out runs/demo
    python benchmarks/bench_precision.py runs/demo/run/checkpoints/last.ckpt runs/demo/store
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from samplecnn import perf
from samplecnn.checkpoint import load_model
from samplecnn.data import SegmentDataset, SegmentStore
from samplecnn.evaluation import predict_segments
from samplecnn.metrics import aggregate_clips, tag_metrics

PATHS = {
    "plain eager fp32": lambda m: m,
    "onnxruntime fp32 (Tagger default)": lambda m: perf.optimize_for_inference(m, backend="onnxruntime"),
    "fused torch fp32": lambda m: perf.optimize_for_inference(m, backend="torch"),
    "fused torch bf16 (opt-in)": lambda m: perf.optimize_for_inference(m, backend="torch", precision="bf16"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("store")
    ap.add_argument("--split", default="test")
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    model = load_model(args.checkpoint)
    store = SegmentStore(args.store)
    if store.tags != model.tags:
        raise SystemExit(f"{args.store}: tags differ from the checkpoint's")
    ds = SegmentDataset(store, args.split, model.input_samples, mode="consecutive", segments_per_clip=None)
    labels = store.labels[store.split_indices(args.split)]
    print(f"{args.checkpoint}: {len(ds)} segments of {len(labels)} {args.split} clips, "
          f"{len(model.tags)} tags, torch threads {torch.get_num_threads()}")
    print(f"  {'path':<36} {'ROC-AUC':>8} {'PR-AUC':>8} {'max |score diff|':>17} {'seconds':>8}")
    ref = None
    for name, make in PATHS.items():
        fast = make(model)
        t = time.perf_counter()
        with torch.no_grad():
            scores = predict_segments(fast, ds, batch_size=args.batch)
        secs = time.perf_counter() - t
        _, clip_scores = aggregate_clips(scores, ds.clip_index)
        m = tag_metrics(labels, clip_scores)
        diff = 0.0 if ref is None else float(np.abs(scores - ref).max())
        ref = scores if ref is None else ref
        print(f"  {name:<36} {m.macro_roc_auc:8.4f} {m.macro_pr_auc:8.4f} {diff:17.2e} {secs:8.1f}")


if __name__ == "__main__":
    main()
