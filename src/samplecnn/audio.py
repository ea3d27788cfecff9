"""Audio decoding, downmixing, resampling and streaming windows.

Everything returns float32 mono, shape `(samples,)`. Decoding uses soundfile
(libsndfile: WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF...) and resampling uses soxr.

The decoded length is trusted, never the header: MP3 headers routinely announce a few
thousand frames more than the stream holds (the MagnaTagATune clip in
`../shared/data/real` announces 29.271 s and decodes to 465,984 samples).

Every way a file can fail (missing, empty, truncated, not audio, zero channels, NaN/Inf
samples, absurd sample rate) raises `AudioError`, a `ValueError` carrying the path and a
one-line reason. Digital silence is valid audio: it is flagged (`Audio.silent`) and a
`SilentAudioWarning` is emitted.

Files are opened by their bytes (`os.fsencode`), so every name a POSIX file system allows
opens, including names that are not valid UTF-8.

A file that decodes but not cleanly is used, and says so in its warnings
(`Audio.warnings`, or the `warnings=` list of `stream_blocks`), one
line each:

- `truncated: ...`: the data is shorter than the header announces (WAV and AIFF: the
  header's frame count, exactly; FLAC: STREAMINFO's; MP3: more than 1 % or 4,608 frames
  short of the Xing / estimated count, since MP3 headers routinely over-announce a
  little);
- `decoder: ...`: what libmpg123 reported about damaged frames (an illegal header, a
  frame that does not fit its bits...), at most five lines per file; or where a decoder
  that failed midway stopped (what decoded before is used).

The decoder's own output never reaches the terminal: it writes to file descriptor 2
directly, so the decoding calls run with fd 2 pointed at a private file (see
`audio_capture.decoder_output`) and what it wrote becomes those warnings; its known-benign lines
(resync notes, the Xing size note that `truncated:` states better) are dropped.

The fd-2 capture lives in `audio_capture.py`, the header checks in `audio_headers.py`;
window cutting is the one feeder's (`samplecnn.tagging.sources`).
"""
from __future__ import annotations

import os
import re
import warnings as pywarnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union

import numpy as np
import soundfile as sf
import soxr

from .audio_capture import CHATTY_FORMATS, decoder_output, summarise
from .audio_headers import announced, truncation
from .paths import escape_path

__all__ = [
    "AUDIO_EXTENSIONS",
    "Audio",
    "AudioError",
    "AudioInfo",
    "SilentAudioWarning",
    "load_audio",
    "probe",
    "resample",
    "stream_blocks",
    "to_mono",
]

#: Extensions that folder scans pick up (lower case, with the dot).
AUDIO_EXTENSIONS = (".mp3", ".wav", ".flac", ".ogg", ".oga", ".opus", ".aif", ".aiff")

#: Source sample rates outside this range are rejected as absurd (corrupt headers).
MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000

# Frames decoded per read when streaming; 2^16 frames keeps memory at a few hundred KiB
# per channel while amortising the per-call overhead of libsndfile and soxr.
_BLOCK_FRAMES = 1 << 16

PathLike = Union[str, "os.PathLike[str]"]


class AudioError(ValueError):
    """A file that cannot be used as audio. `str(err) == f"{escape_path(path)}: {reason}"`
    (one printable line whatever the name); `err.path` is the name as given."""

    def __init__(self, path: PathLike, reason: str):
        self.path = os.fspath(path) if not isinstance(path, bytes) else os.fsdecode(path)
        self.reason = reason
        super().__init__(f"{escape_path(self.path)}: {reason}")

    def __reduce__(self):
        # Keep the two-argument constructor working across process boundaries.
        return (type(self), (self.path, self.reason))


class SilentAudioWarning(UserWarning):
    """The decoded audio is all zeros (valid, but usually a mistake upstream)."""


@dataclass
class Audio:
    """Decoded audio.

    samples: float32 `(n,)` mono at `sample_rate`, zero-padded to `min_samples` if the
    decoded audio was shorter (then `padded` is True). `duration_s` is the length of the
    decoded audio before padding. `warnings`: one-line notes about a file that decoded
    but not cleanly (`truncated: ...`, `decoder: ...`; see the module docstring).
    """

    samples: np.ndarray
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    duration_s: float
    padded: bool = False
    silent: bool = False
    warnings: list = field(default_factory=list)


