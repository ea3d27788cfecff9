"""Wall time of a whole `samplecnn.training.train()` (Lightning, store, validation every
epoch, checkpoints, logs) on a small learnable store: what a change to the training run
costs beyond the network's step.

    PYTHONPATH=src python benchmarks/bench_train_run.py            # prints "first second" s

Run it once per code version (PYTHONPATH=<that checkout>/src), interleaving versions over
rounds; compare the second figure (imports and first-use costs excluded).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from training_helpers import make_learnable_store, tiny_config  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    from samplecnn.training import train

    tmp = Path(tempfile.mkdtemp(prefix="bench-train-run-"))
    try:
        store = make_learnable_store(tmp / "data", n_clips=96, seconds=4.0, splits=(64, 16, 16))
        cfg = tiny_config(store, tmp / "run", trainer={"max_epochs": args.epochs, "deterministic": False,
                                                      "num_threads": args.threads})
        cfg["model"] = {"name": "samplecnn_small", "n": 7, "input_samples": 6561, "width": 0.25}
        times = []
        for _ in range(2):
            shutil.rmtree(tmp / "run", ignore_errors=True)
            t = time.perf_counter()
            train(cfg, log=None)
            times.append(time.perf_counter() - t)
        print(" ".join(f"{x:.2f}" for x in times))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
