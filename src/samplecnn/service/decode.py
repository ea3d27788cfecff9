"""Decoding for the service, run in worker processes (`concurrent.futures`).

A worker decodes one upload (a private temporary file the server wrote) to float32 mono
at the model's rate, written block by block to another private file, so neither process
holds a whole long song in memory and nothing big crosses the process pipe. The blocks
come from the tagger's own decoding path (`samplecnn.tagging.sources`), so an upload
decodes exactly as the same file given to `samplecnn tag`.

Nothing here imports torch or the web stack: worker processes start from this module.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np

from samplecnn.audio import AudioError
from samplecnn.tagging.sources import StreamInfo, error_reason, file_blocks

__all__ = ["decode_to_file", "open_decoded", "warm_up", "NOT_AUDIO_REASONS"]

# Reasons (from `samplecnn.audio`) that mean "this is not audio we can open" (HTTP 415)
# rather than "audio that is broken" (HTTP 422).
NOT_AUDIO_REASONS = ("not audio", "not a readable audio file")


def warm_up() -> None:
    """Each worker's start: imports done before the first upload arrives."""
    # Ctrl-C reaches the whole process group; the server decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # libsndfile's MP3 decoder (mpg123) prints notes about damaged streams on fd 2; the
    # reason reaches the client in the answer instead, and the server's terminal stays
    # samplecnn's own.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


def decode_to_file(src: str, dst: str, sample_rate: int) -> dict:
    """Decode `src` to raw little-endian float32 samples at `sample_rate` in `dst`.

    Returns `{"ok": True, "info": StreamInfo.as_dict()}` or `{"ok": False, "reason":
    one line, "kind": "not_audio" | "broken"}`; never raises for bad audio (a bad upload
    is an answer, not a crash). On failure `dst` is removed.
    """
    info = StreamInfo()
    try:
        with open(dst, "wb") as out:
            for block in file_blocks(Path(src), sample_rate, info):
                out.write(np.asarray(block, dtype="<f4").tobytes())
                info.samples += len(block)
        if info.samples == 0:
            raise AudioError(src, "no audio decoded (empty or truncated stream)")
        info.duration_s = info.samples / sample_rate
        return {"ok": True, "info": info.as_dict()}
    except Exception as err:  # every failure is the upload's answer
        try:
            os.unlink(dst)
        except OSError:
            pass
        reason = error_reason(err)
        kind = "not_audio" if reason.startswith(NOT_AUDIO_REASONS) else "broken"
        return {"ok": False, "reason": reason, "kind": kind}


def open_decoded(path: str) -> np.ndarray:
    """The samples of a file written by `decode_to_file`, float32 `(n,)`, memory-mapped
    (pages are read as windows are cut, so memory stays small whatever the length). The
    file may be unlinked right after: the mapping keeps the data."""
    if os.path.getsize(path) == 0:
        return np.zeros(0, np.float32)
    return np.memmap(path, dtype="<f4", mode="r")
