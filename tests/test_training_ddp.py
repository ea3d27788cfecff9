"""DDP: `samplecnn train` with 2 CPU processes (gloo) equals one process with the same
effective batch, and its checkpoint loads."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from samplecnn.checkpoint import load_model
from samplecnn.models import create_model
from training_helpers import TAGS, make_learnable_store, tiny_config


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", PYTHONWARNINGS="ignore")
    env.pop("MASTER_PORT", None)  # Lightning picks a free local port
    return subprocess.run([sys.executable, "-m", "samplecnn.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _emulate_ddp(store: Path, world: int, batch: int, steps: int) -> dict:
    """What DDP computes, in one process: each rank's loss on its shard with its own BN
    batch statistics, gradients averaged, one SGD step; BN buffers are rank 0's
    (DDP broadcasts them from rank 0 before every forward)."""
    from samplecnn.data import SegmentDataset
    from samplecnn.training import EpochSampler

    model = create_model("samplecnn_small", n=5, input_samples=729, width=0.125,
                         tags=list(TAGS), sample_rate=8000, dropout=0.0, seed=0).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    ds = SegmentDataset(store, "train", 729, segments_per_clip=8, seed=0)
    shards = []
    for r in range(world):
        sampler = EpochSampler(ds, True, seed=0, rank=r, world_size=world)
        sampler.set_epoch(0)
        shards.append(list(sampler))
    params = list(model.parameters())
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for k in range(steps):
        start = {n: b.clone() for n, b in model.named_buffers()}
        total = [torch.zeros_like(p) for p in params]
        for r in reversed(range(world)):  # rank 0 last: its buffers are the ones kept
            for n, b in model.named_buffers():
                b.copy_(start[n])
            items = [ds[i] for i in shards[r][k * batch:(k + 1) * batch]]
            x = torch.stack([it["audio"] for it in items])
            y = torch.stack([it["target"] for it in items])
            grads = torch.autograd.grad(loss_fn(model(x), y), params)
            total = [t + g / world for t, g in zip(total, grads)]
        for p, g in zip(params, total):
            p.grad = g
        opt.step()
        opt.zero_grad()
    return model.state_dict()


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_the_emulated_computation(tmp_path):
    store = make_learnable_store(tmp_path / "data")
    cfg = tiny_config(store, tmp_path / "ddp",
                      # SGD, not Adam: Adam rescales the round-off-sized gradients of conv
                      # biases under BN into full steps, which no comparison survives.
                      optim={"recipe": "paper", "lr_stages": [0.05]},
                      trainer={"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 2,
                               "num_threads": 1, "strategy": "ddp", "devices": 2})
    # No dropout: the processes draw different masks by design.
    cfg["model"]["dropout"] = 0.0
    cfg["data"]["batch_size"] = 8
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ddp = _run_cli(["train", "--config", str(path), "--no-progress"], tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # Lightning's start-up lines are silenced; the summary is samplecnn's own.
    assert "Starting with 2 processes" not in ddp.stderr + ddp.stdout
    assert "trained 1 epochs (3 steps)" in ddp.stdout

    got = load_model(tmp_path / "ddp/checkpoints/last.ckpt").state_dict()
    expected = _emulate_ddp(store, world=2, batch=8, steps=3)
    init = create_model("samplecnn_small", n=5, input_samples=729, width=0.125, n_tags=len(TAGS),
                        dropout=0.0, seed=0).state_dict()
    assert got.keys() == expected.keys()
    for k in got:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-5, msg=k)
    assert sum(not torch.equal(got[k], init[k]) for k in got) > len(got) // 2
