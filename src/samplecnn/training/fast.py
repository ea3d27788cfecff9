"""Opt-in speed-ups for training steps: compiled steps, an allocator that keeps freed
memory, bf16 autocast, cuDNN benchmark mode.

`prepare_for_training(model, mode, precision)` returns a `TrainingForward` that replaces
`model(x)` inside a training step; the model, its parameters and checkpoint keys are
untouched.
"""
from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")

TRAIN_MODES = ("plain", "compile", "retain", "retain-compile")

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>
_RETAINING = False


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    By default glibc serves every allocation above its mmap threshold (at most 32 MiB)
    with a fresh `mmap` and unmaps it on `free`, so each large activation of a training
    step (block 1's output is 161 MB at batch 16) is zero-filled page by page again by
    the kernel: page faults cost about as much as the training step's arithmetic on these
    2-core machines. With mmap off (`M_MMAP_MAX=0`) and no trimming (`M_TRIM_THRESHOLD`
    = SIZE_MAX) the heap grows to the step's peak once and is reused. The numbers are
    untouched (the same kernels run on the same values); the cost is that the process
    keeps its peak memory. Process-wide and not undone; returns True once it is in
    force. Raises ValueError where the C library is not glibc (e.g. macOS, musl).
    """
    global _RETAINING
    if _RETAINING:
        return True
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        raise ValueError("retaining freed memory needs glibc's malloc (Linux); "
                         "use training mode 'plain' or 'compile' here")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    # mallopt takes an int; -1 converts to SIZE_MAX in glibc (never trim).
    if not (libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, -1)):
        raise ValueError("mallopt refused M_MMAP_MAX / M_TRIM_THRESHOLD")
    _RETAINING = True
    return True


def configure_backends(device: str | torch.device = "cpu", cudnn_benchmark: bool = True) -> None:
    """Process-wide switches for fast training on `device`.

    CUDA: cuDNN benchmark mode (picks the fastest convolution algorithm per shape; every
    training batch has the same shape, so the search is paid once). TF32 stays as torch
    sets it (on by default for cuDNN convolutions). CPU: nothing to switch -- oneDNN is
    already used for float32 convolutions.
    """
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)


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
        self.model = model
        self.precision = precision
        self.compiled = torch.compile(model) if compile else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        fn = self.compiled if self.compiled is not None else self.model
        if self.precision == "bf16":
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16):
                return fn(x).float()
        return fn(x).float()


def prepare_for_training(model: nn.Module, mode: str = "plain", precision: str = "fp32",
                         device: str | torch.device | None = None) -> TrainingForward:
    """`TrainingForward` for a `TRAIN_MODES` name, after `configure_backends(device)`
    (the model's device by default).

    "plain": the eager model. "compile": `torch.compile` of it. "retain" / "retain-compile":
    the same, after `retain_freed_memory()` (glibc keeps freed memory, so large
    activations are not page-faulted in again every step; on the standard CPU machine
    this is the largest single speed-up of a training step, and "retain" runs exactly the
    plain model's kernels, so its numbers are bit-for-bit the plain model's).
    """
    if mode not in TRAIN_MODES:
        raise ValueError(f"training mode must be one of {', '.join(TRAIN_MODES)}, got {mode!r}")
    if mode.startswith("retain"):
        retain_freed_memory()
    configure_backends(device if device is not None else next(model.parameters()).device)
    return TrainingForward(model, compile=mode.endswith("compile"), precision=precision)


