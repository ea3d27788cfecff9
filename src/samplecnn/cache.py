"""Where samplecnn keeps what it downloads or derives: `$SAMPLECNN_HOME`.

Default: `$XDG_CACHE_HOME/samplecnn`, else `~/.cache/samplecnn`. Entries are written
atomically (`samplecnn.atomic`) under an exclusive lock (`samplecnn.locks`), so two
processes asking for one entry produce it once and never see a torn file.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .atomic import atomic_path
from .locks import exclusive

__all__ = ["home", "cache_dir", "cached_file"]


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
    d.mkdir(parents=True, exist_ok=True)
    return d


def cached_file(path: str | os.PathLike, produce: Callable[[Path], None], what: str = "cache entry",
                wait_s: float = 600.0) -> Path:
    """`path` if it exists; otherwise `produce(tmp)` writes it to a temporary name that
    becomes `path` only when `produce` returns. Concurrent callers wait (up to `wait_s`)
    for the one producing it instead of producing it twice."""
    path = Path(path)
    if path.is_file():
        return path
    with exclusive(path, what, timeout=wait_s):
        if not path.is_file():  # another process may have made it while we waited
            with atomic_path(path) as tmp:
                produce(tmp)
    return path
