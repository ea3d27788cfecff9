"""Issue 23 benchmark: int8 recipes against the fp32 default path, speed and accuracy.

    samplecnn demo --out runs/demo                     # a trained model and its store
    python benchmarks/bench_int8.py --demo runs/demo   # ~15-25 min on a loaded 2-core machine

1. speed: the 3^9 model (`samplecnn`, random weights) and the demo's `samplecnn_small`,
   fp32 default path (ONNX Runtime, BN and ReLU fused: what the Tagger runs) against the
   int8 graph of each structural variant (activation type, parts kept in fp32, 7-bit
   weights), batch 16. Every round runs every graph once, in turn; the ratio of each
   round is fp32 time / int8 time, and the table gives the median of those paired
   ratios (the machine is shared: whatever disturbs a round disturbs both).
2. accuracy: the demo checkpoint's test ROC-AUC / PR-AUC through `evaluate` for the fp32
   file and every recipe (calibration method, window count, activation type, fp32
   parts), calibrated on the demo store's train split.
3. folder tagging: `Tagger.tag_files` over MTAT-format MP3s (decoding in one worker
   process included) with the fp32 and the int8 file of the 3^9 model, interleaved.

Calibration for speed uses random windows (random weights: the data does not matter).
The load average is printed at start and end.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TAGS = [f"t{i}" for i in range(50)]

# (label, recipe options that change the graph's structure); the first is the default.
VARIANTS = [
    ("all int8, 7-bit weights (default)", {}),
    ("all int8, 8-bit weights", {"reduce_range": False}),
    ("int8 activations", {"activations": "int8"}),
    ("fp32 front end", {"keep_fp32": ("frontend",)}),
    ("fp32 output layer", {"keep_fp32": ("output",)}),
    ("fp32 front end + output", {"keep_fp32": ("frontend", "output")}),
]

# (label, full recipe) for the accuracy table; the first is the naive try.
EIGHT = {"reduce_range": False}  # 8-bit weights
RECIPES = [
    ("min-max, 32 windows", dict(method="minmax", windows=32, **EIGHT)),
    ("min-max, 256", dict(method="minmax", windows=256, **EIGHT)),
    ("entropy, 256", dict(method="entropy", windows=256, **EIGHT)),
    ("percentile 99.99, 256", dict(method="percentile", percentile=99.99, windows=256, **EIGHT)),
    ("percentile 99.999, 64", dict(method="percentile", windows=64, **EIGHT)),
    ("percentile 99.999, 256", dict(method="percentile", windows=256, **EIGHT)),
    ("percentile 99.999, 256, int8 act.", dict(method="percentile", windows=256, activations="int8",
                                               **EIGHT)),
    ("percentile 99.999, 256, 7-bit (default)", dict(method="percentile", windows=256)),
    ("percentile 99.999, 256, fp32 front end", dict(method="percentile", windows=256,
                                                    keep_fp32=("frontend",), **EIGHT)),
    ("percentile 99.999, 64, fp32 front end", dict(method="percentile", windows=64,
                                                   keep_fp32=("frontend",), **EIGHT)),
    ("min-max, 256, fp32 front end", dict(method="minmax", windows=256, keep_fp32=("frontend",),
                                          **EIGHT)),
    ("percentile 99.999, 256, fp32 output", dict(method="percentile", windows=256,
                                                 keep_fp32=("output",), **EIGHT)),
    ("percentile 99.999, 256, fp32 both", dict(method="percentile", windows=256,
                                               keep_fp32=("frontend", "output"), **EIGHT)),
    ("min-max, 256, 7-bit", dict(method="minmax", windows=256)),
    ("percentile 99.999, 64, 7-bit", dict(method="percentile", windows=64)),
    ("percentile 99.999, 256, 7-bit, fp32 front end", dict(method="percentile", windows=256,
                                                           keep_fp32=("frontend",))),
    ("entropy, 256, 7-bit", dict(method="entropy", windows=256)),
]


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def paired(fns: dict, base: str, rounds: int) -> dict:
    """Interleaved rounds; {name: (median s, best s, median of per-round base/name)}."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    b = np.asarray(times[base])
    return {k: (float(np.median(v)), float(min(v)), float(np.median(b / np.asarray(v))))
            for k, v in times.items()}


