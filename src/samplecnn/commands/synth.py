"""`samplecnn synth`: generate the synthetic tagged-music data set (a CSV folder)."""
from __future__ import annotations

import argparse

from ._common import finite_float


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth", help="generate a synthetic tagged-music data set (CSV folder)",
        description="Render random scores to tagged audio clips. The same options and seed "
                    "give byte-identical audio and labels; rerunning an interrupted command "
                    "finishes the data set.")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output folder (created; resumed if it exists)")
    p.add_argument("--clips", type=int, default=1000, help="number of clips (default 1000)")
    p.add_argument("--seconds", type=finite_float(0, 3600), default=10.0, help="clip length in seconds (default 10)")
    p.add_argument("--sample-rate", type=int, default=16000, help="sample rate in Hz (default 16000)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--renderer", choices=("numpy", "soundfont"), default="numpy",
                   help="numpy (built in) or soundfont (FluidSynth + General MIDI SoundFont)")
    p.add_argument("--difficulty", choices=("easy", "medium", "hard"), default="medium",
                   help="amount of noise, reverb, EQ and polyphony (default medium)")
    p.add_argument("--format", dest="audio_format", choices=("wav", "flac", "mp3"), default="wav",
                   help="audio file format (default wav, 16-bit PCM)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from samplecnn.synth import generate_dataset

    out = generate_dataset(args.out_dir, clips=args.clips, seconds=args.seconds,
                           sample_rate=args.sample_rate, seed=args.seed, renderer=args.renderer,
                           difficulty=args.difficulty, workers=max(1, args.workers),
                           audio_format=args.audio_format, progress=not args.no_progress)
    print(f"wrote {args.clips} clips, annotations.csv and tags.txt to {out}")
    return 0
