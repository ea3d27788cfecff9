"""The paper's learning-rate stages as a Lightning callback.

Stages 0.01, 0.002, 0.0004, 0.00008, 0.000016 (by default): a stage runs until the
validation loss has not improved for `patience` epochs; then the best weights so far are
restored and the next stage starts; after the last stage training stops.

Everything the schedule knows (stage, best loss, epochs without improvement, the best
weights) is in `state_dict()`, which Lightning stores in every checkpoint, so `--resume`
continues the schedule exactly where it was.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import lightning as L
import torch


class LRStageSchedule(L.Callback):
    """Patience-driven LR stages with restarts from the best weights.

    Args:
        lr_stages: learning rates, in order.
        patience: epochs without improvement of `monitor` that end a stage.
        monitor: the logged metric to minimise (validation loss).
        min_delta: improvement smaller than this does not count.
        reset_momentum: clear the optimizer state (momentum buffers) at a restart, as
            re-compiling the model did in the authors' Keras code.
    """

    def __init__(self, lr_stages: list[float], patience: int = 3, monitor: str = "val_loss",
                 min_delta: float = 0.0, reset_momentum: bool = True, verbose: bool = True):
        if not lr_stages:
            raise ValueError("lr_stages must not be empty")
        self.lr_stages = [float(x) for x in lr_stages]
        self.patience = int(patience)
        self.monitor = monitor
        self.min_delta = float(min_delta)
        self.reset_momentum = bool(reset_momentum)
        self.verbose = verbose
        self.stage = 0
        self.best = math.inf
        self.wait = 0
        self.best_epoch = -1
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, Any]] = []

    @property
    def lr(self) -> float:
        return self.lr_stages[min(self.stage, len(self.lr_stages) - 1)]

    @property
    def finished(self) -> bool:
        return self.stage >= len(self.lr_stages)

    # -- Lightning hooks -------------------------------------------------------------
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the optimizer state of a resumed checkpoint is restored (which happens
        # after on_fit_start): the rate is the current stage's of the config, so a
        # resume with other `optim.lr_stages` uses them.
        self._set_lr(trainer, self.lr)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.finished:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ValueError(f"LRStageSchedule: metric {self.monitor!r} was not logged; "
                             "the paper recipe needs a validation split")
        self.step(float(value), pl_module, trainer)

    # -- the schedule itself (callable without a Trainer, for tests) -------------------
    def step(self, value: float, pl_module: torch.nn.Module, trainer: Any = None) -> str:
        """Record one epoch's validation loss; returns "improved", "wait", "restart" or "stop"."""
        epoch = len(self.history)
        model = getattr(pl_module, "model", pl_module)
        if value < self.best - self.min_delta:
            self.best = value
            self.best_epoch = epoch
            self.wait = 0
            self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            action = "improved"
        else:
            self.wait += 1
            action = "wait"
            if self.wait >= self.patience:
                self.stage += 1
                self.wait = 0
                if self.best_weights is not None:
                    model.load_state_dict(self.best_weights)
                if self.finished:
                    action = "stop"
                    if trainer is not None:
                        trainer.should_stop = True
                else:
                    action = "restart"
                    self._set_lr(trainer, self.lr, reset=self.reset_momentum)
        self.history.append({"epoch": epoch, "value": value, "stage": min(self.stage, len(self.lr_stages) - 1),
                             "action": action})
        if self.verbose and action in ("restart", "stop") and (trainer is None or trainer.is_global_zero):
            where = f"lr {self.lr:g}" if action == "restart" else "training ends"
            print(f"[lr stages] no improvement of {self.monitor} for {self.patience} epochs: "
                  f"best weights (epoch {self.best_epoch}, {self.best:.4f}) restored, {where}")
        return action

    def _set_lr(self, trainer: Any, lr: float, reset: bool = False) -> None:
        if trainer is None:
            return
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
            if reset:
                opt.state.clear()

    # -- checkpointed state ------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "best": self.best, "wait": self.wait,
                "best_epoch": self.best_epoch, "lr_stages": list(self.lr_stages),
                "best_weights": self.best_weights, "history": copy.deepcopy(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.stage = int(state["stage"])
        self.best = float(state["best"])
        self.wait = int(state["wait"])
        self.best_epoch = int(state["best_epoch"])
        self.best_weights = state.get("best_weights")
        self.history = list(state.get("history", []))
