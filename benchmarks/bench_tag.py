"""Tagging throughput on a folder of MTAT-format MP3s, and peak memory on a long file.

1. Throughput: writes `--clips` synthetic MagnaTagATune-format clips (MPEG Layer III,
   16 kHz mono, 29.1 s) and times `Tagger.tag_files` over them (model loaded once,
   windows batched across files, `--workers` decoding processes). Reports seconds of
   audio tagged per wall-clock second.
2. Memory: writes a `--minutes`-long 16 kHz mono MP3 (chunk by chunk) and tags it in a
   fresh child process; reports that process's peak RSS (and its decoding workers'),
   next to its RSS after loading the model and to the size the whole file would take
   decoded at the model's rate.

    python benchmarks/bench_tag.py --model samplecnn --clips 20 --minutes 60 --workers 1

The model has random weights of the named registry variant: speed and memory do not
depend on the weight values.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

MTAT_SR, CLIP_S = 16000, 29.1


def _music_like(n: int, sr: int, rng) -> np.ndarray:
    t = np.arange(n) / sr
    f0 = rng.uniform(110, 440)
    x = 0.2 * np.sin(2 * np.pi * f0 * t) + 0.1 * np.sin(2 * np.pi * 2.01 * f0 * t)
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t) ** 2
    return (x + 0.02 * rng.standard_normal(n)).astype(np.float32)


def write_mp3(path: Path, seconds: float, seed: int, block_s: float = 60.0) -> None:
    rng = np.random.default_rng(seed)
    total = int(seconds * MTAT_SR)
    with sf.SoundFile(path, "w", MTAT_SR, 1, format="MP3", subtype="MPEG_LAYER_III") as f:
        done = 0
        while done < total:
            n = min(int(block_s * MTAT_SR), total - done)
            f.write(_music_like(n, MTAT_SR, rng))
            done += n


_CHILD = r"""
import json, resource, sys, time
from samplecnn.models import create_model
from samplecnn.tagging import Tagger
model = create_model(sys.argv[1], seed=0, tags=[f"t{i}" for i in range(50)])
tagger = Tagger.from_model(model, batch_size=int(sys.argv[4]))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
(res,) = list(tagger.tag_files([sys.argv[2]], workers=int(sys.argv[3])))
wall = time.perf_counter() - t
assert res.error is None, res.error
print(json.dumps({"rss_after_load_kb": base,
                  "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "peak_rss_workers_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "wall_s": wall, "segments": res.record["segments"],
                  "duration_s": res.record["duration_s"], "sample_rate": tagger.sample_rate}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="samplecnn", help="registry name (default: the paper's 3^9)")
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--skip-long", action="store_true")
    ap.add_argument("--dir", default=None, help="where to write the audio (default: a temp dir)")
    args = ap.parse_args()

    import torch

    from samplecnn.models import create_model
    from samplecnn.tagging import Tagger

    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_tag_"))
    work.mkdir(parents=True, exist_ok=True)
    clips = []
    for i in range(args.clips):
        p = work / f"clip{i:03d}.mp3"
        if not p.exists():
            write_mp3(p, CLIP_S, seed=i)
        clips.append(str(p))
    model = create_model(args.model, seed=0, tags=[f"t{i}" for i in range(50)])
    tagger = Tagger.from_model(model, batch_size=args.batch_size)
    print(f"model {args.model}: {model.config.input_samples} samples at {model.config.sample_rate} Hz, "
          f"{model.flops() / 1e9:.2f} GFLOP per window; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    list(tagger.tag_files(clips[:1], workers=0))  # warm-up
    t = time.perf_counter()
    recs = [r.record for r in tagger.tag_files(clips, workers=args.workers)]
    wall = time.perf_counter() - t
    audio_s = sum(r["duration_s"] for r in recs)
    windows = sum(r["segments"] for r in recs)
    print(f"throughput: {len(clips)} MP3s, {audio_s:.0f} s of audio, {windows} windows in {wall:.1f} s "
          f"-> {audio_s / wall:.1f} s of audio per second ({windows / wall:.1f} windows/s), "
          f"workers={args.workers}, batch={args.batch_size}")

    if args.skip_long:
        return
    long_mp3 = work / f"long_{args.minutes:g}min.mp3"
    if not long_mp3.exists():
        t = time.perf_counter()
        write_mp3(long_mp3, args.minutes * 60, seed=123)
        print(f"wrote {long_mp3} ({long_mp3.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t:.0f} s")
    out = subprocess.run([sys.executable, "-c", _CHILD, args.model, str(long_mp3), str(args.workers),
                          str(args.batch_size)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    decoded_mb = r["duration_s"] * r["sample_rate"] * 4 / 2**20
    print(f"long file: {r['duration_s'] / 60:.1f} min, {r['segments']} windows in {r['wall_s']:.0f} s "
          f"({r['duration_s'] / r['wall_s']:.1f} s of audio per second)")
    print(f"peak RSS: main process {r['peak_rss_kb'] / 1024:.0f} MiB (after model load "
          f"{r['rss_after_load_kb'] / 1024:.0f} MiB, +{(r['peak_rss_kb'] - r['rss_after_load_kb']) / 1024:.0f} MiB "
          f"while tagging), decoding worker {r['peak_rss_workers_kb'] / 1024:.0f} MiB; the whole file "
          f"decoded at {r['sample_rate']} Hz would be {decoded_mb:.0f} MiB")


if __name__ == "__main__":
    main()
