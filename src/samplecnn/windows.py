"""The window grid: where the windows (segments) of a clip start, for every scorer.

Validation, `evaluate`, `tag`, the service and the cluster engine all cut audio with
this grid, so one clip gives the same windows whichever path scores it. Windows of
`window` samples start at 0, hop, 2*hop, ... while they fit; what happens to the samples
after the last full window is the **last-window policy**, which callers choose:

- ``"pad"`` (tagging's default): one more window starts at the next grid point and is
  zero-padded at its end, so the tail of every file is scored;
- ``"drop"`` (evaluation's default, the paper's protocol): full windows only.

Under both, a clip shorter than one window gets exactly one window, zero-padded, so
every clip has a score. `max_windows` keeps only the first windows (validation scores
the first 10 consecutive segments, as the paper's training code did).

**Whole-clip grids** (`whole_clip=True`) are for models that pool over all of time
(`ModelConfig.whole_clip`: PANNs' LeeNet), which zero padding would change (it lowers
the mean): nothing is padded. A clip no longer than the window is one window of its own
length (the model sees the whole clip); a longer one gets the same starts as above, and
under "pad" its tail is one last window taken as it is, shorter than the others. Such
windows have unequal lengths: `chunks` groups them for the batching loop, which batches
equal lengths only (`samplecnn.inference.batching`).

NumPy only: decoding worker processes import this.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np

from samplecnn.checks import MAX_HOP_S, check_float

__all__ = ["LAST_WINDOW_POLICIES", "WindowGrid", "chunks"]

LAST_WINDOW_POLICIES = ("pad", "drop")


@dataclass(frozen=True)
class WindowGrid:
    """Window length and hop in samples, the last-window policy, an optional cap, and
    whether windows are left unpadded for a whole-clip model."""

    window: int
    hop: int
    last: str = "pad"
    max_windows: int | None = None
    whole_clip: bool = False

    def __post_init__(self) -> None:
        if int(self.window) <= 0 or int(self.hop) <= 0:
            raise ValueError(f"window and hop must be positive, got window={self.window}, hop={self.hop}")
        if self.last not in LAST_WINDOW_POLICIES:
            raise ValueError(f"last-window policy must be one of {', '.join(LAST_WINDOW_POLICIES)}, "
                             f"got {self.last!r}")
        if self.max_windows is not None and int(self.max_windows) < 1:
            raise ValueError(f"max_windows must be at least 1, got {self.max_windows}")
        object.__setattr__(self, "window", int(self.window))
        object.__setattr__(self, "hop", int(self.hop))

    @classmethod
    def of_seconds(cls, window: int, sample_rate: int, hop_s: float | None = None,
                   last: str = "pad", max_windows: int | None = None,
                   whole_clip: bool = False) -> "WindowGrid":
        """A grid of `window` samples with a hop given in seconds (None: one window)."""
        if hop_s is None:
            hop = window
        else:
            # The same finite, bounded check as every option parser, so `hop=inf`/`nan`/
            # `1e308` is a ValueError on any path (not an OverflowError from int(round(...))).
            hop_s = check_float(hop_s, "hop (seconds)", low=0, high=MAX_HOP_S)
            hop = int(round(hop_s * sample_rate))
            if hop < 1:
                raise ValueError(f"hop must be at least one sample (1/{sample_rate} s), got {hop_s} s")
        return cls(window, hop, last, max_windows, bool(whole_clip))

    def starts(self, n_samples: int) -> np.ndarray:
        """int64 `(n_windows,)` window starts for a clip of `n_samples` (none if empty)."""
        n = int(n_samples)
        if n <= 0:
            return np.zeros(0, np.int64)
        n_full = (n - self.window) // self.hop + 1 if n >= self.window else 0
        starts = np.arange(n_full, dtype=np.int64) * self.hop
        if n_full == 0:
            starts = np.zeros(1, np.int64)
        elif self.last == "pad" and n_full * self.hop < n:
            starts = np.append(starts, n_full * self.hop)
        if self.max_windows is not None:
            starts = starts[: self.max_windows]
        return starts

    def lengths(self, starts: np.ndarray, n_samples: int) -> np.ndarray:
        """int64 `(n_windows,)` samples each window holds: `window`, or for a whole-clip
        grid what is left of the clip after its start when that is less."""
        starts = np.asarray(starts, np.int64)
        if not self.whole_clip:
            return np.full(len(starts), self.window, np.int64)
        return np.clip(int(n_samples) - starts, 1, self.window)

    def cut(self, x: np.ndarray, starts: np.ndarray | None = None):
        """float32 `(n_windows, window)` windows of a whole clip `x` `(n,)`, zero-padded;
        for a whole-clip grid a list of `(length,)` windows, none padded."""
        x = np.asarray(x)
        starts = self.starts(len(x)) if starts is None else starts
        if self.whole_clip:
            return [np.array(x[s: s + ln], np.float32) for s, ln in zip(starts, self.lengths(starts, len(x)))]
        out = np.zeros((len(starts), self.window), np.float32)
        for k, s in enumerate(starts):
            part = x[s: s + self.window]
            out[k, : len(part)] = part
        return out

    def stream(self, blocks: Iterable[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        """Cut a stream of float32 blocks `(k,)` into `(start, window (window,))` pairs,
        exactly at `starts(total length)`, buffering only what later windows need (memory
        stays near `window + block` samples whatever the stream's length). Each yielded
        array is a fresh copy."""
        w, hop, cap = self.window, self.hop, self.max_windows
        buf = np.zeros(0, np.float32)
        buf_start = 0  # absolute index of buf[0]
        next_start = 0
        count = 0
        for block in blocks:
            if cap is not None and count >= cap:
                continue  # drain the source (its length and errors still count)
            buf = np.concatenate([buf, block]) if len(buf) else np.asarray(block, np.float32)
            while next_start + w <= buf_start + len(buf) and (cap is None or count < cap):
                off = next_start - buf_start
                yield next_start, np.array(buf[off: off + w], dtype=np.float32)
                next_start += hop
                count += 1
            drop = min(max(next_start - buf_start, 0), len(buf))
            buf, buf_start = buf[drop:], buf_start + drop
        total = buf_start + len(buf)
        if cap is not None and count >= cap:
            return
        tail = (count == 0 and total > 0) or (self.last == "pad" and next_start < total)
        if tail:
            part = buf[next_start - buf_start:]
            if self.whole_clip:
                yield next_start, np.array(part, dtype=np.float32)
                return
            out = np.zeros(w, np.float32)
            out[: len(part)] = part
            yield next_start, out


def chunks(pairs: Iterable[tuple[int, np.ndarray]], size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`(start, window)` pairs -> `(starts int64 (k,), windows float32 (k, length))` of at
    most `size` consecutive windows of one length (a whole-clip grid's shorter last window
    comes alone): the "windows" messages of `samplecnn.inference.batching`."""
    starts: list[int] = []
    wins: list[np.ndarray] = []
    for start, w in pairs:
        if wins and len(w) != len(wins[0]):
            yield np.asarray(starts, np.int64), np.stack(wins)
            starts, wins = [], []
        starts.append(start)
        wins.append(w)
        if len(wins) == size:
            yield np.asarray(starts, np.int64), np.stack(wins)
            starts, wins = [], []
    if wins:
        yield np.asarray(starts, np.int64), np.stack(wins)