def graphs_of(model, variants, windows: int = 32) -> dict[str, bytes]:
    from samplecnn.inference.onnx import export_graph
    from samplecnn.quantize import QuantRecipe, quantize_graph, random_windows

    fp32 = export_graph(model)
    cal = random_windows(windows, model.config.input_samples)
    out = {"fp32 default (onnxruntime)": fp32}
    for label, opts in variants:
        # The calibration method changes scales, not the graph: min-max is the cheapest.
        out[label] = quantize_graph(fp32, cal, QuantRecipe(method="minmax", windows=windows, **opts),
                                    "random")
    return out


def section_speed(name: str, batch: int, rounds: int, model=None) -> dict:
    from samplecnn.inference.onnx import session
    from samplecnn.models import create_model

    model = model or create_model(name, seed=0, tags=TAGS).eval()
    t0 = time.perf_counter()
    graphs = graphs_of(model, VARIANTS)
    setup = time.perf_counter() - t0
    x = np.random.default_rng(0).standard_normal((batch, model.config.input_samples)).astype(np.float32)
    sessions = {k: session(g, threads=2) for k, g in graphs.items()}
    ref = sessions["fp32 default (onnxruntime)"].run(["scores"], {"audio": x})[0]
    diff = {k: float(np.abs(s.run(["scores"], {"audio": x})[0] - ref).max()) for k, s in sessions.items()}
    res = paired({k: (lambda s=s: s.run(["logits"], {"audio": x})) for k, s in sessions.items()},
                 "fp32 default (onnxruntime)", rounds)
    flops = model.flops()
    print(f"\n== speed: {name} ({flops / 1e9:.3f} GFLOP/segment), batch {batch}, 2 threads, "
          f"{rounds} interleaved rounds (quantizing {len(VARIANTS)} variants took {setup:.0f} s)")
    print(f"  {'graph':<34} {'segs/s med':>10} {'best':>8} {'GFLOP/s':>8} {'paired x':>9}  max|score diff|")
    for k, (med, best, ratio) in res.items():
        print(f"  {k:<34} {batch / med:10.1f} {batch / best:8.1f} {batch * flops / best / 1e9:8.1f} "
              f"{ratio:8.2f}x  {diff[k]:.1e}")
    return res


def section_accuracy(demo: Path, rounds: int, recipes=None) -> None:
    from samplecnn.checkpoint import load_model
    from samplecnn.evaluation import evaluate
    from samplecnn.inference.onnx import export_graph
    from samplecnn.quantize import QuantRecipe, calibration_windows, quantize_graph

    ckpt, store = demo / "run" / "checkpoints" / "last.ckpt", demo / "store"
    model = load_model(ckpt)
    cfg = model.config
    fp32 = export_graph(model)
    work = Path(tempfile.mkdtemp(prefix="bench_int8_"))
    (work / "fp32.onnx").write_bytes(fp32)
    ref = evaluate(work / "fp32.onnx", store, "test", device="cpu")
    print(f"\n== accuracy: {ckpt} ({cfg.name if hasattr(cfg, 'name') else 'demo model'}), test split "
          f"of {store}: {ref.metrics.n_clips} clips, {ref.n_segments} windows")
    print(f"  {'recipe':<40} {'ROC-AUC':>8} {'change':>8} {'PR-AUC':>8} {'change':>8}  max|clip score diff|  quantize s")
    print(f"  {'fp32 (onnxruntime)':<40} {ref.roc_auc:8.4f} {'':>8} {ref.pr_auc:8.4f}")
    for label, opts in recipes or RECIPES:
        rec = QuantRecipe(**opts)
        t0 = time.perf_counter()
        cal = calibration_windows(store, cfg.sample_rate, cfg.input_samples, rec.windows, rec.seed)
        path = work / "int8.onnx"
        path.write_bytes(quantize_graph(fp32, cal.windows, rec, str(store)))
        secs = time.perf_counter() - t0
        r = evaluate(path, store, "test", device="cpu")
        print(f"  {label:<40} {r.roc_auc:8.4f} {r.roc_auc - ref.roc_auc:+8.4f} {r.pr_auc:8.4f} "
              f"{r.pr_auc - ref.pr_auc:+8.4f}  {np.abs(r.clip_scores - ref.clip_scores).max():20.4f}  {secs:8.0f}",
              flush=True)
    if recipes is None:  # the full table: the demo model's speed too
        section_speed("samplecnn_small (demo, trained)", 16, rounds, model)


