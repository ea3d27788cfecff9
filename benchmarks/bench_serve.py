"""`samplecnn serve` under concurrent load, beside `samplecnn tag` on the same files.

Writes `--clips` MagnaTagATune-format MP3s (MPEG Layer III, 16 kHz mono, 29.1 s, as
benchmarks/bench_tag.py does), then in one run:

1. the CLI's folder throughput: `samplecnn tag CKPT FOLDER` in a subprocess, timed in
   that process from the CLI's main() (model load, decoding, scoring, writing) to its
   end, leaving out interpreter and import start-up as the service's start-up is left
   out. Run before and after the service levels; the mean is the baseline.
2. the service: `samplecnn serve CKPT` in a subprocess on 127.0.0.1, then 1, 4, 16 and
   64 concurrent clients (httpx, asyncio) posting the MP3s to /v1/tag; for each level,
   seconds of audio tagged per wall-clock second and p50 / p95 / p99 request latency.

    python benchmarks/bench_serve.py --model samplecnn --clips 24

Both sides use the same model (random weights of the named registry variant: speed does
not depend on them), batch size and number of decoding processes. The load average is
printed at the start and the end: on 2 cores, figures taken under load > 2 are noisy.
"""
from __future__ import annotations

import argparse
import asyncio
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
build_parser()  # imports every command module
t = time.perf_counter()
rc = main(sys.argv[1:])
print(json.dumps({"rc": rc, "wall_s": time.perf_counter() - t}))
"""


def _cli(ckpt: str, inputs: list[str], out: Path, workers: int, batch: int) -> dict:
    argv = ["tag", ckpt, *inputs, "--format", "jsonl", "-o", str(out), "--workers", str(workers),
            "--batch-size", str(batch), "-q"]
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CLI_TIMED, *argv], capture_output=True, text=True)
    process_s = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"samplecnn tag failed ({proc.returncode}): {proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": res["wall_s"], "process_s": process_s}


def cli_throughput(ckpt: str, folder: str, n: int, tmp: Path, workers: int, batch: int, tag: str) -> dict:
    run = _cli(ckpt, [folder], tmp / f"all-{tag}.jsonl", workers, batch)
    return {**run, "audio_s_per_s": n * CLIP_S / run["wall_s"],
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


def serve_levels(ckpt: str, paths: list[str], levels: list[int], per_client: int, workers: int,
                 batch: int, max_wait_ms: float) -> list[dict]:
    import httpx

    port = _free_port()
    cmd = [sys.executable, "-m", "samplecnn.cli", "serve", ckpt, "--port", str(port),
           "--decode-workers", str(workers), "--max-batch", str(batch), "--max-wait-ms", str(max_wait_ms),
           "--queue-size", str(max(levels) * 2), "--timeout", "600", "--no-access-log"]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
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
        blobs = [(os.path.basename(p), Path(p).read_bytes()) for p in paths]
        asyncio.run(_level(base, blobs, 2, 4))  # warm-up: workers, first batches
        out = []
        for clients in levels:
            requests = max(len(paths), clients * per_client)
            res = asyncio.run(_level(base, blobs, clients, requests))
            out.append(res)
            print(f"  {clients:>3} clients  {requests:>4} requests  {res['audio_s_per_s']:7.1f} s audio/s  "
                  f"p50 {res['p50_s']:6.2f} s  p95 {res['p95_s']:6.2f} s  p99 {res['p99_s']:6.2f} s"
                  + (f"  ERRORS {res['errors']}: {res['first_error']}" if res["errors"] else ""), flush=True)
        return out
    finally:
        server.send_signal(2)  # SIGINT: graceful shutdown
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="samplecnn", help="registry name (default: the paper's 3^9)")
    ap.add_argument("--clips", type=int, default=24, help="MP3 clips of 29.1 s (default 24)")
    ap.add_argument("--levels", default="1,4,16,64", help="concurrent clients (default 1,4,16,64)")
    ap.add_argument("--per-client", type=int, default=2, help="requests per client at a level (at least --clips)")
    ap.add_argument("--workers", type=int, default=1, help="decoding processes, both sides (default 1)")
    ap.add_argument("--batch", type=int, default=16, help="windows per model call, both sides (default 16)")
    ap.add_argument("--max-wait-ms", type=float, default=5, help="the service's batching wait (default 5)")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()

    from samplecnn.checkpoint import save_checkpoint
    from samplecnn.models import create_model

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
        model = create_model(args.model, seed=0, tags=[f"tag{i}" for i in range(50)])
        ckpt = str(save_checkpoint(tmp / "model.ckpt", model))
        _cli(ckpt, paths[:1], tmp / "warm.jsonl", args.workers, args.batch)  # the ONNX export, once

        print(f"\n{args.model}, {args.clips} x {CLIP_S} s MP3s ({args.clips * CLIP_S:.0f} s of audio), "
              f"batch {args.batch}, {args.workers} decoding process(es)")
        before = cli_throughput(ckpt, str(folder), len(paths), tmp, args.workers, args.batch, "before")
        print(f"  CLI (before): {before['audio_s_per_s']:7.1f} s audio/s ({before['wall_s']:.1f} s; "
              f"whole process {before['process_s']:.1f} s)", flush=True)
        levels = serve_levels(ckpt, paths, [int(x) for x in args.levels.split(",")], args.per_client,
                              args.workers, args.batch, args.max_wait_ms)
        after = cli_throughput(ckpt, str(folder), len(paths), tmp, args.workers, args.batch, "after")
        print(f"  CLI (after):  {after['audio_s_per_s']:7.1f} s audio/s ({after['wall_s']:.1f} s; "
              f"whole process {after['process_s']:.1f} s)")
        cli_mean = (before["audio_s_per_s"] + after["audio_s_per_s"]) / 2
        print(f"\nservice / CLI throughput (CLI mean {cli_mean:.1f} s audio/s):")
        for lv in levels:
            print(f"  {lv['clients']:>3} clients: {lv['audio_s_per_s'] / cli_mean:5.2f}x")
        print(f"load average at end: {os.getloadavg()}")
        if args.json:
            Path(args.json).write_text(json.dumps({"cli_before": before, "cli_after": after,
                                                   "cli_mean": cli_mean, "levels": levels}, indent=2))


if __name__ == "__main__":
    main()
