"""Atomic file writes: a reader sees the old file or the new one, never a torn one.

Everything users keep (checkpoints, stores, outputs, plots) is written through here: to a
temporary name in the same folder (same file system, so the rename is atomic), then
`os.replace`. On any error the temporary file is removed and the old file stays.

What an output path names decides how it is written (`resolve_output`):

- a regular file, or nothing yet: the rename above. A symlink is followed first: the
  temporary file lives beside the link's real target and replaces the target, so the
  link stays a link (and a dangling link gets its target created);
- a character device (`/dev/null`, a terminal, `/dev/stdout` on one) or a FIFO (a pipe,
  `/dev/stdout` piped into another program): a stream, never renamed over. The content
  is made in a private temporary file (writers may seek and read it back) and then
  written through the stream in place, without fsync (streams have nothing to sync). A
  FIFO that no process reads is refused instead of blocking;
- anything else (a socket, a block device, a folder, a symlink loop): refused with a
  ValueError naming the path.

Failures to write (a full disk, `/dev/full`, a read-only file system) are `OutputError`s
(a ValueError: one line, exit 2 in the CLI) naming the path and the reason.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .paths import escape_path

__all__ = ["OutputError", "resolve_output", "is_stream", "atomic_path", "write_bytes",
           "write_text", "write_json", "save_figure"]


class OutputError(ValueError):
    """An output could not be written (the path and the OS's reason are in the text)."""


def _output_error(path: str | os.PathLike, err: OSError) -> OutputError:
    reason = err.strerror or str(err)
    return OutputError(f"{escape_path(path)}: cannot write: {reason}")


def resolve_output(path: str | os.PathLike) -> tuple[Path, str]:
    """`(target, kind)` for an output path; kind is "file" (written by rename, `target` is
    the real path with symlinks resolved) or "stream" (written through in place, `target`
    is `path` as given so that magic links like `/dev/stdout` keep working).

    Raises ValueError for what must never be written or renamed over."""
    path = os.fspath(path)
    shown = escape_path(path)
    try:
        st = os.stat(path)  # follows links: what a write would reach
    except (FileNotFoundError, NotADirectoryError):
        st = None  # nothing yet (a parent that is a file fails when the folder is made)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError(f"{shown}: symlink loop; cannot write the output") from None
        raise _output_error(path, err) from None
    if st is not None:
        if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
            return Path(path), "stream"
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{shown}: is a folder, not a file")
        if not stat.S_ISREG(st.st_mode):
            kind = "socket" if stat.S_ISSOCK(st.st_mode) else \
                "block device" if stat.S_ISBLK(st.st_mode) else "special file"
            raise ValueError(f"{shown}: is a {kind}; samplecnn writes outputs to regular files, "
                             "character devices and pipes only")
    real = os.path.realpath(path)
    if os.path.islink(real):  # realpath stops at a loop (or an unreadable link)
        raise ValueError(f"{shown}: symlink loop; cannot write the output")
    return Path(real), "file"


def is_stream(path: str | os.PathLike) -> bool:
    """True if `path` is a character device or a FIFO (written through, never renamed)."""
    try:
        return resolve_output(path)[1] == "stream"
    except ValueError:
        return False


def _write_through(path: str | os.PathLike, src: Path) -> None:
    """Copy `src` into the stream `path` in place (no truncation, rename or fsync)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as err:
        if err.errno == errno.ENXIO:  # a FIFO with no reader: refuse rather than hang
            raise OutputError(f"{escape_path(path)}: cannot write: no process is reading "
                              "this pipe") from None
        raise _output_error(path, err) from None
    try:
        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
        with open(src, "rb") as f:
            while chunk := f.read(1 << 20):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
    except OSError as err:
        raise _output_error(path, err) from None
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path for `path`; it becomes `path` when the block succeeds.

    `suffix` is appended to the temporary name for writers that infer the format from it
    (matplotlib, `np.savez`). The file is created by the caller with normal permissions
    (umask), unlike `tempfile.mkstemp`'s private 0600 files. For a stream output (see the
    module docstring) the temporary file is private and its bytes are written through.
    """
    target, kind = resolve_output(path)
    if kind == "stream":
        tmpdir = Path(tempfile.mkdtemp(prefix="samplecnn-out-"))
        try:
            tmp = tmpdir / f"out{suffix}"
            yield tmp
            _write_through(path, tmp)
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _output_error(path, err) from None
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")
    try:
        yield tmp
        try:
            os.replace(tmp, target)
        except OSError as err:
            raise _output_error(path, err) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as err:
            raise _output_error(path, err) from None
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """UTF-8, newlines written as given (CSV writers produce their own)."""
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        except OSError as err:
            raise _output_error(path, err) from None
    return Path(path)


def _strict(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, Inf) as None: strict JSON parsers reject
    the bare `NaN` Python's json writes, and an undefined value is a null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Strict JSON (NaN and Inf written as null), UTF-8, atomically."""
    return write_text(path, json.dumps(_strict(obj), indent=indent, ensure_ascii=False,
                                       allow_nan=False) + "\n")


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically (format from `path`'s suffix) and close it
    (pyplot figures are released from pyplot; bare `Figure`s need no closing)."""
    path = Path(path)
    try:
        with atomic_path(path, suffix=path.suffix) as tmp:
            try:
                fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
            except OSError as err:
                raise _output_error(path, err) from None
    finally:
        if getattr(fig.canvas, "manager", None) is not None:
            import matplotlib.pyplot as plt

            plt.close(fig)
    return path
