"""Where tagging windows come from: path expansion, streamed windows, decoding workers.

Nothing here imports torch: the decoding worker processes import this module only.

Windows follow the one window grid (`samplecnn.windows.WindowGrid`) at the model's rate,
with the last-window policy the caller chose.
"""
from __future__ import annotations

import errno
import glob
import os
import queue as queue_mod
import signal
import stat
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np

from samplecnn import audio as audio_mod
from samplecnn.audio import AUDIO_EXTENSIONS, AudioError, probe, resample, to_mono
from samplecnn.inference.batching import IDLE
from samplecnn.paths import escape_path
from samplecnn.windows import WindowGrid, chunks

__all__ = [
    "StreamInfo",
    "expand_paths",
    "iter_windows",
    "window_messages",
    "file_blocks",
    "error_reason",
    "PATH_TYPES",
    "iter_file_messages",
    "worker_messages",
    "as_float_audio",
    "IDLE",
]

# What a source that is a file name can be; anything else is an array of samples.
PATH_TYPES = (str, bytes, os.PathLike)
_GLOB_CHARS = "*?["
_BLOCK = 1 << 16  # samples per block of an array source


@dataclass
class StreamInfo:
    """Facts about one source, filled in while its windows are read.

    `duration_s` is the decoded length (not the header's), known once the stream ends.
    """

    duration_s: float | None = None
    source_sample_rate: int | None = None
    source_channels: int | None = None
    samples: int = 0  # decoded samples at the model rate
    warnings: list = field(default_factory=list)  # one-line notes about the source

    def as_dict(self) -> dict:
        return asdict(self)


def expand_paths(inputs: Sequence[Union[str, os.PathLike]], warn=None) -> list[str]:
    """Files, folders (recursive, `AUDIO_EXTENSIONS`) and globs -> a list of file paths.

    Order: inputs in the order given; inside a folder or glob, sorted. Duplicates (same
    absolute path) are kept once. A path that does not exist and is not a glob is kept, so
    that it is reported as a failed file rather than silently dropped. A glob or folder
    with no audio is reported through `warn(message)` (default: ignored). Raises
    ValueError when nothing at all is left.

    Nothing in a walked folder is skipped in silence: every entry whose name has an audio
    extension is listed, whatever it is (a dangling symlink, an unreadable file, an entry
    whose `stat` fails), so that decoding reports it as a failed file; a sub-folder that
    cannot be listed is listed itself and fails the same way; a symlink to a folder is not
    followed (loops) and is reported through `warn`.
    """
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        key = os.path.normpath(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            out.append(p)

    def scan(folder: Path) -> list[str]:
        return sorted(_walk(str(folder), warn))

    for item in inputs:
        s = os.fspath(item)
        p = Path(s)
        if p.is_dir():
            files = scan(p)
            if not files and warn:
                warn(f"{s}: no audio files (extensions {', '.join(AUDIO_EXTENSIONS)})")
            for f in files:
                add(f)
        elif p.exists() or not any(ch in s for ch in _GLOB_CHARS):
            add(s)
        else:
            matches = sorted(glob.glob(s, recursive=True))
            files = []
            for m in matches:
                if os.path.isdir(m):
                    files.extend(scan(Path(m)))
                else:
                    files.append(m)
            if not files and warn:
                warn(f"{s}: no file matches this pattern")
            for f in files:
                add(f)
    if not out:
        raise ValueError(f"no audio files found in {', '.join(map(os.fspath, inputs))}")
    return out


def _walk(folder: str, warn=None) -> list[str]:
    """Every entry under `folder` named like audio (see `expand_paths`), unsorted."""
    found: list[str] = []
    stack = [folder]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)
        except OSError:
            found.append(d)  # decoding reports it: "folder cannot be read"
            continue
        for e in entries:
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            if is_dir and e.is_symlink():
                if os.path.splitext(e.name)[1].lower() in AUDIO_EXTENSIONS:
                    found.append(e.path)  # a link to a folder named like audio: reported
                elif warn:
                    warn(f"{escape_path(e.path)}: symbolic link to a folder, not followed")
            elif is_dir:
                stack.append(e.path)
            elif os.path.splitext(e.name)[1].lower() in AUDIO_EXTENSIONS:
                found.append(e.path)
    return found


