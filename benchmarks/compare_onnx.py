"""Two ONNX graphs timed against each other in one process, batch by batch.

    python benchmarks/compare_onnx.py before.onnx after.onnx --rounds 40

Both run with samplecnn's session settings (`samplecnn.inference.onnx.session`) on the
same random windows; the graphs take turns batch by batch, so whatever the machine does
to this process hits both alike. Each graph's input shape is read from the file, so a
`(batch, samples)` export and a `(batch, 1, samples)` one compare on equal data. Reports
segments/s (median / best batch) and the ratio of the medians.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from samplecnn.inference.onnx import session

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first")
    ap.add_argument("second")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--output", default=None,
                    help="output name to fetch (default: each graph's first output)")
    args = ap.parse_args()
    runs, samples = {}, set()
    for path in (args.first, args.second):
        sess = session(path, threads=args.threads)
        (inp,) = sess.get_inputs()
        samples.add(inp.shape[-1])
        runs[path] = (sess, inp, args.output or sess.get_outputs()[0].name)
    if len(samples) != 1 or not all(isinstance(s, int) for s in samples):
        raise SystemExit(f"the graphs take different or dynamic window lengths: {samples}")
    (n,) = samples
    x = np.random.default_rng(0).standard_normal((args.batch, n)).astype(np.float32)
    feeds = {p: {inp.name: x.reshape((args.batch, *[1] * (len(inp.shape) - 2), n))}
             for p, (_, inp, _) in runs.items()}
    outs = {p: sess.run([o], feeds[p])[0] for p, (sess, _, o) in runs.items()}
    a, b = outs.values()
    print(f"outputs agree to {float(np.abs(a - b).max()):.2e} (max abs difference)")
    times = {p: [] for p in runs}
    for _ in range(args.rounds):
        for p, (sess, _, o) in runs.items():
            t0 = time.perf_counter()
            sess.run([o], feeds[p])
            times[p].append(time.perf_counter() - t0)
    med = {p: float(np.median(t)) for p, t in times.items()}
    for p, t in times.items():
        print(f"{p}: {args.batch / med[p]:.1f} / {args.batch / min(t):.1f} segments/s "
              "(median / best batch)")
    print(f"second / first (median): {med[args.first] / med[args.second]:.3f}x")


if __name__ == "__main__":
    main()
