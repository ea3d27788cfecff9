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
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Union

import numpy as np
import soundfile as sf
import soxr

from .windows import WindowGrid

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
    "stream_windows",
    "to_mono",
    "windows_from_blocks",
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
    """A file that cannot be used as audio. `str(err) == f"{path}: {reason}"`."""

    def __init__(self, path: PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

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
    decoded audio before padding.
    """

    samples: np.ndarray
    sample_rate: int
    source_sample_rate: int
    source_channels: int
    duration_s: float
    padded: bool = False
    silent: bool = False


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


def _open(path: Path) -> sf.SoundFile:
    """Open for reading, turning every failure into an AudioError with a short reason."""
    _check_path(path)
    try:
        f = sf.SoundFile(str(path))
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


def probe(path: PathLike) -> AudioInfo:
    """Header information without decoding (`AudioError` if the file cannot be opened)."""
    path = Path(path)
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


def _read_all(f: sf.SoundFile, path: Path) -> np.ndarray:
    """Decode every frame as float32 `(n, channels)`, trusting the stream, not the header."""
    try:
        # One big read first (fast path, sized by the header), then keep reading in case
        # the header under-announces; the loop ends when the decoder has nothing left.
        parts = [f.read(dtype="float32", always_2d=True)]
        while True:
            block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
            if len(block) == 0:
                break
            parts.append(block)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(path, f"decoding failed ({str(err).strip()})") from None
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _check_samples(x: np.ndarray, path: Path) -> None:
    if not np.isfinite(x).all():
        raise AudioError(path, "contains NaN or Inf samples")


def load_audio(path: PathLike, sample_rate: int, min_samples: int = 0) -> Audio:
    """Decode a file to float32 mono `(n,)` at `sample_rate`.

    Downmix by the mean of channels, resample with soxr (HQ), then zero-pad up to
    `min_samples` (recorded in `Audio.padded`). Raises `AudioError` for unusable files;
    warns `SilentAudioWarning` for all-zero audio.
    """
    path = Path(path)
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    with _open(path) as f:
        src_sr, channels = int(f.samplerate), int(f.channels)
        data = _read_all(f, path)
    if len(data) == 0:
        raise AudioError(path, "no audio decoded (empty or truncated stream)")
    _check_samples(data, path)
    duration = len(data) / src_sr
    x = resample(to_mono(data), src_sr, sample_rate)
    silent = not np.any(x)
    if silent:
        warnings.warn(f"{path}: digital silence", SilentAudioWarning, stacklevel=2)
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
    )


def stream_blocks(path: PathLike, sample_rate: int) -> Iterator[np.ndarray]:
    """Yield float32 mono blocks `(k,)` at `sample_rate`, decoding and resampling
    incrementally (memory: one 65,536-frame block, whatever the file length).

    The blocks concatenated are exactly the decoded audio, so their total length is the
    true decoded length. This is what `stream_windows` runs on; callers that need the
    length as well as windows (the tagger) use it directly.
    """
    path = Path(path)
    with _open(path) as f:
        src_sr = int(f.samplerate)
        stream = (
            None
            if src_sr == sample_rate
            else soxr.ResampleStream(src_sr, sample_rate, 1, dtype="float32", quality="HQ")
        )
        total = 0
        while True:
            try:
                block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as err:
                raise AudioError(path, f"decoding failed ({str(err).strip()})") from None
            last = len(block) == 0
            if not last:
                _check_samples(block, path)
                total += len(block)
            mono = to_mono(block) if not last else np.zeros(0, np.float32)
            out = mono if stream is None else stream.resample_chunk(mono, last=last)
            if len(out):
                yield out
            if last:
                break
        if total == 0:
            raise AudioError(path, "no audio decoded (empty or truncated stream)")


def windows_from_blocks(
    blocks: Iterable[np.ndarray], window: int, hop: int, last: str = "pad"
) -> Iterator[tuple[int, np.ndarray]]:
    """Cut a stream of float32 blocks `(k,)` into `(start_sample, samples (window,))` on
    the one window grid (`samplecnn.windows.WindowGrid`, whose docstring gives the
    last-window policies "pad" and "drop")."""
    return WindowGrid(window, hop, last).stream(blocks)


def stream_windows(
    source: Union[PathLike, np.ndarray],
    sample_rate: int,
    window: int,
    hop: int,
    last: str = "pad",
    *,
    source_sample_rate: int | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(start_sample, samples)` windows, `samples` float32 `(window,)`.

    `source` is a path (decoded and resampled block by block, so memory stays around
    `window + 65,536` samples whatever the file length) or a float32 array `(n,)` /
    `(n, channels)` at `source_sample_rate` (default: `sample_rate`). `start_sample`
    counts at `sample_rate`. Windows follow the one window grid
    (`samplecnn.windows.WindowGrid`): they start at 0, hop, 2*hop, ...; `last="pad"`
    adds a zero-padded window over the samples after the last full one, `last="drop"`
    keeps full windows only; a source shorter than one window yields exactly one padded
    window under both. Each yielded array is a fresh copy. Raises `AudioError` for unusable files
    (possibly after some windows were yielded, for a stream that breaks midway).
    """
    window, hop = int(window), int(hop)
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got window={window}, hop={hop}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")

    if isinstance(source, np.ndarray):
        src_sr = sample_rate if source_sample_rate is None else int(source_sample_rate)
        x = resample(to_mono(source), src_sr, sample_rate)
        if not np.isfinite(x).all():
            raise ValueError("audio array contains NaN or Inf samples")
        blocks: Iterator[np.ndarray] = iter([x])
        label = "audio array"
    else:
        path = Path(source)
        blocks = stream_blocks(path, sample_rate)
        label = str(path)

    seen = {"samples": 0, "sound": False}

    def watched(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for block in blocks:
            seen["samples"] += len(block)
            seen["sound"] = seen["sound"] or bool(np.any(block))
            yield block

    yield from windows_from_blocks(watched(blocks), window, hop, last)
    end = seen["samples"]
    any_sound = seen["sound"]
    if end > 0 and not any_sound:
        warnings.warn(f"{label}: digital silence", SilentAudioWarning, stacklevel=2)