def _check_entry(path: Path) -> None:
    """Why a listed entry cannot be read as a file, said before the decoder guesses.

    Entries that are not regular readable files reach here from folder walks
    (`expand_paths` lists them so that they are reported, not skipped)."""
    try:
        st = os.stat(path)
    except OSError as err:
        if os.path.islink(path):
            if err.errno == errno.ELOOP:
                raise AudioError(path, "symbolic link loop") from None
            try:
                target = escape_path(os.readlink(path))
            except OSError:
                target = "?"
            raise AudioError(path, f"broken symbolic link (its target {target} does not exist)") from None
        if err.errno == errno.ENOENT:
            raise AudioError(path, "file not found") from None
        raise AudioError(path, f"cannot be read ({err.strerror or type(err).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        if not os.access(path, os.R_OK | os.X_OK):
            raise AudioError(path, "folder cannot be read (permission denied): its files were not tagged")
        raise AudioError(path, "is a directory, not an audio file")
    if not stat.S_ISREG(st.st_mode):
        raise AudioError(path, "not a regular file (a device, pipe or socket)")
    if not os.access(path, os.R_OK):
        raise AudioError(path, "cannot be read (permission denied)")


def file_blocks(path: Path, sample_rate: int, info: StreamInfo) -> Iterator[np.ndarray]:
    """Mono float32 blocks `(k,)` at `sample_rate`, decoded incrementally by
    `samplecnn.audio`; `info` gets the file's facts (and its warnings when the stream
    ends). The service's decoding workers write these blocks to a file."""
    _check_entry(path)
    header = probe(path)  # AudioError for missing / unreadable files, before any work
    info.source_sample_rate = header.sample_rate
    info.source_channels = header.channels
    # The file's warnings (truncated, damaged frames) land in info.warnings, hence in
    # its record, when the stream ends.
    yield from audio_mod.stream_blocks(path, sample_rate, info.warnings)


# Integer PCM -> float as libsndfile (soundfile) reads it: divide by 2^(bits-1); unsigned
# 8-bit (WAV's 8-bit PCM, what scipy.io.wavfile returns for it) is offset by 128 first.
_INT_SCALES = {np.dtype(np.int16): (0.0, 32768.0), np.dtype(np.int32): (0.0, 2147483648.0),
               np.dtype(np.uint8): (128.0, 128.0)}


def as_float_audio(x: np.ndarray) -> np.ndarray:
    """An audio array as float32 in [-1, 1] the way soundfile reads PCM.

    float16/32/64 are taken as they are; int16, int32 and uint8 are scaled (int16 / 2^15,
    int32 / 2^31, (uint8 - 128) / 2^7: what `scipy.io.wavfile.read` and
    `soundfile.read(dtype=...)` return). Every other dtype (bool, int8, int64, unsigned
    16/32/64-bit, complex, objects) is refused with a ValueError: no PCM format stores
    them, so their scale would be a guess.
    """
    if x.dtype.byteorder not in ("=", "|", "<" if np.little_endian else ">"):
        # A big- (or little-) endian array of a PCM dtype ('>i2' from a raw AIFF read) is
        # the same samples: read it in the native byte order.
        x = x.astype(x.dtype.newbyteorder("="))
    if x.dtype.kind == "f":
        return x.astype(np.float32, copy=False)
    scale = _INT_SCALES.get(x.dtype)
    if scale is None:
        raise ValueError(
            f"audio array of dtype {x.dtype} is not audio samples: pass float32/float64 in "
            "[-1, 1], or int16 / int32 / uint8 PCM (scaled as soundfile does)")
    offset, div = scale
    return ((x.astype(np.float64) - offset) / div).astype(np.float32)


def _array_blocks(x, source_sample_rate: int | None, sample_rate: int,
                  info: StreamInfo) -> Iterator[np.ndarray]:
    if source_sample_rate is None:
        raise ValueError(
            "an audio array needs its sample rate: pass sample_rate=<Hz> "
            f"(the model expects {sample_rate} Hz; the rate is never assumed)"
        )
    # A string or a float is refused, not converted ("16000" is a caller's bug; 44.1
    # would be a silent truncation). The Tagger also bounds it like a file's header.
    from samplecnn.options import check_int

    sr = check_int(source_sample_rate, "sample_rate (Hz)", low=1)
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    x = as_float_audio(np.asarray(x))
    if x.size == 0:  # (0,), (0, channels) and (channels, 0) alike
        raise ValueError(f"audio array of shape {x.shape} has no samples")
    if x.ndim == 2 and x.shape[0] < x.shape[1] and x.shape[0] <= 8:
        raise ValueError(
            f"audio array of shape {x.shape} looks channels-first; pass (samples,) or "
            "(samples, channels)"
        )
    if x.ndim not in (1, 2):
        raise ValueError(f"audio array must be (samples,) or (samples, channels), got {x.shape}")
    # Checked in blocks: a long memory-mapped array (the service's decoded uploads) is
    # never copied whole.
    if not all(np.isfinite(x[i:i + _BLOCK]).all() for i in range(0, len(x), _BLOCK)):
        raise ValueError("audio array contains NaN or Inf samples")
    info.source_sample_rate = sr
    info.source_channels = 1 if x.ndim == 1 else int(x.shape[1])
    if x.ndim == 1 and sr == sample_rate:
        for i in range(0, len(x), _BLOCK):
            yield np.asarray(x[i:i + _BLOCK], np.float32)
    else:
        yield resample(to_mono(x), sr, sample_rate)


EMPTY_PATH = "empty path (a blank 'path' entry in the manifest)"


def iter_windows(
    source,
    sample_rate: int,
    grid: WindowGrid,
    *,
    source_sample_rate: int | None = None,
    info: StreamInfo | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(start_sample, samples)`, `samples` float32 `(window,)` at `sample_rate`.

    `source` is a path, `str` or `bytes` (decoded block by block: memory stays near `window + 65,536`
    samples whatever the length) or an array `(samples,)` / `(samples, channels)` whose
    rate `source_sample_rate` is required (`as_float_audio` is its dtype policy; a
    memory-mapped array at `sample_rate` is read block by block). Windows are `grid`'s.
    `info` is filled in as the stream is read; `info.duration_s` is set when it ends.
    Raises `AudioError` / ValueError for unusable sources, possibly after some windows
    were yielded.
    """
    info = info if info is not None else StreamInfo()
    if isinstance(source, PATH_TYPES):
        if not os.fspath(source):  # a blank manifest row: one reason for every engine
            raise ValueError(EMPTY_PATH)
        if source_sample_rate is not None:
            raise ValueError("sample_rate is for arrays; a file's rate is read from the file")
        # A bytes name is a file name as the OS spells it (any POSIX name).
        blocks = file_blocks(Path(os.fsdecode(source)), sample_rate, info)
    else:
        blocks = _array_blocks(source, source_sample_rate, sample_rate, info)

    def counted(blocks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
        for block in blocks:
            info.samples += len(block)
            yield block
        # Known once the stream ends, which is before the padded last window is cut.
        info.duration_s = info.samples / sample_rate

    info.samples = 0
    yield from grid.stream(counted(blocks))
    if info.samples == 0:
        raise ValueError("no audio samples")


def window_messages(key, source, sample_rate: int, grid: WindowGrid, *,
                    source_sample_rate: int | None = None, chunk: int = 8,
                    errors: str = "report") -> Iterator[tuple]:
    """THE feeder: one source (a file, an array; a store clip is its array) -> the batching
    loop's messages (`samplecnn.inference.batching`), keyed by `key`.

    Yields `("windows", key, starts (k,) int64, windows (k, window) float32)` with `k <=
    chunk`, then `("done", key, StreamInfo.as_dict())`. A source that cannot be read
    becomes `("error", key, one line)` (`errors="report"`: one bad file never takes a
    run down) or raises (`errors="raise"`: a single input given by a caller).
    """
    if errors not in ("report", "raise"):
        raise ValueError(f"errors must be 'report' or 'raise', got {errors!r}")
    info = StreamInfo()
    try:
        # chunks: one window length per message (a whole-clip grid's last window is shorter).
        pairs = iter_windows(source, sample_rate, grid, source_sample_rate=source_sample_rate, info=info)
        for starts, wins in chunks(pairs, chunk):
            yield ("windows", key, starts, wins)
    except Exception as err:
        if errors == "raise":
            raise
        yield ("error", key, error_reason(err))
        return
    yield ("done", key, info.as_dict())


def error_reason(err: BaseException) -> str:
    """One line for the `error` field: the reason without the path (the record has it)."""
    if isinstance(err, AudioError):
        return err.reason
    msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
    if isinstance(err, (ValueError, OSError)):
        return msg or type(err).__name__
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


# -- producers of the batching loop's messages (samplecnn.inference.batching), keyed by
# the file's index: in this process or in worker processes.


def iter_file_messages(paths: Iterable[str], sample_rate: int, grid: WindowGrid,
                       chunk: int = 8) -> Iterator[tuple]:
    """Decode in this process, file after file (what `--workers 0` runs); keys are the
    files' indices."""
    for i, p in enumerate(paths):
        yield from window_messages(i, p, sample_rate, grid, chunk=chunk)


def _decode_worker(tasks, results, sample_rate: int, grid: WindowGrid, chunk: int) -> None:
    # Ctrl-C goes to the whole process group; the parent decides and terminates us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        task = tasks.get()
        if task is None:
            break
        index, path = task
        for msg in window_messages(index, path, sample_rate, grid, chunk=chunk):
            results.put(msg)  # blocks when the parent is behind: bounded memory


def worker_messages(paths: Sequence[str], sample_rate: int, grid: WindowGrid,
                    workers: int, chunk: int = 8, idle_s: float = 0.05) -> Iterator[tuple]:
    """Decode in `workers` processes; yield their messages as they arrive.

    The result queue holds at most `2 * workers + 2` chunks, so decoded audio in flight
    is bounded (chunk x window x 4 bytes each) whatever the file lengths. `IDLE` is
    yielded when nothing arrived for `idle_s` seconds (the consumer then runs a partial
    batch instead of waiting). A worker that dies (killed, out of memory) fails the files
    it had not finished, never the run.
    """
    import multiprocessing as mp

    # Fork where it is safe and cheap (Linux; the children run numpy/libsndfile/soxr only,
    # never torch, as DataLoader workers do); spawn elsewhere.
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    tasks = ctx.Queue()
    results = ctx.Queue(maxsize=2 * workers + 2)
    for i, p in enumerate(paths):
        tasks.put((i, str(p)))
    for _ in range(workers):
        tasks.put(None)
    procs = [ctx.Process(target=_decode_worker, args=(tasks, results, sample_rate, grid, chunk),
                         daemon=True) for _ in range(workers)]
    for proc in procs:
        proc.start()
    finished: set[int] = set()
    try:
        while len(finished) < len(paths):
            try:
                msg = results.get(timeout=idle_s)
            except queue_mod.Empty:
                if not any(proc.is_alive() for proc in procs):
                    # Drain what the dead workers managed to send, then give up on the rest.
                    try:
                        while True:
                            msg = results.get(timeout=0.2)
                            if msg[0] in ("done", "error"):
                                finished.add(msg[1])
                            yield msg
                    except queue_mod.Empty:
                        pass
                    for i in range(len(paths)):
                        if i not in finished:
                            finished.add(i)
                            yield ("error", i, "decoder process exited unexpectedly")
                    break
                yield IDLE
                continue
            if msg[0] in ("done", "error"):
                finished.add(msg[1])
            yield msg
    finally:
        for proc in procs:
            proc.join(timeout=1.0)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=1.0)
        results.cancel_join_thread()
        tasks.cancel_join_thread()
