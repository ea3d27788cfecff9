"""Before/after: the same measurements on two source trees, interleaved.

    git worktree add --detach ../before <old commit>
    python benchmarks/compare_revisions.py --before ../before --after . --rounds 7

Cases: `samplecnn bench` inference and training steps (segments/s), folder tagging
(`samplecnn tag` on `--clips` MTAT-format MP3s, timed inside its process from main() as
benchmarks/bench_serve.py does; seconds of audio per second) and the service
(`samplecnn serve` in a subprocess, `--clips` uploads to /v1/tag from 4 concurrent
clients; seconds of audio per second). Every tree runs the same checkpoint and files.

Each measurement runs in its own process with `PYTHONPATH=<tree>/src`. The trees take
turns within each round, in the order before/after on odd rounds and after/before on even
ones, so drift in the machine's speed hits both alike. On a shared virtual machine the
speed of a whole process can change by 20-30 % from one process to the next while the
machine looks idle (host contention), so single ratios mislead: the report gives each
tree's median and best segments/s and two ratios that are robust to it, the median of the
per-round paired ratios and the ratio of the best rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

CASES = {
    "infer plain (eager model)": ["infer", "--backend", "plain"],
    "infer auto (Tagger default)": ["infer", "--backend", "auto"],
    "train plain (fp32 step)": ["train", "--mode", "plain"],
    "tag folder (samplecnn tag)": "tag",
    "serve /v1/tag (4 clients)": "serve",
}
END_TO_END = ("tag", "serve")


class Inputs:
    """The checkpoint and MP3 folder the end-to-end cases share (made once)."""

    def __init__(self, tree: Path, model: str, clips: int):
        import tempfile

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_tag import CLIP_S, write_mp3

        self.dir = Path(tempfile.mkdtemp(prefix="compare-revisions-"))
        self.folder = self.dir / "mp3"
        self.folder.mkdir()
        for i in range(clips):
            write_mp3(self.folder / f"clip{i:03d}.mp3", CLIP_S, seed=i)
        self.audio_s = clips * CLIP_S
        self.ckpt = str(self.dir / "model.ckpt")
        code = ("import sys; from samplecnn.models import create_model; "
                "from samplecnn.checkpoint import save_checkpoint; "
                "save_checkpoint(sys.argv[2], create_model(sys.argv[1], seed=0, "
                "tags=[f'tag{i}' for i in range(50)], sample_rate=16000))")
        subprocess.run([sys.executable, "-c", code, model, self.ckpt], check=True,
                       env=dict(os.environ, PYTHONPATH=str(tree / "src")))
        self.runs = 0


def measure_end_to_end(tree: Path, kind: str, inputs: Inputs, batch: int) -> float:
    """Seconds of audio per second for `tree`: the CLI on the folder, or the service."""
    import asyncio

    import bench_serve

    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    inputs.runs += 1
    if kind == "tag":
        out = inputs.dir / f"tags-{inputs.runs}.jsonl"
        res = bench_serve._cli(inputs.ckpt, [str(inputs.folder)], out, workers=1, batch=batch, env=env)
        return inputs.audio_s / res["wall_s"]
    blobs = [(p.name, p.read_bytes()) for p in sorted(inputs.folder.glob("*.mp3"))]
    with bench_serve.running_server(inputs.ckpt, 1, batch, 5, 64, env=env) as base:
        asyncio.run(bench_serve._level(base, blobs[:1], 1, 1))  # warm-up: sessions, first decode
        res = asyncio.run(bench_serve._level(base, blobs, 4, len(blobs)))
    if res["errors"]:
        raise SystemExit(f"{tree}: the service failed: {res['first_error']}")
    return res["audio_s_per_s"]


def measure(tree: Path, args: list[str], model: str, batch: int, iters: int, warmup: int,
            threads: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    cmd = [sys.executable, "-m", "samplecnn.cli", "bench", *args, "--model", model,
           "--batch", str(batch), "--iters", str(iters), "--warmup", str(warmup),
           "--threads", str(threads), "--json"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(args)} failed: {out.stderr.strip().splitlines()[-1:]}")
    text = out.stdout
    return json.loads(text[text.index("{"):])["segments_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, required=True)
    ap.add_argument("--after", type=Path, default=Path("."))
    ap.add_argument("--model", default="samplecnn")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--clips", type=int, default=4, help="MP3 clips of the end-to-end cases (default 4)")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES),
                    metavar="CASE", help=f"which cases (default all: {', '.join(CASES)})")
    args = ap.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    rows = []
    inputs = None
    if any(CASES[name] in END_TO_END for name in args.cases):
        inputs = Inputs(trees["after"], args.model, args.clips)
    for name in args.cases:
        seen = {"before": [], "after": []}
        for r in range(args.rounds):
            for which in (("before", "after") if r % 2 == 0 else ("after", "before")):
                if CASES[name] in END_TO_END:
                    value = measure_end_to_end(trees[which], CASES[name], inputs, args.batch)
                else:
                    value = measure(trees[which], CASES[name], args.model, args.batch,
                                    args.iters, args.warmup, args.threads)
                seen[which].append(value)
        b, a = np.array(seen["before"]), np.array(seen["after"])
        print(f"{name}: before {np.round(b, 1).tolist()} after {np.round(a, 1).tolist()}",
              flush=True)
        rows.append((name, np.median(b), b.max(), np.median(a), a.max(),
                     float(np.median(a / b)), a.max() / b.max()))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if inputs is not None:
        import shutil

        shutil.rmtree(inputs.dir, ignore_errors=True)
    print(f"\n{args.model}, batch {args.batch}, {args.threads} threads, {args.rounds} rounds "
          f"x {args.iters} batches (bench cases: segments/s; tag and serve: seconds of audio "
          f"per second over {args.clips} MP3s; median / best round)\n")
    print("| case | before | after | after / before: median paired | best / best |")
    print("|---|---|---|---|---|")
    for name, b, bb, a, ab, paired, best in rows:
        print(f"| {name} | {b:.1f} / {bb:.1f} | {a:.1f} / {ab:.1f} | {paired:.2f}x | {best:.2f}x |")


if __name__ == "__main__":
    main()
