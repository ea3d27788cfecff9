"""The one batching loop: windows of many sources, scored together, handed back per source.

Every scorer feeds it: `samplecnn tag` (files decoded in worker processes), `evaluate`
(clips of a store), the HTTP service (concurrent requests) and the cluster engine. A
source is anything with a hashable key; its windows arrive as messages, in order:

    ("windows", key, starts int64 (k,), windows float32 (k, window))   any number of times
    ("done", key, info dict)                                           once, at the end
    ("error", key, reason str)                                         instead of "done"
    IDLE                                                               nothing arrived lately

Windows are batched across sources in arrival order; a full batch runs as soon as it is
full, a partial one when the producer goes IDLE or ends. What is in flight is bounded by
the batch size and the producer, never by a source's length.

Windows of a whole-clip model's grid (`samplecnn.windows`) may differ in length (a clip
shorter than the window, a longer clip's unpadded tail); a batch holds one length only:
pending windows are kept per length, and when `batch_size` windows wait in all, the
length whose oldest window came first runs (so in flight stays bounded). NumPy only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Iterator

import numpy as np

__all__ = ["IDLE", "Scored", "score_messages"]

IDLE = ("idle",)


@dataclass
class Scored:
    """One finished source: `outputs` `(n_windows, D)` and `starts` `(n_windows,)` (in
    samples) in window order, or `error` (then both are None)."""

    key: Hashable
    info: dict
    starts: np.ndarray | None
    outputs: np.ndarray | None
    error: str | None = None


@dataclass
class _Pending:
    """Windows of one length waiting for a batch; `first`: arrival order of the oldest."""

    first: int
    x: list = field(default_factory=list)
    owners: list = field(default_factory=list)


@dataclass
class _Source:
    starts: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)
    received: int = 0
    computed: int = 0
    done: bool = False
    info: dict = field(default_factory=dict)


def score_messages(messages: Iterable[tuple], compute: Callable[[np.ndarray], np.ndarray],
                   batch_size: int) -> Iterator[Scored]:
    """Run `compute` (`(B, window)` float32 -> `(B, D)`) over the windows the messages
    carry, `batch_size` windows at a time across sources; yield each source's `Scored`
    as soon as its last window is computed (sources that fail are yielded at once)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    sources: dict[Hashable, _Source] = {}
    # Per window length: queued arrays and their owners (key, window ordinal in its source).
    pending: dict[int, _Pending] = {}

    def waiting() -> int:
        return sum(len(p.owners) for p in pending.values())

    def run(width: int, n: int) -> None:
        pend = pending[width]
        x = np.concatenate(pend.x) if len(pend.x) > 1 else pend.x[0]
        owners, pend.owners = pend.owners[:n], pend.owners[n:]
        pend.x = [x[n:]] if len(x) > n else []
        if not pend.owners:
            del pending[width]
        out = np.asarray(compute(x[:n]), dtype=np.float32)
        for (key, k), row in zip(owners, out):
            src = sources.get(key)
            if src is not None:  # None: the source failed after these windows were queued
                src.outputs[k] = row
                src.computed += 1

    def run_oldest(limit: int) -> None:
        width = min(pending, key=lambda w: pending[w].first)
        run(width, min(len(pending[width].owners), limit))

    def finished() -> Iterator[Scored]:
        for key in [k for k, s in sources.items() if s.done and s.computed == s.received]:
            src = sources.pop(key)
            starts = np.concatenate(src.starts) if src.starts else np.zeros(0, np.int64)
            outputs = np.stack([src.outputs[k] for k in range(src.received)]) if src.received else None
            yield Scored(key, src.info, starts, outputs)

    seq = 0
    try:
        for msg in messages:
            kind = msg[0]
            if kind == "idle":
                if pending:
                    while pending:
                        run_oldest(batch_size)
                    yield from finished()
                continue
            key = msg[1]
            if kind == "windows":
                src = sources.setdefault(key, _Source())
                starts, wins = msg[2], msg[3]
                src.starts.append(starts)
                if len(wins) == 0:
                    continue
                seq += 1
                pend = pending.setdefault(wins.shape[1], _Pending(first=seq))
                pend.x.append(wins)
                pend.owners.extend((key, src.received + j) for j in range(len(wins)))
                src.received += len(wins)
                while waiting() >= batch_size:
                    run_oldest(batch_size)
            elif kind == "done":
                src = sources.setdefault(key, _Source())
                src.done = True
                src.info = msg[2]
            elif kind == "error":
                sources.pop(key, None)
                for width in list(pending):
                    pend = pending[width]
                    keep = [i for i, o in enumerate(pend.owners) if o[0] != key]
                    if len(keep) == len(pend.owners):
                        continue
                    if not keep:
                        del pending[width]
                        continue
                    x = np.concatenate(pend.x)
                    pend.x = [x[keep]]
                    pend.owners = [pend.owners[i] for i in keep]
                yield Scored(key, {}, None, None, error=msg[2])
            else:
                raise ValueError(f"unknown message kind {kind!r}")
            yield from finished()
        while pending:
            run_oldest(batch_size)
        yield from finished()
    finally:
        close = getattr(messages, "close", None)
        if close:
            close()
