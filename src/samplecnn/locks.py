"""One writer per output: an exclusive lock held for as long as something is written.

Every output samplecnn writes over a long job (a tagging output file, a run folder being
trained, a store being prepared, a cache entry) is held with `exclusive(path, what)`.
A second process that asks for the same output is refused at once with `OutputBusy`
(a ValueError, so the CLI prints one line and exits 2) instead of interleaving its
writes with the first one's.

The lock is an OS file lock (`filelock`, flock on POSIX) on `.<name>.lock` beside the
output: the OS releases it when the holder exits, even after `kill -9`, so a stale lock
file never blocks a later run. The lock file itself is left in place (removing it would
race with a process that is just opening it).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from .paths import escape_path

__all__ = ["OutputBusy", "exclusive", "lock_path"]


class OutputBusy(ValueError):
    """Another process holds the output."""


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of an output: `.<name>.lock` in the output's folder."""
    p = Path(os.path.abspath(os.fspath(path)))
    return p.with_name(f".{p.name}.lock")


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str = "output", timeout: float = 0.0) -> Iterator[Path]:
    """Hold `path` exclusively for the block; `OutputBusy` if another process holds it.

    `timeout` seconds are waited for the other holder (0: refuse at once; a cache entry
    being downloaded by another process is worth waiting for).
    """
    lp = lock_path(path)
    lp.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lp), timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise OutputBusy(f"{escape_path(path)}: {what} is in use by another samplecnn process; "
                         "wait for it to finish (one writer per output)") from None
    try:
        yield Path(path)
    finally:
        lock.release()