def section_tagging(clips: int, rounds: int) -> None:
    sys.path.insert(0, str(HERE))
    from bench_tag import CLIP_S, write_mp3

    from samplecnn.models import create_model
    from samplecnn.tagging import Tagger

    work = Path(tempfile.mkdtemp(prefix="bench_int8_tag_"))
    files = []
    for i in range(clips):
        p = work / f"clip{i:03d}.mp3"
        write_mp3(p, CLIP_S, seed=i)
        files.append(str(p))
    model = create_model("samplecnn", seed=0, tags=TAGS).eval()
    graphs = graphs_of(model, VARIANTS[:1])
    paths = {}
    for k, g in graphs.items():
        paths[k] = work / f"{len(paths)}.onnx"
        paths[k].write_bytes(g)
    taggers = {k: Tagger.load(p, batch_size=16) for k, p in paths.items()}
    for t in taggers.values():
        list(t.tag_files(files[:1], workers=0))  # warm-up
    fns = {k: (lambda t=t: [r for r in t.tag_files(files, workers=1)]) for k, t in taggers.items()}
    res = paired(fns, "fp32 default (onnxruntime)", rounds)
    audio_s = clips * CLIP_S
    print(f"\n== folder tagging: {clips} MTAT-format MP3s ({audio_s:.0f} s of audio), samplecnn 3^9, "
          f"1 decoding worker, batch 16, {rounds} interleaved rounds")
    for k, (med, best, ratio) in res.items():
        print(f"  {k:<34} {audio_s / med:8.1f} s of audio/s (best {audio_s / best:.1f})  paired {ratio:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, help="a `samplecnn demo` folder (for the accuracy table)")
    ap.add_argument("--sections", default="speed,accuracy,tagging")
    ap.add_argument("--recipes", default=None,
                    help="comma-separated indices into RECIPES (default: all)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--clips", type=int, default=8, help="MP3s for the tagging section")
    args = ap.parse_args()
    import onnxruntime
    import torch

    torch.set_num_threads(2)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    print(f"{os.cpu_count()} CPUs, onnxruntime {onnxruntime.__version__}, torch {torch.__version__}; "
          f"AVX512-VNNI {'yes' if 'avx512_vnni' in flags else 'no'}, AVX-VNNI "
          f"{'yes' if 'avx_vnni' in flags else 'no'}, AVX512-BF16 {'yes' if 'avx512_bf16' in flags else 'no'}; "
          f"{load()}")
    sections = args.sections.split(",")
    if "speed" in sections:
        section_speed("samplecnn", 16, args.rounds)
    if "accuracy" in sections:
        if args.demo is None:
            sys.exit("the accuracy section needs --demo DIR")
        picked = (None if args.recipes is None
                  else [RECIPES[int(i)] for i in args.recipes.split(",")])
        section_accuracy(args.demo, args.rounds, picked)
    if "tagging" in sections:
        section_tagging(args.clips, max(3, args.rounds // 3))
    print(f"\n{load()}")


if __name__ == "__main__":
    main()