@dataclass
class AudioInfo:
    """Header information, cheap to read. `frames`/`duration_s` are what the header
    announces and may differ from what decodes (see the module docstring)."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    duration_s: float
    format: str
    subtype: str


def to_mono(x: np.ndarray) -> np.ndarray:
    """`(n,)` or `(n, channels)` -> float32 `(n,)`, downmixed by the mean of channels."""
    x = np.asarray(x)
    if x.ndim == 1:
        return x.astype(np.float32, copy=False)
    if x.ndim != 2:
        raise ValueError(f"to_mono expects (n,) or (n, channels), got shape {x.shape}")
    if x.shape[1] == 1:
        return np.ascontiguousarray(x[:, 0], dtype=np.float32)
    return x.mean(axis=1, dtype=np.float32)


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """`(n,)` or `(n, channels)` at `orig_sr` -> float32 at `target_sr` (soxr, HQ)."""
    orig_sr, target_sr = int(orig_sr), int(target_sr)
    if orig_sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {target_sr}")
    x = np.asarray(x, dtype=np.float32)
    if orig_sr == target_sr or len(x) == 0:
        return x
    return soxr.resample(x, orig_sr, target_sr, quality="HQ")


def _check_path(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


def _open_reason(err: Exception) -> str:
    """libsndfile's open error -> a short reason (its wording misleads for some cases)."""
    msg = " ".join(str(err).split(":")[-1].split()) or type(err).__name__
    low = msg.lower()
    if "channel count is zero" in low:
        return "no audio channels (header says 0)"
    if "not a regular file" in low or "unknown format" in low or "unimplemented" in low:
        # libsndfile says "does not exist or is not a regular file" when it merely failed
        # to recognise the content; the file does exist at this point.
        return "not audio, or a format/header that cannot be decoded"
    return f"not a readable audio file ({msg.rstrip('.')})"


