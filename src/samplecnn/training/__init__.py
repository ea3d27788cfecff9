"""Training: LightningModule, DataModule, recipes (configs), the paper's LR stages.

    from samplecnn.training import train, load_config
    result = train("configs/paper_mtat.yaml", ["data.store=stores/mtat"])
"""
from __future__ import annotations

from .config import (DEFAULTS, PAPER_LR_STAGES, RECIPES, apply_overrides, deep_merge,
                     dump_config, load_config, resolve_config, write_config)
from .datamodule import EpochSampler, SegmentDataModule
from .module import TaggingModule
from .run import AtomicCheckpointIO, RunCheckpoint, TrainResult, build_model_config, train
from .schedule import LRStageSchedule

__all__ = [
    "AtomicCheckpointIO", "DEFAULTS", "EpochSampler", "LRStageSchedule", "PAPER_LR_STAGES",
    "RECIPES", "RunCheckpoint", "SegmentDataModule", "TaggingModule", "TrainResult", "apply_overrides",
    "build_model_config", "deep_merge", "dump_config", "load_config", "resolve_config",
    "train", "write_config",
]
