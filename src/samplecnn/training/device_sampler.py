"""Random-crop training batches cut on the device from a split held there as int16."""
from __future__ import annotations

import numpy as np
import torch

from ..data.segments import epoch_plan


class DeviceSegmentSampler:
    """Random-crop training batches cut from a split held, as int16, in device memory.

    Yields dicts like `SegmentDataset`'s batches: `audio` float32 `(B, 1, segment_samples)`,
    `target` float32 `(B, n_tags)`, `clip` int64 `(B,)`; `starts` int64 `(B,)` too. An
    epoch is `segments_per_clip` crops per clip in a shuffled order (the last batch may be
    smaller unless `drop_last`). Order and crops are `epoch_plan`'s, as for the
    DataLoader path (`SegmentDataset(mode="random")` + `EpochSampler`): for the same
    seed, epoch, rank and world size both yield the same crops in the same order.

    The whole split is copied once (`store.audio` int16: MTAT's training split at
    22,050 Hz is ~20 GB as int16 -- it fits an 80 GB GPU; MSD does not, use the
    DataLoader there). Each batch is one gather + one int16 -> float multiply on the
    device, so the CPU and PCIe are out of the training loop.
    """

    def __init__(self, store, split: str | None, segment_samples: int, batch_size: int,
                 segments_per_clip: int = 10, device: str | torch.device = "cpu",
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1):
        from ..data import SegmentStore
        from ..data.store import INT16_SCALE

        store = store if isinstance(store, SegmentStore) else SegmentStore(store)
        if segment_samples < 1 or batch_size < 1 or segments_per_clip < 1:
            raise ValueError("segment_samples, batch_size and segments_per_clip must be >= 1, got "
                             f"{segment_samples}, {batch_size} and {segments_per_clip}")
        self.device = torch.device(device)
        self.clips = torch.from_numpy(store.split_indices(split))
        if len(self.clips) == 0:
            raise ValueError(f"{store.path}: split {split!r} has no clips")
        idx = self.clips.numpy()
        lengths = store.lengths[idx].astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        # Copy the split's clips back to back, then `segment_samples` zeros, so that a
        # crop of a short (or the last) clip never reads past the end.
        flat = np.zeros(int(lengths.sum()) + segment_samples, np.int16)
        for k, i in enumerate(idx):
            flat[offsets[k]: offsets[k] + lengths[k]] = store.clip(int(i))
        self.audio = torch.from_numpy(flat).to(self.device)
        self._lengths = lengths
        self.lengths = torch.from_numpy(lengths).to(self.device)
        self.offsets = torch.from_numpy(offsets).to(self.device)
        self.labels = torch.from_numpy(store.labels[idx].astype(np.float32)).to(self.device)
        self.scale = 1.0 / float(INT16_SCALE)
        self.segment_samples = int(segment_samples)
        self.batch_size = int(batch_size)
        self.segments_per_clip = int(segments_per_clip)
        self.seed = int(seed)
        self.epoch = 0
        self.drop_last = drop_last
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.rank, self.world_size = int(rank), int(world_size)
        self._arange = torch.arange(self.segment_samples, device=self.device)
        self._windows = self.audio.unfold(0, self.segment_samples, 1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rows_per_rank(self) -> int:
        return -(-len(self.clips) * self.segments_per_clip // self.world_size)

    def __len__(self) -> int:
        n = self._rows_per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def batch(self, rows: torch.Tensor, starts: torch.Tensor) -> dict[str, torch.Tensor]:
        """Crops of split rows `rows` `(B,)` at `starts` `(B,)` (both on the device)."""
        # `_windows` is an (n - S + 1, S) strided view of the flat audio (no copy); rows
        # of it are the crops, so indexing copies B x S values with only B indices.
        audio = self._windows[self.offsets[rows] + starts].float().mul_(self.scale)
        # Zero what lies past a short clip's end (it belongs to the next clip).
        audio.masked_fill_(starts[:, None] + self._arange >= self.lengths[rows, None], 0.0)
        return {"audio": audio.unsqueeze(1), "target": self.labels[rows],
                "clip": self.clips.to(self.device)[rows], "starts": starts}

    def __iter__(self):
        # Items are the split's clips repeated segments_per_clip times, clip after clip,
        # as SegmentDataset numbers them.
        item_rows = np.repeat(np.arange(len(self.clips)), self.segments_per_clip)
        items, starts = epoch_plan(len(item_rows), self.seed, self.epoch, self.rank,
                                   self.world_size, item_lengths=self._lengths[item_rows],
                                   segment_samples=self.segment_samples)
        rows = torch.from_numpy(item_rows[items]).to(self.device)
        starts = torch.from_numpy(starts).to(self.device)
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            yield self.batch(rows[sl], starts[sl])
