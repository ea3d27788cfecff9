"""Process-wide settings (torch threads, glibc's allocator, cuDNN benchmark mode), in one place.

These switches change the whole process, not one model, and some cannot be undone, so
the library never sets them from deep inside: entry points (`samplecnn train`,
`training.train()`, `samplecnn demo` / `run_demo()`, `samplecnn bench`, the benchmark
scripts) build one `Runtime` and `apply()` it before any work.

    Runtime(num_threads=2, retain_freed_memory=True).apply()

Fields left at None leave the process as it is. torch is imported only when a torch
setting is asked for.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Runtime", "retain_freed_memory", "retaining_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc <malloc.h>
_RETAINING = False


def retaining_freed_memory() -> bool:
    """Whether `retain_freed_memory()` has been applied in this process."""
    return _RETAINING


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of returning it to the OS.

    By default glibc serves every allocation above its mmap threshold (at most 32 MiB)
    with a fresh `mmap` and unmaps it on `free`, so each large activation of a training
    step (block 1's output is 161 MB at batch 16) is zero-filled page by page again by
    the kernel: page faults cost about as much as the training step's arithmetic on
    2-core machines. With mmap off (`M_MMAP_MAX=0`) and no trimming (`M_TRIM_THRESHOLD`
    = SIZE_MAX) the heap grows to the step's peak once and is reused. The numbers are
    untouched (the same kernels run on the same values); the cost is that the process
    keeps its peak memory. Process-wide and not undone (call it through `Runtime` at an
    entry point); returns True once in force. Raises ValueError where the C library is
    not glibc (e.g. macOS, musl).
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


@dataclass(frozen=True)
class Runtime:
    """The process-wide settings an entry point asks for.

    num_threads: torch's intra-op CPU threads (None: torch's default, the core count).
    retain_freed_memory: glibc keeps freed memory (`retain_freed_memory()`; irreversible).
    cudnn_benchmark: cuDNN picks the fastest convolution algorithm per input shape
        (every training batch has the same shape, so the search is paid once).
    """

    num_threads: int | None = None
    retain_freed_memory: bool = False
    cudnn_benchmark: bool | None = None

    def __post_init__(self) -> None:
        n = self.num_threads
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"num_threads must be a positive integer, got {n!r}")

    def apply(self) -> "Runtime":
        """Set what this runtime asks for; returns self."""
        if self.retain_freed_memory:
            retain_freed_memory()
        if self.num_threads is not None or self.cudnn_benchmark is not None:
            import torch

            if self.num_threads is not None:
                torch.set_num_threads(int(self.num_threads))
            if self.cudnn_benchmark is not None:
                torch.backends.cudnn.benchmark = bool(self.cudnn_benchmark)
        return self
