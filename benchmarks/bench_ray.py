"""The Ray engine against the local engine on the same folder and the same cores.

Writes `--clips` synthetic MagnaTagATune-format clips (MPEG Layer III, 16 kHz mono,
29.1 s) and a checkpoint of the named registry model with random weights (speed does not
depend on the weights), starts one local Ray instance (its start-up is reported apart:
a cluster is already running when a catalog is tagged), then times, interleaved over
`--repeats` rounds:

- local: `tag_catalog(engine="local", workers=1)` (one decoding process, the model in
  this process);
- ray-1, ray-2: `tag_catalog(engine="ray", num_workers=1 | 2)`, each run starting its
  scoring actors (model loaded once per actor) and decoding in Ray tasks.

Every run writes Parquet. Reports seconds per run (median), audio seconds tagged per
wall-clock second, and each engine's time over the local engine's.

    python benchmarks/bench_ray.py --model samplecnn --clips 24 --repeats 2
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tag import CLIP_S, write_mp3  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="samplecnn", help="registry name (default: the paper's 3^9)")
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--cpus", type=int, default=os.cpu_count(), help="CPUs given to Ray")
    ap.add_argument("--dir", default=None, help="where to write audio and outputs (default: temp)")
    args = ap.parse_args()

    import ray

    from samplecnn.checkpoint import save_checkpoint
    from samplecnn.models import create_model
    from samplecnn.tagging.catalog import tag_catalog

    work = Path(args.dir or tempfile.mkdtemp(prefix="bench-ray-"))
    audio = work / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    for i in range(args.clips):
        p = audio / f"clip{i:04d}.mp3"
        if not p.exists():
            write_mp3(p, CLIP_S, seed=i)
    model = create_model(args.model, seed=0, tags=[f"t{i}" for i in range(50)])
    ckpt = str(save_checkpoint(work / "model.ckpt", model))

    t = time.perf_counter()
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    ray.init(num_cpus=args.cpus, include_dashboard=False, address="local",
             _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=logging.ERROR)
    ray_start_s = time.perf_counter() - t

    engines = {"local": dict(engine="local", workers=1),
               "ray-1": dict(engine="ray", num_workers=1),
               "ray-2": dict(engine="ray", num_workers=2)}
    # The first local run fills the ONNX export cache that every later run reads.
    tag_catalog(ckpt, [str(audio)], output=work / "warm", batch_size=args.batch_size, workers=1)
    times: dict[str, list[float]] = {k: [] for k in engines}
    try:
        for r in range(args.repeats):
            for name, kw in engines.items():
                t = time.perf_counter()
                run = tag_catalog(ckpt, [str(audio)], output=work / f"out-{name}-{r}",
                                  batch_size=args.batch_size, **kw)
                times[name].append(time.perf_counter() - t)
                assert run.failed == 0 and run.tagged == args.clips, run
                print(f"round {r} {name}: {times[name][-1]:.2f} s", file=sys.stderr)
    finally:
        ray.shutdown()
    audio_s = args.clips * CLIP_S
    base = statistics.median(times["local"])
    print(json.dumps({
        "model": args.model, "clips": args.clips, "audio_s": round(audio_s, 1),
        "cpus": args.cpus, "ray_start_s": round(ray_start_s, 2),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "engines": {k: {"runs_s": [round(x, 2) for x in v],
                        "median_s": round(statistics.median(v), 2),
                        "x_real_time": round(audio_s / statistics.median(v), 1),
                        "vs_local": round(statistics.median(v) / base, 3)}
                    for k, v in times.items()},
    }, indent=2))


if __name__ == "__main__":
    main()
