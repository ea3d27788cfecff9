"""Where samplecnn keeps what it downloads or derives: `$SAMPLECNN_HOME`.

Default: `$XDG_CACHE_HOME/samplecnn`, else `~/.cache/samplecnn`. Entries are written
atomically (`samplecnn.atomic`) under an exclusive lock (`samplecnn.locks`), so two
processes asking for one entry produce it once and never see a torn file.

A cache folder that cannot be used (`SAMPLECNN_HOME` under a regular file, under `/proc`
or `/sys`, read-only, full) is a `CacheError` (a ValueError naming the variable and the
reason). What only speeds things up catches it and goes on without the cache (the ONNX
export cache, `samplecnn.inference.onnx.cached_graph`: one warning, export in memory);
what needs the cache (pretrained weights) lets it reach the user as one line, exit 2.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable

from .atomic import atomic_path
from .locks import OutputBusy, exclusive
from .paths import escape_path

__all__ = ["CacheError", "home", "cache_dir", "cached_file"]


class CacheError(ValueError):
    """The cache folder cannot be used (the text names `SAMPLECNN_HOME` and why)."""


def _cache_error(reason: str) -> CacheError:
    where = (f"SAMPLECNN_HOME={escape_path(home())}" if os.environ.get("SAMPLECNN_HOME")
             else f"the cache folder {escape_path(home())} (SAMPLECNN_HOME is not set)")
    return CacheError(f"{where}: cannot be used as samplecnn's cache: {reason}; "
                      "set SAMPLECNN_HOME to a writable folder")


def home() -> Path:
    """The samplecnn cache root (not created)."""
    env = os.environ.get("SAMPLECNN_HOME")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "samplecnn"


def cache_dir(*parts: str) -> Path:
    """A folder under the cache root, created if needed."""
    d = home().joinpath(*parts)
    try:
        d.mkdir(parents=True, exist_ok=True)
        if not os.access(d, os.W_OK | os.X_OK):
            raise PermissionError(13, "folder is not writable")
    except OSError as err:
        raise _cache_error(err.strerror or str(err)) from None
    return d


def cached_file(path: str | os.PathLike, produce: Callable[[Path], None], what: str = "cache entry",
                wait_s: float = 600.0) -> Path:
    """`path` if it exists; otherwise `produce(tmp)` writes it to a temporary name that
    becomes `path` only when `produce` returns. Concurrent callers wait (up to `wait_s`)
    for the one producing it instead of producing it twice."""
    path = Path(path)
    if path.is_file():
        return path
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(exclusive(path, what, timeout=wait_s))
        except OutputBusy:
            raise
        except ValueError as err:  # the lock file cannot be made
            raise _cache_error(str(err)) from None
        if not path.is_file():  # another process may have made it while we waited
            try:
                with atomic_path(path) as tmp:
                    produce(tmp)
            except OSError as err:  # a full or read-only cache (produce only writes tmp)
                raise _cache_error(err.strerror or str(err)) from None
    return path
