"""Before/after: the same `samplecnn bench` measurements on two source trees, interleaved.

    git worktree add --detach ../before <old commit>
    python benchmarks/compare_revisions.py --before ../before --after . --rounds 5

Each measurement runs in its own process with `PYTHONPATH=<tree>/src`, alternating the
two trees round by round, so load on a shared machine hits both alike. Reports the median
and best segments/s per tree and the after/before ratio of the medians.
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


def measure(tree: Path, args: list[str], model: str, batch: int, iters: int, threads: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    cmd = [sys.executable, "-m", "samplecnn.cli", "bench", *args, "--model", model,
           "--batch", str(batch), "--iters", str(iters), "--warmup", "1",
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
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    rows = []
    for name, case in CASES.items():
        seen = {"before": [], "after": []}
        for _ in range(args.rounds):
            for which in ("before", "after"):
                tree = getattr(args, which).resolve()
                seen[which].append(measure(tree, case, args.model, args.batch, args.iters,
                                           args.threads))
        b, a = np.median(seen["before"]), np.median(seen["after"])
        rows.append((name, b, max(seen["before"]), a, max(seen["after"]), a / b))
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(f"\n{args.model}, batch {args.batch}, {args.threads} threads, {args.rounds} rounds "
          f"x {args.iters} batches (segments/s: median / best)\n")
    print("| case | before | after | after / before |")
    print("|---|---|---|---|")
    for name, b, bb, a, ab, r in rows:
        print(f"| {name} | {b:.1f} / {bb:.1f} | {a:.1f} / {ab:.1f} | {r:.2f}x |")


if __name__ == "__main__":
    main()
