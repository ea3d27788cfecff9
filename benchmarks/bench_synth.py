"""Speed of the synthetic data set generator, in multiples of real time per core.

    python benchmarks/bench_synth.py                 # 40 clips of 10 s at 16 kHz, medium
    python benchmarks/bench_synth.py --clips 100 --difficulty hard --renderer soundfont
    python benchmarks/bench_synth.py --dataset 800   # end-to-end `generate_dataset`, 2 workers

Rendering is timed per clip in one process (score sampling included, file writing not);
`--dataset N` also times writing a whole data set of N clips with `--workers` processes.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np

from samplecnn.synth import clip_score, generate_dataset, render


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--difficulty", default="medium")
    p.add_argument("--renderer", choices=("numpy", "soundfont"), default="numpy")
    p.add_argument("--dataset", type=int, default=0, help="also time generate_dataset with N clips")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    if args.renderer == "soundfont":
        from samplecnn.synth.soundfont import render_soundfont as fn
    else:
        fn = render
    render(clip_score(0, 0, args.difficulty, 1.0), args.sample_rate)  # warm-up
    times = []
    for i in range(args.clips):
        t0 = time.perf_counter()
        score = clip_score(0, i, args.difficulty, args.seconds)
        fn(score, args.sample_rate, args.seconds)
        times.append(time.perf_counter() - t0)
    times = np.array(times)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"numpy {np.__version__}")
    print(f"renderer {args.renderer}, {args.difficulty}, {args.clips} clips x {args.seconds:g} s "
          f"at {args.sample_rate} Hz, one process")
    print(f"  per clip: mean {times.mean() * 1e3:.1f} ms, median {np.median(times) * 1e3:.1f} ms, "
          f"max {times.max() * 1e3:.1f} ms")
    print(f"  speed: {args.seconds * args.clips / times.sum():.0f}x real time per core")
    if args.dataset:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            generate_dataset(os.path.join(tmp, "synth"), clips=args.dataset, seconds=args.seconds,
                             sample_rate=args.sample_rate, difficulty=args.difficulty,
                             renderer=args.renderer, workers=args.workers)
            dt = time.perf_counter() - t0
        print(f"  generate_dataset: {args.dataset} clips with {args.workers} workers in {dt:.1f} s "
              f"({args.seconds * args.dataset / dt:.0f}x real time overall, files included)")


if __name__ == "__main__":
    main()
