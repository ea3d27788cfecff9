"""Decoding + resampling throughput on MagnaTagATune-format MP3s, per core.

Writes N 29.1 s clips as MTAT ships them (MPEG-2 Layer III, 16 kHz mono, ~32 kbps
constant bit rate) -- or uses a folder of real MP3s with --folder -- then times, in one
process (one core):

  decode     soundfile decode to float32
  resample   soxr HQ 16 kHz -> 22,050 Hz on the decoded arrays
  load_audio both, as `samplecnn prepare` does per clip (+ checks, downmix)

and the whole `prepare_store` pipeline with --workers processes (int16 store included).
Figures are seconds of audio per second of wall time (x real time).

    python benchmarks/bench_decode.py --clips 40 --workers 2
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr


def make_clips(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    sr, dur = 16000, 29.1
    t = np.arange(int(sr * dur)) / sr
    paths = []
    for i in range(n):
        # Music-like content: a few partials with vibrato plus a little noise, so the
        # encoder spends its bits as on real music (pure tones decode faster).
        f0 = rng.uniform(110, 440)
        x = sum(np.sin(2 * np.pi * f0 * k * t + 3 * np.sin(2 * np.pi * 5 * t)) / k
                for k in range(1, 6))
        x = 0.2 * x / 2.3 + 0.02 * rng.standard_normal(len(t))
        p = folder / f"{i % 16:x}" / f"clip_{i:04d}.mp3"
        p.parent.mkdir(parents=True, exist_ok=True)
        sf.write(p, x.astype(np.float32), sr, format="MP3", subtype="MPEG_LAYER_III",
                 bitrate_mode="CONSTANT")  # libsndfile default: ~32 kbps at 16 kHz
        paths.append(p)
    return paths


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=40)
    ap.add_argument("--folder", help="use the MP3s of this folder instead of synthetic ones")
    ap.add_argument("--sample-rate", type=int, default=22050)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from samplecnn.audio import load_audio
    from samplecnn.data import Manifest, prepare_store

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.folder:
            paths = sorted(Path(args.folder).rglob("*.mp3"))[: args.clips]
        else:
            paths = make_clips(tmp / "mp3", args.clips)
        info = sf.info(paths[0])
        kbps = 8 * sum(p.stat().st_size for p in paths) / sum(
            sf.info(p).duration for p in paths) / 1000
        decoded = [sf.read(p, dtype="float32")[0] for p in paths]
        audio_s = sum(len(x) for x in decoded) / info.samplerate
        print(f"{len(paths)} MP3s, {audio_s:.0f} s of audio, {info.samplerate} Hz, "
              f"{info.channels} ch, {kbps:.0f} kbps; target {args.sample_rate} Hz")

        t_dec = best_of(lambda: [sf.read(p, dtype="float32") for p in paths], args.repeats)
        t_res = best_of(lambda: [soxr.resample(x, info.samplerate, args.sample_rate,
                                               quality="HQ") for x in decoded], args.repeats)
        t_load = best_of(lambda: [load_audio(p, args.sample_rate) for p in paths],
                         args.repeats)
        for name, t in (("decode", t_dec), ("resample", t_res), ("load_audio", t_load)):
            print(f"{name:>11}: {audio_s / t:8.0f} x real time per core "
                  f"({t / len(paths) * 1000:.1f} ms per clip)")

        m = Manifest(name="bench", root=str(tmp), tags=["x"],
                     clip_ids=[str(i) for i in range(len(paths))],
                     paths=[str(p) for p in paths], labels=np.ones((len(paths), 1)),
                     splits=["train"] * len(paths))
        t0 = time.perf_counter()
        prepare_store(m, tmp / "store", sample_rate=args.sample_rate,
                      workers=args.workers, progress=False)
        t = time.perf_counter() - t0
        print(f"    prepare: {audio_s / t:8.0f} x real time with {args.workers} workers "
              f"(store written, pool start-up included)")


if __name__ == "__main__":
    main()
