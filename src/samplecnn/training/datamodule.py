"""The DataModule over a segment store, with a sampler that makes resumes exact.

Shuffling and random crops depend only on (seed, epoch), never on the global RNG, so an
interrupted run that resumes at an epoch boundary sees exactly the batches the
uninterrupted run would. They come from one plan (`samplecnn.data.segments.epoch_plan`)
that the device-resident sampler reads too. The sampler also shards for DDP by itself
(rank r takes every world-th index of the shuffled order), so that the union of the
ranks' k-th batches is the k-th batch of a single process with `world x batch_size`.
"""
from __future__ import annotations

import math
from typing import Iterator

import lightning as L
from torch.utils.data import DataLoader, Sampler

from ..data import SegmentDataset, SegmentStore
from ..data.segments import epoch_plan


class EpochSampler(Sampler[int]):
    """Indices of one rank for one epoch: `samplecnn.data.segments.epoch_plan`'s items.

    `set_epoch(e)` (called by Lightning before each epoch's iterator is made) also
    redraws the dataset's random crops from the same plan, so crops and order move
    together. Shards are padded by wrapping around to equal length, as DDP needs equal
    batch counts.
    """

    def __init__(self, dataset: SegmentDataset, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.dataset.set_epoch(self.epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.world_size)

    def __iter__(self) -> Iterator[int]:
        items, _ = epoch_plan(len(self.dataset), self.seed, self.epoch, self.rank,
                              self.world_size, shuffle=self.shuffle)
        return iter(items.tolist())


class SegmentDataModule(L.LightningDataModule):
    """Train / valid (/ test) segments of a store for one model's segment length.

    Batches are dicts: `audio` float32 `(B, 1, segment_samples)`, `target` float32
    `(B, n_tags)`, `clip` int64 `(B,)`, `index` int64 `(B,)` (the segment's index in its set).
    """

    def __init__(self, store: str, segment_samples: int, seed: int = 0,
                 train_mode: str = "consecutive", segments_per_clip: int = 10,
                 valid_segments_per_clip: int = 10, batch_size: int = 23,
                 eval_batch_size: int = 64, num_workers: int = 0,
                 pin_memory: bool = False, device_resident: bool = False):
        super().__init__()
        if device_resident and train_mode != "random":
            raise ValueError("data.device_resident needs data.train_mode=random "
                             "(it cuts random crops on the device)")
        self.device_resident = bool(device_resident)
        self._device_sampler = None
        self.store_path = str(store)
        self.segment_samples = int(segment_samples)
        self.seed = int(seed)
        self.train_mode = train_mode
        self.segments_per_clip = int(segments_per_clip)
        self.valid_segments_per_clip = int(valid_segments_per_clip)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.store = SegmentStore(self.store_path)
        counts = self.store.split_counts()
        for split in ("train", "valid"):
            if counts.get(split, 0) == 0:
                raise ValueError(f"{self.store_path}: the store has no {split!r} clips; "
                                 "training needs train and valid splits")
        self.train_set: SegmentDataset | None = None
        self.valid_set: SegmentDataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = SegmentDataset(self.store, "train", self.segment_samples,
                                            mode=self.train_mode,
                                            segments_per_clip=self.segments_per_clip,
                                            seed=self.seed)
            self.valid_set = SegmentDataset(self.store, "valid", self.segment_samples,
                                            mode="consecutive",
                                            segments_per_clip=self.valid_segments_per_clip)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, dataset: SegmentDataset, batch_size: int, shuffle: bool) -> DataLoader:
        rank, world = self._rank_world()
        sampler = EpochSampler(dataset, shuffle=shuffle, seed=self.seed, rank=rank, world_size=world)
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=False, drop_last=False)

    def train_dataloader(self):
        self.setup("fit")
        if self.device_resident:
            return self._device_batches()
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def _device_batches(self) -> "_EpochBatches":
        """Training batches cut on the device from the train split held there as int16
        (`samplecnn.training.device_sampler.DeviceSegmentSampler`): no loader workers, no host copies."""
        if self._device_sampler is None:
            from .device_sampler import DeviceSegmentSampler

            rank, world = self._rank_world()
            device = self.trainer.strategy.root_device if self.trainer is not None else "cpu"
            self._device_sampler = DeviceSegmentSampler(
                self.store, "train", self.segment_samples, self.batch_size,
                segments_per_clip=self.segments_per_clip, device=device, seed=self.seed,
                rank=rank, world_size=world)
        return _EpochBatches(self._device_sampler, self)

    def val_dataloader(self) -> DataLoader:
        self.setup("fit")
        return self._loader(self.valid_set, self.eval_batch_size, shuffle=False)


class _EpochBatches:
    """One epoch of a `DeviceSegmentSampler`, keyed to the trainer's epoch, so that crops
    and order depend only on (seed, epoch) and resumes stay exact."""

    def __init__(self, sampler, datamodule: SegmentDataModule):
        self.sampler = sampler
        self.datamodule = datamodule

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        trainer = self.datamodule.trainer
        self.sampler.set_epoch(trainer.current_epoch if trainer is not None else 0)
        return iter(self.sampler)
