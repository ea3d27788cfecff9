"""Before/after: the same `samplecnn bench` measurements on two source trees, interleaved.

    git worktree add --detach ../before <old commit>
    python benchmarks/compare_revisions.py --before ../before --after . --rounds 7

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
}


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
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES),
                    metavar="CASE", help=f"which cases (default all: {', '.join(CASES)})")
    args = ap.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    rows = []
    for name in args.cases:
        seen = {"before": [], "after": []}
        for r in range(args.rounds):
            for which in (("before", "after") if r % 2 == 0 else ("after", "before")):
                seen[which].append(measure(trees[which], CASES[name], args.model, args.batch,
                                           args.iters, args.warmup, args.threads))
        b, a = np.array(seen["before"]), np.array(seen["after"])
        print(f"{name}: before {np.round(b, 1).tolist()} after {np.round(a, 1).tolist()}",
              flush=True)
        rows.append((name, np.median(b), b.max(), np.median(a), a.max(),
                     float(np.median(a / b)), a.max() / b.max()))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"\n{args.model}, batch {args.batch}, {args.threads} threads, {args.rounds} rounds "
          f"x {args.iters} batches (segments/s: median / best round)\n")
    print("| case | before | after | after / before: median paired | best / best |")
    print("|---|---|---|---|---|")
    for name, b, bb, a, ab, paired, best in rows:
        print(f"| {name} | {b:.1f} / {bb:.1f} | {a:.1f} / {ab:.1f} | {paired:.2f}x | {best:.2f}x |")


if __name__ == "__main__":
    main()
