"""The LightningModule: a SampleCNN trained with BCE on segment logits."""
from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

from ..checkpoint import checkpoint_info
from ..metrics import aggregate_clips, tag_metrics
from ..models import model_from_config


class TaggingModule(L.LightningModule):
    """Segment-level multi-label training of a SampleCNN.

    Each segment carries its clip's tags; the loss is `BCEWithLogitsLoss` on the logits
    `(B, n_tags)`. Validation logs the segment loss (`val_loss`, which the paper's LR
    stages watch) and the clip-level macro ROC-AUC / PR-AUC (mean of segment scores).

    The network is `self.model` (checkpoint keys `model.*`); every checkpoint carries the
    `"samplecnn"` entry (model config with tags, sample rate, segment length, and the
    resolved training config), so `samplecnn.checkpoint.load_model` reads it directly.

    Args:
        model_config: `ModelConfig.to_dict()` of the network (tags included).
        optim: the resolved `optim` section (recipe and its settings).
        training_config: the whole resolved config, recorded in checkpoints.
        seed: seeds the initial weights and, per epoch, dropout.
        fast_steps: how training steps run, a `training.fast.TRAIN_MODES` name: "plain",
            "retain" (the allocator keeps freed memory: same numbers, 2x faster on CPU),
            "compile" (`torch.compile`: same numbers up to rounding without dropout) or
            "retain-compile". Validation and checkpoints always use the plain model.
    """

    def __init__(self, model_config: dict, optim: dict, training_config: dict | None = None,
                 seed: int = 0, fast_steps: str = "plain"):
        super().__init__()
        self.save_hyperparameters()
        self.model = model_from_config(model_config, seed=seed)
        self.fast_steps = fast_steps
        # Built on the training device in on_fit_start; not a submodule, so checkpoint
        # keys stay the model's own.
        self._train_forward = None
        self.optim = dict(optim)
        self.training_config = training_config or {}
        self.seed = int(seed)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self._val_outputs: list[tuple[torch.Tensor, ...]] = []
        self.val_clip_scores: tuple[np.ndarray, np.ndarray] | None = None  # (clip ids, scores)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`(B, 1, input_samples)` -> logits `(B, n_tags)`."""
        return self.model(x)

    def on_fit_start(self) -> None:
        if self.fast_steps != "plain":
            from .fast import prepare_for_training

            self._train_forward = prepare_for_training(self.model, self.fast_steps)

    # -- steps ---------------------------------------------------------------------------
    def step_seed(self, batch_idx: int) -> int:
        """The seed of one training step's randomness (dropout): a function of (seed,
        epoch, batch, rank) only, so a resumed run draws what the uninterrupted one did."""
        return int(np.random.SeedSequence(
            [self.seed, self.current_epoch, batch_idx, self.global_rank]).generate_state(1)[0])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # Dropout draws from torch's global RNG, which Lightning and DataLoader iterators
        # also draw from (differently after a resume). The step runs on a forked RNG
        # seeded by `step_seed`: exact resumes, and the caller's RNG is left untouched.
        on_cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if on_cuda else []):
            seed = self.step_seed(batch_idx)
            torch.default_generator.manual_seed(seed)
            if on_cuda:
                torch.cuda.manual_seed(seed)  # the current device: this process's
            logits = (self._train_forward or self.model)(batch["audio"])
        loss = self.loss_fn(logits.float(), batch["target"])
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=len(batch["target"]))
        return loss

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.trainer.optimizers:
            self.log("lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False,
                     on_epoch=True, batch_size=1)

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["audio"]).float()
        loss = self.loss_fn(logits, batch["target"])
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=len(batch["target"]))
        self._val_outputs.append((logits.detach(), batch["target"].detach(),
                                  batch["clip"].detach(), batch["index"].detach()))
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_outputs = []

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        logits = torch.cat([o[0] for o in self._val_outputs])
        targets = torch.cat([o[1] for o in self._val_outputs])
        clips = torch.cat([o[2] for o in self._val_outputs])
        index = torch.cat([o[3] for o in self._val_outputs])
        self._val_outputs = []
        if self.trainer.world_size > 1:
            # Shards are padded to equal length (so all_gather works) by repeating items:
            # each segment is counted once, by its index in the validation set.
            logits, targets, clips, index = (self.all_gather(t).flatten(0, 1)
                                             for t in (logits, targets, clips, index))
        logits, targets, clips = once_per_segment(index.cpu().numpy(), logits.cpu().numpy(),
                                                  targets.cpu().numpy(), clips.cpu().numpy())
        clip_ids, clip_scores = aggregate_clips(logits, clips)
        # What `evaluate` with the same options reports (tested): kept for inspection.
        self.val_clip_scores = (clip_ids, clip_scores)
        # Each clip's target: the target of (any) one of its segments.
        first = np.unique(clips, return_index=True)[1]
        labels = targets[first]
        m = tag_metrics(labels, clip_scores)
        if not math.isnan(m.macro_roc_auc):
            self.log("val_roc_auc", m.macro_roc_auc, prog_bar=True, rank_zero_only=False)
            self.log("val_pr_auc", m.macro_pr_auc, rank_zero_only=False)

    # -- optimizers ----------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.optim
        params = self.model.parameters()
        if o["recipe"] == "paper":
            return torch.optim.SGD(params, lr=float(o["lr_stages"][0]), momentum=float(o["momentum"]),
                                   nesterov=bool(o["nesterov"]), weight_decay=float(o["weight_decay"]))
        cls = torch.optim.AdamW if o.get("decoupled_weight_decay", True) else torch.optim.Adam
        opt = cls(params, lr=float(o["lr"]), betas=tuple(float(b) for b in o["betas"]),
                  weight_decay=float(o["weight_decay"]))
        if o["schedule"] == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=float(o["plateau_factor"]),
                patience=int(o["plateau_patience"]), min_lr=float(o["min_lr"]))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "monitor": "val_loss",
                                                       "interval": "epoch"}}
        if o["schedule"] == "cosine":
            total = max(1, int(self.trainer.estimated_stepping_batches))
            steps_per_epoch = total / max(1, self.trainer.max_epochs or 1)
            warmup = int(round(float(o["warmup_epochs"]) * steps_per_epoch))
            floor = float(o["min_lr"]) / float(o["lr"])

            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                t = min(1.0, (step - warmup) / max(1, total - warmup))
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
        return opt

    # -- checkpoints -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["samplecnn"] = checkpoint_info(
            self.model,
            training_config=self.training_config,
            epoch=int(self.current_epoch),
            global_step=int(self.global_step),
            val_loss=_float_or_none(self.trainer.callback_metrics.get("val_loss")) if self._trainer else None,
        )


def once_per_segment(index: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows of `arrays` (each `(n, ...)`) with each segment `index` `(n,)` kept once (the
    first), in index order: what a padded DDP shard repeats is counted once."""
    _, keep = np.unique(index, return_index=True)
    return tuple(a[keep] for a in arrays)


def _float_or_none(x: Any) -> float | None:
    return None if x is None else float(x)
