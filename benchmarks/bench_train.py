"""Training throughput (segments per second) of a model, as `samplecnn train` runs it.

One training step = forward, BCE on the logits, backward, SGD + Nesterov update (the
paper recipe), on random audio; the data path (memory-mapped store) is not included
(it costs far less than the network on a CPU). Prints a Markdown row per model with the
forward FLOPs per segment (`model.flops()`).

    python benchmarks/bench_train.py                          # 3^9 model, batch 23, CPU
    python benchmarks/bench_train.py --models samplecnn samplecnn_small --steps 5
    python benchmarks/bench_train.py --device cuda --precision bf16 --batch 23 --steps 50
"""
from __future__ import annotations

import argparse
import platform
import time

import torch

from samplecnn.models import create_model
from samplecnn.runtime import Runtime


def bench(name: str, batch: int, steps: int, warmup: int, device: str, precision: str,
          n_tags: int = 50) -> dict:
    model = create_model(name, n_tags=n_tags, seed=0).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, 1, model.config.input_samples, generator=g) * 0.2 - 0.1).to(device)
    y = (torch.rand(batch, n_tags, generator=g) < 0.1).float().to(device)
    dtype = torch.bfloat16 if precision == "bf16" else None

    def step():
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            logits = model(x)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    return {"model": name, "batch": batch, "steps": steps, "seconds": dt,
            "segments_per_s": batch * steps / dt, "gflops_fwd": model.flops() / 1e9,
            "params": model.num_params(), "input_samples": model.config.input_samples}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["samplecnn"])
    p.add_argument("--batch", type=int, default=23)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="32", choices=["32", "bf16"])
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    Runtime(num_threads=args.threads).apply()
    dev = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"# {dev}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"precision {args.precision}, batch {args.batch}")
    print("| model | input | params | GFLOPs / segment (fwd) | segments / s (train) | TFLOP/s (fwd x 3) |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        r = bench(name, args.batch, args.steps, args.warmup, args.device, args.precision)
        tflops = 3 * r["gflops_fwd"] * r["segments_per_s"] / 1000
        print(f"| {name} | {r['input_samples']} | {r['params']:,} | {r['gflops_fwd']:.3f} | "
              f"{r['segments_per_s']:.2f} | {tflops:.3f} |", flush=True)


if __name__ == "__main__":
    main()