def _open(path: Path, chatter: list | None = None) -> sf.SoundFile:
    """Open for reading, turning every failure into an AudioError with a short reason.
    The decoder's messages while opening go to `chatter`."""
    _check_path(path)
    try:
        with decoder_output(chatter):
            # Bytes, not str: soundfile encodes a str strictly as UTF-8, which fails for
            # names that are not valid UTF-8 (Python spells them with lone surrogates).
            f = sf.SoundFile(os.fsencode(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(path, _open_reason(err)) from None
    try:
        if f.channels <= 0:
            raise AudioError(path, f"no audio channels (header says {f.channels})")
        if not (MIN_SAMPLE_RATE <= f.samplerate <= MAX_SAMPLE_RATE):
            raise AudioError(
                path,
                f"absurd sample rate {f.samplerate} Hz (accepted: "
                f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)",
            )
    except AudioError:
        f.close()
        raise
    return f


def _read(f: sf.SoundFile, frames: int, chatter: list | None) -> tuple[np.ndarray, str | None]:
    """(float32 `(k, channels)`: up to `frames` frames, the decoder's error or None),
    capturing the decoder's output for MP3. A read that fails midway returns the frames
    decoded before the error with it."""
    if f.format in CHATTY_FORMATS:
        with decoder_output(chatter):
            return _read_in_place(f, frames)
    return _read_in_place(f, frames)


def _error_text(err: Exception) -> str:
    return re.sub(r"^\s*error\s*:\s*", "", " ".join(str(err).split()),
                  flags=re.IGNORECASE).rstrip(". ") or type(err).__name__


def _read_in_place(f: sf.SoundFile, frames: int) -> tuple[np.ndarray, str | None]:
    """Read without the seek that `SoundFile.read` makes after every call.

    soundfile re-seeks to the position it just reached after each read; for MP3 that seek
    restarts libmpg123, which then decodes the next frames without their bit reservoir
    ("part2_3_length too large") and outputs wrong samples for a few frames at every
    block boundary (up to 0.3 of full scale on a clean file). Calling libsndfile's read
    directly keeps the decoder's state, so a file read in blocks equals the file read in
    one call; it also keeps the frames a failing read decoded before its error (a FLAC
    file cut short), which `SoundFile.read` drops.
    """
    snd, ffi = getattr(sf, "_snd", None), getattr(sf, "_ffi", None)
    if snd is None or ffi is None or getattr(f, "_file", None) is None:  # another soundfile
        try:
            return f.read(frames, dtype="float32", always_2d=True), None
        except (sf.LibsndfileError, RuntimeError) as err:
            return np.zeros((0, f.channels), np.float32), _error_text(err)
    buf = np.empty((frames, f.channels), dtype=np.float32)
    n = snd.sf_readf_float(f._file, ffi.cast("float *", buf.ctypes.data), frames)
    code = snd.sf_error(f._file)
    if code != 0 or n < 0:
        return buf[:max(int(n), 0)], _error_text(sf.LibsndfileError(code))
    return buf[:n], None


def _stopped(frames: int, sr: int, err: str) -> str:
    return f"decoder: decoding stopped at {frames / sr:.3f} s ({err}); the rest is not used"


def probe(path: PathLike) -> AudioInfo:
    """Header information without decoding (`AudioError` if the file cannot be opened).
    The decoder's messages while opening are dropped: decoding the file reports them."""
    path = _as_path(path)
    with _open(path) as f:
        frames = int(f.frames)
        return AudioInfo(
            path=str(path),
            sample_rate=int(f.samplerate),
            channels=int(f.channels),
            frames=frames,
            duration_s=frames / f.samplerate,
            format=str(f.format),
            subtype=str(f.subtype),
        )


def _read_all(f: sf.SoundFile, path: Path,
              chatter: list | None) -> tuple[np.ndarray, str | None]:
    """Decode every frame as float32 `(n, channels)`, trusting the stream, not the header.
    Returns the frames and, when the decoder failed after some frames, a warning saying
    where it stopped (`AudioError` when it failed before any)."""
    # One big read first (fast path, sized by the header's count, capped so that an
    # absurd header cannot allocate gigabytes up front), then keep reading in case the
    # header under-announces; the loop ends when the decoder has nothing left.
    block, err = _read(f, min(max(int(f.frames), 1), 1 << 26), chatter)
    parts = [block]
    while err is None:
        block, err = _read(f, _BLOCK_FRAMES, chatter)
        if len(block) == 0 and err is None:
            break
        parts.append(block)
    data = parts[0] if len(parts) == 1 else np.concatenate(parts)
    if err is None:
        return data, None
    if len(data) == 0:
        raise AudioError(path, f"decoding failed ({err})")
    return data, _stopped(len(data), int(f.samplerate), err)


def _as_path(path) -> Path:
    return Path(os.fsdecode(path)) if isinstance(path, bytes) else Path(path)


def _check_samples(x: np.ndarray, path: Path) -> None:
    if not np.isfinite(x).all():
        raise AudioError(path, "contains NaN or Inf samples")


def load_audio(path: PathLike, sample_rate: int, min_samples: int = 0) -> Audio:
    """Decode a file to float32 mono `(n,)` at `sample_rate`.

    Downmix by the mean of channels, resample with soxr (HQ), then zero-pad up to
    `min_samples` (recorded in `Audio.padded`). Raises `AudioError` for unusable files;
    warns `SilentAudioWarning` for all-zero audio; a truncated or damaged file that
    decodes is returned with `Audio.warnings` saying so.
    """
    path = _as_path(path)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    chatter: list = []
    with _open(path, chatter) as f:
        src_sr, channels = int(f.samplerate), int(f.channels)
        header_frames = announced(path, f)
        data, stop = _read_all(f, path, chatter)
    if len(data) == 0:
        raise AudioError(path, "no audio decoded (empty or truncated stream)")
    _check_samples(data, path)
    notes = (truncation(header_frames, len(data), src_sr) + ([stop] if stop else [])
             + summarise(chatter))
    duration = len(data) / src_sr
    x = resample(to_mono(data), src_sr, sample_rate)
    silent = not np.any(x)
    if silent:
        pywarnings.warn(f"{escape_path(path)}: digital silence", SilentAudioWarning,
                        stacklevel=2)
    padded = len(x) < min_samples
    if padded:
        x = np.pad(x, (0, min_samples - len(x)))
    return Audio(
        samples=np.ascontiguousarray(x, dtype=np.float32),
        sample_rate=int(sample_rate),
        source_sample_rate=src_sr,
        source_channels=channels,
        duration_s=duration,
        padded=padded,
        silent=silent,
        warnings=notes,
    )


def stream_blocks(path: PathLike, sample_rate: int,
                  warnings: list | None = None) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks `(k,)` at `sample_rate`, decoding and resampling
    incrementally (memory: one 65,536-frame block, whatever the file length).

    The blocks concatenated are exactly the decoded audio, so their total length is the
    true decoded length. The one feeder (`samplecnn.tagging.sources.iter_windows`) cuts
    windows from them. `warnings`, when given, is
    appended the file's one-line warnings (`truncated: ...`, `decoder: ...`) when the
    stream ends.
    """
    path = _as_path(path)
    chatter: list = []
    with _open(path, chatter) as f:
        src_sr = int(f.samplerate)
        header_frames = announced(path, f)
        stream = (
            None
            if src_sr == sample_rate
            else soxr.ResampleStream(src_sr, sample_rate, 1, dtype="float32", quality="HQ")
        )
        total = 0
        stop = None
        while True:
            block, err = _read(f, _BLOCK_FRAMES, chatter)
            if err is not None:
                if total + len(block) == 0:
                    raise AudioError(path, f"decoding failed ({err})")
                # What decoded is used; where it stopped becomes a warning.
                stop = _stopped(total + len(block), src_sr, err)
            last = len(block) == 0 or err is not None
            if len(block):
                _check_samples(block, path)
                total += len(block)
            mono = to_mono(block) if len(block) else np.zeros(0, np.float32)
            out = mono if stream is None else stream.resample_chunk(mono, last=last)
            if len(out):
                yield out
            if last:
                break
        if total == 0:
            raise AudioError(path, "no audio decoded (empty or truncated stream)")
        if warnings is not None:
            warnings.extend(truncation(header_frames, total, src_sr) + ([stop] if stop else [])
                            + summarise(chatter))
