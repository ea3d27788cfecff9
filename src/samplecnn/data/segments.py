"""Fixed-length training/evaluation segments drawn from a SegmentStore."""
from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from .store import SegmentStore


class SegmentDataset(Dataset):
    """Segments of the clips of one split.

    Items are dicts: `audio` float32 `(1, segment_samples)`, `target` float32
    `(n_tags,)` (the clip's tags), `clip` int64 scalar (the clip's index in the store).

    mode="consecutive": `segments_per_clip` consecutive segments from the start of each
    clip (the paper: 10 x 59,049 samples per 29 s clip); fewer when the clip is shorter,
    and at least one (zero-padded). `segments_per_clip=None`: every full segment (at
    least one) -- what evaluation uses.
    mode="random": `segments_per_clip` random crops per clip, redrawn by `set_epoch(e)`
    from (seed, epoch); a clip shorter than a segment gives a zero-padded crop at 0.

    `clip_index` int64 `(len,)` and `starts` int64 `(len,)` give each item's clip and
    first sample, so per-clip aggregation needs no pass over the data.
    """

    def __init__(
        self,
        store: SegmentStore | str | os.PathLike,
        split: str | None,
        segment_samples: int,
        mode: str = "consecutive",
        segments_per_clip: int | None = 10,
        seed: int = 0,
    ):
        self.store = store if isinstance(store, SegmentStore) else SegmentStore(store)
        if int(segment_samples) <= 0:
            raise ValueError(f"segment_samples must be positive, got {segment_samples}")
        if mode not in ("consecutive", "random"):
            raise ValueError(f"mode must be 'consecutive' or 'random', got {mode!r}")
        if segments_per_clip is not None and int(segments_per_clip) <= 0:
            raise ValueError(f"segments_per_clip must be positive, got {segments_per_clip}")
        if mode == "random" and segments_per_clip is None:
            raise ValueError("random mode needs a number of segments_per_clip")
        self.split = split
        self.segment_samples = int(segment_samples)
        self.mode = mode
        self.segments_per_clip = None if segments_per_clip is None else int(segments_per_clip)
        self.seed = int(seed)
        self.epoch = 0
        self.clips = self.store.split_indices(split)
        lengths = self.store.lengths[self.clips]
        if mode == "consecutive":
            n_full = np.maximum(lengths // self.segment_samples, 1)
            per = n_full if self.segments_per_clip is None else np.minimum(
                n_full, self.segments_per_clip)
            self.clip_index = np.repeat(self.clips, per).astype(np.int64)
            # Position of each item within its clip: 0, 1, ... per clip.
            first = np.repeat(np.cumsum(per) - per, per)
            self.starts = ((np.arange(len(self.clip_index)) - first)
                           * self.segment_samples).astype(np.int64)
        else:
            self.clip_index = np.repeat(self.clips, self.segments_per_clip).astype(np.int64)
            self.set_epoch(0)
        self._targets = torch.from_numpy(self.store.labels.astype(np.float32))

    @property
    def tags(self) -> list[str]:
        return self.store.tags

    @property
    def sample_rate(self) -> int:
        return self.store.sample_rate

    def set_epoch(self, epoch: int) -> None:
        """Redraw the random crops for `epoch` (no effect in consecutive mode). Call it
        before the DataLoader's iterator is created (not with persistent workers)."""
        self.epoch = int(epoch)
        if self.mode != "random":
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        room = np.maximum(self.store.lengths[self.clip_index] - self.segment_samples, 0)
        self.starts = np.floor(rng.random(len(self.clip_index)) * (room + 1)).astype(np.int64)

    def __len__(self) -> int:
        return len(self.clip_index)

    def __getitem__(self, i: int) -> dict:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"segment index {i} out of range for {len(self)} segments")
        c = int(self.clip_index[i])
        x = self.store.segment(c, int(self.starts[i]), self.segment_samples)
        return {
            "audio": torch.from_numpy(x).unsqueeze(0),
            "target": self._targets[c],
            "clip": torch.tensor(c, dtype=torch.int64),
        }

    def clip_labels(self) -> np.ndarray:
        """uint8 `(n_clips_in_split, n_tags)` labels, in the order of `self.clips`."""
        return self.store.labels[self.clips]
