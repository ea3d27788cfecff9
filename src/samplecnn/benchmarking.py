"""The measurements `samplecnn bench` and benchmarks/run.py make.

Library code: nothing here changes process-wide settings. Callers are entry points and
apply their `samplecnn.runtime.Runtime` first (`samplecnn bench` applies
`Runtime(num_threads=...)`, or `training.fast.runtime_for_mode(mode, ...)` for training).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from samplecnn.inference.runners import BACKENDS, optimize_for_inference
from samplecnn.training.fast import prepare_for_training

__all__ = ["matmul_peak_gflops", "bench_inference", "bench_training"]


def matmul_peak_gflops(n: int = 4096, repeats: int = 3, dtype: torch.dtype = torch.float32) -> float:
    """Best-of-`repeats` GFLOP/s of an `(n, n) @ (n, n)` matrix product with torch (CPU)."""
    import time

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def _timed(fn, iters: int, warmup: int) -> list[float]:
    import time

    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _summary(times: list[float], batch: int, flops_per_segment: int) -> dict:
    med = float(np.median(times))
    best = float(min(times))
    return {
        "segments_per_s": batch / med,
        "best_segments_per_s": batch / best,
        "seconds_per_batch": med,
        "gflops_per_s": batch * flops_per_segment / med / 1e9,
        "iters": len(times),
    }


def bench_inference(name: str, batch: int = 16, backend: str = "auto", precision: str = "fp32",
                    iters: int = 5, warmup: int = 1, device: str = "cpu", seed: int = 0,
                    calibration_windows: int = 32, calibration_method: str = "percentile") -> dict:
    """Segments per second of the inference path for a registered variant.

    Random weights (`create_model(name, seed=seed)`), random input `(batch,
    input_samples)`, run by `optimize_for_inference(model, backend, precision)`: "plain"
    is the eager model, "auto" what the Tagger runs by default. precision "int8" runs the
    int8 graph of `samplecnn export --int8` on ONNX Runtime, calibrated by
    `calibration_method` on `calibration_windows` random windows (`int8_runner`).
    Returns a JSON-safe dict (`segments_per_s` is the median over `iters` timed batches;
    `setup_s` the optimisation / export time, which includes a cache lookup or an ONNX
    export, and for int8 the calibration).
    """
    import time

    from samplecnn.models import create_model

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if batch < 1 or iters < 1:
        raise ValueError(f"batch and iters must be >= 1, got {batch} and {iters}")
    # Runners name their outputs, so the random model gets placeholder tag names.
    model = create_model(name, seed=seed, tags=[f"tag{i}" for i in range(50)]).eval().to(device)
    x = np.random.default_rng(seed).standard_normal((batch, model.input_samples)).astype(np.float32)
    t0 = time.perf_counter()
    if precision == "int8":
        run = int8_runner(model, backend, device, calibration_windows, calibration_method, seed)
    else:
        run = optimize_for_inference(model, backend=backend, precision=precision, device=device)
    setup = time.perf_counter() - t0

    def step():
        run.logits(x)  # returns host memory, so a GPU run is synchronised

    times = _timed(step, iters, warmup)
    resolved = type(run).__name__
    return {"mode": "infer", "model": name, "backend": backend, "module": resolved,
            "precision": precision, "batch": batch, "device": str(device),
            "threads": torch.get_num_threads(), "setup_s": setup,
            **_summary(times, batch, model.flops())}


def int8_runner(model, backend: str = "auto", device: str = "cpu", windows: int = 32,
                method: str = "percentile", seed: int = 0, **recipe):
    """An `OrtRunner` of the int8 graph of `model` calibrated on random windows (speed
    measurements: random weights make any calibration data as good as another)."""
    from samplecnn.inference.onnx import export_graph
    from samplecnn.inference.runners import OrtRunner
    from samplecnn.quantize import QuantRecipe, quantize_graph, random_windows

    if backend not in ("auto", "onnxruntime"):
        raise ValueError(f"int8 runs on the onnxruntime backend, not {backend!r}")
    if torch.device(device).type != "cpu":
        raise ValueError(f"int8 runs on the CPU; asked for {device} (GPUs: use bf16)")
    rec = QuantRecipe(method=method, windows=windows, seed=seed, **recipe)
    graph = quantize_graph(export_graph(model.eval().cpu()),
                           random_windows(windows, model.config.input_samples, seed), rec,
                           source="random windows")
    return OrtRunner.from_file(graph, label="int8 graph")


def bench_training(name: str, batch: int = 16, mode: str = "plain", precision: str = "fp32",
                   iters: int = 5, warmup: int = 1, device: str = "cpu", seed: int = 0) -> dict:
    """Segments per second of a training step (forward, BCE loss, backward, SGD-Nesterov
    update: the paper's recipe) for a registered variant with random weights, input and
    targets. `setup_s` includes the first (compiling) step in "compile" mode."""
    import time

    from samplecnn.models import create_model

    if batch < 2 or iters < 1:
        raise ValueError(f"training needs batch >= 2 (BatchNorm) and iters >= 1, got {batch} and {iters}")
    model = create_model(name, seed=seed).train().to(device)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 1, model.input_samples, generator=g).to(device)
    y = (torch.rand(batch, model.config.n_tags, generator=g) < 0.1).float().to(device)
    loss_fn = nn.BCEWithLogitsLoss()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    t0 = time.perf_counter()
    fwd = prepare_for_training(model, mode, precision)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(fwd(x), y)
        loss.backward()
        opt.step()
        if x.device.type == "cuda":
            torch.cuda.synchronize()

    step()
    setup = time.perf_counter() - t0
    times = _timed(step, iters, max(0, warmup - 1))
    return {"mode": "train", "model": name, "train_mode": mode, "precision": precision,
            "batch": batch, "device": str(device), "threads": torch.get_num_threads(),
            "setup_s": setup, **_summary(times, batch, 3 * model.flops())}


