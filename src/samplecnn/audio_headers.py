"""Header checks for `samplecnn.audio`: the frames a file announces, and the `truncated:`
warning when fewer decode.

libsndfile clamps WAV and AIFF frame counts to what the file holds, so their headers are
walked here (RIFF / FORM chunks, at most `_MAX_CHUNKS`: hostile files); FLAC's
STREAMINFO count is exact; an MP3's count (Xing header or an estimate) is used with a
margin, since MP3 headers routinely over-announce a little.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Iterator

import soundfile as sf

__all__ = ["announced", "truncation"]

_MAX_CHUNKS = 64  # a header walk gives up after this many chunks (hostile files)


def _chunks(fh, order: str) -> Iterator[tuple[bytes, int]]:
    """`(id, size)` of each chunk after a RIFF/FORM header (`order`: "<" or ">"), the file
    positioned at the chunk's body; the walk goes on from the chunk's end whatever the
    caller read of it."""
    for _ in range(_MAX_CHUNKS):
        head = fh.read(8)
        if len(head) < 8:
            return
        cid, size = head[:4], struct.unpack(order + "I", head[4:])[0]
        body = fh.tell()
        yield cid, size
        fh.seek(body + size + (size & 1))


def _riff_frames(fh) -> int | None:
    """WAV: the data chunk's size over the block alignment of the fmt chunk."""
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    block = None
    for cid, size in _chunks(fh, "<"):
        if cid == b"fmt ":
            body = fh.read(min(size, 16))
            if len(body) < 14:
                return None
            block = struct.unpack("<H", body[12:14])[0]
        elif cid == b"data":
            # Streaming writers leave the size at 0 or 0xFFFFFFFF: nothing is announced.
            if not block or size in (0, 0xFFFFFFFF):
                return None
            return size // block
    return None


def _aiff_frames(fh) -> int | None:
    """AIFF / AIFF-C: numSampleFrames of the COMM chunk."""
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"FORM" or head[8:12] not in (b"AIFF", b"AIFC"):
        return None
    for cid, _size in _chunks(fh, ">"):
        if cid == b"COMM":
            body = fh.read(6)
            return struct.unpack(">I", body[2:6])[0] if len(body) == 6 else None
    return None


def announced(path: Path, f: sf.SoundFile) -> tuple[int | None, int]:
    """(frames the header announces, frames of shortfall tolerated), or (None, 0).

    libsndfile clamps WAV and AIFF frame counts to what the file holds, so their headers
    are read here; FLAC's count is exact; for MP3 its count (Xing header or an estimate)
    is used with a margin.
    """
    fmt = f.format
    try:
        if fmt in ("WAV", "WAVEX"):
            with open(os.fsencode(path), "rb") as fh:
                return _riff_frames(fh), 0
        if fmt == "AIFF":
            with open(os.fsencode(path), "rb") as fh:
                return _aiff_frames(fh), 0
    except (OSError, struct.error):
        return None, 0
    frames = int(f.frames)
    if not 0 < frames < 1 << 40:  # unknown (0) or a placeholder: nothing is announced
        return None, 0
    if fmt in ("MP3", "MPEG"):
        return frames, max(int(0.01 * frames), 4 * 1152)
    if fmt == "FLAC":  # STREAMINFO's total samples: exact
        return frames, 0
    return None, 0


def truncation(announced: tuple[int | None, int], decoded: int, sr: int) -> list:
    frames, tolerance = announced
    if frames is None or decoded >= frames - tolerance:
        return []
    return [f"truncated: the header announces {frames / sr:.3f} s, only {decoded / sr:.3f} s "
            "decode"]
