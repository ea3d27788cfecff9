"""One writer per output: an exclusive lock held for as long as something is written.

Every output samplecnn writes over a long job (a tagging output file, a run folder being
trained, a store being prepared, a cache entry) is held with `exclusive(path, what)`.
A second process that asks for the same output is refused at once with `OutputBusy`
(a ValueError, so the CLI prints one line and exits 2) instead of interleaving its
writes with the first one's.

The lock is an OS file lock (`filelock`, flock on POSIX): the OS releases it when the
holder exits, even after `kill -9`, so a stale lock file never blocks a later run. Lock
files are left in place (removing one would race with a process that is just opening it).

Locks are keyed on the file that would be written, not on the name given:

- symlinks are resolved: the lock is `.<name>.lock` beside the real target, so a link
  and its target (or two links to one file) share one lock;
- an existing regular file is also locked by its (device, inode) in a private folder of
  this user (`lock_dir()`), so two hard links to one file collide too;
- a character device or FIFO (`/dev/null`, a pipe) gets no lock: it keeps no content
  that a second writer could damage, and a lock file must never be created in `/dev`.
"""
from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from .paths import escape_path

__all__ = ["OutputBusy", "exclusive", "lock_path", "lock_dir"]


class OutputBusy(ValueError):
    """Another process holds the output."""


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def lock_path(path: str | os.PathLike) -> Path | None:
    """The lock file of an output: `.<name>.lock` beside its real target (symlinks
    resolved); None for a character device or FIFO, which are not locked."""
    real = os.path.realpath(os.fspath(path))
    st = _stat(real)
    if st is not None and (stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        return None
    p = Path(real)
    return p.with_name(f".{p.name}.lock")


def lock_dir() -> Path:
    """This user's private folder for locks that have no natural place (inode locks):
    `$XDG_RUNTIME_DIR/samplecnn-locks`, else `<tmp>/samplecnn-<uid>-locks`; created 0700
    and refused unless it is a real folder owned by this user (no one else can plant a
    link there)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = runtime if runtime and os.path.isdir(runtime) else tempfile.gettempdir()
    name = "samplecnn-locks" if base == runtime else f"samplecnn-{os.getuid()}-locks"
    d = Path(base) / name
    try:
        d.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(d)
    except OSError as err:
        raise ValueError(f"cannot create the lock folder {escape_path(d)}: {err.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise ValueError(f"lock folder {escape_path(d)} is not a private folder of this user; "
                         "remove it and retry")
    return d


def _prepare(lp: Path, path: str | os.PathLike) -> None:
    """Create `lp` (and its folder) so that a failure says what failed, instead of
    reading as "in use" (filelock treats some open errors as contention)."""
    try:
        lp.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lp, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        os.close(fd)
    except OSError as err:
        raise ValueError(f"{escape_path(path)}: cannot create the lock file {escape_path(lp)}: "
                         f"{err.strerror or err}") from None


@contextlib.contextmanager
def exclusive(path: str | os.PathLike, what: str = "output", timeout: float = 0.0) -> Iterator[Path]:
    """Hold `path` exclusively for the block; `OutputBusy` if another process holds it.

    `timeout` seconds are waited for the other holder (0: refuse at once; a cache entry
    being downloaded by another process is worth waiting for). A lock file that cannot
    be created is a ValueError saying so.
    """
    lp = lock_path(path)
    files: list[Path] = []
    if lp is not None:
        files.append(lp)
        st = _stat(os.fspath(path))
        if st is not None and stat.S_ISREG(st.st_mode):
            files.append(lock_dir() / f"inode-{st.st_dev}-{st.st_ino}.lock")
    with contextlib.ExitStack() as held:
        for f in files:
            _prepare(f, path)
            lock = FileLock(str(f), timeout=timeout)
            try:
                lock.acquire()
            except Timeout:
                raise OutputBusy(f"{escape_path(path)}: {what} is in use by another samplecnn "
                                 "process; wait for it to finish (one writer per output)") from None
            except OSError as err:
                raise ValueError(f"{escape_path(path)}: cannot lock {escape_path(f)}: "
                                 f"{err.strerror or err}") from None
            held.callback(lock.release)
        yield Path(path)
