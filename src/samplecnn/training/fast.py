"""Opt-in speed-ups for training steps: compiled steps and bf16 autocast.

`prepare_for_training(model, mode, precision)` returns a `TrainingForward` that replaces
`model(x)` inside a training step; the model, its parameters and checkpoint keys are
untouched. The process-wide parts of a mode (glibc keeping freed memory for "retain",
cuDNN benchmark mode) are not set here but by the entry point's `samplecnn.runtime.Runtime`
(`runtime_for_mode` says which).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..runtime import Runtime, retaining_freed_memory

if TYPE_CHECKING:  # torch is imported where it runs: the CLI's parser reads TRAIN_MODES
    import torch
    from torch import nn

PRECISIONS = ("fp32", "bf16")

TRAIN_MODES = ("plain", "compile", "retain", "retain-compile")


class TrainingForward:
    """The model's forward for training steps, with opt-in speed-ups.

    `__call__`: `(B, 1, input_samples)` -> float32 logits `(B, n_tags)`, with autograd.
    The model is held by reference (parameters, buffers and checkpoint keys are the
    model's own), so this can replace `model(x)` inside any training step.

    compile: `torch.compile` the forward (inductor; fuses BN / ReLU / pooling passes
        forward and backward; the first call compiles for ~30-60 s on 2 cores, and again
        for a new batch shape, e.g. the last, smaller batch of an epoch).
    precision: "bf16" runs under `torch.autocast` (CUDA, or CPUs with AVX512-BF16);
        mixed precision changes the numbers, so it is off by default.
    """

    def __init__(self, model: nn.Module, compile: bool = False, precision: str = "fp32"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        import torch

        self.model = model
        self.precision = precision
        self.compiled = torch.compile(model) if compile else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        fn = self.compiled if self.compiled is not None else self.model
        if self.precision == "bf16":
            import torch

            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                return fn(x).float()
        return fn(x).float()


def runtime_for_mode(mode: str, num_threads: int | None = None) -> Runtime:
    """The process-wide settings a `TRAIN_MODES` name needs, for the entry point to apply.

    "retain" / "retain-compile": glibc keeps freed memory (large activations are not
    page-faulted in again every step: on a CPU the largest single speed-up of a training
    step, with the plain model's kernels, so the numbers are the plain model's). Every
    mode but "plain" also turns on cuDNN benchmark mode (no effect without CUDA).
    """
    check_mode(mode)
    return Runtime(num_threads=num_threads, retain_freed_memory=mode.startswith("retain"),
                   cudnn_benchmark=None if mode == "plain" else True)


def check_mode(mode: str) -> str:
    if mode not in TRAIN_MODES:
        raise ValueError(f"training mode must be one of {', '.join(TRAIN_MODES)}, got {mode!r}")
    return mode


def prepare_for_training(model: nn.Module, mode: str = "plain", precision: str = "fp32") -> TrainingForward:
    """`TrainingForward` for a `TRAIN_MODES` name: the eager model ("plain", "retain") or
    `torch.compile` of it ("compile", "retain-compile").

    A "retain" mode needs `runtime_for_mode(mode).apply()` at the entry point first (a
    ValueError otherwise: the mode would silently run as "plain").
    """
    check_mode(mode)
    if mode.startswith("retain") and not retaining_freed_memory():
        raise ValueError(f"training mode {mode!r} needs the allocator setting applied at the "
                         "entry point: samplecnn.training.fast.runtime_for_mode(mode).apply()")
    return TrainingForward(model, compile=mode.endswith("compile"), precision=precision)


