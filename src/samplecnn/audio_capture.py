"""The decoder's own output, captured per decoding call (fd 2), for `samplecnn.audio`.

libmpg123 (libsndfile's MP3 decoder) prints notes and errors with fprintf(stderr): they
interleave with samplecnn's lines and name no file. Opening and MP3 reads therefore run
with file descriptor 2 pointed at a private temporary file (`decoder_output`), and what
the decoder wrote becomes the file's warnings (`summarise`). fd 2 belongs to the whole
process, so one lock serialises the swaps (decoding threads take turns per call, not per
file), and fork() waits for the lock, so a child never starts with fd 2 still swapped;
the child makes its own lock and file. Reads of other formats are not wrapped: their
decoders report by return code only.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from typing import Iterator

__all__ = ["CHATTY_FORMATS", "decoder_output", "summarise"]

# libmpg123 (libsndfile's MP3 decoder) prints notes and errors with fprintf(stderr): they
# interleave with samplecnn's lines and name no file. Opening and MP3 reads therefore run
# with file descriptor 2 pointed at a private temporary file, and what the decoder wrote
# becomes the file's warnings. fd 2 belongs to the whole process, so one lock serialises
# the swaps (decoding threads take turns per call, not per file), and fork() waits for the
# lock, so a child never starts with fd 2 still swapped; the child makes its own lock and
# file. Reads of other formats are not wrapped: their decoders report by return code only.

CHATTY_FORMATS = ("MP3", "MPEG")  # libsndfile names MP3 "MP3" (MPEG in some builds)
_MAX_DECODER_LINES = 5
_capture_lock = threading.RLock()
_capture_file = None

# Lines that carry nothing for the user: resync bookkeeping after an "Illegal
# Audio-MPEG-Header" note, and size notes that the `truncated:` check states better.
_BENIGN = re.compile(
    r"Trying to resync|Skipped \d+ bytes in input|Xing stream size off|"
    r"more data after announced end|fuzzy seeking", re.IGNORECASE)
_DECODER_LINE = re.compile(r"^\s*(\[[^\]]*\.c:[^\]]*\]|(Note|Warning|Error)\s*:)|mpg123",
                           re.IGNORECASE)
_DECODER_PREFIX = re.compile(r"^\s*(\[[^\]]*\]\s*)?((note|warning|error)\s*:\s*)?",
                             re.IGNORECASE)


def _after_fork_in_child() -> None:
    global _capture_lock, _capture_file
    _capture_lock = threading.RLock()
    _capture_file = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=lambda: _capture_lock.acquire(),
                        after_in_parent=lambda: _capture_lock.release(),
                        after_in_child=_after_fork_in_child)


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass


def _sort_output(data: bytes, into: list | None) -> None:
    """Decoder lines -> `into` (cleaned, benign ones dropped); any other line (another
    thread's, written while fd 2 was swapped) goes back to the real stderr unchanged."""
    other = []
    # Pieces that are not the decoder's go back byte for byte, partial lines and lone
    # newlines included: another thread's line can straddle the swap (its text flushed
    # before, its newline after), and only the verbatim bytes rejoin it.
    for raw in data.splitlines(keepends=True):
        line = raw.decode("utf-8", errors="replace").strip()
        if not line or not _DECODER_LINE.search(line):
            other.append(raw)
        elif not _BENIGN.search(line) and into is not None:
            into.append("decoder: " + _DECODER_PREFIX.sub("", line).rstrip(". "))
    if other:
        try:
            os.write(2, b"".join(other))
        except OSError:
            pass


@contextlib.contextmanager
def decoder_output(into: list | None) -> Iterator[None]:
    """Run the block with fd 2 captured; the decoder's lines are appended to `into`
    (None: dropped). A process without a usable fd 2 runs the block as it is."""
    global _capture_file
    with _capture_lock:
        _flush_stderr()
        try:
            saved = os.dup(2)
        except OSError:
            saved = None
        if saved is None:
            yield
            return
        try:
            if _capture_file is None:
                _capture_file = tempfile.TemporaryFile(buffering=0)
            capture = _capture_file
            os.dup2(capture.fileno(), 2)
        except OSError:
            os.close(saved)
            yield
            return
        try:
            yield
        finally:
            _flush_stderr()  # Python-level writes made meanwhile belong to the capture
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            data = capture.read()
            capture.seek(0)
            capture.truncate()
            if data:
                _sort_output(data, into)


def summarise(decoder_lines: list) -> list:
    """Distinct decoder lines, at most `_MAX_DECODER_LINES`, then a count of the rest."""
    distinct = list(dict.fromkeys(decoder_lines))
    if len(distinct) <= _MAX_DECODER_LINES:
        return distinct
    rest = len(distinct) - _MAX_DECODER_LINES
    return distinct[:_MAX_DECODER_LINES] + [f"decoder: and {rest} more message(s)"]
