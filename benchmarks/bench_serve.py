"""`samplecnn serve` under concurrent load, beside `samplecnn tag` on the same files.

Writes `--clips` MagnaTagATune-format MP3s (MPEG Layer III, 16 kHz mono, 29.1 s, as
benchmarks/bench_tag.py does), then in one run:

1. the CLI's folder throughput: `samplecnn tag CKPT FOLDER` in a subprocess, timed in
   that process from the CLI's main() (model load, decoding, scoring, writing) to its
   end, leaving out interpreter and import start-up as the service's start-up is left
   out;
2. the service: `samplecnn serve CKPT` in a subprocess on 127.0.0.1, then 1, 4, 16 and
   64 concurrent clients (httpx, asyncio) posting the MP3s to /v1/tag; for each level,
   seconds of audio tagged per wall-clock second and p50 / p95 / p99 request latency.

`--rounds` rounds of (CLI, every level) interleave the two sides; medians are reported.

    python benchmarks/bench_serve.py --model samplecnn --clips 16 --rounds 2

Both sides use the same model (random weights of the named registry variant: speed does
not depend on them), batch size and number of decoding processes. The load average is
printed at the start and the end: on 2 cores, figures taken under load > 2 are noisy.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_tag import CLIP_S, write_mp3  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `samplecnn tag` as run from the command line, timed inside its process from the call of
# the CLI's main() (model load, decoding, scoring, writing) to its return: the interpreter
# and import start-up (tens of seconds on a loaded 2-core machine) is left out, as the
# service's start-up is.
_CLI_TIMED = r"""
import json, sys, time
import onnxruntime, torch  # noqa: F401  (imported before the clock starts)
import samplecnn.tagging.tagger, samplecnn.inference.runners  # noqa: F401
from samplecnn.cli import build_parser, main
from samplecnn.tagging import Tagger
build_parser()  # imports every command module
t = time.perf_counter()
Tagger.load(sys.argv[2])  # what main() spends loading the model (ONNX session), measured apart
load_s = time.perf_counter() - t
t = time.perf_counter()
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "wall_s": time.perf_counter() - t, "load_s": load_s}))
"""


def _cli(ckpt: str, inputs: list[str], out: Path, workers: int, batch: int, env: dict | None = None) -> dict:
    argv = ["tag", ckpt, *inputs, "--format", "jsonl", "-o", str(out), "--workers", str(workers),
            "--batch-size", str(batch), "-q"]
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CLI_TIMED, *argv], capture_output=True, text=True, env=env)
    process_s = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"samplecnn tag failed ({proc.returncode}): {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": res["wall_s"], "load_s": res["load_s"], "process_s": process_s}


def cli_throughput(ckpt: str, folder: str, n: int, tmp: Path, workers: int, batch: int, tag: str) -> dict:
    run = _cli(ckpt, [folder], tmp / f"all-{tag}.jsonl", workers, batch)
    return {**run, "audio_s_per_s": n * CLIP_S / run["wall_s"],
            "audio_s_per_s_after_load": n * CLIP_S / max(run["wall_s"] - run["load_s"], 1e-9),
            "audio_s_per_s_whole_process": n * CLIP_S / run["process_s"]}


async def _level(base: str, blobs: list[tuple[str, bytes]], clients: int, requests: int) -> dict:
    import httpx

    lat: list[float] = []
    errors: list[str] = []
    todo = list(range(requests))

    async def client(c: httpx.AsyncClient):
        while todo:
            i = todo.pop()
            name, data = blobs[i % len(blobs)]
            t = time.perf_counter()
            r = await c.post(f"{base}/v1/tag", files={"file": (name, data, "audio/mpeg")})
            lat.append(time.perf_counter() - t)
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:200]}")

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=600, limits=limits) as c:
        t = time.perf_counter()
        await asyncio.gather(*[client(c) for _ in range(clients)])
        wall = time.perf_counter() - t
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {"clients": clients, "requests": requests, "errors": len(errors), "first_error": errors[:1],
            "wall_s": wall, "audio_s_per_s": (requests - len(errors)) * CLIP_S / wall,
            "p50_s": p50, "p95_s": p95, "p99_s": p99}


@contextlib.contextmanager
def running_server(ckpt: str, workers: int, batch: int, max_wait_ms: float, queue_size: int,
                   env: dict | None = None):
    """`samplecnn serve` in a subprocess on a free loopback port (`env`: its environment,
    e.g. PYTHONPATH for another source tree); yields its base URL."""
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "samplecnn.cli", "serve", ckpt, "--port", str(port),
           "--decode-workers", str(workers), "--max-batch", str(batch), "--max-wait-ms", str(max_wait_ms),
           "--queue-size", str(queue_size), "--timeout", "600", "--no-access-log"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):  # bounded: at most ~2 min for the server to come up
            if server.poll() is not None:
                raise SystemExit(f"samplecnn serve exited: {server.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("samplecnn serve did not come up")
        yield base
    finally:
        server.send_signal(2)  # SIGINT: graceful shutdown
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()


def run_levels(base: str, blobs, levels: list[int], per_client: int) -> list[dict]:
    out = []
    for clients in levels:
        requests = max(len(blobs), clients * per_client)
        res = asyncio.run(_level(base, blobs, clients, requests))
        out.append(res)
        print(f"  {clients:>3} clients  {requests:>4} requests  {res['audio_s_per_s']:7.1f} s audio/s  "
              f"p50 {res['p50_s']:6.2f} s  p95 {res['p95_s']:6.2f} s  p99 {res['p99_s']:6.2f} s"
              + (f"  ERRORS {res['errors']}: {res['first_error']}" if res["errors"] else ""), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="samplecnn", help="registry name (default: the paper's 3^9)")
    ap.add_argument("--clips", type=int, default=16, help="MP3 clips of 29.1 s (default 16)")
    ap.add_argument("--levels", default="1,4,16,64", help="concurrent clients (default 1,4,16,64)")
    ap.add_argument("--per-client", type=int, default=1, help="requests per client at a level (at least --clips)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="rounds of (CLI, every level); medians are reported (default 2)")
    ap.add_argument("--workers", type=int, default=1, help="decoding processes, both sides (default 1)")
    ap.add_argument("--batch", type=int, default=16, help="windows per model call, both sides (default 16)")
    ap.add_argument("--max-wait-ms", type=float, default=5, help="the service's batching wait (default 5)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    from samplecnn.checkpoint import save_checkpoint
    from samplecnn.models import create_model

    levels = [int(x) for x in args.levels.split(",")]
    print(f"load average at start: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp_s:
        tmp = Path(tmp_s)
        os.environ.setdefault("SAMPLECNN_HOME", str(tmp / "home"))  # one ONNX export cache for both
        folder = tmp / "clips"
        folder.mkdir()
        paths = []
        for i in range(args.clips):
            p = folder / f"clip{i:03d}.mp3"
            write_mp3(p, CLIP_S, seed=i)
            paths.append(str(p))
        blobs = [(os.path.basename(p), Path(p).read_bytes()) for p in paths]
        model = create_model(args.model, seed=0, tags=[f"tag{i}" for i in range(50)])
        ckpt = str(save_checkpoint(tmp / "model.ckpt", model))
        _cli(ckpt, paths[:1], tmp / "warm.jsonl", args.workers, args.batch)  # the ONNX export, once

        print(f"\n{args.model}, {args.clips} x {CLIP_S} s MP3s ({args.clips * CLIP_S:.0f} s of audio), "
              f"batch {args.batch}, {args.workers} decoding process(es), {args.rounds} round(s)")
        cli_runs, level_runs = [], {c: [] for c in levels}
        with running_server(ckpt, args.workers, args.batch, args.max_wait_ms, max(levels) * 2) as base:
            asyncio.run(_level(base, blobs, 2, 4))  # warm-up: workers, first batches
            for r in range(args.rounds):
                # Rounds interleave the CLI and the levels, so drifting load on a shared
                # machine reaches both sides alike.
                cli = cli_throughput(ckpt, str(folder), len(paths), tmp, args.workers, args.batch, f"r{r}")
                cli_runs.append(cli)
                print(f"round {r + 1}: CLI {cli['audio_s_per_s']:7.1f} s audio/s ({cli['wall_s']:.1f} s, of "
                      f"which model load {cli['load_s']:.1f} s: {cli['audio_s_per_s_after_load']:.1f} s audio/s "
                      f"after it; whole process {cli['process_s']:.1f} s)", flush=True)
                for res in run_levels(base, blobs, levels, args.per_client):
                    level_runs[res["clients"]].append(res)
        cli_med = float(np.median([c["audio_s_per_s"] for c in cli_runs]))
        cli_med_run = float(np.median([c["audio_s_per_s_after_load"] for c in cli_runs]))
        print(f"\nmedians over {args.rounds} round(s); CLI {cli_med:.1f} s audio/s as a command, "
              f"{cli_med_run:.1f} after its model load")
        summary = []
        for c in levels:
            runs = level_runs[c]
            row = {"clients": c, **{k: float(np.median([x[k] for x in runs]))
                                    for k in ("audio_s_per_s", "p50_s", "p95_s", "p99_s")},
                   "errors": sum(x["errors"] for x in runs)}
            row["vs_cli"] = row["audio_s_per_s"] / cli_med
            row["vs_cli_after_load"] = row["audio_s_per_s"] / cli_med_run
            summary.append(row)
            print(f"  {c:>3} clients: {row['audio_s_per_s']:7.1f} s audio/s = {row['vs_cli']:.2f}x CLI "
                  f"({row['vs_cli_after_load']:.2f}x after load)  "
                  f"p50 {row['p50_s']:.2f} s  p95 {row['p95_s']:.2f} s  p99 {row['p99_s']:.2f} s")
        print(f"load average at end: {os.getloadavg()}")
        if args.json:
            Path(args.json).write_text(json.dumps({"cli": cli_runs, "levels": level_runs, "summary": summary,
                                                   "cli_median": cli_med, "cli_after_load_median": cli_med_run}, indent=2))


if __name__ == "__main__":
    main()
