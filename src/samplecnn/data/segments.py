"""Fixed-length training/evaluation segments drawn from a SegmentStore, and the epoch plan.

`epoch_plan` is the one place where an epoch's order, random crops and DDP shards are
drawn: `SegmentDataset` + `training.EpochSampler` (the DataLoader path) and
`training.device_sampler.DeviceSegmentSampler` (the device-resident path) both read it,
so the two paths train on the same crops in the same order for a seed.
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from ..windows import WindowGrid
from .store import SegmentStore


def epoch_plan(n_items: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1,
               shuffle: bool = True, item_lengths: np.ndarray | None = None,
               segment_samples: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """One rank's items of one epoch, and their random crop starts.

    Items are a split's segments, numbered 0..n_items-1 (one clip's segments are
    neighbours). One `numpy.random.Generator` seeded from (seed, epoch) draws, in this
    order, the epoch's permutation (used when `shuffle`) and a crop start for every item
    (when `item_lengths` `(n_items,)`, each item's clip length in samples, is given:
    uniform over the clip, 0 for a clip shorter than `segment_samples`). The order is
    padded by wrapping around to a multiple of `world_size` (DDP needs equal batch
    counts) and rank r takes every world_size-th item from position r, so the union of
    the ranks' k-th batches is the k-th batch of one process with `world_size` times
    the batch. Pure: nothing but the arguments decides the result.

    Returns:
        items: int64 `(ceil(n_items / world_size),)`, this rank's items in order.
        starts: int64, same shape, the crop start of each of `items` (None without
            `item_lengths`).
    """
    n, rank, world = int(n_items), int(rank), int(world_size)
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world_size={world}), got {rank}")
    rng = np.random.default_rng([int(seed), int(epoch)])
    # Always drawn, then maybe unused: the crops must not depend on `shuffle`, nor the
    # order on whether crops are asked for.
    order = rng.permutation(n)
    if not shuffle:
        order = np.arange(n)
    starts = None
    if item_lengths is not None:
        if segment_samples is None:
            raise ValueError("random crops need segment_samples")
        room = np.maximum(np.asarray(item_lengths, np.int64) - int(segment_samples), 0)
        starts = np.floor(rng.random(n) * (room + 1)).astype(np.int64)
    total = math.ceil(n / world) * world
    if total > n:
        order = np.concatenate([order, order[: total - n]])
    items = order[rank::world].astype(np.int64)
    return items, None if starts is None else starts[items]


class SegmentDataset(Dataset):
    """Segments of the clips of one split.

    Items are dicts: `audio` float32 `(1, segment_samples)`, `target` float32
    `(n_tags,)` (the clip's tags), `clip` int64 scalar (the clip's index in the store),
    `index` int64 scalar (the item's own index: DDP validation counts each segment once).

    mode="consecutive": `segments_per_clip` consecutive segments from the start of each
    clip (the paper: 10 x 59,049 samples per 29 s clip); fewer when the clip is shorter,
    and at least one (zero-padded). `segments_per_clip=None`: every full segment (at
    least one) -- what evaluation uses.
    mode="random": `segments_per_clip` random crops per clip, redrawn by `set_epoch(e)`
    from (seed, epoch) by `epoch_plan`; a clip shorter than a segment gives a zero-padded
    crop at 0. Consecutive segments are `samplecnn.windows.WindowGrid`'s full windows
    (hop = segment, last window dropped, `max_windows=segments_per_clip`).

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
            # The window grid of evaluation and tagging, full segments, capped.
            grid = WindowGrid(self.segment_samples, self.segment_samples, "drop",
                              self.segments_per_clip)
            # An empty clip still gives one (silent) segment, as a short clip does.
            per_clip = [grid.starts(max(int(n), 1)) for n in lengths]
            per = np.array([len(p) for p in per_clip], np.int64)
            self.clip_index = np.repeat(self.clips, per).astype(np.int64)
            self.starts = (np.concatenate(per_clip) if per_clip else np.zeros(0)).astype(np.int64)
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
        # `epoch_plan` draws the crops independently of `shuffle`: the unshuffled plan
        # has the crops of the sampler's shuffled plan.
        _, self.starts = epoch_plan(len(self.clip_index), self.seed, self.epoch, shuffle=False,
                                    item_lengths=self.store.lengths[self.clip_index],
                                    segment_samples=self.segment_samples)

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
            "index": torch.tensor(i, dtype=torch.int64),
        }
