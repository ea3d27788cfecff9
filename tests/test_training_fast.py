"""The training fast paths of `samplecnn train`: a device-resident train split and
compiled training steps (issue 7), exercised on the CPU."""
from __future__ import annotations

import pytest
import torch

from samplecnn.checkpoint import read_checkpoint_info
from samplecnn.data import SegmentStore
from samplecnn.models import model_from_config
from samplecnn.training.device_sampler import DeviceSegmentSampler
from samplecnn.training import train
from samplecnn.training.datamodule import SegmentDataModule

from training_helpers import make_learnable_store, tiny_config


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_learnable_store(tmp_path_factory.mktemp("fast"))


def _weights(path):
    return {k: v for k, v in torch.load(path, weights_only=False)["state_dict"].items()}


def _initial_weights(path):
    """The seeded initial weights of the run that wrote checkpoint `path` (seed 0)."""
    return model_from_config(read_checkpoint_info(path)["model_config"], seed=0).state_dict()


def test_device_resident_training_learns_and_resumes_exactly(store, tmp_path):
    sections = dict(data={"train_mode": "random", "device_resident": True, "segments_per_clip": 4},
                    trainer={"max_epochs": 4})
    full = tmp_path / "full"
    result = train(tiny_config(store, full, **sections), log=None)
    assert result.epochs == 4
    part = tmp_path / "part"
    train(tiny_config(store, part, **{**sections, "trainer": {"max_epochs": 2}}), log=None)
    train(None, ["trainer.max_epochs=4"], resume=part, log=None)
    a, b = _weights(full / "checkpoints/last.ckpt"), _weights(part / "checkpoints/last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # It trained: the weights moved away from the seeded initialisation.
    init = _initial_weights(full / "checkpoints/last.ckpt")
    assert not torch.equal(init["frontend.conv.0.weight"], a["model.frontend.conv.0.weight"])


def test_device_resident_batches_follow_the_trainer_epoch(store):
    dm = SegmentDataModule(str(store), 729, seed=3, train_mode="random", segments_per_clip=2,
                           batch_size=8, device_resident=True)
    batches = dm.train_dataloader()
    n_train = len(SegmentStore(store).split_indices("train"))
    assert len(batches) == -(-2 * n_train // 8)
    first = [b["audio"] for b in batches]
    again = [b["audio"] for b in batches]
    assert all(torch.equal(x, y) for x, y in zip(first, again))  # epoch 0 both times
    ref = DeviceSegmentSampler(store, "train", 729, 8, segments_per_clip=2, seed=3)
    ref.set_epoch(0)
    assert all(torch.equal(x, r["audio"]) for x, r in zip(first, ref))
    assert first[0].shape == (8, 1, 729) and first[0].dtype == torch.float32


def test_device_resident_needs_random_crops(store):
    with pytest.raises(ValueError, match="device_resident needs data.train_mode=random"):
        SegmentDataModule(str(store), 729, train_mode="consecutive", device_resident=True)


def test_device_sampler_shards_an_epoch_across_ranks(store):
    whole = DeviceSegmentSampler(store, "train", 729, batch_size=5, segments_per_clip=3, seed=1)
    shards = [DeviceSegmentSampler(store, "train", 729, batch_size=5, segments_per_clip=3, seed=1,
                                   rank=r, world_size=2) for r in range(2)]
    for s in (whole, *shards):
        s.set_epoch(2)
    all_crops, rank0, rank1 = _crops(whole), _crops(shards[0]), _crops(shards[1])
    assert len(rank0) == len(rank1) == len(shards[0]._rows_per_rank() * [0])
    # Interleaving the shards gives the single-process epoch, padded by wrapping around.
    merged = [c for pair in zip(rank0, rank1) for c in pair]
    assert merged[: len(all_crops)] == all_crops
    assert merged[len(all_crops):] == all_crops[: len(merged) - len(all_crops)]
    with pytest.raises(ValueError, match="rank must be in"):
        DeviceSegmentSampler(store, "train", 729, batch_size=5, rank=2, world_size=2)


def _crops(sampler) -> list[tuple[int, int]]:
    return [(int(c), int(t)) for b in sampler for c, t in zip(b["clip"], b["starts"])]


@pytest.mark.parametrize("world", [1, 2])
def test_device_resident_and_dataloader_paths_draw_the_same_crops(store, world):
    """One epoch plan: for a seed, epoch, rank and world size the DataLoader path
    (SegmentDataset + EpochSampler) and the device-resident sampler give the same crops,
    in the same order, with the same audio."""
    from samplecnn.data import SegmentDataset
    from samplecnn.training import EpochSampler

    for epoch in (0, 3):
        per_rank = []
        for rank in range(world):
            ds = SegmentDataset(store, "train", 729, mode="random", segments_per_clip=3, seed=4)
            sampler = EpochSampler(ds, shuffle=True, seed=4, rank=rank, world_size=world)
            sampler.set_epoch(epoch)
            order = list(sampler)
            loader = [(int(ds.clip_index[i]), int(ds.starts[i])) for i in order]
            device = DeviceSegmentSampler(store, "train", 729, batch_size=5, segments_per_clip=3,
                                          seed=4, rank=rank, world_size=world)
            device.set_epoch(epoch)
            assert _crops(device) == loader
            first = next(iter(device))["audio"]
            # int16 * (1 / scale) on the device, int16 / scale in the store: rounding only.
            torch.testing.assert_close(first, torch.stack([ds[i]["audio"] for i in order[:5]]),
                                       rtol=0, atol=1e-6)
            per_rank.append(loader)
        # Not a trivial plan: crops start inside the clips, and every crop is used.
        crops = [c for r in per_rank for c in r]
        assert len({t for _, t in crops}) > len(crops) // 2
        assert len(set(crops)) == len(ds)
    assert per_rank != [[(c, 0) for c, _ in r] for r in per_rank]


def test_consecutive_segments_are_the_window_grid(store):
    from samplecnn.data import SegmentDataset, SegmentStore
    from samplecnn.windows import WindowGrid

    st = SegmentStore(store)
    ds = SegmentDataset(st, "valid", 729, mode="consecutive", segments_per_clip=8)
    grid = WindowGrid(729, 729, "drop", max_windows=8)
    for c in st.split_indices("valid"):
        assert ds.starts[ds.clip_index == c].tolist() == grid.starts(int(st.lengths[c])).tolist()


@pytest.mark.slow
def test_compiled_training_steps_match_plain_training(store, tmp_path):
    # Compiled graphs draw dropout masks from their own RNG, and Adam magnifies rounding
    # in near-zero gradients: without dropout and with plain SGD, only rounding is left.
    sections = dict(model={"dropout": 0.0},
                    optim={"recipe": "paper", "lr_stages": [0.01], "patience": 3},
                    trainer={"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 1})
    plain = train(tiny_config(store, tmp_path / "plain", **sections), log=None)
    from torch._dynamo.utils import counters

    counters.clear()
    fast = train(tiny_config(store, tmp_path / "fast", **{**sections, "trainer": {
        **sections["trainer"], "fast_steps": "compile"}}), log=None)
    assert counters["stats"]["unique_graphs"] >= 1  # the steps did go through torch.compile
    a, b = _weights(plain.last_checkpoint), _weights(fast.last_checkpoint)
    assert a.keys() == b.keys()  # compiling adds no state of its own
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    # ... and the comparison is not trivial: three SGD steps moved the weights.
    assert not torch.allclose(a["model.fc.weight"], _initial_weights(plain.last_checkpoint)["fc.weight"],
                              atol=1e-4)


def test_fast_steps_must_be_a_training_mode(store, tmp_path):
    with pytest.raises(ValueError, match="trainer.fast_steps must be one of"):
        train(tiny_config(store, tmp_path / "bad", trainer={"fast_steps": "turbo"}), log=None)
